"""Per-category Platt calibration of logits, expected calibration error and Brier score.

Stored as RUN_DIR/cft/calibration.json: {"method": "platt", "observations": [...], "a": [...], "b": [...]},
probability = sigmoid(a * logit + b). A category that cannot be fitted (one class only, or a non-positive slope) keeps a=1, b=0,
so calibration never changes the ranking (AUC).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from chexcft.errors import InvalidRunError
from chexcft.fileio import atomic_write_json, read_json


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _negative_log_likelihood(design: np.ndarray, y: np.ndarray, theta: np.ndarray, ridge: np.ndarray, prior: np.ndarray) -> float:
    z = design @ theta
    return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(ridge * (theta - prior) ** 2))


def fit_platt_1d(logits: np.ndarray, y: np.ndarray, iterations: int = 100,
                 ridge: float | tuple[float, float] = 1e-6) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of p = sigmoid(a * logit + b): damped Newton; a ridge (one for both, or one each
    for a and b) shrinks them toward the identity map (1, 0) and keeps them finite."""
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    prior = np.array([1.0, 0.0])  # shrink towards the identity map, not towards zero
    ridge = np.broadcast_to(np.asarray(ridge, dtype=np.float64), (2,))
    theta = prior.copy()
    current = _negative_log_likelihood(design, y, theta, ridge, prior)
    for _ in range(iterations):
        p = _sigmoid(design @ theta)
        gradient = design.T @ (p - y) + ridge * (theta - prior)
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(ridge)
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6:
            candidate = theta - scale * step
            value = _negative_log_likelihood(design, y, candidate, ridge, prior)
            if value <= current:
                break
            scale *= 0.5
        else:
            break
        theta, previous, current = candidate, current, value
        if np.abs(scale * step).max() < 1e-10 or previous - current < 1e-12 * max(1.0, abs(current)):
            break
    return float(theta[0]), float(theta[1])


@dataclass
class PlattCalibration:
    """Per-category Platt scaling: probability_c = sigmoid(a_c * logit_c + b_c)."""

    observations: tuple[str, ...] = ()
    a: np.ndarray = field(default_factory=lambda: np.ones(0))
    b: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def fit(self, logits: np.ndarray, y: np.ndarray, observations: Sequence[str] | None = None) -> PlattCalibration:
        """Fit (a, b) per category on known labels (y 1/0, NaN unknown); one-class categories stay identity."""
        logits = np.atleast_2d(np.asarray(logits, dtype=np.float64))
        y = np.asarray(y, dtype=np.float64).reshape(logits.shape)
        n_categories = logits.shape[1]
        self.observations = tuple(observations) if observations is not None else tuple(f"category_{c}" for c in range(n_categories))
        self.a, self.b = np.ones(n_categories), np.zeros(n_categories)
        for c in range(n_categories):
            known = (y[:, c] == 0) | (y[:, c] == 1)
            if known.any() and 0 < y[known, c].sum() < known.sum():
                a, b = fit_platt_1d(logits[known, c], y[known, c])
                if a > 0:  # a non-positive slope would reverse the ranking: keep the identity map instead
                    self.a[c], self.b[c] = a, b
        return self

    def transform(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (n, C) from logits (n, C)."""
        return _sigmoid(np.asarray(logits, dtype=np.float64) * self.a + self.b)

    def to_dict(self) -> dict:
        """The calibration.json content."""
        return {"method": "platt", "observations": list(self.observations), "a": self.a.tolist(), "b": self.b.tolist()}

    @classmethod
    def from_dict(cls, data: dict, source: str = "calibration") -> PlattCalibration:
        """Read the calibration.json content (InvalidRunError naming `source` if malformed)."""
        try:
            if data["method"] != "platt":
                raise ValueError(f"method {data['method']!r} is not 'platt'")
            observations = tuple(str(o) for o in data["observations"])
            a = np.asarray(data["a"], dtype=np.float64)
            b = np.asarray(data["b"], dtype=np.float64)
            if not (len(observations) == a.shape[0] == b.shape[0]) or a.ndim != 1:
                raise ValueError("observations, a and b differ in length")
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRunError(f"{source}: invalid calibration ({exc})") from None
        return cls(observations, a, b)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write calibration.json atomically."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PlattCalibration:
        """Read calibration.json."""
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            raise InvalidRunError(f"{path}: cannot read calibration ({exc})") from None
        return cls.from_dict(data, str(path))


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, bins: int = 15) -> float:
    """ECE with equal-width bins: sum over bins of (bin share) x |mean predicted - observed rate|."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if p.size == 0:
        return float("nan")
    index = np.minimum((p * bins).astype(int), bins - 1)
    gap = np.abs(np.bincount(index, weights=p, minlength=bins) - np.bincount(index, weights=y, minlength=bins))
    return float(gap.sum() / p.size)


def known_pairs(probabilities: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (probability, label) pairs whose label is 0 or 1 and whose probability is finite, as float64."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    keep = np.isin(y, (0.0, 1.0)) & np.isfinite(p)
    return p[keep], y[keep]


def reliability_curve(probabilities: np.ndarray, y: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Equal-width bins of predicted probability (known labels only): mean predicted, observed rate, count."""
    p, y = known_pairs(probabilities, y)
    index = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    keep = count > 0
    predicted = np.bincount(index, weights=p, minlength=bins)[keep] / count[keep]
    observed = np.bincount(index, weights=y, minlength=bins)[keep] / count[keep]
    return pd.DataFrame({"predicted": predicted, "observed": observed, "count": count[keep]})


def brier_score(probabilities: np.ndarray, y: np.ndarray) -> float:
    """Mean squared difference between predicted probability and 0/1 outcome."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def calibration_table(logits: np.ndarray, y: np.ndarray, calibration: PlattCalibration, bins: int = 15) -> list[dict]:
    """Per category: ECE and Brier before (sigmoid of logits) and after calibration, on known labels."""
    logits = np.atleast_2d(np.asarray(logits, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64).reshape(logits.shape)
    after = calibration.transform(logits)
    before = _sigmoid(logits)
    rows = []
    for c, name in enumerate(calibration.observations):
        known = (y[:, c] == 0) | (y[:, c] == 1)
        rows.append(
            {
                "observation": name,
                "n": int(known.sum()),
                "a": float(calibration.a[c]),
                "b": float(calibration.b[c]),
                "ece_before": expected_calibration_error(before[known, c], y[known, c], bins),
                "ece_after": expected_calibration_error(after[known, c], y[known, c], bins),
                "brier_before": brier_score(before[known, c], y[known, c]),
                "brier_after": brier_score(after[known, c], y[known, c]),
            }
        )
    return rows
