"""DeLong's test for correlated ROC AUCs, with the fast midrank algorithm of Sun & Xu (2014)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, rankdata

from chexcft.evaluation.metrics import undefined_auc_reason


@dataclass(frozen=True)
class DelongTest:
    """AUC difference a - b of two models on the same studies, its standard error, z and two-sided p."""

    auc_a: float
    auc_b: float
    difference: float
    std_error: float
    z: float
    p_value: float


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs (k,) and their DeLong covariance (k, k) for score rows (k, n) against 0/1 labels (n,)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.asarray(y)
    k = scores.shape[0]
    if undefined_auc_reason(y) is not None:
        return np.full(k, np.nan), np.full((k, k), np.nan)
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    t_pos = rankdata(pos, axis=1)
    t_neg = rankdata(neg, axis=1)
    t_all = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    aucs = t_all[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v_pos = (t_all[:, :m] - t_pos) / n  # structural components: share of negatives below each positive
    v_neg = 1.0 - (t_all[:, m:] - t_neg) / m  # share of positives above each negative
    s_pos = np.atleast_2d(np.cov(v_pos)) if m > 1 else np.zeros((k, k))
    s_neg = np.atleast_2d(np.cov(v_neg)) if n > 1 else np.zeros((k, k))
    return aucs, s_pos / m + s_neg / n


def delong_test(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DelongTest:
    """Two-sided DeLong test of AUC(a) = AUC(b) for two score vectors on the same studies."""
    aucs, cov = delong_covariance(y, np.stack([scores_a, scores_b]))
    difference = float(aucs[0] - aucs[1])
    variance = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if not np.isfinite(variance):
        return DelongTest(float(aucs[0]), float(aucs[1]), difference, float("nan"), float("nan"), float("nan"))
    if variance <= 1e-18:  # identical rankings: no evidence of a difference
        p_value = 1.0 if abs(difference) < 1e-12 else 0.0
        return DelongTest(float(aucs[0]), float(aucs[1]), difference, 0.0, float("nan"), p_value)
    std_error = float(np.sqrt(variance))
    z = difference / std_error
    return DelongTest(float(aucs[0]), float(aucs[1]), difference, std_error, z, float(2.0 * norm.sf(abs(z))))


def delong_interval(y: np.ndarray, scores: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval of one model's AUC from its DeLong variance, clipped to [0, 1]."""
    aucs, cov = delong_covariance(y, np.asarray(scores)[None, :])
    if not np.isfinite(aucs[0]):
        return float("nan"), float("nan")
    half = float(norm.ppf(0.5 + level / 2.0) * np.sqrt(max(cov[0, 0], 0.0)))
    return max(0.0, float(aucs[0]) - half), min(1.0, float(aucs[0]) + half)
