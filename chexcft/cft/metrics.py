"""Ranking metrics for many candidate heads at once: ROC-AUC and average precision, ties as scikit-learn.

Scores are laid out (k, n): one row per candidate head, one column per image. NumPy arrays and CPU tensors take
the exact NumPy path (SIMD sorts and binary searches, rows over threads); tensors on an accelerator are ranked
there (`auc_torch`), so a CUDA population never leaves the device.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

METRICS: tuple[str, ...] = ("auc", "ap")


def _pairs_correct_twice(small: np.ndarray, large: np.ndarray) -> int:
    """Twice the number of (small, large) pairs with small < large, ties counting one (i.e. one half)."""
    sorted_large = np.sort(large)
    queries = np.sort(small)  # sorted queries make the binary searches cache-friendly
    right = np.searchsorted(sorted_large, queries, side="right")
    above = np.maximum(right - 1, 0)
    tied = (right > 0) & (sorted_large[above] == queries)
    if not tied.any():
        return int(2 * (large.size * small.size - right.sum(dtype=np.int64)))
    left = np.searchsorted(sorted_large, queries, side="left")
    return int(2 * large.size * small.size - right.sum(dtype=np.int64) - left.sum(dtype=np.int64))


def _workers() -> int:
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def auc_split(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """ROC-AUC of every row, given negative-image scores (k, m0) and positive-image scores (k, m1); float64 (k,).

    Exact Mann-Whitney count (SIMD sorts, then the smaller class is located in the larger one by binary
    search; a tie counts one half, as in scikit-learn). Rows are spread over threads (numpy releases the GIL).
    """
    neg = np.atleast_2d(neg)
    pos = np.atleast_2d(pos)
    k, n_neg, n_pos = neg.shape[0], neg.shape[1], pos.shape[1]
    if n_neg == 0 or n_pos == 0:
        return np.full(k, np.nan)
    if n_neg <= n_pos:
        # pairs with neg < pos: query the negatives among the positives
        def one(j: int) -> int:
            return _pairs_correct_twice(neg[j], pos[j])
    else:
        # pairs with neg < pos = all pairs - pairs with pos < neg - ties
        def one(j: int) -> int:
            return 2 * n_neg * n_pos - _pairs_correct_twice(pos[j], neg[j])

    workers = _workers()
    if workers == 1 or k == 1 or (n_neg + n_pos) * k < 200_000:
        twice = [one(j) for j in range(k)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            twice = list(pool.map(one, range(k)))
    return np.asarray(twice, dtype=np.float64) / (2.0 * n_neg * n_pos)


def _tie_group_bounds(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For row-sorted values (k, n): the first and the last position of each element's group of tied values."""
    k, n = values.shape
    positions = torch.arange(n, dtype=torch.int64, device=values.device).expand(k, n)
    first = torch.ones_like(values, dtype=torch.bool)
    first[:, 1:] = values[:, 1:] != values[:, :-1]
    last = torch.ones_like(values, dtype=torch.bool)
    last[:, :-1] = first[:, 1:]
    start = torch.cummax(torch.where(first, positions, torch.zeros_like(positions)), dim=1).values
    end = torch.where(last, positions, torch.full_like(positions, n))
    end = torch.flip(torch.cummin(torch.flip(end, dims=[1]), dim=1).values, dims=[1])
    return start, end


def auc_torch(scores: torch.Tensor, n_neg: int) -> torch.Tensor:
    """ROC-AUC of every row of a (k, n) tensor whose first n_neg columns are negatives, on the tensor's device.

    Mann-Whitney from average ranks (ties count one half, as in scikit-learn); float64 (k,) on the same device.
    """
    scores = torch.atleast_2d(scores)
    k, n = scores.shape
    n_pos = n - n_neg
    if n_neg == 0 or n_pos == 0:
        return torch.full((k,), float("nan"), dtype=torch.float64, device=scores.device)
    values, order = torch.sort(scores, dim=1)
    start, end = _tie_group_bounds(values)
    ranks = (start + end).to(torch.float64) / 2.0 + 1.0  # 1-based average rank of each sorted position
    is_pos = order >= n_neg
    rank_sum = torch.where(is_pos, ranks, torch.zeros_like(ranks)).sum(dim=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (float(n_neg) * n_pos)


def ap_rows(scores: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Average precision of every row of scores (k, n) for binary y (n,); float64 (k,), ties as scikit-learn.

    A tensor in gives a tensor out, on its device; a NumPy array gives a NumPy array.
    """
    as_tensor = isinstance(scores, torch.Tensor)
    scores_t = torch.atleast_2d(scores) if as_tensor else torch.from_numpy(np.ascontiguousarray(np.atleast_2d(scores)))
    k, n = scores_t.shape
    y_t = torch.as_tensor(np.asarray(y, dtype=bool) if not isinstance(y, torch.Tensor) else y, dtype=torch.bool,
                          device=scores_t.device)
    n_pos = int(y_t.sum())
    if n_pos == 0 or n_pos == n:
        nan = torch.full((k,), float("nan"), dtype=torch.float64, device=scores_t.device)
        return nan if as_tensor else nan.numpy()
    values, order = torch.sort(scores_t, dim=1, descending=True)
    hits = y_t[order].to(torch.float64)
    tp = torch.cumsum(hits, dim=1)
    # precision is read at the end of each group of tied scores (one threshold per distinct score)
    _, group_end = _tie_group_bounds(values)
    precision_at_end = torch.gather(tp, 1, group_end) / (group_end + 1).to(torch.float64)
    ap = (hits * precision_at_end).sum(dim=1) / n_pos
    return ap if as_tensor else ap.numpy()


def metric_rows(metric: str, scores: np.ndarray | torch.Tensor, n_neg: int) -> np.ndarray:
    """`metric` of every row of scores (k, n) whose first n_neg columns are negatives, the rest positives.

    NumPy arrays and CPU tensors take the NumPy path; accelerator tensors are ranked on their device. float64 (k,).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    if isinstance(scores, torch.Tensor):
        if scores.device.type != "cpu":
            if metric == "auc":
                return auc_torch(scores, n_neg).cpu().numpy()
            y = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
            y[n_neg:] = True
            return ap_rows(scores, y).cpu().numpy()
        scores = scores.detach().numpy()
    scores = np.atleast_2d(scores)
    if metric == "auc":
        return auc_split(scores[:, :n_neg], scores[:, n_neg:])
    y = np.zeros(scores.shape[1], dtype=bool)
    y[n_neg:] = True
    return ap_rows(scores, y)


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley and McNeil's (1982) standard error of an ROC-AUC estimated on n_pos positives and n_neg negatives."""
    if n_pos < 1 or n_neg < 1 or not np.isfinite(auc):
        return 0.0
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    return float(np.sqrt(max(variance, 0.0)))


def _check(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = np.atleast_2d(np.asarray(scores))
    y = np.asarray(y)
    if y.ndim != 1 or scores.shape[1] != y.shape[0]:
        raise ValueError(f"scores {scores.shape} and labels {y.shape} do not match: expected (k, n) and (n,)")
    return scores, y.astype(bool)


def population_auc(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC-AUC of each of k candidates, scores (k, n), binary y (n,) -> (k,), equal to sklearn's roc_auc_score."""
    scores, y = _check(scores, y)
    return auc_split(scores[:, ~y], scores[:, y])


def population_ap(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Average precision of each of k candidates, scores (k, n), binary y (n,) -> (k,), as sklearn's."""
    scores, y = _check(scores, y)
    return ap_rows(scores, y)
