"""`chexcft calibrate-ensemble`: set an ensemble's combination rule and re-fit its calibration on validation."""

from __future__ import annotations

from pathlib import Path

import typer

from chexcft.cli import app, console

# Spelled out so that `chexcft --help` does not import numpy-heavy modules; checked by chexcft.combination.
_RULES = "mean-logit (default), mean-prob or rank"


@app.command("calibrate-ensemble")
def calibrate_ensemble_command(
    ensemble: Path = typer.Argument(..., help="Ensemble directory (holds ensemble.json)."),
    valid_csv: Path = typer.Option(..., "--valid-csv", help="Validation CSV: the calibration is fitted on its labels."),
    root: Path | None = typer.Option(None, "--root", help="Folder the CSV's paths are relative to."),
    rule: str | None = typer.Option(None, "--rule", help=f"How members are combined: {_RULES}; default: keep the recorded one."),
    which: str = typer.Option("best", "--which", help="Weights of each member: best or last."),
    device: str = typer.Option("auto", "--device"),
    batch_size: int = typer.Option(32, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Combine members by RULE (their logits after CFT, before calibration) and fit the ensemble's calibration."""
    from chexcft.combination import calibrate_ensemble

    combination = calibrate_ensemble(ensemble, valid_csv, root, rule, which=which, device=device,
                                     batch_size=batch_size, progress=not quiet)
    console.print(f"{ensemble / 'ensemble.json'}: rule {combination.rule}, Platt calibration of "
                  f"{len(combination.observations)} finding(s) fitted on {combination.fitted_on['images']} "
                  f"validation image(s) of {valid_csv}", soft_wrap=True, highlight=False)
