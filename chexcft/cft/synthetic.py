"""A synthetic CFT problem with a known answer, for tests and benchmarks.

Latent true labels come from (real or generated) CheXpert label rows; features are built from the latent
labels; the head is trained on U-Ones pseudo-labels whose errors are systematic: an image with an uncertain
mention of category c looks like its related finding r(c) (that is why the report hedged) while c itself
is usually absent, so the U-Ones head learns "r(c) means c". Fine-tuning on known labels only can undo that.

With `ambiguity` set (`make_model(..., ambiguity=0.1)`), the pseudo-labels' errors are also placed where a
reader's would be: uncertain mentions and unmentioned true findings sit near the decision boundary (their
category's pattern at strength 0.5 +- ambiguity, true ones above, false ones below, where explicit labels
have 1 or 0), and an unmentioned true finding is `related_blank_factor` times as likely on an image whose
related finding is present. Errors then depend on the image, not only on its class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticFeatures:
    """Features and labels of one synthetic split."""

    features: np.ndarray  # (n, d) float32
    latent: np.ndarray  # (n, C) float32 0/1: the truth
    raw: np.ndarray  # (n, C) float32 1/0/-1/NaN: what the "reports" say


@dataclass
class SyntheticModel:
    """The generative model shared by all splits: category patterns and the related-finding map."""

    patterns: np.ndarray  # (C, d)
    nuisance: np.ndarray  # (q, d)
    related: np.ndarray  # (C,) index of each category's related finding
    uncertain_true_rate: float
    blank_true_rate: float
    look_strength: float
    ambiguity: float | None = None  # None: every image shows its latent labels at full strength
    related_blank_factor: float = 1.0


def make_model(n_categories: int, dim: int, seed: int, signal: float = 2.0, look_strength: float = 1.0,
               ambiguity: float | None = None, related_blank_factor: float = 1.0) -> SyntheticModel:
    """Random category patterns (each with projected signal-to-noise `signal`) and a related-finding cycle."""
    rng = np.random.default_rng(seed)
    patterns = rng.standard_normal((n_categories, dim)) * (signal / np.sqrt(dim))
    nuisance = rng.standard_normal((8, dim)) * (1.5 / np.sqrt(dim)) * 4
    related = np.roll(np.arange(n_categories), -1)
    return SyntheticModel(patterns.astype(np.float32), nuisance.astype(np.float32), related, 0.2, 0.03, look_strength,
                          ambiguity, related_blank_factor)


def latent_from_raw(raw: np.ndarray, model: SyntheticModel, rng: np.random.Generator) -> np.ndarray:
    """Truth behind report labels: explicit labels are right; uncertain and blank are true at low rates (a blank
    `related_blank_factor` times as often when the related finding is explicitly positive)."""
    u = rng.random(raw.shape)
    blank_rate = model.blank_true_rate * np.where(raw[:, model.related] == 1, model.related_blank_factor, 1.0)
    latent = np.where(raw == 1, 1.0, 0.0)
    latent = np.where(raw == -1, (u < model.uncertain_true_rate).astype(float), latent)
    latent = np.where(np.isnan(raw), (u < blank_rate).astype(float), latent)
    return latent.astype(np.float32)


def strengths(raw: np.ndarray, latent: np.ndarray, ambiguity: float | None) -> np.ndarray:
    """How strongly each image shows each category: its latent label, or 0.5 +- ambiguity for uncertain mentions
    and unmentioned true findings (near the boundary) when `ambiguity` is set."""
    if ambiguity is None:
        return latent
    near = (raw == -1) | (np.isnan(raw) & (latent == 1))
    return np.where(near, 0.5 + ambiguity * (2 * latent - 1), latent).astype(np.float32)


def make_features(raw: np.ndarray, model: SyntheticModel, seed: int, chunk: int = 8192) -> SyntheticFeatures:
    """Features (n, d) float32 from latent labels, related-finding looks for uncertain mentions, nuisance and noise."""
    rng = np.random.default_rng(seed)
    raw = np.asarray(raw, dtype=np.float32)
    latent = latent_from_raw(raw, model, rng)
    looks = np.zeros_like(latent)
    uncertain = raw == -1
    looks[:, model.related] = np.maximum(looks[:, model.related], uncertain * model.look_strength)
    shown = strengths(raw, latent, model.ambiguity)
    n, dim = raw.shape[0], model.patterns.shape[1]
    features = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = (shown[start:stop] + looks[start:stop]) @ model.patterns
        block += rng.standard_normal((stop - start, model.nuisance.shape[0]), dtype=np.float32) @ model.nuisance
        block += rng.standard_normal((stop - start, dim), dtype=np.float32)
        features[start:stop] = block
    return SyntheticFeatures(features, latent, raw)


def u_ones(raw: np.ndarray) -> np.ndarray:
    """U-Ones pseudo-labels with blanks as negatives: -1 -> 1, NaN -> 0."""
    return np.where(np.isnan(raw), 0.0, np.where(raw == -1, 1.0, raw)).astype(np.float32)


def known_labels(raw: np.ndarray, blank_negative: bool = False) -> np.ndarray:
    """Labels for CFT: explicit 1/0 kept, uncertain -> NaN, blank -> NaN (or 0 when blank_negative)."""
    out = np.where(raw == -1, np.nan, raw).astype(np.float32)
    if blank_negative:
        out = np.where(np.isnan(raw), 0.0, out).astype(np.float32)
    return out


def fit_head(features: np.ndarray, targets: np.ndarray, seed: int = 0, max_rows: int = 20_000, ridge: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """A logistic head (C, d), (C,) for 0/1 targets: ridge direction on a subsample, then a 1-D logistic fit."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(features.shape[0], size=min(max_rows, features.shape[0]), replace=False)
    z = features[rows].astype(np.float64)
    t = targets[rows].astype(np.float64)
    mean_z, mean_t = z.mean(axis=0), t.mean(axis=0)
    zc = z - mean_z
    directions = np.linalg.solve(zc.T @ zc + ridge * np.eye(z.shape[1]), zc.T @ (t - mean_t))  # (d, C)
    weights, biases = [], []
    for c in range(targets.shape[1]):
        score = zc @ directions[:, c]
        a, b = _logistic_1d(score, t[:, c])
        weights.append(a * directions[:, c])
        biases.append(b - a * mean_z @ directions[:, c])
    return np.asarray(weights, dtype=np.float32), np.asarray(biases, dtype=np.float32)


def _logistic_1d(x: np.ndarray, y: np.ndarray, iterations: int = 50) -> tuple[float, float]:
    """Maximum-likelihood (a, b) of p = sigmoid(a x + b) by Newton's method (tiny ridge for separable data)."""
    theta = np.zeros(2)
    design = np.stack([x, np.ones_like(x)], axis=1)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(design @ theta)))
        gradient = design.T @ (p - y) + 1e-6 * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + 1e-6 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])
