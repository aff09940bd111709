"""AUC, bootstrap and DeLong: checked against scikit-learn and an independent O(n^2) computation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from chexcft.evaluation.bootstrap import bootstrap_aucs, percentile_interval, stratified_weights
from chexcft.evaluation.delong import delong_covariance, delong_interval, delong_test
from chexcft.evaluation.metrics import population_auc, roc_auc, task_aucs, undefined_auc_reason, weighted_auc


def _data(n: int = 300, k: int = 3, seed: int = 0, ties: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    scores = y[None, :] * rng.uniform(0.2, 1.0, size=(k, 1)) + rng.normal(size=(k, n))
    if ties:
        scores = np.round(scores, 1)
    return y, scores


def test_population_auc_equals_sklearn_with_ties() -> None:
    y, scores = _data(ties=True)
    expected = [roc_auc_score(y, row) for row in scores]
    np.testing.assert_allclose(population_auc(scores, y), expected, rtol=0, atol=1e-12)
    assert roc_auc(y, scores[0]) == pytest.approx(expected[0], abs=1e-12)


def test_task_aucs_and_undefined_reason() -> None:
    y, scores = _data(n=50, k=2, ties=False)
    labels = np.stack([y, np.zeros_like(y)], axis=1)
    aucs = task_aucs(labels, scores.T)
    assert aucs[0] == pytest.approx(roc_auc_score(y, scores[0]))
    assert np.isnan(aucs[1])
    assert "no positive" in undefined_auc_reason(labels[:, 1])
    assert "no negative" in undefined_auc_reason(np.ones(4))
    assert undefined_auc_reason(y) is None


def test_weighted_auc_equals_auc_of_resampled_data() -> None:
    y, scores = _data(n=120, k=1, seed=3)
    s = scores[0]
    assert weighted_auc(y, s, np.ones((1, y.size)))[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    rng = np.random.default_rng(1)
    weights = rng.integers(0, 4, size=(5, y.size))
    for w in weights:
        expected = roc_auc_score(np.repeat(y, w), np.repeat(s, w))
        assert weighted_auc(y, s, w[None, :])[0] == pytest.approx(expected, abs=1e-12)


def test_stratified_weights_keep_class_counts_and_follow_the_seed() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random((200, 3)) < 0.3).astype(float)
    w = stratified_weights(labels, 50, seed=7)
    assert w.shape == (50, 200)
    assert np.all(w.sum(axis=1) == 200)
    np.testing.assert_array_equal(w @ labels, np.tile(labels.sum(axis=0), (50, 1)))
    np.testing.assert_array_equal(w, stratified_weights(labels, 50, seed=7))
    assert not np.array_equal(w, stratified_weights(labels, 50, seed=8))


def test_bootstrap_interval_contains_estimate() -> None:
    y, scores = _data(n=200, k=2, seed=5, ties=False)
    labels = np.stack([y, y], axis=1)
    reps = bootstrap_aucs(labels, scores.T, stratified_weights(labels, 400, seed=0))
    low, high = percentile_interval(reps)
    point = task_aucs(labels, scores.T)
    assert np.all(low < point) and np.all(point < high)
    assert np.all(high - low < 0.3)


def _slow_structural_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) directly: psi over all positive/negative pairs, O(m n) per model."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10 = psi.mean(axis=2)  # (k, m)
    v01 = psi.mean(axis=1)  # (k, n)
    aucs = psi.mean(axis=(1, 2))
    s10 = np.cov(v10)
    s01 = np.cov(v01)
    return aucs, s10 / m + s01 / n


@pytest.mark.parametrize("ties", [False, True])
def test_delong_covariance_matches_slow_structural_components(ties: bool) -> None:
    y, scores = _data(n=160, k=3, seed=11, ties=ties)
    aucs, cov = delong_covariance(y, scores)
    slow_aucs, slow_cov = _slow_structural_components(y, scores)
    np.testing.assert_allclose(aucs, slow_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, slow_cov, rtol=1e-10, atol=1e-15)


def test_delong_test_and_interval() -> None:
    y, scores = _data(n=200, k=2, seed=2, ties=False)
    _, slow_cov = _slow_structural_components(y, scores)
    test = delong_test(y, scores[0], scores[1])
    se = np.sqrt(slow_cov[0, 0] + slow_cov[1, 1] - 2 * slow_cov[0, 1])
    assert test.difference == pytest.approx(roc_auc_score(y, scores[0]) - roc_auc_score(y, scores[1]), abs=1e-12)
    assert test.std_error == pytest.approx(se, rel=1e-10)
    assert 0.0 <= test.p_value <= 1.0
    same = delong_test(y, scores[0], scores[0])
    assert same.difference == 0.0 and same.p_value == 1.0
    low, high = delong_interval(y, scores[0])
    assert low < roc_auc_score(y, scores[0]) < high
    assert high - low == pytest.approx(2 * 1.959963984540054 * np.sqrt(slow_cov[0, 0]), rel=1e-9)
