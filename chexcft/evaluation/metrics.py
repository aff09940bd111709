"""ROC-AUC: per task, for many score vectors at once, and with bootstrap multiplicities.

Labels are 1, 0 or NaN; a NaN (not labelled) row takes no part in that task's AUC.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

# Fewer held-out positives (or negatives) than this: the AUC is flagged unreliable and gets no interval, since a
# stratified bootstrap cannot resample a handful of positives into an honest interval.
MIN_CLASS_COUNT = 10


def is_reliable(n_pos: int, n_neg: int, minimum: int = MIN_CLASS_COUNT) -> bool:
    """Whether an AUC on n_pos positives and n_neg negatives is worth an interval (both at least `minimum`)."""
    return int(n_pos) >= minimum and int(n_neg) >= minimum


def class_counts(y: np.ndarray) -> tuple[int, int]:
    """Positives and negatives among labels `y` (NaN rows not counted)."""
    y = np.asarray(y)
    return int(np.sum(y == 1)), int(np.sum(y == 0))


def reliability_note(n_pos: int, n_neg: int, minimum: int = MIN_CLASS_COUNT) -> str | None:
    """Why an AUC is unreliable (too few positives or negatives), or None when it is reliable."""
    if is_reliable(n_pos, n_neg, minimum):
        return None
    few = [f"{n} {what}" for n, what in ((n_pos, "positives"), (n_neg, "negatives")) if n < minimum]
    return f"unreliable: only {' and '.join(few)} (< {minimum}), no interval"


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
    y = np.asarray(y)
    known = (y == 1) | (y == 0)
    if not known.all():
        scores, y = scores[:, known], y[known]
    positive = y == 1
    n_pos = int(positive.sum())
    n_neg = int((y == 0).sum())
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
    """AUC for each row of study multiplicities `weights` (B, n): a bootstrap replicate without copying data."""
    return weighted_auc_columns(y, scores, np.ascontiguousarray(np.atleast_2d(weights).T, dtype=np.float32))


def weighted_auc_columns(y: np.ndarray, scores: np.ndarray, weights_t: np.ndarray) -> np.ndarray:
    """AUC for each column of multiplicities `weights_t` (n, B), in O(n * B) with one sparse product.

    The smaller class is sorted; each member of the larger class falls into the bucket of how many of the smaller
    class score below it. Per-bucket totals of the larger class's weights come from one sparse (buckets x n)
    product, and the smaller class's cumulative weights at the buckets then give the weighted Mann-Whitney count
    (ties 1/2): the AUC of the resampled data set. Labels other than 0/1 (NaN) take no part.
    """
    from scipy.sparse import csr_matrix

    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    weights_t = np.asarray(weights_t)
    if not np.issubdtype(weights_t.dtype, np.floating):
        weights_t = weights_t.astype(np.float32)
    n_boot = weights_t.shape[1]
    if undefined_auc_reason(y) is not None:
        return np.full(n_boot, np.nan)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    flip = pos.size > neg.size  # AUC(y, s) = AUC(1 - y, -s): always sort the smaller class
    small, large = (neg, pos) if flip else (pos, neg)
    sign = -1.0 if flip else 1.0
    small_scores = sign * scores[small]
    order = np.argsort(small_scores, kind="stable")
    sorted_scores = small_scores[order]
    cum = np.zeros((small.size + 1, n_boot), dtype=np.float64)
    np.cumsum(weights_t[small[order]], axis=0, dtype=np.float64, out=cum[1:])
    large_scores = sign * scores[large]
    # For a member of the large class (a negative when not flipped): small-class members strictly above it are
    # those at sorted index >= right, tied ones in [left, right).
    right = np.searchsorted(sorted_scores, large_scores, side="right")
    left = np.searchsorted(sorted_scores, large_scores, side="left")
    # Each large member j counts the small members above it plus half the tied ones:
    # small_total - (cum[right_j] + cum[left_j]) / 2, so it enters bucket right_j with weight 1, or, when tied,
    # buckets right_j and left_j with 1/2 each (exact in float32).
    tied = right != left
    rows = np.concatenate([right, left[tied]])
    cols = np.concatenate([large, large[tied]])
    values = np.concatenate([np.where(tied, 0.5, 1.0), np.full(int(tied.sum()), 0.5)]).astype(weights_t.dtype)
    buckets = csr_matrix((values, (rows, cols)), shape=(small.size + 1, y.size))
    totals = np.asarray(buckets @ weights_t, dtype=np.float64)  # (k, B): large-class weight per bucket
    small_total = cum[-1]
    large_total = totals.sum(axis=0)
    pairs = small_total * large_total - (totals * cum).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pairs / (small_total * large_total)
