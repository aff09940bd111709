"""`chexcft demo --quick` end to end on the bundled data: every output exists and parses; re-runs reuse stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexcft.data import read_table
from chexcft.demo import STAGES, STATE_FILE, run_demo
from chexcft.demo.pipeline import DEFAULT_MEMBERS
from chexcft.demo.data import demo_csv, demo_root, external_csv, external_root
from chexcft.errors import ChexcftError
from chexcft.runs import load_run
from chexcft.schema import COMPETITION_TASKS
from chexcft.submission import check_submission, read_submission

pytestmark = pytest.mark.slow

MEMBERS = [f"member-{i}" for i in range(len(DEFAULT_MEMBERS))]
MODELS = [*MEMBERS, "ensemble"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One `chexcft demo --quick` into a temporary folder, as a user runs it; returns (out, its console output)."""
    out = tmp_path_factory.mktemp("demo") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    completed = subprocess.run(
        [sys.executable, "-m", "chexcft", "demo", "--quick", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    return out, output


def test_demo_prints_where_everything_is_and_the_view_command(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    for index, stage in enumerate(STAGES, start=1):
        assert f"[{index}/{len(STAGES)}] {stage}" in output
    assert str(out / "report.md") in output
    assert f"chexcft view --model {out / 'ensemble'} --data {external_csv()}" in output
    assert "cross-fitted held-out gain" in output and "no worse than before" in output
    assert "--groundtruth" in output
    import shlex

    import typer

    from chexcft.cli import app

    line = next(line.strip() for line in output.splitlines() if line.strip().startswith("chexcft view "))
    view = typer.main.get_command(app).commands["view"]  # type: ignore[attr-defined]
    context = view.make_context("view", shlex.split(line)[2:])  # parses like the real CLI, without starting it
    assert [str(p) for p in context.params["model"]] == [str(out / "ensemble")]


def test_demo_state_records_settings_and_every_stage(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    state = json.loads((out / STATE_FILE).read_text())
    assert state["settings"]["quick"] is True and state["settings"]["members"] == len(DEFAULT_MEMBERS)
    assert set(state["stages"]) == set(STAGES)
    assert all(stage["seconds"] >= 0 for stage in state["stages"].values())


def test_demo_members_have_cft_heads_and_calibration(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    manifest = json.loads((out / "ensemble" / "ensemble.json").read_text())
    assert manifest["members"] == MEMBERS
    assert manifest["specs"] == list(DEFAULT_MEMBERS)
    assert manifest["policies"] == ["U-Ones", "U-Zeros", "U-Ignore", "U-Zeros"]
    assert manifest["blanks"] == ["negative", "negative", "negative", "LL-R"]  # the Large Loss member
    for name in manifest["members"]:
        member = out / "ensemble" / name
        run = load_run(member)
        assert run.has_cft and run.calibration is not None
        report = pd.read_csv(member / "cft" / "report.csv")
        assert set(COMPETITION_TASKS) <= set(report["observation"])
        assert "test_auc_before" in report.columns  # held-out numbers: run_cft was given the external set
        assert json.loads((member / "cft" / "report.json").read_text())["held_out"] is True
    combination = manifest["combination"]  # the ensemble's rule and its calibration, fitted on valid
    assert combination["rule"] == "mean-logit" and combination["calibration"]["method"] == "platt"
    assert combination["fitted_on"]["csv"] == str(demo_csv("valid"))


def test_demo_evaluation_rows_before_and_after_cft_on_the_external_set(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    external = read_table(external_csv(), external_root())
    for stage in ("before", "after"):
        rows = json.loads((out / "evaluation" / f"external_{stage}_cft.json").read_text())
        assert [row["name"] for row in rows] == MODELS
        for row in rows:
            assert row["n_studies"] == len(external) == 617
            # every finding both sides have, not only the five; the three CheXpert-only ones are not evaluated
            assert set(COMPETITION_TASKS) < set(row["auc"]) and "Fracture" not in row["auc"]
            assert all(0.0 <= value <= 1.0 for value in row["auc"].values())
            assert all(row["reliable"].values())  # nih617 has >= 18 positives per evaluated finding
            low, high = row["mean_auc_ci"]
            assert low <= row["mean_auc"] <= high
    predicted = pd.read_csv(out / "predictions" / "external_ensemble.csv")
    assert len(predicted) == len(external) and set(COMPETITION_TASKS) <= set(predicted.columns)


def test_demo_cross_fit_reports_gains_with_intervals(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    crossfit = json.loads((out / "evaluation" / "crossfit.json").read_text())
    n_pool = len(read_table(demo_csv("test"), demo_root())) + 617
    assert crossfit["settings"]["images"] == n_pool and crossfit["settings"]["k"] == 2
    assert set(crossfit["per_member"]) == set(MEMBERS)
    for row in crossfit["ensemble"]:
        if row.get("gain") is None:
            continue
        assert row["reliable"] == (min(row["n_pos"], row["n_neg"]) >= 10)
        if row["reliable"]:
            low, high = row["gain_ci"]
            assert low <= row["gain"] + 1e-9 and row["gain"] <= high + 1e-9
        else:
            assert "gain_ci" not in row
    for member in MEMBERS:
        assert (out / "ensemble" / member / "cft" / "crossfit.csv").is_file()


def test_demo_submission_passes_the_scorer_checks_and_uses_the_rule(demo_run: tuple[Path, str]) -> None:
    from chexcft.cft.pipeline import split_features
    from chexcft.combination import read_combination
    from chexcft.runs import load_weights

    out, _ = demo_run
    submission = read_submission(out / "submission" / "test_submission.csv")
    test = read_table(demo_csv("test"), demo_root())
    check_submission(submission, test)
    assert len(submission) == test["study"].nunique()
    # one image per study: the submission is the ensemble's rule + calibration applied to the members' CFT logits
    members = sorted((out / "ensemble").glob("member-*"))
    logits = []
    for member in members:
        split = split_features(member, demo_csv("test"), None)
        head = load_weights(member / "cft" / "head.safetensors")
        logits.append(split.features @ head["weight"].numpy().T + head["bias"].numpy())
    expected = read_combination(out / "ensemble").proba(np.stack(logits), split.observations)
    columns = [split.observations.index(t) for t in COMPETITION_TASKS]
    np.testing.assert_allclose(submission[list(COMPETITION_TASKS)].to_numpy(), expected[:, columns], atol=1e-5)


def test_demo_report_and_plots(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    report = (out / "report.md").read_text()
    assert "Headline: CFT's cross-fitted held-out gain" in report and "patient-cluster bootstrap" in report
    assert "External validation: which findings each side has" in report and "(Emphysema)" in report
    for model in MODELS:
        assert f"| {model}" in report
    images = [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert sorted(images) == ["plots/auc_before_after_cft.png", "plots/reliability_external.png"]
    for image in images:
        with Image.open(out / image) as png:
            png.verify()
            assert png.format == "PNG"
    assert "chexcft view --model" in report


def test_demo_rerun_reuses_finished_stages(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    weights = out / "ensemble" / "member-0" / "weights" / "best.safetensors"
    head = out / "ensemble" / "member-0" / "cft" / "head.safetensors"
    stamps = (weights.stat().st_mtime_ns, head.stat().st_mtime_ns)
    result = run_demo(out, quick=True, progress=False, echo=lambda message: None)
    assert result.reused["prepare"] and result.reused["train"] and result.reused["cft"] and result.reused["cross-fit"]
    assert (weights.stat().st_mtime_ns, head.stat().st_mtime_ns) == stamps
    assert [row["name"] for row in result.after] == MODELS


def test_demo_refuses_other_settings_in_the_same_folder(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    with pytest.raises(ChexcftError, match="other settings.*--fresh"):
        run_demo(out, quick=True, members=2, progress=False, echo=lambda message: None)


def test_demo_never_writes_into_or_deletes_a_folder_that_is_not_a_demo(tmp_path: Path) -> None:
    keep = tmp_path / "precious.txt"
    keep.write_text("mine")
    with pytest.raises(ChexcftError, match="not a demo folder"):
        run_demo(tmp_path, fresh=True, quick=True, progress=False, echo=lambda message: None)
    with pytest.raises(ChexcftError, match="holds no demo run"):
        run_demo(tmp_path, quick=True, progress=False, echo=lambda message: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt"] and keep.read_text() == "mine"
