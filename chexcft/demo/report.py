"""The demo's report.md and plots/*.png, from a chexcft.demo.DemoResult (tables and figures: chexcft.evaluation.summary)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexcft.evaluation.metrics import MIN_CLASS_COUNT
from chexcft.evaluation.summary import (
    Report,
    auc_change_figure,
    calibration_table,
    frame_table,
    reliability_figure,
    save_figure,
    task_table,
)
from chexcft.schema import COMPETITION_TASKS

NO_WORSE = 0.002  # the ensemble after CFT may be at most this much below before (done-when of issue 10)


def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def _num(value: Any, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _gain_cell(row: Mapping[str, Any]) -> str:
    """A gain with its interval, or flagged unreliable (no interval) when a class has < MIN_CLASS_COUNT images."""
    gain = _num(row.get("gain"), sign=True)
    if not row.get("reliable"):
        return f"{gain} (unreliable: {row.get('n_pos')} pos)"
    ci = row.get("gain_ci") or [row.get("gain_ci_low"), row.get("gain_ci_high")]
    if ci and ci[0] is not None:
        return f"{gain} [{_num(ci[0], sign=True)}, {_num(ci[1], sign=True)}]"
    return gain


def _mean(row: Mapping[str, Any], tasks: Sequence[str]) -> float:
    values = [row["auc"].get(t) for t in tasks]
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else float("nan")


def crossfit_section(crossfit: Mapping[str, Any]) -> str:
    """Markdown: per finding, the ensemble's and each member's cross-fitted CFT gain with its interval."""
    members = list(crossfit["per_member"])
    per_member = {m: {r["observation"]: r for r in rows} for m, rows in crossfit["per_member"].items()}
    header = "| finding | pos / neg | ensemble AUC before → after | ensemble gain [95% CI] | " + " | ".join(
        f"{m} gain (rows replaced)" for m in members) + " |"
    lines = [header, "|---|---:|---:|---:|" + "---:|" * len(members)]
    for row in crossfit["ensemble"]:
        if row.get("gain") is None:
            continue
        name = row["observation"]
        cells = []
        for m in members:
            r = per_member[m][name]
            cells.append(f"{_gain_cell(r)} ({r['folds_replaced']}/{r['k']})")
        lines.append(f"| {name} | {row['n_pos']} / {row['n_neg']} | {_num(row.get('auc_before'))} → "
                     f"{_num(row.get('auc_after'))} | {_gain_cell(row)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ensemble_line(result: Any) -> tuple[str, float, float]:
    """One sentence on the ensemble before and after CFT on the external set (the five tasks), and the numbers."""
    before = next(r for r in result.before if r["name"] == "ensemble")
    after = next(r for r in result.after if r["name"] == "ensemble")
    tasks = [t for t in COMPETITION_TASKS if t in result.external.tasks]
    b, a = _mean(before, tasks), _mean(after, tasks)
    verdict = "no worse" if a >= b - NO_WORSE else "WORSE"
    return (f"Ensemble ({result.combination.rule} of the members' logits, its own calibration) on nih617, mean over "
            f"the five competition tasks: **{b:.4f} before CFT → {a:.4f} after ({a - b:+.4f})**, {verdict} than before "
            f"within {NO_WORSE}. Over all {len(result.external.tasks)} evaluated findings: "
            f"{_num(before.get('mean_auc'), 4)} → {_num(after.get('mean_auc'), 4)}.", b, a)


def members_table(result: Any) -> str:
    """Markdown: every member and the ensemble on nih617 before and after CFT (five tasks; all evaluated findings)."""
    specs = dict(zip([m.name for m in result.members], result.settings.member_policies()))
    specs["ensemble"] = f"{result.combination.rule} + calibration"
    after = {r["name"]: r for r in result.after}
    tasks = [t for t in COMPETITION_TASKS if t in result.external.tasks]
    lines = ["| model | members / rule | mean AUC, 5 tasks: before → after (change) | "
             f"mean AUC, all {len(result.external.tasks)} findings: before [95% CI] → after [95% CI] |",
             "|---|---|---:|---:|"]
    for row in result.before:
        other = after[row["name"]]
        b5, a5 = _mean(row, tasks), _mean(other, tasks)
        ci_b, ci_a = row.get("mean_auc_ci") or [None, None], other.get("mean_auc_ci") or [None, None]
        lines.append(
            f"| {row['name']} | {specs.get(row['name'], '')} | {b5:.4f} → {a5:.4f} ({a5 - b5:+.4f}) | "
            f"{_num(row.get('mean_auc'))} [{_num(ci_b[0])}, {_num(ci_b[1])}] → "
            f"{_num(other.get('mean_auc'))} [{_num(ci_a[0])}, {_num(ci_a[1])}] |")
    return "\n".join(lines)


def replaced_table(members: Sequence[Path]) -> str:
    """Markdown: per member, the findings whose head row the pipeline's CFT replaced (from cft/report.csv)."""
    lines = ["| member | rows replaced (of fitted) | findings replaced |", "|---|---:|---|"]
    for member in members:
        path = Path(member) / "cft" / "report.csv"
        if not path.is_file():
            continue
        frame = pd.read_csv(path)
        kept = frame[frame["method_kept"] != "original"]
        lines.append(f"| {Path(member).name} | {len(kept)} / {len(frame)} | "
                     + (", ".join(f"{o} ({m})" for o, m in zip(kept["observation"], kept["method_kept"])) or "none") + " |")
    return "\n".join(lines)


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


def write_demo_report(result: Any) -> dict[str, Path]:
    """Write OUT/report.md and OUT/plots/*.png for a chexcft.demo.DemoResult; returns the plot paths."""
    out = Path(result.out)
    plots_dir = out / "plots"
    external = result.external
    five = tuple(t for t in COMPETITION_TASKS if t in external.tasks)
    columns = [external.tasks.index(t) for t in five]
    labels = external.after_table.labels[:, columns]
    curves = {"ensemble before CFT": external.before_table.scores["ensemble"][:, columns],
              "ensemble after CFT": external.after_table.scores["ensemble"][:, columns]}
    plots = {
        "auc_change": save_figure(auc_change_figure(result.before, result.after, five),
                                  plots_dir / "auc_before_after_cft.png"),
        "reliability": save_figure(reliability_figure(labels, curves, five), plots_dir / "reliability_external.png"),
    }
    settings = result.settings
    crossfit = result.crossfit
    cf = crossfit["settings"]
    line, _, _ = ensemble_line(result)
    report = Report(
        "chexcft demo report",
        intro=(
            f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `chexcft demo"
            f"{' --quick' if settings.quick else ''}`. Members were trained on NIH1000 (`data/demo`: train, best "
            "epoch on valid); CFT re-fitted each finding's head row on the known train labels and kept it only when "
            "its gain on valid was significant; the ensemble combines the members' logits after CFT (before any "
            "calibration) and its own calibration was fitted on valid. Every number below is held out: on "
            "**nih617** (`data/nih617`, 617 other NIH patients, an external set), or cross-fitted over images no "
            f"step fitted on. A finding with fewer than {MIN_CLASS_COUNT} positives or negatives is flagged "
            "unreliable and gets no interval. NIH images (64 px here) with NIH labels mapped to CheXpert "
            "observations (`chexcft.data.nih`); the numbers show the pipeline honestly, they are not a benchmark."
        ),
    )
    report.add(
        "Headline: CFT's cross-fitted held-out gain",
        f"Pooled over {cf['images']} images of {cf['patients']} patients the backbone never trained on (NIH1000 "
        f"test + nih617), in {cf['k']} patient folds: CFT fitted on the partial (known) labels of the other folds "
        "(the demo's partial-label protocol applied to their true labels; significance gate on NIH1000 valid), "
        "scored the held-out fold, and the gain is measured against the true labels. The images NIH1000 train "
        "are left out on purpose: the backbone was fitted on them, so their features separate the classes better "
        "than new images' do and a gain measured or fitted there is biased. Interval: 95% patient-cluster "
        f"bootstrap of the paired gain ({cf['n_boot']} replicates). 'rows replaced' = folds in which CFT replaced "
        f"the row.\n\n{crossfit_section(crossfit)}\n\n{line}\n\nRows the pipeline's CFT replaced (fitted on NIH1000 "
        f"train's known labels):\n\n{replaced_table(result.members)}",
    )
    report.add("Every member and the ensemble on nih617, before and after CFT", members_table(result))
    report.add(f"Per finding on nih617 (all {len(external.tasks)} findings both sides have; AUC [95% CI])",
               task_table(result.before, result.after, external.tasks), _relative(plots["auc_change"], out))
    coverage = external.coverage.copy()
    coverage["predicted"] = coverage["predicted"].map({True: "yes", False: "no"})
    coverage["evaluated"] = coverage["evaluated"].map({True: "yes", False: "no"})
    for column in ("positives", "negatives"):
        coverage[column] = [("-" if v is None or v != v else str(int(v))) for v in coverage[column]]
    report.add("External validation: which findings each side has",
               "Members trained on NIH1000 predict CheXpert's 14 observations; nih617 carries NIH's 14 findings "
               "mapped by `chexcft.data.nih.NIH_TO_CHEXPERT`. Findings one side lacks are listed, not dropped "
               "silently.\n\n" + frame_table(coverage.astype(str)))
    report.add("Calibration on nih617 (ensemble; expected calibration error, 10 bins)",
               "Both calibrations were fitted on NIH1000 valid, so nih617 shows how they transfer to another "
               "selection of patients.\n\n" + calibration_table(labels, curves, five), _relative(plots["reliability"], out))
    report.add("CFT per member (validation AUC: selection split, not the reported result)", _cft_section(result.members))
    rows = [(key, ", ".join(map(str, value)) if isinstance(value, list) else value)
            for key, value in settings.to_dict().items()]
    report.add("Settings", frame_table(pd.DataFrame(rows, columns=["setting", "value"]).astype(str)) + "\n\nMembers: "
               + ", ".join(f"{m.name} {spec}" for m, spec in zip(result.members, settings.member_policies())))
    timing = pd.DataFrame([(stage, f"{seconds:.1f}", "reused" if result.reused.get(stage) else "")
                           for stage, seconds in result.seconds.items() if stage != "report"],
                          columns=["stage", "seconds", "note"])
    report.add("Stage timings", frame_table(timing))
    files = [
        ("report", out / "report.md"),
        ("submission (NIH1000 test, scorer-checked)", result.submission),
        ("ensemble (members with cft/, rule and calibration in ensemble.json)", result.ensemble / "ensemble.json"),
        ("nih617 rows before CFT", result.evaluation["before"]),
        ("nih617 rows after CFT", result.evaluation["after"]),
        ("cross-fit", result.evaluation["crossfit"]),
        ("nih617 ensemble predictions (chexcft predict)", result.predictions["external ensemble"]),
        ("preprocessing cache", result.cache),
    ]
    report.add("Files", "\n".join(f"- {what}: `{_relative(path, out)}`" for what, path in files))
    report.add("Open the viewer (on nih617)", f"```\n{result.view_command}\n```")
    report.write(out / "report.md")
    return plots
