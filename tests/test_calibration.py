"""Platt calibration: AUC unchanged, ECE lowered on a miscalibrated head, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from chexcft.calibration import (
    PlattCalibration,
    brier_score,
    calibration_table,
    expected_calibration_error,
    fit_platt_1d,
)
from chexcft.errors import InvalidRunError


def _miscalibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits that rank well but are overconfident and shifted (true logit = 0.4 * logit - 1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, size=(n, 2))
    p_true = 1 / (1 + np.exp(-(0.4 * logits - 1.0)))
    y = (rng.random((n, 2)) < p_true).astype(float)
    return logits, y


def test_platt_lowers_ece_and_brier_and_keeps_auc() -> None:
    logits, y = _miscalibrated(4000, 0)
    test_logits, test_y = _miscalibrated(4000, 1)
    calibration = PlattCalibration().fit(logits, y, observations=["A", "B"])
    np.testing.assert_allclose(calibration.a, 0.4, atol=0.05)
    np.testing.assert_allclose(calibration.b, -1.0, atol=0.15)
    before = 1 / (1 + np.exp(-test_logits))
    after = calibration.transform(test_logits)
    for c in range(2):
        assert roc_auc_score(test_y[:, c], after[:, c]) == roc_auc_score(test_y[:, c], test_logits[:, c])
        assert expected_calibration_error(after[:, c], test_y[:, c]) < 0.5 * expected_calibration_error(before[:, c], test_y[:, c])
        assert brier_score(after[:, c], test_y[:, c]) < brier_score(before[:, c], test_y[:, c])
    rows = calibration_table(test_logits, test_y, calibration)
    assert [r["observation"] for r in rows] == ["A", "B"]
    assert all(r["ece_after"] < r["ece_before"] for r in rows)


def test_fit_platt_matches_sklearn_unpenalised_logistic_regression() -> None:
    logits, y = _miscalibrated(2000, 2)
    a, b = fit_platt_1d(logits[:, 0], y[:, 0])
    reference = LogisticRegression(C=1e8, max_iter=1000).fit(logits[:, :1], y[:, 0])
    assert a == pytest.approx(reference.coef_[0, 0], rel=1e-3)
    assert b == pytest.approx(reference.intercept_[0], rel=1e-3, abs=1e-3)


def test_unknown_labels_ignored_and_one_class_category_left_identity() -> None:
    logits, y = _miscalibrated(1000, 3)
    y[::3, 0] = np.nan
    y[:, 1] = np.where(np.isnan(y[:, 1]), np.nan, 1.0)
    calibration = PlattCalibration().fit(logits, y)
    known = ~np.isnan(y[:, 0])
    expected = fit_platt_1d(logits[known, 0], y[known, 0])
    assert (calibration.a[0], calibration.b[0]) == pytest.approx(expected)
    assert (calibration.a[1], calibration.b[1]) == (1.0, 0.0)


def test_reversed_ranking_is_never_introduced() -> None:
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(500, 1))
    y = (logits[:, 0] < 0).astype(float)[:, None]  # the head is anti-correlated with the truth
    calibration = PlattCalibration().fit(logits, y)
    assert calibration.a[0] == 1.0 and calibration.b[0] == 0.0


def test_ece_of_perfectly_calibrated_bins_is_zero_and_known_value() -> None:
    p = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    assert expected_calibration_error(p, y) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0.9, 0.9]), np.array([0, 0])) == pytest.approx(0.9)


def test_json_round_trip_and_contract_format(tmp_path) -> None:
    logits, y = _miscalibrated(500, 5)
    calibration = PlattCalibration().fit(logits, y, observations=["Edema", "Atelectasis"])
    path = tmp_path / "cft" / "calibration.json"
    calibration.save(path)
    data = json.loads(path.read_text())
    assert data == {"method": "platt", "observations": ["Edema", "Atelectasis"], "a": list(calibration.a), "b": list(calibration.b)}
    loaded = PlattCalibration.load(path)
    np.testing.assert_allclose(loaded.transform(logits), calibration.transform(logits))


def test_invalid_calibration_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"method": "platt", "observations": ["A"], "a": [1.0, 2.0], "b": [0.0]}))
    with pytest.raises(InvalidRunError, match="calibration.json"):
        PlattCalibration.load(path)
