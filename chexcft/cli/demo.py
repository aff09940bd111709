"""`chexcft demo`: the whole pipeline on the bundled data (cache, ensemble, CFT, external evaluation, cross-fit,
submission, report)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from chexcft.cli import app, console


def _auc_table(result) -> Table:  # result: chexcft.demo.DemoResult
    from chexcft.demo import mean_auc_table

    table = Table(title="nih617 (external, held out): mean AUC over the 5 competition tasks")
    for column in ("model", "members / rule", "before CFT", "after CFT", "change"):
        table.add_column(column, justify="left" if column in ("model", "members / rule") else "right")
    specs = dict(zip([m.name for m in result.members], result.settings.member_policies()))
    specs["ensemble"] = f"{result.combination.rule} + its calibration"
    for row in mean_auc_table(result).itertuples(index=False):
        table.add_row(row.model, specs.get(row.model, ""), f"{row._1:.4f}", f"{row._2:.4f}", f"{row.change:+.4f}")
    return table


def _crossfit_table(result) -> Table:
    from chexcft.demo.report import _gain_cell

    crossfit = result.crossfit
    settings = crossfit["settings"]
    table = Table(title=f"CFT's cross-fitted held-out gain (ensemble, {settings['k']} patient folds over "
                        f"{settings['images']} images; 95% patient-bootstrap CI)")
    for column in ("finding", "pos/neg", "AUC before", "AUC after", "gain [95% CI]"):
        table.add_column(column, justify="left" if column == "finding" else "right")
    for row in crossfit["ensemble"]:
        if row.get("gain") is None:
            continue
        table.add_row(row["observation"], f"{row['n_pos']}/{row['n_neg']}", f"{row['auc_before']:.3f}",
                      f"{row['auc_after']:.3f}", _gain_cell(row))
    return table


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for everything the demo writes."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over: delete the previous demo run in --out first."),
    quick: bool = typer.Option(False, "--quick", help="Smallest settings (tiny model, 1 epoch, small budgets): a smoke test."),
    members: Optional[int] = typer.Option(None, "--members", min=1,
                                          help="Ensemble members (default: one per --member spec, cycled)."),
    member: Optional[list[str]] = typer.Option(
        None, "--member", help="Member spec (repeatable; default U-Ones, U-Zeros, U-Ignore), as train-ensemble --policies."),
    rule: Optional[str] = typer.Option(None, "--rule", help="Ensemble rule: mean-logit (default), mean-prob or rank."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Image size in pixels (default 64; --quick 32)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per member (default 3; --quick 1)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole product on the bundled real images and write OUT/report.md (re-runs reuse finished stages)."""
    from chexcft.demo import run_demo

    result = run_demo(out, fresh=fresh, members=members, image_size=image_size, epochs=epochs, quick=quick,
                      policies=member, rule=rule, progress=not quiet,
                      echo=lambda message: console.print(message, highlight=False))
    console.print(_crossfit_table(result))
    console.print(_auc_table(result))
    from chexcft.demo.report import ensemble_line

    console.print(ensemble_line(result)[0].replace("**", ""), highlight=False, soft_wrap=True)
    console.print(f"per finding, external validation and the plots: {result.report}", highlight=False, soft_wrap=True)
    reused = [stage for stage, flag in result.reused.items() if flag]
    console.print(f"finished in {result.total_seconds:.0f} s" + (f" (reused: {', '.join(reused)})" if reused else ""))
    for what, path in (
        ("report", result.report),
        ("plots", result.report.parent / "plots"),
        ("submission", result.submission),
        ("ensemble", result.ensemble),
        ("evaluation", result.evaluation["after"].parent),
    ):
        console.print(f"  {what:<11} {path}", highlight=False, soft_wrap=True)
    console.print("open the viewer on it with:")
    console.print(f"  {result.view_command}", highlight=False, soft_wrap=True, markup=False)
