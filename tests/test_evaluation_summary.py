"""chexcft.evaluation.summary: markdown tables from evaluation rows, reliability curves, figures saved as PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexcft.evaluation import evaluate
from chexcft.calibration import reliability_curve
from chexcft.evaluation.summary import (
    Report,
    auc_change_figure,
    calibration_table,
    frame_table,
    reliability_figure,
    save_figure,
    summary_table,
    task_table,
)
from chexcft.schema import COMPETITION_TASKS


@pytest.fixture(scope="module")
def rows() -> tuple[list[dict], list[dict], np.ndarray, dict[str, np.ndarray]]:
    """Evaluation rows of two models before and after a change that improves one of them."""
    rng = np.random.default_rng(0)
    n = 80
    labels = (rng.random((n, len(COMPETITION_TASKS))) < 0.3).astype(float)
    studies = [f"p/patient{i:05d}/study1" for i in range(n)]
    truth = pd.DataFrame(labels, columns=list(COMPETITION_TASKS)).assign(Study=studies)
    noisy = {name: np.clip(labels * 0.3 + rng.random(labels.shape) * scale, 0, 1)
             for name, scale in (("a", 1.0), ("b", 2.0))}
    sharper = {"a": noisy["a"], "b": np.clip(labels * 0.6 + rng.random(labels.shape), 0, 1)}

    def tables(scores: dict[str, np.ndarray]) -> dict[str, pd.DataFrame]:
        return {name: pd.DataFrame(s, columns=list(COMPETITION_TASKS)).assign(Study=studies) for name, s in scores.items()}

    before = evaluate(truth, tables(noisy), ensembles=("mean",), bootstrap=50, seed=0)
    after = evaluate(truth, tables(sharper), ensembles=("mean",), bootstrap=50, seed=0)
    return before, after, labels, sharper


def test_summary_table_has_every_row_with_intervals_and_the_change(rows) -> None:
    before, after, _, _ = rows
    text = summary_table(before, after, {"a": "U-Ones"})
    lines = text.splitlines()
    assert len(lines) == 2 + 3  # header, rule, a, b, ensemble-mean
    assert lines[2].startswith("| a (U-Ones) |")
    b_before = next(r for r in before if r["name"] == "b")["mean_auc"]
    b_after = next(r for r in after if r["name"] == "b")["mean_auc"]
    assert f"{b_after - b_before:+.3f}" in lines[3]
    assert "[" in lines[3] and "]" in lines[3]


def test_task_table_has_a_before_and_after_row_per_model(rows) -> None:
    before, after, _, _ = rows
    lines = task_table(before, after).splitlines()
    assert len(lines) == 2 + 2 * 3
    assert lines[0] == "| model | CFT | " + " | ".join(COMPETITION_TASKS) + " | mean |"
    assert all("/3)" in line for line in lines[2:])


def test_reliability_curve_bins_predictions() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95, 0.55])
    y = np.array([0, 1, 1, 1, 0])
    curve = reliability_curve(p, y, bins=10)
    assert curve["count"].tolist() == [2, 1, 2]
    assert curve["observed"].tolist() == [0.5, 0.0, 1.0]
    assert curve["predicted"].tolist() == pytest.approx([0.05, 0.55, 0.95])


def test_figures_are_written_as_png(rows, tmp_path: Path) -> None:
    before, after, labels, scores = rows
    paths = [
        save_figure(auc_change_figure(before, after), tmp_path / "auc.png"),
        save_figure(reliability_figure(labels, {"a": scores["a"], "b": scores["b"]}), tmp_path / "rel.png"),
    ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 400
    assert not list(tmp_path.glob("*.tmp"))
    table = calibration_table(labels, {"a": scores["a"]})
    assert table.splitlines()[2].startswith("| a | ")


def test_report_markdown_and_frame_table(tmp_path: Path) -> None:
    report = Report("title", intro="intro text")
    report.add("Numbers", frame_table(pd.DataFrame({"x": [0.12345, np.nan], "y": ["a|b", "c"]})), "plots/p.png")
    path = report.write(tmp_path / "report.md")
    text = path.read_text()
    assert text.startswith("# title\n\nintro text\n\n## Numbers\n")
    assert "| 0.123 | a/b |" in text and "| n/a | c |" in text
    assert "![Numbers](plots/p.png)" in text


def test_task_table_marks_unreliable_tasks_without_an_interval() -> None:
    row = {"name": "m", "auc": {"Edema": 0.9, "Atelectasis": 0.8}, "ci": {"Edema": [None, None], "Atelectasis": [0.7, 0.85]},
           "reliable": {"Edema": False, "Atelectasis": True}, "radiologists_below": {}, "mean_auc": 0.85}
    lines = task_table([row], [row], tasks=("Atelectasis", "Edema")).splitlines()
    assert "0.800 [0.700, 0.850]" in lines[2] and "0.900 (unreliable)" in lines[2]
