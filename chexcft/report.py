"""A run's report: markdown tables of held-out AUCs before/after CFT and PNG plots (ROC, AUC change, reliability).

The figures are plain matplotlib Figures (no pyplot, so no backend is switched and a notebook keeps its own),
saved atomically as PNG.
The tables are made from the rows that `chexcft.evaluation.evaluate` returns.
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


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def _cft_section(members: Sequence[Path]) -> str:
    """Per member: what CFT kept per competition task, with validation AUC before and after (from cft/report.csv)."""
    blocks = []
    wanted = ["observation", "status", "method_kept", "valid_before", "valid_bp", "valid_ga", "valid_after",
              "n_train_pos", "n_train_neg", "seconds"]
    for member in members:
        path = Path(member) / "cft" / "report.csv"
        if not path.is_file():
            blocks.append(f"**{Path(member).name}**: no cft/report.csv")
            continue
        frame = pd.read_csv(path)
        if "observation" in frame.columns:
            frame = frame[frame["observation"].isin(COMPETITION_TASKS)]
        frame = frame[[c for c in wanted if c in frame.columns]]
        blocks.append(f"**{Path(member).name}** ({_relative(path, Path(member).parent.parent)})\n\n{frame_table(frame)}")
    return "\n\n".join(blocks)


def reading_note(result: Any, data: Any) -> str:
    """One paragraph that says which way CFT moved the held-out AUC and how small the selection split is."""
    from chexcft.evaluation import load_groundtruth

    valid = load_groundtruth(data.valid_csv)
    counts = ", ".join(f"{task} {int(valid[task].sum())}" for task in COMPETITION_TASKS)
    after = _by_name(result.after)
    changes = [after[row["name"]]["mean_auc"] - row["mean_auc"] for row in result.before
               if row.get("mean_auc") is not None and after.get(row["name"], {}).get("mean_auc") is not None]
    if not changes:
        return ""
    lowered = sum(change < 0 for change in changes)
    direction = (f"CFT lowered the held-out mean AUC of {lowered} of {len(changes)} rows" if lowered
                 else "CFT did not lower the held-out mean AUC of any row")
    return (
        f"{direction}. CFT picks each task's candidate row on a holdout of the known training labels and keeps "
        f"it only when its validation AUC gain is significant (one-sided DeLong); the validation split has few "
        f"positives ({counts}), so few rows pass and a passing row can still be noise: compare the validation "
        "gains in the CFT section with the held-out changes here. Separating selection from reporting is what "
        "makes this visible. The ensemble row also changes because each member's Platt calibration rescales "
        "its probabilities before they are averaged."
    )


def write_demo_report(result: Any, data: Any, before_table: Any, after_table: Any, policies: Sequence[str]) -> dict[str, Path]:
    """Write OUT/report.md and OUT/plots/*.png for a chexcft.demo.DemoResult; returns the plot paths."""
    from chexcft.evaluation.plots import plot_roc
    from chexcft.evaluation.report import ScoreTable

    out = Path(result.out)
    plots_dir = out / "plots"
    names = [m.name for m in result.members]
    labels = {name: f"{policy}" for name, policy in zip(names, policies)}
    labels["ensemble-mean"] = "mean of the members"

    roc_scores = {f"{name} after CFT": after_table.scores[name] for name in names}
    roc_scores["ensemble before CFT"] = before_table.scores["ensemble-mean"]
    roc_scores["ensemble after CFT"] = after_table.scores["ensemble-mean"]
    kinds = {name: ("ensemble" if name.startswith("ensemble") else "model") for name in roc_scores}
    roc = ScoreTable(after_table.studies, after_table.tasks, after_table.labels, roc_scores, kinds)
    curves = {"ensemble before CFT (raw)": before_table.scores["ensemble-mean"],
              "ensemble after CFT + Platt": after_table.scores["ensemble-mean"]}
    plots = {
        "roc": plot_roc(roc, plots_dir / "roc_test.png"),
        "auc_change": save_figure(auc_change_figure(result.before, result.after, after_table.tasks),
                                  plots_dir / "auc_before_after_cft.png"),
        "reliability": save_figure(reliability_figure(after_table.labels, curves, after_table.tasks),
                                   plots_dir / "reliability_test.png"),
    }

    settings = result.settings
    n_test = len(after_table.studies)
    positives = ", ".join(f"{task} {int(after_table.labels[:, t].sum())}" for t, task in enumerate(after_table.tasks))
    report = Report(
        "chexcft demo report",
        intro=(
            f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `chexcft demo"
            f"{' --quick' if settings.quick else ''}`. All AUCs below are on the **held-out test split** "
            f"({n_test} studies; positives: {positives}), which no step saw: members were trained on train "
            "(selecting their best epoch on valid), CFT re-fitted each task's head row on the known train labels "
            "(early stopping on a holdout of them) and kept a new row only when its gain on valid was significant, "
            "and the Platt calibration was fitted on valid. Intervals are 95% stratified bootstrap intervals. The demo images are 64x64 NIH radiographs "
            "with simulated partial labels: the numbers show that the pipeline works end to end, they are not a "
            "benchmark (with 3-5 positives for some tasks the intervals are wide)."
        ),
    )
    report.add("Held-out AUC before and after CFT (mean over the 5 competition tasks)",
               summary_table(result.before, result.after, labels) + "\n\n" + reading_note(result, data))
    report.add("Per task (radiologists on or below the ROC curve, of 3, in brackets)",
               task_table(result.before, result.after, after_table.tasks), _relative(plots["auc_change"], out))
    report.add("ROC curves on the test split, with the three radiologists' operating points", "",
               _relative(plots["roc"], out))
    report.add("Calibration on the test split (expected calibration error, 10 bins)",
               calibration_table(after_table.labels, curves, after_table.tasks), _relative(plots["reliability"], out))
    report.add("CFT per member (validation AUC: selection split, not the reported result)",
               _cft_section(result.members))
    setting_rows = pd.DataFrame(
        [(key, ", ".join(value) if isinstance(value, list) else value) for key, value in settings.to_dict().items()],
        columns=["setting", "value"],
    )
    report.add("Settings", frame_table(setting_rows.astype(str)) + "\n\nMember policies: "
               + ", ".join(f"{name} {policy}" for name, policy in zip(names, policies)))
    timing = pd.DataFrame(
        [(stage, f"{seconds:.1f}", "reused" if result.reused.get(stage) else "")
         for stage, seconds in result.seconds.items() if stage != "report"],
        columns=["stage", "seconds", "note"],
    )
    report.add("Stage timings", frame_table(timing))
    files = [
        ("report", out / "report.md"),
        ("submission (test split, scorer-checked)", result.submission),
        ("ensemble (members with cft/)", result.ensemble / "ensemble.json"),
        ("evaluation rows before CFT", result.evaluation["before"]),
        ("evaluation rows after CFT", result.evaluation["after"]),
        ("test predictions per member", Path(next(iter(result.predictions.values()))).parent),
        ("preprocessing cache", result.cache),
    ]
    report.add("Files", "\n".join(f"- {what}: `{_relative(path, out)}`" for what, path in files))
    report.add("Open the viewer", f"```\n{result.view_command}\n```")
    report.write(out / "report.md")
    return plots
