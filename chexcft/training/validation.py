"""Per-epoch validation: probabilities on the validation set, per-observation ROC AUC, the selection score."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from chexcft.inputs import model_input
from chexcft.device import DeviceSettings, inference_mode
from chexcft.schema import COMPETITION_TASKS


def predict_probabilities(model: torch.nn.Module, loader: object, settings: DeviceSettings, n_items: int) -> np.ndarray:
    """Sigmoid of the model's binary logits for every item of a non-shuffled loader, in dataset order (n, C)."""
    model.eval()
    out: np.ndarray | None = None
    with inference_mode(settings):
        for batch in loader:
            logits = model.predict_logits(model_input(batch["image"], settings)).float()
            probs = torch.sigmoid(logits).cpu().numpy()
            if out is None:
                out = np.full((n_items, probs.shape[1]), np.nan, dtype=np.float32)
            index = batch["index"].cpu().numpy() if isinstance(batch["index"], torch.Tensor) else np.asarray(batch["index"])
            out[index] = probs
    if out is None:
        raise ValueError("the validation loader yielded no batch")
    return out


def auc_per_observation(labels: np.ndarray, probabilities: np.ndarray, observations: Sequence[str]) -> dict[str, float]:
    """ROC AUC per observation over entries labelled exactly 1 or 0 (NaN when one class is absent)."""
    result: dict[str, float] = {}
    for col, obs in enumerate(observations):
        y = labels[:, col]
        keep = (y == 1) | (y == 0)
        if keep.sum() < 2 or len(np.unique(y[keep])) < 2:
            result[obs] = float("nan")
            continue
        result[obs] = float(roc_auc_score(y[keep], probabilities[keep, col]))
    return result


def selection_score(aucs: dict[str, float]) -> tuple[float, float]:
    """(mean AUC over the competition tasks with a defined AUC, mean over all defined); NaN when none."""
    tasks = [aucs[t] for t in COMPETITION_TASKS if t in aucs and math.isfinite(aucs[t])]
    every = [v for v in aucs.values() if math.isfinite(v)]
    return (float(np.mean(tasks)) if tasks else float("nan"), float(np.mean(every)) if every else float("nan"))


def is_better(score: float, best: float | None) -> bool:
    """True when `score` beats the best so far (NaN never beats a number; the first epoch always counts)."""
    if best is None:
        return True
    if not math.isfinite(score):
        return False
    return not math.isfinite(best) or score > best
