"""CategoryWiseFineTuner on a synthetic problem with a known answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from chexcft.cft import CategoryWiseFineTuner
from chexcft.cft import synthetic
from chexcft.errors import ChexcftError

C, D = 3, 16
NAMES = ("A", "B", "C")


def _raw_labels(n: int, seed: int) -> np.ndarray:
    """Report labels with many uncertain mentions: positive, negative, uncertain, blank."""
    rng = np.random.default_rng(seed)
    return rng.choice(np.array([1.0, 0.0, -1.0, np.nan], dtype=np.float32), size=(n, C), p=[0.2, 0.35, 0.3, 0.15])


@pytest.fixture(scope="module")
def problem():
    """Train (report labels), valid and test (true labels), and a head trained on U-Ones pseudo-labels."""
    model = synthetic.make_model(C, D, seed=1, signal=2.5, look_strength=1.5)
    train = synthetic.make_features(_raw_labels(2500, 2), model, seed=3)
    valid = synthetic.make_features(_raw_labels(600, 4), model, seed=5)
    test = synthetic.make_features(_raw_labels(3000, 6), model, seed=7)
    W, b = synthetic.fit_head(train.features, synthetic.u_ones(train.raw))
    return model, train, valid, test, W, b


@pytest.fixture(scope="module")
def fitted(problem) -> dict[str, CategoryWiseFineTuner]:
    """One fit per method, shared by the tests that only read results."""
    _, train, valid, _, W, b = problem
    return {method: _fit(method, W, b, train, valid, **({"max_steps": 60} if method == "both" else {})) for method in ("bp", "ga", "both")}


def _heldout_auc(W: np.ndarray, b: np.ndarray, test) -> np.ndarray:
    logits = test.features @ W.T + b
    return np.array([roc_auc_score(test.latent[:, c], logits[:, c]) for c in range(C)])


def _fit(method: str, W, b, train, valid, **kwargs) -> CategoryWiseFineTuner:
    params = dict(method=method, max_steps=150, patience=25, lr=1e-2, population=20, seed=0, observations=NAMES)
    params.update(kwargs)
    return CategoryWiseFineTuner(**params).fit(
        W, b, train.features, synthetic.known_labels(train.raw), valid.features, valid.latent
    )


@pytest.mark.parametrize("method", ["bp", "ga"])
def test_cft_raises_heldout_auc_for_every_category(problem, fitted, method: str) -> None:
    _, train, valid, test, W, b = problem
    before = _heldout_auc(W, b, test)
    ft = fitted[method]
    after = _heldout_auc(ft.weight_, ft.bias_, test)
    assert (after > before + 0.005).all(), (before, after)
    report = ft.report_
    assert list(report["observation"]) == list(NAMES)
    assert (report["method_kept"] == method).all()
    assert (report["valid_after"] > report["valid_before"]).all()
    assert (report[f"steps_{method}"] > 0).all()


def test_ga_with_evolution_strategy_family_also_improves(problem) -> None:
    _, train, valid, test, W, b = problem
    before = _heldout_auc(W, b, test)
    ft = _fit("ga", W, b, train, valid, optimizer="RecMixES", max_steps=40)
    after = _heldout_auc(ft.weight_, ft.bias_, test)
    assert (after > before).all(), (before, after)


def test_ga_writes_the_optimised_bias(problem, fitted) -> None:
    _, train, valid, _, W, b = problem
    ft = fitted["ga"]
    changed = ft.report_["method_kept"] == "ga"
    assert changed.all()
    # the bias is a coordinate of the search: it moves with the kept candidate and is written to bias_
    assert not np.allclose(ft.bias_, b)
    np.testing.assert_allclose(ft.report_["bias_after"], ft.bias_, rtol=1e-6)
    # the written (weight, bias) is the selected head: recomputing its validation AUC gives the report's
    logits = valid.features @ ft.weight_.T + ft.bias_
    recomputed = [roc_auc_score(valid.latent[:, c], logits[:, c]) for c in range(C)]
    np.testing.assert_allclose(recomputed, ft.report_["valid_after"], atol=1e-6)


def test_both_chains_ga_after_bp_and_reports_each_gain(fitted) -> None:
    """With method="both" GA refines BP's row: the report separates BP's validation gain from GA's own."""
    report = fitted["both"].report_
    assert (report["early_stopping"] == "train-holdout").all()
    for _, row in report.iterrows():
        if row["method_kept"] == "original":
            continue
        chosen = "ga" if row["method_kept"] in ("bp+ga", "ga") else "bp"
        assert row["valid_after"] == pytest.approx(row[f"valid_{chosen}"])
        assert row["gain_bp"] == pytest.approx(row["valid_bp"] - row["valid_before"])
        if row["method_kept"] == "bp+ga":
            assert row["gain_ga"] == pytest.approx(row["valid_ga"] - row["valid_bp"])


def test_authors_ga_operators_match_their_rates() -> None:
    """Roulette probabilities proportional to fitness; crossover 0.2 from the first parent; mutation 0.5 of U[-1e-3, 1e-3]."""
    import torch

    from chexcft.cft.ga import authors_offspring

    rng = np.random.default_rng(0)
    fitness = np.linspace(0.5, 1.0, 10)
    population = torch.arange(10, dtype=torch.float32)[:, None].repeat(1, 200) * 10.0  # parents distinguishable
    counts, from_first, mutated = np.zeros(10), [], []
    for _ in range(300):
        out = authors_offspring(population, fitness, rng)
        np.testing.assert_allclose(out.probabilities, fitness / fitness.sum())
        assert torch.equal(out.population[0], population[9])  # 1 elite: the fittest, unchanged
        np.add.at(counts, out.parents.ravel(), 1)
        from_first.append(out.from_first.float().mean().item())
        mutated.append(out.mutated.mean())
        noise = out.population[1:] - torch.where(out.from_first, population[out.parents[:, 0]], population[out.parents[:, 1]])
        assert float(noise.abs().max()) <= 1e-3 + 1e-6
        assert bool((noise[~torch.from_numpy(out.mutated)] == 0).all())
    np.testing.assert_allclose(counts / counts.sum(), fitness / fitness.sum(), atol=0.01)
    assert np.mean(from_first) == pytest.approx(0.2, abs=0.005)
    assert np.mean(mutated) == pytest.approx(0.5, abs=0.02)


def test_authors_preset_reproduces_their_settings() -> None:
    ft = CategoryWiseFineTuner.authors()
    assert (ft.optimizer, ft.loss, ft.lr, ft.max_steps, ft.patience, ft.population) == ("authors", "asl", 1e-4, 5000, 300, 50)
    assert (ft.early_stopping, ft.selection_alpha, ft.time_budget, ft._solver()) == ("valid", None, None, "adam")
    assert CategoryWiseFineTuner.preset("authors", max_steps=7).max_steps == 7


def _bp_moves(seed: int, sizes: tuple[int, ...], **options) -> list[float]:
    """How far penalised BP moves a misled trained row, fitted on the first n known labels of one fixed problem."""
    rng = np.random.default_rng(seed)
    n, d = max(sizes), 16
    y = (rng.random(n) < 0.4).astype(np.float32)
    z = rng.standard_normal((n, d)).astype(np.float32)
    z[:, 0] += 1.5 * y
    z[:, 1] += 1.0 * y
    w0 = np.zeros((1, d), np.float32)
    w0[0, 0], w0[0, 2] = 0.5, 0.5  # trained row: right on feature 0, misled by feature 2, blind to feature 1
    b0 = np.zeros(1, np.float32)
    zv = rng.standard_normal((1000, d)).astype(np.float32)
    yv = (rng.random(1000) < 0.4).astype(np.float32)
    zv[:, 0] += 1.5 * yv
    zv[:, 1] += 1.0 * yv
    moves = []
    for size in sizes:
        ft = CategoryWiseFineTuner(method="bp", selection_alpha=None, **options).fit(
            w0, b0, z[:size], y[:size, None], zv, yv[:, None])
        moves.append(float(np.linalg.norm(ft.weight_[0] - w0[0])))
    return moves


def test_penalised_bp_moves_less_with_fewer_known_labels_at_a_fixed_penalty() -> None:
    """At a fixed penalty toward the trained row, the row's move grows with the number of known labels."""
    moves = _bp_moves(0, (100, 800, 8000), bp_lambdas=(100.0,))
    assert moves[0] < moves[1] < moves[2], moves


def test_penalised_bp_moves_less_with_fewer_known_labels_with_the_penalty_chosen_on_the_holdout() -> None:
    """With the default grid and the penalty chosen on the training holdout (one-standard-error rule), the median
    move over five draws of the problem grows with the number of known labels. A single draw need not be monotone:
    a 20-row holdout can by chance favour a weak penalty (seed 0 does), which is why the median is tested."""
    moves = np.median([_bp_moves(seed, (100, 800, 8000)) for seed in range(5)], axis=0)
    assert moves[0] < moves[1] < moves[2], moves
    assert moves[0] < 0.5 * moves[2], moves


@pytest.mark.parametrize("n", [30, 300])
def test_auc_standard_error_matches_the_spread_of_simulated_aucs(n: int) -> None:
    """The penalty rule's standard error (Hanley-McNeil) against the spread of AUCs over 4000 simulated samples."""
    from chexcft.cft.metrics import auc_split, auc_standard_error

    rng = np.random.default_rng(n)
    neg = rng.exponential(1.0, size=(4000, n))
    pos = rng.exponential(1.0 / 0.25, size=(4000, n))  # exponential scores: true AUC 0.8, Hanley-McNeil's own model
    aucs = auc_split(neg, pos)
    assert aucs.mean() == pytest.approx(0.8, abs=0.01)
    assert auc_standard_error(0.8, n, n) == pytest.approx(aucs.std(), rel=0.08)


def test_authors_early_stopping_on_validation_compares_there(problem) -> None:
    _, train, valid, _, W, b = problem
    ft = _fit("both", W, b, train, valid, max_steps=60, early_stopping="valid")
    report = ft.report_
    np.testing.assert_allclose(report["stop_bp"], report["valid_bp"], atol=1e-6)
    np.testing.assert_allclose(report["stop_ga"], report["valid_ga"], atol=1e-6)
    kept = report["method_kept"].map({"bp+ga": "valid_ga", "ga": "valid_ga", "bp": "valid_bp", "original": "valid_before"})
    np.testing.assert_allclose(report["valid_after"], [report.loc[i, column] for i, column in kept.items()], atol=1e-6)


def test_holdout_rows_are_not_fitted_on(problem, monkeypatch) -> None:
    """The early-stopping rows come out of the known training rows, disjoint from the rows BP fits."""
    from chexcft.cft import finetuner

    _, train, valid, _, W, b = problem
    seen = []
    real_fit_bp = finetuner.fit_bp

    def spy(problem, *args, **kwargs):
        seen.append((problem.z_train.shape[0], problem.z_valid.shape[0]))
        return real_fit_bp(problem, *args, **kwargs)

    monkeypatch.setattr(finetuner, "fit_bp", spy)
    ft = _fit("bp", W, b, train, valid, max_steps=5)
    known = ft.report_["n_train_pos"] + ft.report_["n_train_neg"]
    for (n_fit, n_stop), n_known in zip(seen, known):
        assert n_fit + n_stop == n_known
        assert n_stop == pytest.approx(0.2 * n_known, abs=2)


def test_original_row_kept_when_already_optimal() -> None:
    """A head fitted on clean labels that already ranks validation perfectly cannot be beaten: kept exactly."""
    rng = np.random.default_rng(0)
    y_train = (rng.random((400, 2)) < 0.5).astype(np.float32)
    y_valid = (rng.random((80, 2)) < 0.5).astype(np.float32)
    shift = np.zeros((2, D), np.float32)
    shift[0, 0], shift[1, 1] = 6.0, 6.0
    z_train = rng.standard_normal((400, D)).astype(np.float32) + y_train @ shift
    z_valid = rng.standard_normal((80, D)).astype(np.float32) + y_valid @ shift
    heads = [LogisticRegression(C=1e4, max_iter=2000).fit(z_train, y_train[:, c]) for c in range(2)]
    W = np.stack([h.coef_[0] for h in heads]).astype(np.float32)
    b = np.array([h.intercept_[0] for h in heads], dtype=np.float32)
    ft = CategoryWiseFineTuner(method="both", max_steps=40, patience=10, lr=1e-2, population=10).fit(
        W, b, z_train, y_train, z_valid, y_valid
    )
    assert (ft.report_["valid_before"] == 1.0).all()
    np.testing.assert_array_equal(ft.weight_, W)
    np.testing.assert_array_equal(ft.bias_, b)
    assert (ft.report_["method_kept"] == "original").all()


def test_categories_without_both_classes_are_left_unchanged(problem) -> None:
    _, train, valid, _, W, b = problem
    y_train = synthetic.known_labels(train.raw)
    y_train[:, 1] = np.where(y_train[:, 1] == 0, np.nan, y_train[:, 1])  # no known negative for B
    y_valid = valid.latent.copy()
    y_valid[:, 2] = 0.0  # no positive for C in validation
    ft = CategoryWiseFineTuner(method="bp", max_steps=20, patience=5, lr=1e-2, observations=NAMES).fit(
        W, b, train.features, y_train, valid.features, y_valid
    )
    report = ft.report_.set_index("observation")
    assert report.loc["B", "status"] == "unchanged: train has no negative"
    assert report.loc["C", "status"] == "unchanged: valid has no positive"
    np.testing.assert_array_equal(ft.weight_[1:], W[1:])
    np.testing.assert_array_equal(ft.bias_[1:], b[1:])


def test_progress_callback_reports_improving_heads(problem) -> None:
    _, train, valid, _, W, b = problem
    seen: list[tuple[str, float]] = []
    CategoryWiseFineTuner(method="bp", max_steps=30, patience=10, lr=1e-2, observations=NAMES).fit(
        W, b, train.features, synthetic.known_labels(train.raw), valid.features, valid.latent,
        progress=lambda name, seconds, weight, bias: seen.append((name, seconds)),
    )
    assert {name for name, _ in seen} == set(NAMES)
    assert len(seen) > len(NAMES)  # the original head plus at least one improvement each


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"method": "sgd"}, "unknown CFT method"), ({"optimizer": "NoSuchOpt"}, "unknown Nevergrad optimizer"), ({"bp_solver": "lbfgs"}, "unknown bp_solver"), ({"metric": "f1"}, "unknown CFT metric")],
)
def test_bad_parameters_raise(problem, kwargs, message) -> None:
    _, train, valid, _, W, b = problem
    with pytest.raises(ChexcftError, match=message):
        CategoryWiseFineTuner(**kwargs).fit(W, b, train.features, train.raw, valid.features, valid.latent)


def test_shape_mismatch_names_the_array(problem) -> None:
    _, train, valid, _, W, b = problem
    with pytest.raises(ChexcftError, match="Z_valid"):
        CategoryWiseFineTuner().fit(W, b, train.features, train.raw, valid.features[:, :5], valid.latent)


def test_average_precision_metric_selects_on_ap(problem) -> None:
    from sklearn.metrics import average_precision_score

    _, train, valid, _, W, b = problem
    ft = _fit("both", W, b, train, valid, metric="ap", max_steps=20, patience=5, population=10)
    report = ft.report_
    assert (report["valid_after"] >= report["valid_before"]).all()
    logits = valid.features @ ft.weight_.T + ft.bias_
    ap = [average_precision_score(valid.latent[:, c], logits[:, c]) for c in range(C)]
    np.testing.assert_allclose(ap, report["valid_after"], atol=1e-6)


def test_asl_loss_runs_and_improves_validation(problem) -> None:
    _, train, valid, _, W, b = problem
    ft = _fit("bp", W, b, train, valid, loss="asl", max_steps=40, patience=10)
    assert (ft.report_["valid_after"] > ft.report_["valid_before"]).all()


def test_ga_is_reproducible_with_a_seed(problem) -> None:
    _, train, valid, _, W, b = problem
    runs = [_fit("ga", W, b, train, valid, max_steps=8, population=10, seed=seed, selection_alpha=None) for seed in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0].weight_, runs[1].weight_)
    np.testing.assert_array_equal(runs[0].bias_, runs[1].bias_)
    assert not np.array_equal(runs[0].weight_, runs[2].weight_)


def test_gain_on_a_tiny_validation_split_must_be_significant_to_be_kept(problem) -> None:
    """With 12 validation rows a validation gain is mostly noise: the gate keeps the trained rows."""
    _, train, valid, _, W, b = problem
    tiny = slice(0, 12)
    gated = CategoryWiseFineTuner(method="bp", max_steps=150, patience=25, lr=1e-2, seed=0, observations=NAMES).fit(
        W, b, train.features, synthetic.known_labels(train.raw), valid.features[tiny], valid.latent[tiny]
    )
    ungated = CategoryWiseFineTuner(
        method="bp", max_steps=150, patience=25, lr=1e-2, seed=0, observations=NAMES, selection_alpha=None
    ).fit(W, b, train.features, synthetic.known_labels(train.raw), valid.features[tiny], valid.latent[tiny])
    report = gated.report_.set_index("observation")
    improved = ungated.report_.set_index("observation")["method_kept"] != "original"
    assert improved.any(), "the ungated fit should keep some validation gain on this problem"
    for name in improved[improved].index:
        row = report.loc[name]
        assert row["valid_gain_p"] > 0.05
        assert row["method_kept"] == "original"
        assert "not significant" in row["status"] or "cannot be told from noise" in row["status"]
        c = NAMES.index(name)
        np.testing.assert_array_equal(gated.weight_[c], W[c])
        assert gated.bias_[c] == b[c]


def test_significant_gains_pass_the_gate(fitted) -> None:
    report = fitted["bp"].report_
    kept = report[report["method_kept"] != "original"]
    assert len(kept) == C
    assert (kept["valid_gain_p"] <= 0.05).all()


def test_selection_alpha_is_validated() -> None:
    with pytest.raises(ChexcftError, match="selection_alpha"):
        CategoryWiseFineTuner(selection_alpha=0.0)._check_params()


def _outlier_problem(n: int, rng: np.random.Generator, outliers: float) -> tuple[np.ndarray, np.ndarray]:
    """Feature 0 separates the classes; a fraction `outliers` of negatives sits far out at (+6, -6) on features 0, 1."""
    y = (rng.random(n) < 0.3).astype(np.float32)
    z = rng.standard_normal((n, 10)).astype(np.float32)
    z[:, 0] += 1.5 * y
    far = np.flatnonzero(y == 0)[: int(outliers * n)]
    z[far, 0] += 6.0
    z[far, 1] -= 6.0
    return z, y


@pytest.mark.parametrize("seed", [0, 2])
def test_subspace_ga_improves_held_out_auc_where_bp_is_stuck(seed: int) -> None:
    """Outlying negatives among the known labels drag BCE (BP) toward feature 1 and keep the trained row's weight on
    the irrelevant feature 2; the AUC they cost is bounded, so the GA's direct AUC search does not follow them."""
    rng = np.random.default_rng(seed)
    z, y = _outlier_problem(4000, rng, 0.04)
    zv, yv = _outlier_problem(1500, rng, 0.0)
    zt, yt = _outlier_problem(20_000, rng, 0.0)
    w0 = np.zeros((1, 10), np.float32)
    w0[0, 0], w0[0, 2] = 1.0, 0.8
    b0 = np.zeros(1, np.float32)
    held_out = {"before": roc_auc_score(yt, zt @ w0[0])}
    for method in ("bp", "ga", "both"):
        ft = CategoryWiseFineTuner(method=method, selection_alpha=None, seed=seed).fit(w0, b0, z, y[:, None], zv, yv[:, None])
        held_out[method] = roc_auc_score(yt, zt @ ft.weight_[0])
    assert held_out["bp"] < held_out["before"] + 0.005, held_out  # BP is stuck
    assert held_out["ga"] > held_out["bp"] + 0.02, held_out
    assert held_out["both"] > held_out["bp"] + 0.01, held_out


def test_ga_keeps_the_smallest_move_within_one_standard_error_of_the_best() -> None:
    """The GA's selection rule: of the improving candidates, the shortest whose stop-split AUC is within one SE."""
    from chexcft.cft.ga import shortest_within_one_se
    from chexcft.cft.problem import CategoryProblem

    stop = CategoryProblem(z_train=torch.zeros(0, 2), n_neg_train=0, z_valid=torch.zeros(200, 2), n_neg_valid=100)
    margin = stop.standard_error(0.90)
    assert 0.01 < margin < 0.05
    history = [(np.array([3.0, 0.0]), 0.90), (np.array([1.0, 0.0]), 0.90 - margin / 2), (np.array([0.5, 0.0]), 0.90 - 2 * margin)]
    chosen, value = shortest_within_one_se(history, stop)
    assert value == 0.90 - margin / 2 and chosen[0] == 1.0


def test_ga_scale_stays_finite_when_the_fit_rows_are_separable() -> None:
    """A direction that separates a few dozen known labels must not get an unbounded logistic scale."""
    from chexcft.cft.ga import _fit_scale_and_bias

    y = torch.cat([torch.zeros(200), torch.ones(20)])
    scores = torch.cat([torch.linspace(-3, 0, 200), torch.linspace(0.5, 3, 20)])  # perfectly separated
    a, b = _fit_scale_and_bias(scores, y, reference_spread=float(scores.std()))
    assert 0.1 <= a <= 10.0 and np.isfinite(b) and abs(b) < 100
    small = _fit_scale_and_bias(scores * 1e-3, y, reference_spread=float(scores.std()))  # same ranking, tiny spread
    assert small[0] == pytest.approx(1e3 * a, rel=1e-6) and small[1] == pytest.approx(b, abs=1e-6)
    overlapping = torch.cat([torch.randn(200, generator=torch.Generator().manual_seed(0)),
                             torch.randn(20, generator=torch.Generator().manual_seed(1)) + 1.0])
    a, b = _fit_scale_and_bias(overlapping, y, reference_spread=float(overlapping.std()))
    assert 0.5 < a < 2.0 and b < 0


@pytest.mark.parametrize("n_valid_pos, kept", [(8, False), (40, True)])
def test_gate_needs_ten_validation_positives_and_negatives(n_valid_pos: int, kept: bool) -> None:
    """A large, 'significant' validation gain on 8 positives is not trusted (the evaluate rule for a reliable AUC)."""
    rng = np.random.default_rng(0)

    def split(n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.r_[np.zeros(n_neg), np.ones(n_pos)].astype(np.float32)
        z = rng.standard_normal((len(y), 8)).astype(np.float32)
        z[:, 0] += 2.5 * y
        return z, y

    z, y = split(1500, 3000)
    zv, yv = split(n_valid_pos, 300)
    w0 = np.zeros((1, 8), np.float32)
    w0[0, 0], w0[0, 1] = 0.2, 1.0  # mostly noise: the known labels fix it, and the gain is large
    ft = CategoryWiseFineTuner(method="bp").fit(w0, np.zeros(1, np.float32), z, y[:, None], zv, yv[:, None])
    row = ft.report_.iloc[0]
    assert row["valid_gain_p"] < 0.05, row.to_dict()
    assert (row["method_kept"] != "original") == kept, row["status"]
    if not kept:
        assert "cannot be told from noise" in row["status"]


def test_class_moments_match_a_direct_computation() -> None:
    """Means and pooled within-class covariance from every row, in chunks, equal the float64 textbook formula."""
    from chexcft.cft.ga import class_moments

    rng = np.random.default_rng(0)
    z = (rng.standard_normal((5000, 12)) * 2.0 + 3.0).astype(np.float32)
    z[1200:] += 1.0
    mean_neg, mean_pos, cov = class_moments(torch.from_numpy(z), 1200, chunk=700)
    zd = z.astype(np.float64)
    centred = np.concatenate([zd[:1200] - zd[:1200].mean(0), zd[1200:] - zd[1200:].mean(0)])
    np.testing.assert_allclose(mean_neg.numpy(), zd[:1200].mean(0), atol=1e-5)
    np.testing.assert_allclose(mean_pos.numpy(), zd[1200:].mean(0), atol=1e-5)
    np.testing.assert_allclose(cov.numpy(), centred.T @ centred / (len(z) - 2), atol=1e-4)


def test_subspace_contains_the_fisher_direction_of_every_known_row() -> None:
    """The GA's subspace holds the (shrunk) Fisher direction of all fit rows, not of a subsample: in 256 dimensions a
    few thousand rows give a noisy one (on the known-answer benchmark that left the GA at 18% of the gap, not 40%)."""
    from chexcft.cft.ga import subspace_basis

    rng = np.random.default_rng(1)
    d, n, n_neg = 256, 30_000, 20_000
    mixing = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    z = (rng.standard_normal((n, d)) @ mixing).astype(np.float32)
    z[n_neg:] += (rng.standard_normal(d) * 0.1).astype(np.float32)
    zt = torch.from_numpy(z)
    basis = subspace_basis(zt, n_neg, torch.from_numpy(z[:100].mean(0)), 0.0, reference=None, n_components=4, seed=0)
    zd = z.astype(np.float64)
    centred = np.concatenate([zd[:n_neg] - zd[:n_neg].mean(0), zd[n_neg:] - zd[n_neg:].mean(0)])
    cov = centred.T @ centred / (n - 2)
    fisher = np.linalg.solve(cov + 0.1 * np.trace(cov) / d * np.eye(d), zd[n_neg:].mean(0) - zd[:n_neg].mean(0))
    q, _ = np.linalg.qr(basis.double().numpy())
    inside = np.linalg.norm(q.T @ fisher) / np.linalg.norm(fisher)
    assert inside > 0.99999, inside


def test_ga_row_replaces_bps_only_when_validation_agrees(monkeypatch) -> None:
    """In method="both", a GA row that looks better on the early-stopping split (which the GA searched) still has to
    beat BP's row significantly on validation before it replaces it."""
    import chexcft.cft.finetuner as finetuner
    from chexcft.cft.problem import FitResult

    rng = np.random.default_rng(0)
    y = (rng.random(6000) < 0.4).astype(np.float32)
    z = rng.standard_normal((6000, 6)).astype(np.float32)
    z[:, 0] += 2.0 * y
    z[:, 1] += 1.0 * y
    w0 = np.array([[0.3, 0.0, 0.0, 0.0, 0.0, 1.0]], np.float32)
    for ga_weight, expected in (([1.0, 0.0, 0.0, 0.0, 0.0, 3.0], "bp"), ([2.0, 1.0, 0.0, 0.0, 0.0, 0.0], "bp+ga")):
        def fake_ga(problem, weight, bias, **kwargs):
            return FitResult(np.array(ga_weight, np.float32), 0.0, 0.5, 0.999, 1, True, 0.0, {"ga": "fake"})

        monkeypatch.setattr(finetuner, "fit_subspace_ga", fake_ga)
        ft = CategoryWiseFineTuner(method="both", seed=0).fit(w0, np.zeros(1, np.float32), z[:4000], y[:4000, None],
                                                              z[4000:], y[4000:, None])
        row = ft.report_.iloc[0]
        assert row["method_kept"] == expected, row.to_dict()
        assert (row["ga_over_bp_p"] <= 0.05) == (expected == "bp+ga"), row["ga_over_bp_p"]
