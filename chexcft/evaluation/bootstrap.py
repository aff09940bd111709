"""Stratified, seeded bootstrap of AUCs, vectorised over replicates.

Replicates are drawn once per evaluation as study multiplicities (B, n) and shared by every row,
so intervals of different models are paired. Studies are resampled within strata = their label
pattern over all tasks, which keeps every task's positive and negative counts fixed in every
replicate (stratified per class for each task at once) and lets the mean-AUC interval use one
coherent resample of studies.
"""

from __future__ import annotations

import numpy as np

from chexcft.evaluation.metrics import weighted_auc

LEVEL = 0.95


def stratified_weights(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Study multiplicities (n_boot, n): each stratum (a row's label pattern) resampled with replacement."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    rng = np.random.default_rng(seed)
    _, strata = np.unique(np.nan_to_num(labels, nan=-9.0), axis=0, return_inverse=True)
    strata = np.asarray(strata).reshape(-1)
    weights = np.zeros((n_boot, labels.shape[0]), dtype=np.int32)
    for stratum in range(int(strata.max()) + 1 if strata.size else 0):
        members = np.flatnonzero(strata == stratum)
        k = members.size
        weights[:, members] = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot)
    return weights


def bootstrap_aucs(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of every replicate and task: (B, T) for labels/scores (n, T) and multiplicities (B, n)."""
    return np.stack([weighted_auc(y[:, t], scores[:, t], weights) for t in range(y.shape[1])], axis=1)


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
