"""Summaries of evaluation rows for people: markdown tables, a markdown Report, and figures (AUC change, reliability).

The figures are plain matplotlib Figures (no pyplot, so no backend is switched and a notebook keeps its own),
saved atomically as PNG (the ROC figure is chexcft.evaluation.plots). The tables are made from the rows that
`chexcft.evaluation.evaluate` returns.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from chexcft.calibration import expected_calibration_error, known_pairs, reliability_curve
from chexcft.fileio import atomic_path, atomic_write_text
from chexcft.schema import COMPETITION_TASKS

Rows = Sequence[Mapping[str, Any]]
RELIABILITY_BINS = 10


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _interval(ci: Sequence[float | None] | None, digits: int = 3) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _by_name(rows: Rows) -> dict[str, Mapping[str, Any]]:
    return {str(row["name"]): row for row in rows}


def _delta(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return "n/a"
    return f"{after - before:+.3f}"


def summary_table(before: Rows, after: Rows, labels: Mapping[str, str] | None = None) -> str:
    """Markdown: per model (and ensemble) the mean AUC with its 95% interval before and after CFT, and the change."""
    labels = labels or {}
    after_rows = _by_name(after)
    lines = [
        "| model | mean AUC before CFT [95% CI] | mean AUC after CFT [95% CI] | change |",
        "|---|---:|---:|---:|",
    ]
    for row in before:
        name = str(row["name"])
        other = after_rows.get(name, {})
        shown = f"{name} ({labels[name]})" if name in labels else name
        lines.append(
            f"| {shown} | {_fmt(row.get('mean_auc'))}{_interval(row.get('mean_auc_ci'))} | "
            f"{_fmt(other.get('mean_auc'))}{_interval(other.get('mean_auc_ci'))} | "
            f"{_delta(row.get('mean_auc'), other.get('mean_auc'))} |"
        )
    return "\n".join(lines)


def task_table(before: Rows, after: Rows, tasks: Sequence[str] = COMPETITION_TASKS) -> str:
    """Markdown: per model and stage, each task's AUC with its 95% interval and radiologists on or below the curve.

    A task with too few positives or negatives (chexcft.evaluation.metrics.is_reliable) is marked unreliable and
    shows no interval.
    """
    after_rows = _by_name(after)
    header = "| model | CFT | " + " | ".join(tasks) + " | mean |"
    lines = [header, "|---|---|" + "---:|" * (len(tasks) + 1)]
    for row in before:
        for stage, current in (("before", row), ("after", after_rows.get(str(row["name"])))):
            if current is None:
                continue
            cells = []
            for task in tasks:
                auc = current["auc"].get(task)
                below = (current.get("radiologists_below") or {}).get(task)
                radiologists = "" if below is None else f" ({below}/3)"
                reliable = (current.get("reliable") or {}).get(task, True)
                interval = _interval((current.get("ci") or {}).get(task)) if reliable else " (unreliable)"
                cells.append(f"{_fmt(auc)}{interval}{radiologists}")
            lines.append(f"| {row['name']} | {stage} | " + " | ".join(cells) + f" | {_fmt(current.get('mean_auc'))} |")
    return "\n".join(lines)


def save_figure(figure: Figure, out: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write a figure as PNG atomically and return the path."""
    with atomic_path(out) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return Path(out)


def auc_change_figure(before: Rows, after: Rows, tasks: Sequence[str] = COMPETITION_TASKS) -> Figure:
    """One panel per task plus the mean: each model's AUC before (open) and after (filled) CFT with 95% intervals."""
    after_rows = _by_name(after)
    names = [str(row["name"]) for row in before]
    panels = [*tasks, "mean"]
    figure = Figure(figsize=(2.5 * len(panels), 0.45 * len(names) + 1.8))
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)
    y = np.arange(len(names))
    for ax, panel in zip(axes[0], panels):
        for offset, stage, rows, marker in ((-0.15, "before CFT", _by_name(before), "o"),
                                             (0.15, "after CFT", after_rows, "s")):
            values, lows, highs = [], [], []
            for name in names:
                row = rows.get(name, {})
                if panel == "mean":
                    value, ci = row.get("mean_auc"), row.get("mean_auc_ci")
                else:
                    value, ci = (row.get("auc") or {}).get(panel), (row.get("ci") or {}).get(panel)
                value = np.nan if value is None else float(value)
                low = value if not ci or ci[0] is None else float(ci[0])
                high = value if not ci or ci[1] is None else float(ci[1])
                values.append(value)
                lows.append(value - low)
                highs.append(high - value)
            filled = stage == "after CFT"
            ax.errorbar(values, y + offset, xerr=[lows, highs], fmt=marker, ms=5, capsize=2, lw=0.8,
                        mfc=None if filled else "white", label=stage)
        ax.axvline(0.5, color="0.8", lw=0.8, ls="--")
        ax.set_title(panel, fontsize=9)
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("AUC")
        ax.grid(axis="x", color="0.92")
    axes[0][0].set_yticks(y, names, fontsize=8)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(fontsize=7, loc="lower left")
    figure.suptitle("Held-out AUC before and after CFT (95% bootstrap intervals)", fontsize=10)
    figure.tight_layout()
    return figure


def reliability_figure(
    labels: np.ndarray, curves: Mapping[str, np.ndarray], tasks: Sequence[str] = COMPETITION_TASKS,
    bins: int = RELIABILITY_BINS,
) -> Figure:
    """Reliability diagrams, one panel per task: every named probability set (n, T) against the 0/1 labels (n, T)."""
    labels = np.asarray(labels, dtype=np.float64)
    figure = Figure(figsize=(3.2 * len(tasks), 3.5))
    axes = figure.subplots(1, len(tasks), squeeze=False)
    for t, (task, ax) in enumerate(zip(tasks, axes[0])):
        ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls="--")
        for name, probabilities in curves.items():
            p, y = known_pairs(np.asarray(probabilities, dtype=np.float64)[:, t], labels[:, t])
            if not len(y):
                continue
            curve = reliability_curve(p, y, bins)
            ece = expected_calibration_error(p, y, bins)
            ax.plot(curve["predicted"], curve["observed"], marker="o", ms=3, lw=1, label=f"{name} ECE {ece:.3f}")
        ax.set_title(f"{task} ({int(np.nansum(labels[:, t] == 1))} pos.)", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("mean predicted probability")
        ax.legend(fontsize=6, loc="upper left")
    axes[0][0].set_ylabel("observed positive rate")
    figure.tight_layout()
    return figure


def calibration_table(labels: np.ndarray, curves: Mapping[str, np.ndarray], tasks: Sequence[str] = COMPETITION_TASKS,
                      bins: int = RELIABILITY_BINS) -> str:
    """Markdown: expected calibration error per task for every named probability set."""
    labels = np.asarray(labels, dtype=np.float64)
    lines = ["| probabilities | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for name, probabilities in curves.items():
        p = np.asarray(probabilities, dtype=np.float64)
        cells = [f"{expected_calibration_error(p[:, t], labels[:, t], bins):.3f}" for t in range(len(tasks))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def frame_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a markdown table (floats rounded), without needing tabulate."""
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for values in frame.itertuples(index=False):
        cells = []
        for value in values:
            if isinstance(value, (float, np.floating)):
                cells.append(_fmt(float(value), digits))
            else:
                cells.append(str(value).replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class ReportSection:
    """A titled block of markdown (and optionally an image shown under it)."""

    title: str
    body: str
    image: str | None = None  # path relative to the report


@dataclass
class Report:
    """Everything report.md shows, in order."""

    title: str
    intro: str = ""
    sections: list[ReportSection] = field(default_factory=list)

    def add(self, title: str, body: str, image: str | None = None) -> None:
        """Append a section."""
        self.sections.append(ReportSection(title, body, image))

    def markdown(self) -> str:
        """The report as markdown text."""
        parts = [f"# {self.title}", ""]
        if self.intro:
            parts += [self.intro.strip(), ""]
        for section in self.sections:
            parts += [f"## {section.title}", ""]
            if section.body:
                parts += [section.body.strip(), ""]
            if section.image:
                parts += [f"![{section.title}]({section.image})", ""]
        return "\n".join(parts).rstrip() + "\n"

    def write(self, out: str | os.PathLike[str]) -> Path:
        """Write report.md atomically."""
        return atomic_write_text(out, self.markdown())
