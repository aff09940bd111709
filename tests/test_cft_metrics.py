"""The vectorised population metrics equal scikit-learn's, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from chexcft.cft.metrics import auc_split, metric_rows, population_ap, population_auc


@pytest.mark.parametrize("seed", range(6))
def test_population_auc_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    y = rng.random(n) < rng.uniform(0.05, 0.95)
    y[:2] = [True, False]
    scores = rng.integers(0, 6, size=(9, n)).astype(np.float32)  # integer scores: many ties
    scores[0] = 3.0  # a constant candidate: AUC exactly 0.5
    expected = [roc_auc_score(y, s) for s in scores]
    np.testing.assert_allclose(population_auc(scores, y), expected, rtol=0, atol=1e-12)
    assert population_auc(scores, y)[0] == 0.5


@pytest.mark.parametrize("seed", range(3))
def test_population_auc_equals_sklearn_continuous_and_both_class_orders(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    n = 3000
    for rate in (0.1, 0.9):  # smaller class negative, then positive: both code paths
        y = rng.random(n) < rate
        scores = (rng.standard_normal((5, n)) + y).astype(np.float32)
        expected = [roc_auc_score(y, s) for s in scores]
        np.testing.assert_allclose(population_auc(scores, y), expected, rtol=0, atol=1e-12)


def test_auc_split_large_population_runs_threaded_and_matches() -> None:
    rng = np.random.default_rng(7)
    neg = rng.standard_normal((40, 4000)).astype(np.float32)
    pos = (rng.standard_normal((40, 7000)) + 0.3).astype(np.float32)
    pos[:, :50] = neg[:, :50]  # exact cross-class ties
    y = np.r_[np.zeros(4000, bool), np.ones(7000, bool)]
    expected = [roc_auc_score(y, np.r_[neg[j], pos[j]]) for j in range(40)]
    np.testing.assert_allclose(auc_split(neg, pos), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_population_ap_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    y = rng.random(n) < 0.3
    y[:2] = [True, False]
    scores = rng.integers(0, 4, size=(6, n)).astype(np.float32)
    expected = [average_precision_score(y, s) for s in scores]
    np.testing.assert_allclose(population_ap(scores, y), expected, rtol=0, atol=1e-12)


def test_metric_rows_uses_negatives_first_layout() -> None:
    scores = np.array([[0.1, 0.2, 0.3, 0.9], [0.9, 0.3, 0.2, 0.1]], dtype=np.float32)
    np.testing.assert_allclose(metric_rows("auc", scores, n_neg=2), [1.0, 0.0])
    with pytest.raises(ValueError, match="unknown metric"):
        metric_rows("f1", scores, n_neg=2)


def test_population_auc_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="do not match"):
        population_auc(np.zeros((3, 5)), np.zeros(4))


def test_device_path_auc_and_ap_match_sklearn_on_cpu_tensors() -> None:
    """The accelerator path (auc_torch, tensor ap_rows) is device-agnostic: checked here on CPU tensors, with ties."""
    import torch
    from sklearn.metrics import average_precision_score, roc_auc_score

    from chexcft.cft.metrics import auc_torch, ap_rows

    rng = np.random.default_rng(3)
    scores = np.round(rng.standard_normal((5, 300)), 1)
    y = np.zeros(300, dtype=bool)
    y[120:] = True
    got = auc_torch(torch.from_numpy(scores), 120).numpy()
    np.testing.assert_allclose(got, [roc_auc_score(y, s) for s in scores], atol=1e-12)
    ap = ap_rows(torch.from_numpy(scores), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(ap, [average_precision_score(y, s) for s in scores], atol=1e-12)
