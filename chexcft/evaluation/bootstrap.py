"""Stratified, seeded bootstrap of AUCs, vectorised over replicates.

Replicates are drawn once per evaluation as study multiplicities (B, n) and shared by every row,
so intervals of different models are paired. Studies are resampled within strata = their label
pattern over all tasks, which keeps every task's positive and negative counts fixed in every
replicate (stratified per class for each task at once) and lets the mean-AUC interval use one
coherent resample of studies.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from chexcft.evaluation.metrics import weighted_auc_columns

LEVEL = 0.95


def label_strata(labels: np.ndarray) -> np.ndarray:
    """Stratum id of every row: rows with the same label pattern (NaN included) share one."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    frame = pd.DataFrame(labels)
    return frame.groupby(list(frame.columns), dropna=False, sort=True).ngroup().to_numpy(dtype=np.int64)


def stratified_weights(labels: np.ndarray, n_boot: int, seed: int, chunk: int = 100) -> np.ndarray:
    """Study multiplicities (n_boot, n): each stratum (a row's label pattern) resampled with replacement.

    Every row draws a member of its own stratum uniformly (all strata at once, `chunk` replicates at a time);
    a row's multiplicity is how often it was drawn.
    """
    strata = label_strata(labels)
    n = strata.size
    weights = np.zeros((n_boot, n), dtype=np.int32)
    if n == 0:
        return weights
    rng = np.random.default_rng(seed)
    order = np.argsort(strata, kind="stable")  # each stratum's members are contiguous in `order`
    sizes = np.bincount(strata)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    size_of = sizes[strata[order]].astype(np.float64)
    start_of = starts[strata[order]]
    last_of = start_of + sizes[strata[order]] - 1
    sorted_counts = np.empty((n_boot, n), dtype=np.int32)
    for first in range(0, n_boot, chunk):
        count = min(chunk, n_boot - first)
        draws = start_of + (rng.random((count, n)) * size_of).astype(np.int64)  # a position in the own stratum
        np.minimum(draws, last_of, out=draws)
        draws += (np.arange(count, dtype=np.int64) * n)[:, None]
        sorted_counts[first:first + count] = np.bincount(draws.ravel(), minlength=count * n).reshape(count, n)
    weights[:, order] = sorted_counts
    return weights


def bootstrap_aucs(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of every replicate and task: (B, T) for labels/scores (n, T) and multiplicities (B, n)."""
    # (n, B) float32, one transpose shared by every task; counts up to 2**24 are exact in float32.
    weights_t = np.ascontiguousarray(np.atleast_2d(weights).T, dtype=np.float32)
    return np.stack([weighted_auc_columns(y[:, t], scores[:, t], weights_t) for t in range(y.shape[1])], axis=1)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Percentile interval along axis 0: (2, ...) low and high; NaN where replicates are NaN."""
    tail = (1.0 - level) / 2.0 * 100.0
    with np.errstate(invalid="ignore"):
        return np.percentile(replicates, [tail, 100.0 - tail], axis=0)


def mean_over_tasks(replicates: np.ndarray) -> np.ndarray:
    """Per-replicate mean AUC over the tasks whose AUC is defined: (B,)."""
    defined = ~np.all(np.isnan(replicates), axis=0)
    if not defined.any():
        return np.full(replicates.shape[0], np.nan)
    return replicates[:, defined].mean(axis=1)
