"""How many benchmark radiologists' operating points lie on or below a model's ROC curve.

Rule "scorer" (the default) follows the counting code of the CheXpert authors
(stanfordmlgroup/lca-code, eval/below_curve_counter.py, `BelowCurveCounter.ROC`): the ROC curve is
scikit-learn's `roc_curve` (intermediate points dropped); for a radiologist at (specificity,
sensitivity) take x = 1 - specificity, walk to the first curve segment i with fpr[i] <= x <= fpr[i+1],
project vertically as tpr[i] + (tpr[i+1] - tpr[i]) * (x - fpr[i]), and count the point when that
projection >= sensitivity. Note the projection does not divide by the segment's width: on the
horizontal and vertical steps of an ROC without tied scores it equals the curve exactly, but on a
diagonal step (tied scores) it lies below the straight line. We keep it because the counts must be
those the official scorer reports.

Rule "interpolated" is the geometric reading: the curve's tpr at fpr = x by linear interpolation
(the top of a vertical step when x falls exactly on it), counted when >= sensitivity. Both agree
whenever x falls on a horizontal step, which is the usual case.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_curve

from chexcft.evaluation.metrics import undefined_auc_reason
from chexcft.keys import is_mimic_study, is_nih_study
from chexcft.schema import RADIOLOGIST_POINTS, STUDY_COLUMN

RULES: tuple[str, ...] = ("scorer", "interpolated")


def scorer_projection(fpr: np.ndarray, tpr: np.ndarray, x: float) -> float:
    """The official scorer's vertical projection of fpr = x onto the ROC polyline (see module docstring)."""
    i = 0
    last_segment = len(fpr) - 2
    while i < last_segment:
        both_right = fpr[i] > x and fpr[i + 1] > x
        both_left = fpr[i] < x and fpr[i + 1] < x
        if not (both_right or both_left):
            break
        i += 1
    return float((tpr[i + 1] - tpr[i]) * (x - fpr[i]) + tpr[i])


def interpolated_tpr(fpr: np.ndarray, tpr: np.ndarray, x: float) -> float:
    """The ROC curve's tpr at fpr = x by linear interpolation (the highest tpr when x is on a vertical step)."""
    right = int(np.searchsorted(fpr, x, side="right"))
    if right == 0:
        return 0.0
    if right >= len(fpr) or fpr[right - 1] == x:
        return float(tpr[right - 1])
    x0, x1, y0, y1 = fpr[right - 1], fpr[right], tpr[right - 1], tpr[right]
    return float(y0 + (y1 - y0) * (x - x0) / (x1 - x0))


def count_below(
    y: np.ndarray, scores: np.ndarray, points: Sequence[tuple[float, float]], rule: str = "scorer"
) -> int | None:
    """Number of (specificity, sensitivity) points on or below the ROC curve of `scores`; None when AUC is undefined."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if undefined_auc_reason(y) is not None:
        return None
    y, scores = np.asarray(y), np.asarray(scores)
    known = (y == 0) | (y == 1)
    fpr, tpr, _ = roc_curve(y[known], scores[known])
    project = scorer_projection if rule == "scorer" else interpolated_tpr
    return sum(1 for spec, sens in points if project(fpr, tpr, 1.0 - spec) >= sens)


def benchmark_points(tasks: Sequence[str], key: str, studies: Sequence[str]) -> dict[str, tuple[tuple[float, float], ...]]:
    """Per task, the radiologists' (specificity, sensitivity) points where that benchmark exists, else ().

    It exists for the competition tasks joined by study (CheXpert's radiologists read studies), and not on NIH
    ChestX-ray14 images or MIMIC-CXR studies (their study keys, chexcft.keys), which those radiologists never read.
    """
    exists = key == STUDY_COLUMN and not any(is_nih_study(s) or is_mimic_study(s) for s in studies)
    return {task: RADIOLOGIST_POINTS[task] if exists and task in RADIOLOGIST_POINTS else () for task in tasks}
