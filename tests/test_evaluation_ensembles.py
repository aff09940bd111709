"""Ensembles: mean, rank, and the cross-fitted weighted ensemble (never scored on the folds it was fitted on)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

import chexcft.evaluation.ensembles as ensembles
from chexcft.errors import ChexcftError
from chexcft.evaluation.ensembles import cross_fit_weighted, fit_weights, mean_ensemble, rank_ensemble

TASKS = ("A", "B")


def _models(n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three models (M, n, T): a good one, a weaker one on another scale, and noise."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(TASKS))) < 0.3).astype(float)
    good = y + rng.normal(scale=0.8, size=y.shape)
    weak = 10.0 * (y + rng.normal(scale=2.0, size=y.shape))
    noise = rng.normal(size=y.shape)
    return np.stack([good, weak, noise]), y


def test_mean_and_rank_ensembles() -> None:
    scores, _ = _models()
    np.testing.assert_allclose(mean_ensemble(scores), scores.mean(axis=0))
    ranks = np.stack([rankdata(m, axis=0) for m in scores]) / scores.shape[1]
    np.testing.assert_allclose(rank_ensemble(scores), ranks.mean(axis=0))


def test_fit_weights_prefers_informative_models_and_drops_constants() -> None:
    scores, y = _models(seed=1)
    matrix = np.column_stack([scores[0, :, 0], scores[2, :, 0], np.full(y.shape[0], 0.5)])
    w = fit_weights(matrix, y[:, 0], seed=0, budget=200)
    assert w.sum() == pytest.approx(1.0)
    assert w[2] == 0.0
    assert w[0] > w[1]
    assert roc_auc_score(y[:, 0], matrix @ w) >= roc_auc_score(y[:, 0], matrix[:, :2].mean(axis=1))
    np.testing.assert_array_equal(w, fit_weights(matrix, y[:, 0], seed=0, budget=200))


def test_cross_fit_never_scores_the_studies_it_was_fitted_on(monkeypatch: pytest.MonkeyPatch) -> None:
    scores, y = _models(seed=2)
    n = y.shape[0]
    # Rank-normalised inputs are distinct per study, so each fitted row identifies its study.
    ranks = rankdata(scores, axis=1) / n
    seen: list[set[int]] = []
    real_fit = ensembles.fit_weights

    def recording_fit(fit_scores: np.ndarray, fit_y: np.ndarray, **kwargs):
        t = len(seen) // 4
        lookup = {tuple(row): i for i, row in enumerate(ranks[:, :, t].T)}
        seen.append({lookup[tuple(row)] for row in fit_scores})
        return real_fit(fit_scores, fit_y, **kwargs)

    monkeypatch.setattr(ensembles, "fit_weights", recording_fit)
    result = cross_fit_weighted(scores, y, TASKS, n_splits=4, seed=0, budget=60)
    assert len(result.folds) == len(seen) == 8
    for fold, fitted_on in zip(result.folds, seen):
        assert fitted_on == set(fold.fit_index.tolist())
        assert fitted_on.isdisjoint(fold.eval_index.tolist())
        assert len(fitted_on) + fold.eval_index.size == n
    for t, task in enumerate(TASKS):
        task_folds = [f for f in result.folds if f.task == task]
        evaluated = np.concatenate([f.eval_index for f in task_folds])
        assert sorted(evaluated.tolist()) == list(range(n))
        rebuilt = np.full(n, np.nan)
        for f in task_folds:
            rebuilt[f.eval_index] = ranks[:, f.eval_index, t].T @ f.weights
            assert y[f.eval_index, t].sum() in (np.floor(y[:, t].sum() / 4), np.ceil(y[:, t].sum() / 4))
        np.testing.assert_allclose(result.scores[:, t], rebuilt)


def test_cross_fit_is_seeded_and_rejects_too_few_positives() -> None:
    scores, y = _models(n=120, seed=3)
    a = cross_fit_weighted(scores, y, TASKS, n_splits=3, seed=5, budget=40)
    b = cross_fit_weighted(scores, y, TASKS, n_splits=3, seed=5, budget=40)
    np.testing.assert_array_equal(a.scores, b.scores)
    y_rare = y.copy()
    y_rare[:, 1] = 0
    y_rare[:2, 1] = 1
    with pytest.raises(ChexcftError, match="cannot cross-fit weights for B with 3 folds"):
        cross_fit_weighted(scores, y_rare, TASKS, n_splits=3, seed=0, budget=20)
