"""Evaluation of study-level predictions: AUC, bootstrap and DeLong intervals, radiologist points, ensembles.

Names are imported on first use, so that `chexcft.evaluation.aggregate` (used by submissions and the
offline bundle) does not pull in Nevergrad, scikit-learn and the plotting stack.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "aggregate_by_study": "aggregate",
    "align_to_groundtruth": "aggregate",
    "load_groundtruth": "aggregate",
    "load_predictions": "aggregate",
    "ScoreTable": "report",
    "evaluate": "report",
    "evaluate_table": "report",
    "render_table": "report",
    "score_table": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
