"""ROC-AUC: per task, for many score vectors at once, and with bootstrap multiplicities."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def undefined_auc_reason(y: np.ndarray) -> str | None:
    """Why the AUC of labels `y` is undefined (a class is absent), or None when it is defined."""
    y = np.asarray(y)
    n_pos = int(np.sum(y == 1))
    n_neg = int(np.sum(y == 0))
    if n_pos == 0 and n_neg == 0:
        return "no labelled studies"
    if n_pos == 0:
        return f"no positive study among {n_neg}"
    if n_neg == 0:
        return f"no negative study among {n_pos}"
    return None


def population_auc(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUC of each row of `scores` (k, n) against 0/1 labels `y` (n,); ties count 1/2 as in scikit-learn."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    positive = np.asarray(y) == 1
    n_pos = int(positive.sum())
    n_neg = int((np.asarray(y) == 0).sum())
    if undefined_auc_reason(y) is not None:
        return np.full(scores.shape[0], np.nan)
    ranks = rankdata(scores, axis=1)  # average ranks of ties: the Mann-Whitney statistic
    rank_sum = ranks[:, positive].sum(axis=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """AUC of one score vector; NaN when a class is absent."""
    return float(population_auc(np.asarray(scores)[None, :], y)[0])


def task_aucs(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUC per column of `scores` (n, T) against the matching column of `y` (n, T)."""
    return np.array([roc_auc(y[:, t], scores[:, t]) for t in range(y.shape[1])])


def weighted_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC for each row of study multiplicities `weights` (B, n): a bootstrap replicate without copying data.

    Each positive contributes its weight times the weighted count of negatives scored below it
    (ties count 1/2), which equals the AUC of the resampled data set, in O(B * n).
    """
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(weights)
    if undefined_auc_reason(y) is not None:
        return np.full(weights.shape[0], np.nan)
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    order = np.argsort(scores[neg], kind="stable")
    neg_sorted = scores[neg][order]
    below = np.searchsorted(neg_sorted, scores[pos], side="left")
    below_or_tied = np.searchsorted(neg_sorted, scores[pos], side="right")
    w_neg = weights[:, neg][:, order].astype(np.float64)
    cum = np.zeros((weights.shape[0], neg.size + 1))
    np.cumsum(w_neg, axis=1, out=cum[:, 1:])
    w_pos = weights[:, pos].astype(np.float64)
    pairs = (w_pos * (cum[:, below] + cum[:, below_or_tied])).sum(axis=1) / 2.0
    return pairs / (w_pos.sum(axis=1) * w_neg.sum(axis=1))


MIN_CLASS_COUNT = 10  # fewer held-out positives (or negatives) than this: the AUC is flagged, no interval shown


def is_reliable(n_pos: int, n_neg: int, minimum: int = MIN_CLASS_COUNT) -> bool:
    """Whether an AUC on n_pos positives and n_neg negatives is precise enough to report with an interval."""
    return int(n_pos) >= minimum and int(n_neg) >= minimum
