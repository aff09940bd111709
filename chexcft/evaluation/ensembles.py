"""Ensembles of study-level scores: mean, mean logit, rank-mean, and per-task weights cross-fitted with Nevergrad.

`mean-logit` is the rule an ensemble directory predicts with by default (chexcft.combination) when the files
hold the members' probabilities before calibration (`chexcft predict --uncalibrated`); `mean` of calibrated
member files lets each member's calibration re-weight it. `rank` ranks within the evaluated studies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nevergrad as ng
import numpy as np
from scipy.stats import rankdata
from sklearn.model_selection import StratifiedKFold

from chexcft.errors import ChexcftError
from chexcft.evaluation.metrics import population_auc, roc_auc, undefined_auc_reason

ENSEMBLES: tuple[str, ...] = ("mean", "mean-logit", "rank", "weighted")
SIGMA = 0.5  # mutation scale of the free parameters (softmax logits) around the uniform mix


def mean_ensemble(scores: np.ndarray) -> np.ndarray:
    """Plain mean of the models' scores: (M, n, T) -> (n, T)."""
    return np.asarray(scores, dtype=np.float64).mean(axis=0)


def mean_logit_ensemble(scores: np.ndarray) -> np.ndarray:
    """Mean of the models' logits, logit(p) with p clipped to [1e-7, 1 - 1e-7]: (M, n, T) -> (n, T) (logit scale)."""
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1.0 - 1e-7)
    return (np.log(p) - np.log1p(-p)).mean(axis=0)


def rank_ensemble(scores: np.ndarray) -> np.ndarray:
    """Mean over models of per-task rank-normalised scores (average rank / n, in (0, 1]): (M, n, T) -> (n, T)."""
    scores = np.asarray(scores, dtype=np.float64)
    return (rankdata(scores, axis=1) / scores.shape[1]).mean(axis=0)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def fit_weights(
    scores: np.ndarray, y: np.ndarray, *, seed: int = 0, budget: int = 300, optimizer: str = "TwoPointsDE",
    batch: int = 20,
) -> np.ndarray:
    """Simplex weights (M,) maximising the AUC of scores (n, M) @ w, searched with Nevergrad from the uniform mix.

    Models constant on these studies get weight 0: they only rescale the mix, which would make the
    scores of different folds incomparable.
    """
    active = np.flatnonzero(np.ptp(scores, axis=0) > 0)
    full = np.zeros(scores.shape[1])
    if active.size == 0:
        return np.full(scores.shape[1], 1.0 / scores.shape[1])
    full[active] = _fit_simplex(scores[:, active], y, seed=seed, budget=budget, optimizer=optimizer, batch=batch)
    return full


def _fit_simplex(
    scores: np.ndarray, y: np.ndarray, *, seed: int, budget: int, optimizer: str, batch: int
) -> np.ndarray:
    n_models = scores.shape[1]
    uniform = np.full(n_models, 1.0 / n_models)
    if n_models == 1 or undefined_auc_reason(y) is not None:
        return uniform
    parametrization = ng.p.Array(init=np.zeros(n_models)).set_mutation(sigma=SIGMA)
    parametrization.random_state = np.random.RandomState(seed)
    search = ng.optimizers.registry[optimizer](parametrization=parametrization, budget=budget, num_workers=batch)
    best_w, best_auc = uniform, roc_auc(y, scores @ uniform)
    while search.num_ask < budget:
        candidates = [search.ask() for _ in range(min(batch, budget - search.num_ask))]
        weights = _softmax(np.stack([c.value for c in candidates]))
        aucs = population_auc(weights @ scores.T, y)
        for candidate, auc in zip(candidates, aucs):
            search.tell(candidate, -float(auc))
        top = int(np.argmax(aucs))
        if aucs[top] > best_auc:
            best_w, best_auc = weights[top], float(aucs[top])
    return best_w


@dataclass
class FoldFit:
    """One fold of one task: studies the weights were fitted on, studies they scored, and the weights."""

    task: str
    fold: int
    fit_index: np.ndarray
    eval_index: np.ndarray
    weights: np.ndarray
    fit_auc: float


@dataclass
class CrossFit:
    """Out-of-fold weighted-ensemble scores (n, T) and how they were made."""

    scores: np.ndarray
    folds: list[FoldFit] = field(default_factory=list)
    n_splits: int = 5
    seed: int = 0
    optimizer: str = "TwoPointsDE"
    budget: int = 300


def cross_fit_weighted(
    scores: np.ndarray, y: np.ndarray, tasks: tuple[str, ...], *, n_splits: int = 5, seed: int = 0,
    budget: int = 300, optimizer: str = "TwoPointsDE",
) -> CrossFit:
    """Per-task weights fitted on k-1 stratified folds score the held-out fold; scores (M, n, T) -> out-of-fold (n, T).

    Each model's scores are first rank-normalised over all studies (no labels used), so that the
    folds' mixes are on one scale and their out-of-fold scores can be pooled into one AUC.
    """
    scores = np.asarray(scores, dtype=np.float64)
    scores = rankdata(scores, axis=1) / scores.shape[1]
    n = scores.shape[1]
    out = np.full((n, len(tasks)), np.nan)
    result = CrossFit(out, n_splits=n_splits, seed=seed, optimizer=optimizer, budget=budget)
    for t, task in enumerate(tasks):
        labels = y[:, t]
        if undefined_auc_reason(labels) is not None:
            out[:, t] = scores[:, :, t].mean(axis=0)
            continue
        smallest = int(min((labels == 1).sum(), (labels == 0).sum()))
        if smallest < n_splits:
            raise ChexcftError(
                f"cannot cross-fit weights for {task} with {n_splits} folds: its smaller class has {smallest} studies"
            )
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        for fold, (fit_index, eval_index) in enumerate(splitter.split(np.zeros(n), labels)):
            fit_scores = scores[:, fit_index, t].T
            weights = fit_weights(fit_scores, labels[fit_index], seed=seed + 1000 * t + fold, budget=budget,
                                  optimizer=optimizer)
            out[eval_index, t] = scores[:, eval_index, t].T @ weights
            result.folds.append(
                FoldFit(task, fold, fit_index, eval_index, weights, roc_auc(labels[fit_index], fit_scores @ weights))
            )
    return result
