"""chexcft.combination: ensemble rules on members' logits, the ensemble's calibration, ensemble.json, and that
predict, submit, the viewer and the offline bundle all combine by the recorded rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from chexcft.calibration import PlattCalibration
from chexcft.combination import (
    RULES,
    Combination,
    calibrate_ensemble,
    combine_logits,
    fit_combination,
    percentile,
    read_combination,
    write_combination,
)
from chexcft.data import read_table
from chexcft.errors import ChexcftError, InvalidRunError
from chexcft.evaluation.metrics import task_aucs
from chexcft.runs import Calibration, run_paths, write_calibration
from chexcft.schema import COMPETITION_TASKS, OBSERVATIONS
from tests.prediction_builders import make_prediction_tree, make_tiny_run


def _synthetic(seed: int = 0, members: int = 3, n: int = 400, c: int = 4):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < 0.3).astype(np.float64)
    signal = y[None] * rng.uniform(0.5, 2.0, (members, 1, c))
    # members on very different logit scales, as differently trained members are
    logits = (signal + rng.normal(size=(members, n, c))) * rng.uniform(0.3, 4.0, (members, 1, c)) + rng.normal(size=(members, 1, c))
    return logits, y


@pytest.mark.parametrize("rule", RULES)
def test_ensemble_ranking_is_invariant_to_member_calibration(rule: str) -> None:
    logits, y = _synthetic()
    observations = tuple(f"f{i}" for i in range(y.shape[1]))
    combination = fit_combination(logits[:, :200], y[:200], observations, rule)
    base = combination.proba(logits[:, 200:], observations)
    # Recalibrating a member (any increasing affine map of its logits fitted on other data) is applied to its own
    # probabilities only; the ensemble reads the members' logits before calibration, so nothing can move.
    rng = np.random.default_rng(1)
    member_probs = []
    for m in range(logits.shape[0]):
        platt = PlattCalibration(observations, rng.uniform(0.2, 5.0, y.shape[1]), rng.normal(size=y.shape[1]) * 3)
        member_probs.append(platt.transform(logits[m, 200:]))
    again = combination.proba(logits[:, 200:], observations)
    np.testing.assert_array_equal(base, again)
    # ... whereas averaging the calibrated member probabilities (the old rule) does change the ranking
    old = np.mean(member_probs, axis=0)
    plain = _sigmoid(logits[:, 200:]).mean(axis=0)
    assert not np.allclose(task_aucs(y[200:], old), task_aucs(y[200:], plain), atol=1e-4)
    # the ensemble's own calibration is increasing: it never changes the ranking of its score
    np.testing.assert_allclose(task_aucs(y[200:], base), task_aucs(y[200:], combination.scores(logits[:, 200:], observations)))


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_rules_and_the_rank_reference() -> None:
    logits, _ = _synthetic(members=2, n=50, c=1)
    rows = logits[:, :, 0]
    np.testing.assert_allclose(combine_logits(rows, "mean-logit"), rows.mean(axis=0))
    np.testing.assert_allclose(_sigmoid(combine_logits(rows, "mean-prob")), _sigmoid(rows).mean(axis=0), rtol=1e-9)
    reference = [np.sort(r) for r in rows]
    score = combine_logits(rows, "rank", reference)
    # a member's percentile of its own reference values is its mid-rank / n
    np.testing.assert_allclose(percentile(reference[0], reference[0]), (np.arange(50) + 0.5) / 50)
    x = np.linspace(rows.min() - 5, rows.max() + 5, 2000)
    assert np.all(np.diff(percentile(x, reference[0])) > 0)  # strictly increasing, also beyond the reference
    # an image's rank score does not depend on the batch it is predicted in
    np.testing.assert_allclose(combine_logits(rows[:, :7], "rank", reference), score[:7])
    with pytest.raises(ChexcftError, match="unknown ensemble rule"):
        combine_logits(rows, "median")


def test_combination_round_trips_through_ensemble_json(tmp_path: Path) -> None:
    logits, y = _synthetic(members=2, n=60, c=3)
    observations = ("Atelectasis", "Edema", "Cardiomegaly")
    (tmp_path / "ensemble.json").write_text(json.dumps({"members": ["member-0", "member-1"], "seeds": [0, 1]}))
    for index in range(2):
        make_tiny_run(tmp_path / f"member-{index}", seed=index)
    assert read_combination(tmp_path).rule == "mean-logit" and read_combination(tmp_path).calibration is None
    for rule in RULES:
        fitted = fit_combination(logits, y, observations, rule, members=["member-0", "member-1"], heads=[None, None],
                                 fitted_on={"csv": "valid.csv"})
        write_combination(tmp_path, fitted)
        manifest = json.loads((tmp_path / "ensemble.json").read_text())
        assert manifest["combination"]["rule"] == rule and manifest["seeds"] == [0, 1]  # other keys kept
        back = read_combination(tmp_path)
        assert back.rule == rule and back.observations == observations and back.fitted_on == {"csv": "valid.csv"}
        np.testing.assert_allclose(back.proba(logits, observations), fitted.proba(logits, observations), atol=1e-6)
    bad = json.loads((tmp_path / "ensemble.json").read_text())
    bad["combination"]["rule"] = "median"
    (tmp_path / "ensemble.json").write_text(json.dumps(bad))
    with pytest.raises(InvalidRunError, match="ensemble.json.*median"):
        read_combination(tmp_path)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory: pytest.TempPathFactory):
    """Two tiny members with CFT heads and (different) calibrations in an ensemble directory, and a valid CSV."""
    base = tmp_path_factory.mktemp("combination")
    tree = make_prediction_tree(base / "data", seed=3)
    directory = base / "ens"
    for index, size in enumerate((32, 40)):
        make_tiny_run(directory / f"member-{index}", train_csv=tree.train_csv, root=tree.root, image_size=size,
                      seed=10 + index, cft=True)
    (directory / "ensemble.json").write_text(json.dumps({"members": ["member-0", "member-1"]}))
    readable = tree.frame[~tree.frame["Path"].str.startswith(tree.broken_study)]
    valid_csv = base / "valid.csv"
    readable.to_csv(valid_csv, index=False)
    return tree, directory, valid_csv


def test_predict_uses_the_recorded_rule_and_ignores_member_calibrations(ensemble) -> None:
    from chexcft.predict import predict_member_logits, predict_table

    tree, directory, valid_csv = ensemble
    table = read_table(valid_csv, tree.root)
    members = [directory / "member-0", directory / "member-1"]
    logits, observations, failed = predict_member_logits(table, members, device="cpu")
    assert not failed and logits.shape == (2, len(table), len(OBSERVATIONS))
    for rule in RULES:
        combination = calibrate_ensemble(directory, valid_csv, tree.root, rule, device="cpu")
        assert combination.heads[0] is not None and combination.fitted_on["images"] == len(table)
        predicted = predict_table(table, [directory], device="cpu").predictions[list(observations)].to_numpy()
        np.testing.assert_allclose(predicted, combination.proba(logits, observations), atol=1e-5)
        # recalibrating the members does not move the ensemble's numbers
        original = (members[0] / "cft" / "calibration.json").read_text()
        write_calibration(run_paths(members[0]).calibration,
                          Calibration(OBSERVATIONS, (3.0,) * len(OBSERVATIONS), (-1.0,) * len(OBSERVATIONS)))
        again = predict_table(table, [directory], device="cpu").predictions[list(observations)].to_numpy()
        (members[0] / "cft" / "calibration.json").write_text(original)
        np.testing.assert_allclose(again, predicted, atol=1e-6)
    assert read_combination(directory).rule == RULES[-1]


def test_a_changed_cft_head_makes_the_calibration_stale(ensemble, tmp_path: Path) -> None:
    import shutil

    from chexcft.predict import predict_table
    from chexcft.runs import write_cft_head

    tree, directory, valid_csv = ensemble
    copy = tmp_path / "ens"
    shutil.copytree(directory, copy)
    calibrate_ensemble(copy, valid_csv, tree.root, "mean-logit", device="cpu")
    write_cft_head(copy / "member-1", np.zeros((len(OBSERVATIONS), 8)), np.zeros(len(OBSERVATIONS)))
    with pytest.raises(InvalidRunError, match="member-1.*calibrate-ensemble"):
        predict_table(read_table(valid_csv, tree.root), [copy], device="cpu")


@pytest.mark.parametrize("rule", RULES)
def test_the_bundle_gives_the_numbers_of_submit_under_each_rule(ensemble, tmp_path: Path, rule: str) -> None:
    from chexcft.bundle import build_bundle
    from chexcft.submission import read_submission, submit
    from tests.test_bundle import _run_bundle

    tree, directory, valid_csv = ensemble
    calibrate_ensemble(directory, valid_csv, tree.root, rule, device="cpu")
    bundle = build_bundle([directory], tmp_path / "bundle")
    settings = json.loads((bundle.path / "bundle.json").read_text())
    assert settings["combination"]["rule"] == rule and settings["combination"]["calibration"]
    expected = submit(valid_csv, tmp_path / "submit.csv", [directory], root=tree.root, device="cpu").frame
    done = _run_bundle(bundle.path, tree.root, str(valid_csv), str(tmp_path / "bundle.csv"))
    assert done.returncode == 0, done.stderr
    produced = read_submission(tmp_path / "bundle.csv")
    assert produced["Study"].tolist() == expected["Study"].tolist()
    tasks = list(COMPETITION_TASKS)
    np.testing.assert_allclose(produced[tasks].to_numpy(), expected[tasks].to_numpy(), atol=1e-6)


def test_calibrate_ensemble_cli_sets_the_rule(ensemble) -> None:
    from chexcft.cli import app

    tree, directory, valid_csv = ensemble
    result = CliRunner().invoke(app, ["calibrate-ensemble", str(directory), "--valid-csv", str(valid_csv), "--root",
                                      str(tree.root), "--rule", "mean-prob", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "mean-prob" in result.output and read_combination(directory).rule == "mean-prob"
    result = CliRunner().invoke(app, ["calibrate-ensemble", str(directory), "--valid-csv", str(valid_csv), "--root",
                                      str(tree.root), "--rule", "median", "-q"])
    assert result.exit_code != 0 and "median" in str(result.exception or result.output)
