"""`chexcft evaluate`: AUCs, intervals, radiologist counts, ensembles and DeLong comparisons of prediction files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from chexcft.cli import app, console
from chexcft.errors import ChexcftError
from chexcft.evaluation.aggregate import AGGREGATIONS, load_groundtruth, load_predictions, row_name
from chexcft.fileio import atomic_write_json

# Spelled out here so that importing the CLI does not import Nevergrad (chexcft.evaluation.ensembles.ENSEMBLES).
_ENSEMBLE_NAMES = "mean,mean-logit,rank,weighted"


@app.command("evaluate")
def evaluate_command(
    groundtruth: Path = typer.Option(..., "--groundtruth", exists=True, dir_okay=False,
                                     help="Ground truth CSV: study level (Study) or image level (Path)."),
    predictions: list[Path] = typer.Option(..., "--predictions", exists=True, dir_okay=False,
                                           help="Prediction CSV(s); more files may follow the first."),
    more: Optional[list[Path]] = typer.Argument(None, exists=True, dir_okay=False, show_default=False,
                                                help="Further prediction CSVs."),
    ensemble: str = typer.Option("", "--ensemble", help=f"Comma-separated ensembles: {_ENSEMBLE_NAMES}. mean-logit of `chexcft predict "
                                "--uncalibrated` member files is an ensemble directory's default rule."),
    bootstrap: int = typer.Option(1000, "--bootstrap", min=0, help="Bootstrap replicates (0: no intervals)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and of the weighted ensemble's folds."),
    folds: int = typer.Option(5, "--folds", min=2, help="Cross-fitting folds of the weighted ensemble."),
    budget: int = typer.Option(300, "--budget", min=1, help="Nevergrad evaluations per task and fold (weighted)."),
    compare: Optional[tuple[str, str]] = typer.Option(None, "--compare", help="DeLong test of row A against row B."),
    views: str = typer.Option("max", "--views", help="Combine image-level rows of a study by max or mean."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the rows as JSON here."),
    plot_out: Optional[Path] = typer.Option(None, "--plot", help="Write the ROC figure (PNG) here."),
    rule: str = typer.Option("scorer", "--radiologist-rule", help="scorer (official counting) or interpolated."),
) -> None:
    """Evaluate prediction files (and their ensembles) against a ground-truth CSV."""
    from chexcft.evaluation.report import evaluate_table, render_comparisons, render_table, score_table

    if views not in AGGREGATIONS:
        raise ChexcftError(f"--views must be one of {', '.join(AGGREGATIONS)}, got {views!r}")
    ensembles = [e.strip() for e in ensemble.split(",") if e.strip()]
    gt = load_groundtruth(groundtruth)
    tables = {}
    for path in [*predictions, *(more or [])]:
        tables[row_name(path, set(tables))] = load_predictions(path, views=views)
    with console.status("scoring"):
        table = score_table(gt, tables, ensembles=ensembles, folds=folds, seed=seed, weighted_budget=budget)
        rows = evaluate_table(table, bootstrap=bootstrap, seed=seed, compare=[compare] if compare else [],
                              radiologist_rule=rule)
    console.print(render_table(rows, table.tasks))
    comparisons = render_comparisons(rows, table.tasks)
    if comparisons is not None:
        console.print(comparisons)
    if json_out is not None:
        atomic_write_json(json_out, rows)
        console.print(f"rows written to {json_out}")
    if plot_out is not None:
        from chexcft.evaluation.plots import plot_roc

        plot_roc(table, plot_out)
        console.print(f"ROC figure written to {plot_out}")
