"""`chexcft demo`: the whole pipeline on the bundled data (cache, ensemble, CFT, evaluation, submission, report)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from chexcft.cli import app, console


def _auc_table(result) -> Table:  # result: chexcft.demo.DemoResult
    table = Table(title="Held-out test AUC (mean over the 5 tasks, 95% CI)")
    table.add_column("model")
    table.add_column("policy")
    table.add_column("before CFT", justify="right")
    table.add_column("after CFT", justify="right")
    table.add_column("change", justify="right")
    policies = dict(zip([m.name for m in result.members], result.settings.member_policies()))
    after = {row["name"]: row for row in result.after}
    for row in result.before:
        other = after.get(row["name"], {})
        change = (other.get("mean_auc") - row["mean_auc"]) if None not in (row.get("mean_auc"), other.get("mean_auc")) else None
        table.add_row(row["name"], policies.get(row["name"], "mean of members"),
                      _with_ci(row.get("mean_auc"), row.get("mean_auc_ci")),
                      _with_ci(other.get("mean_auc"), other.get("mean_auc_ci")),
                      "n/a" if change is None else f"{change:+.3f}")
    return table


def _with_ci(value: float | None, ci: list | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" + ("" if not ci or ci[0] is None else f" [{ci[0]:.3f}, {ci[1]:.3f}]")


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for everything the demo writes."),
    fresh: bool = typer.Option(False, "--fresh", help="Start over: delete the previous demo run in --out first."),
    quick: bool = typer.Option(False, "--quick", help="Smallest settings (tiny model, 1 epoch, small budgets): a smoke test."),
    members: int = typer.Option(3, "--members", min=1, help="Ensemble members (policies U-Ones, U-Zeros, U-Ignore, cycled)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Image size in pixels (default 64; --quick 32)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs per member (default 3; --quick 1)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the whole product on the bundled demo data and write OUT/report.md (re-runs reuse finished stages)."""
    from chexcft.demo import run_demo

    result = run_demo(out, fresh=fresh, members=members, image_size=image_size, epochs=epochs, quick=quick,
                      progress=not quiet, echo=lambda message: console.print(message, highlight=False))
    console.print(_auc_table(result))
    console.print(f"per task and the plots: {result.report}", highlight=False, soft_wrap=True)
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
