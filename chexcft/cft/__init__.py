"""Category-wise Fine-Tuning (CFT): re-fit each category's row of a trained head on its known labels only."""

from chexcft.cft.finetuner import METHODS, CategoryWiseFineTuner
from chexcft.cft.metrics import population_ap, population_auc

__all__ = ["METHODS", "CategoryWiseFineTuner", "population_ap", "population_auc"]
