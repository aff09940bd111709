"""`evaluate` rows: AUCs equal scikit-learn's, seeded intervals, comparisons; the shared CheXpert test benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from chexcft.errors import ChexcftError, SubmissionError
from chexcft.evaluation import evaluate, load_groundtruth, load_predictions
from chexcft.schema import COMPETITION_TASKS

TASKS = list(COMPETITION_TASKS)


def make_study_files(n: int = 150, n_models: int = 3, seed: int = 0) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A study-level ground truth and `n_models` prediction tables of varying quality, rows shuffled."""
    rng = np.random.default_rng(seed)
    studies = [f"CheXpert-v1.0/test/patient{60000 + i}/study1" for i in range(n)]
    gt = pd.DataFrame({"Study": studies})
    for task in TASKS:
        gt[task] = (rng.random(n) < 0.3).astype(int)
    preds = {}
    for m in range(n_models):
        frame = pd.DataFrame({"Study": studies})
        for task in TASKS:
            logit = (1.0 + m) * (gt[task] - 0.3) + rng.normal(size=n)
            frame[task] = 1.0 / (1.0 + np.exp(-logit))
        preds[f"model{m}"] = frame.sample(frac=1.0, random_state=m).reset_index(drop=True)
    return gt, preds


def test_rows_have_the_documented_keys_and_sklearn_aucs() -> None:
    gt, preds = make_study_files()
    rows = evaluate(gt, preds, ensembles=("mean", "rank", "weighted"), bootstrap=200, seed=0, folds=3,
                    compare=[("model2", "model0")], weighted_budget=40)
    assert [r["name"] for r in rows] == ["model0", "model1", "model2", "ensemble-mean", "ensemble-rank",
                                         "ensemble-weighted"]
    indexed = {name: frame.set_index("Study").loc[gt["Study"]] for name, frame in preds.items()}
    for row in rows:
        assert {"name", "auc", "mean_auc", "ci", "radiologists_below", "mean_auc_ci"} <= set(row)
        for task in TASKS:
            low, high = row["ci"][task]
            assert low <= row["auc"][task] <= high
            assert row["radiologists_below"][task] in (0, 1, 2, 3)
        assert row["mean_auc_ci"][0] <= row["mean_auc"] <= row["mean_auc_ci"][1]
        assert row["mean_auc"] == pytest.approx(np.mean([row["auc"][t] for t in TASKS]), abs=1e-6)
        if row["name"] in indexed:
            for task in TASKS:
                expected = roc_auc_score(gt[task], indexed[row["name"]][task])
                assert row["auc"][task] == pytest.approx(expected, abs=1e-6)
    mean_scores = sum(indexed.values()) / len(indexed)
    assert rows[3]["auc"]["Edema"] == pytest.approx(roc_auc_score(gt["Edema"], mean_scores["Edema"]), abs=1e-6)
    weighted = rows[5]
    assert weighted["folds"]["n_splits"] == 3
    assert len(weighted["weights"]["Edema"]) == 3
    assert sum(weighted["weights"]["Edema"][0].values()) == pytest.approx(1.0, abs=1e-5)
    comparison = rows[2]["comparisons"][0]
    assert comparison["against"] == "model0"
    assert comparison["tasks"]["Edema"]["auc_difference"] == pytest.approx(
        rows[2]["auc"]["Edema"] - rows[0]["auc"]["Edema"], abs=1e-5)
    low, high = comparison["mean_auc_difference_ci"]
    assert low <= comparison["mean_auc_difference"] <= high
    assert "comparisons" not in rows[0]


def test_intervals_follow_the_seed() -> None:
    gt, preds = make_study_files(n=120, n_models=1, seed=4)
    first = evaluate(gt, preds, ensembles=(), bootstrap=100, seed=1)
    again = evaluate(gt, preds, ensembles=(), bootstrap=100, seed=1)
    other = evaluate(gt, preds, ensembles=(), bootstrap=100, seed=2)
    assert first == again
    assert first[0]["ci"] != other[0]["ci"]
    assert first[0]["auc"] == other[0]["auc"]


def test_undefined_task_is_null_with_reason() -> None:
    gt, preds = make_study_files(n=60, n_models=1, seed=5)
    gt["Consolidation"] = 0
    row = evaluate(gt, preds, ensembles=(), bootstrap=50)[0]
    assert row["auc"]["Consolidation"] is None
    assert "no positive" in row["undefined"]["Consolidation"]
    assert row["radiologists_below"]["Consolidation"] is None
    assert row["mean_auc"] == pytest.approx(np.mean([row["auc"][t] for t in TASKS if t != "Consolidation"]), abs=1e-6)


def test_bad_requests_raise() -> None:
    gt, preds = make_study_files(n=40, n_models=1)
    with pytest.raises(ChexcftError, match="unknown ensemble"):
        evaluate(gt, preds, ensembles=("median",))
    with pytest.raises(ChexcftError, match="no row named 'nope'"):
        evaluate(gt, preds, ensembles=(), compare=[("model0", "nope")])
    with pytest.raises(SubmissionError, match="studies missing from model0 1"):
        evaluate(gt, {"model0": preds["model0"].iloc[1:]}, ensembles=())


def _benchmark(shared_dir: Path | None) -> Path:
    if shared_dir is None or not (shared_dir / "benchmarks" / "chexpert-test" / "groundtruth.csv").is_file():
        pytest.skip("../shared/benchmarks/chexpert-test is absent: the leaderboard files are not redistributed")
    return shared_dir / "benchmarks" / "chexpert-test"


def test_reproduces_chexpert_test_leaderboard_aucs(shared_dir: Path | None) -> None:
    bench = _benchmark(shared_dir)
    gt_raw = pd.read_csv(bench / "groundtruth.csv")
    gt = load_groundtruth(bench / "groundtruth.csv")
    paths = sorted((bench / "predictions").glob("*.csv"))
    assert len(paths) == 10
    preds = {p.stem: load_predictions(p) for p in paths}
    rows = evaluate(gt, preds, ensembles=("mean",), bootstrap=0)
    raw = {}
    for path, row in zip(paths, rows):
        frame = pd.read_csv(path).set_index("Study").loc[gt_raw["Study"]]
        raw[path.stem] = frame
        expected = [roc_auc_score(gt_raw[t], frame[t]) for t in TASKS]
        assert [round(row["auc"][t], 4) for t in TASKS] == [round(v, 4) for v in expected]
        assert round(row["mean_auc"], 4) == round(float(np.mean(expected)), 4)
        assert 0.918 <= round(row["mean_auc"], 3) <= 0.928
    mean = sum(f[TASKS] for f in raw.values()) / len(raw)
    expected_mean = float(np.mean([roc_auc_score(gt_raw[t], mean[t]) for t in TASKS]))
    assert rows[-1]["name"] == "ensemble-mean"
    assert round(rows[-1]["mean_auc"], 4) == round(expected_mean, 4)
    assert round(rows[-1]["mean_auc"], 3) == 0.935
