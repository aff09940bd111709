"""`chexcft demo --quick` end to end on the bundled data: every output exists and parses; re-runs reuse stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from chexcft.data import read_table
from chexcft.demo.data import demo_csv, demo_root
from chexcft.demo import STATE_FILE, run_demo
from chexcft.errors import ChexcftError
from chexcft.runs import load_run
from chexcft.schema import COMPETITION_TASKS
from chexcft.submission import check_submission, read_submission

pytestmark = pytest.mark.slow
MODELS = ["member-0", "member-1", "member-2", "ensemble-mean"]


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
    for stage in ("[1/6] prepare", "[2/6] train", "[3/6] cft", "[4/6] evaluate", "[5/6] submit", "[6/6] report"):
        assert stage in output
    assert str(out / "report.md") in output
    assert f"chexcft view --model {out / 'ensemble'} --data {demo_csv('test')}" in output
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
    assert state["settings"]["quick"] is True and state["settings"]["members"] == 3
    assert set(state["stages"]) == {"prepare", "train", "cft", "evaluate", "submit", "report"}
    assert all(stage["seconds"] >= 0 for stage in state["stages"].values())


def test_demo_members_have_cft_heads_and_calibration(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    manifest = json.loads((out / "ensemble" / "ensemble.json").read_text())
    assert manifest["members"] == ["member-0", "member-1", "member-2"]
    assert manifest["policies"] == ["U-Ones", "U-Zeros", "U-Ignore"]
    for name in manifest["members"]:
        member = out / "ensemble" / name
        run = load_run(member)
        assert run.has_cft and run.calibration is not None
        report = pd.read_csv(member / "cft" / "report.csv")
        assert set(COMPETITION_TASKS) <= set(report["observation"])
        assert "test_auc_before" in report.columns  # held-out numbers: run_cft was given the test split
        assert json.loads((member / "cft" / "report.json").read_text())["held_out"] is True


def test_demo_evaluation_rows_before_and_after_cft(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    n_test = len(read_table(demo_csv("test"), demo_root()))
    for stage in ("before", "after"):
        rows = json.loads((out / "evaluation" / f"test_{stage}_cft.json").read_text())
        assert [row["name"] for row in rows] == MODELS
        for row in rows:
            assert row["n_studies"] == n_test
            assert set(row["auc"]) == set(COMPETITION_TASKS)
            assert all(0.0 <= value <= 1.0 for value in row["auc"].values())
            low, high = row["mean_auc_ci"]
            assert low <= row["mean_auc"] <= high
    for csv in sorted((out / "predictions").glob("test_*_cft.csv")):
        frame = pd.read_csv(csv)
        assert len(frame) == n_test and set(COMPETITION_TASKS) <= set(frame.columns)
    assert len(list((out / "predictions").glob("test_member-*_cft.csv"))) == 6


def test_demo_submission_passes_the_scorer_checks(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    submission = read_submission(out / "submission" / "test_submission.csv")
    test = read_table(demo_csv("test"), demo_root())
    check_submission(submission, test)
    assert len(submission) == test["study"].nunique()
    # one image per study here, so the submission is the after-CFT ensemble's own scores
    after = {row["name"]: row for row in json.loads((out / "evaluation" / "test_after_cft.json").read_text())}
    from chexcft.evaluation import evaluate, load_groundtruth

    row = evaluate(load_groundtruth(demo_csv("test")), {"submission": submission}, ensembles=(), bootstrap=0)[0]
    assert row["mean_auc"] == pytest.approx(after["ensemble-mean"]["mean_auc"], abs=1e-4)


def test_demo_report_and_plots(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    report = (out / "report.md").read_text()
    assert "Held-out AUC before and after CFT" in report
    for model in MODELS:
        assert f"| {model}" in report
    images = [line.split("](", 1)[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert sorted(images) == ["plots/auc_before_after_cft.png", "plots/reliability_test.png", "plots/roc_test.png"]
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
    assert result.reused["prepare"] and result.reused["train"] and result.reused["cft"]
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
