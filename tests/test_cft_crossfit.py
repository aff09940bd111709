"""chexcft.cft.crossfit: patient folds, the patient-cluster bootstrap, and cross-fitted CFT on a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from chexcft.cft.crossfit import cluster_weights, cross_fit_cft, patient_folds
from chexcft.errors import ChexcftError
from chexcft.evaluation.metrics import MIN_CLASS_COUNT, is_reliable


def test_patient_folds_keep_each_patient_in_one_fold() -> None:
    groups = [f"p{i // 3}" for i in range(90)] + ["lonely"]
    folds = patient_folds(groups, 4, seed=1)
    for patient in set(groups):
        assert len(set(folds[[g == patient for g in groups]])) == 1
    counts = np.bincount(folds)
    assert counts.size == 4 and counts.max() - counts.min() <= 3  # patients dealt evenly
    assert (patient_folds(groups, 4, seed=1) == folds).all() and not (patient_folds(groups, 4, seed=2) == folds).all()
    with pytest.raises(ChexcftError, match="2 <= K"):
        patient_folds(["a", "b"], 3)


def test_cluster_bootstrap_resamples_whole_patients() -> None:
    groups = ["a", "a", "b", "c", "c", "c"]
    weights = cluster_weights(groups, 200, seed=0)
    assert weights.shape == (200, 6)
    assert (weights[:, 0] == weights[:, 1]).all() and (weights[:, 3] == weights[:, 5]).all()
    patients = weights[:, [0, 2, 3]]
    assert (patients.sum(axis=1) == 3).all()  # three patients drawn per replicate


def test_is_reliable_needs_enough_of_both_classes() -> None:
    assert MIN_CLASS_COUNT == 10
    assert is_reliable(10, 10) and not is_reliable(9, 500) and not is_reliable(500, 9) and is_reliable(2, 2, minimum=2)


def _problem(seed: int, n: int = 600, d: int = 16):
    """A trained head that points the wrong way on category 0 and the right way on category 1."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.3).astype(np.float64)
    direction = np.zeros((2, d))
    direction[0, 0] = direction[1, 1] = 1.0
    x = rng.normal(size=(n, d)) + 1.5 * (y @ direction)
    weight = np.zeros((2, d), dtype=np.float32)
    weight[0, 2] = 1.0  # pure noise feature: the trained row is useless for category 0
    weight[1, 1] = 1.0  # already the best row for category 1
    return x.astype(np.float32), y, weight, np.zeros(2, dtype=np.float32)


def test_cross_fit_measures_a_real_gain_and_no_gain_where_there_is_none() -> None:
    x, y, weight, bias = _problem(0)
    xv, yv, _, _ = _problem(1, n=300)
    known = y.copy()
    known[np.random.default_rng(2).random(y.shape) < 0.5] = np.nan  # CFT sees half of the labels
    groups = [f"patient{i // 2}" for i in range(len(y))]
    result = cross_fit_cft(x, weight, bias, known, y, groups, xv, yv, observations=("A", "B"), k=3, seed=0,
                           n_boot=300, tuner_params={"method": "bp", "lr": 0.05})
    table = result.table.set_index("observation")
    assert (result.folds >= 0).all() and set(result.folds) == {0, 1, 2}
    a, b = table.loc["A"], table.loc["B"]
    assert a["auc_before"] < 0.6 and a["gain"] > 0.15 and a["gain_ci_low"] > 0.05 and a["folds_replaced"] == 3
    assert a["gain_ci_low"] <= a["gain"] <= a["gain_ci_high"]
    assert abs(b["gain"]) < 0.02  # nothing to gain: the gate keeps the trained row or a close one
    # with too few positives a finding is flagged and gets no interval
    few = y.copy()
    few[:, 1] = 0.0
    few[:5, 1] = 1.0
    flagged = cross_fit_cft(x, weight, bias, known, few, groups, xv, yv, observations=("A", "B"), k=3, seed=0,
                            n_boot=100, tuner_params={"method": "bp", "lr": 0.05}).table.set_index("observation").loc["B"]
    assert not flagged["reliable"] and np.isnan(flagged["gain_ci_low"])
