"""`chexcft evaluate` end to end on generated files: JSON rows, PNG figure, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.errors import SubmissionError
from tests.test_evaluation_report import make_study_files

REQUIRED = {"name", "auc", "mean_auc", "ci", "radiologists_below", "mean_auc_ci"}


def _write_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    gt, preds = make_study_files(n=100, n_models=2, seed=7)
    gt_path = tmp_path / "gt.csv"
    gt.to_csv(gt_path, index=False)
    paths = []
    for name, frame in preds.items():
        path = tmp_path / f"{name}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    # A third model at image level: two views per study, to be combined by max.
    images = pd.concat([preds["model0"].assign(Path=preds["model0"]["Study"] + f"/view{v}_frontal.jpg")
                        for v in (1, 2)]).drop(columns="Study")
    images_path = tmp_path / "images.csv"
    images.to_csv(images_path, index=False)
    paths.append(images_path)
    return gt_path, paths


def test_cli_writes_json_rows_and_png(tmp_path: Path) -> None:
    gt_path, paths = _write_files(tmp_path)
    out_json, out_png = tmp_path / "out" / "rows.json", tmp_path / "out" / "roc.png"
    result = CliRunner().invoke(app, [
        "evaluate", "--groundtruth", str(gt_path), "--predictions", str(paths[0]), str(paths[1]), str(paths[2]),
        "--ensemble", "mean,rank,weighted", "--bootstrap", "100", "--seed", "3", "--folds", "3", "--budget", "40",
        "--compare", "model1", "model0", "--views", "max", "--json", str(out_json), "--plot", str(out_png),
    ])
    assert result.exit_code == 0, result.output
    rows = json.loads(out_json.read_text())
    assert [r["name"] for r in rows] == ["model0", "model1", "images", "ensemble-mean", "ensemble-rank",
                                         "ensemble-weighted"]
    for row in rows:
        assert REQUIRED <= set(row)
    assert rows[2]["auc"] == rows[0]["auc"]  # max over identical views is the study value
    assert {"folds", "weights"} <= set(rows[-1])
    assert rows[1]["comparisons"][0]["against"] == "model0"
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_mismatched_studies_fail_with_a_listing(tmp_path: Path) -> None:
    gt_path, paths = _write_files(tmp_path)
    short = tmp_path / "short.csv"
    pd.read_csv(paths[0]).iloc[3:].to_csv(short, index=False)
    result = CliRunner().invoke(app, ["evaluate", "--groundtruth", str(gt_path), "--predictions", str(short),
                                      "--bootstrap", "0"])
    assert isinstance(result.exception, SubmissionError)
    assert "studies missing from short 3:" in str(result.exception)
    process = subprocess.run(
        [sys.executable, "-m", "chexcft", "evaluate", "--groundtruth", str(gt_path), "--predictions", str(short),
         "--bootstrap", "0"], capture_output=True, text=True, timeout=300,
    )
    assert process.returncode == 2
    assert "studies missing from short 3:" in process.stderr


def test_cli_help_names_every_ensemble() -> None:
    from chexcft.evaluation.ensembles import ENSEMBLES
    from chexcft.cli import evaluate as evaluate_cli

    assert evaluate_cli._ENSEMBLE_NAMES.split(",") == list(ENSEMBLES)
