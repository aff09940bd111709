"""`chexcft predict`, `chexcft submit` and `chexcft bundle`: image predictions, competition CSVs, offline bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from chexcft.cli import app, console

_MODEL_HELP = "Run directory (repeatable); an ensemble directory (ensemble.json) expands to its members."
_INPUT_HELP = "CheXpert-style CSV, CSV with only Path, NIH CSV or image folder."
_ROOT_HELP = "Folder the CSV's paths are relative to (default: inferred from the CSV's location)."
_FILL_HELP = "'prior': write the training prevalence for studies with no readable image (and say so)."
_SHOWN_FAILURES = 10


def _print_failures(failures: Any, listing: Path | None) -> None:
    if not len(failures):
        return
    console.print(f"[bold yellow]{len(failures)} image(s) could not be read:[/]")
    for path, reason in failures.head(_SHOWN_FAILURES).itertuples(index=False):
        console.print(f"  {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
    if len(failures) > _SHOWN_FAILURES:
        console.print(f"  ... and {len(failures) - _SHOWN_FAILURES} more")
    if listing is not None:
        console.print(f"all failures are listed in {listing}", soft_wrap=True)


def _print_prediction_summary(result: Any) -> None:
    console.print(
        f"{len(result.predictions)} image(s) predicted with {len(result.models)} model(s), "
        f"{len(result.observations)} observation(s)"
    )
    if result.dropped_observations:
        console.print(
            "[yellow]not predicted by every model, so left out:[/] " + ", ".join(result.dropped_observations)
        )


def _saved_thresholds(model: list[Path]) -> dict[str, Any]:
    """The thresholds.json of the one run or ensemble directory given (decisions belong to one model's scores)."""
    from chexcft.errors import ChexcftError
    from chexcft.evaluation.operating import load_thresholds

    if len(model) != 1:
        raise ChexcftError("--decisions: give one --model (a run or an ensemble directory holding thresholds.json); "
                           "thresholds chosen for one model's scores do not carry over to another mix")
    return {**load_thresholds(model[0]), "folder": str(model[0])}


@app.command("predict")
def predict_command(
    model: list[Path] = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    input_path: Path = typer.Option(..., "--input", "-i", help=_INPUT_HELP),
    root: Path | None = typer.Option(None, "--root", help=_ROOT_HELP),
    out: Path = typer.Option(Path("predictions.csv"), "--out", "-o", help="Output CSV: Path + probabilities."),
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation: none or flip (horizontal)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int = typer.Option(0, "--workers", help="Image-reading loader processes."),
    which: str = typer.Option("best", "--which", help="Weights of each run: best or last."),
    no_cft: bool = typer.Option(False, "--no-cft", help="Ignore the runs' CFT head and calibration."),
    uncalibrated: bool = typer.Option(
        False, "--uncalibrated",
        help="Leave out every calibration (after CFT, before calibration: what `evaluate --ensemble mean-logit` combines).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    decisions: bool = typer.Option(
        False, "--decisions", help="Add decision_<finding> (0/1) columns at the thresholds saved in the model's "
        "thresholds.json (`chexcft evaluate --operating-point ... --save-thresholds`)."),
) -> None:
    """Predict every image of a table or folder (a run, or an ensemble by its rule); exit 1 when any is unreadable."""
    from chexcft.data import read_table
    from chexcft.predict import predict_table, write_predictions

    thresholds = _saved_thresholds(model) if decisions else None
    table = read_table(input_path, root)
    result = predict_table(
        table, model, tta=tta, batch_size=batch_size, device=device, workers=workers,
        which=which, use_cft=not no_cft, calibrated=not uncalibrated, progress=not quiet,
    )
    if result.rank != 0:
        raise typer.Exit(1 if result.n_failed else 0)
    if thresholds is not None:
        from chexcft.evaluation.operating import add_decisions

        result.predictions, missing = add_decisions(result.predictions, thresholds["thresholds"])
        console.print(f"decisions at the {thresholds.get('rule', 'saved')} thresholds of {thresholds['folder']}"
                      + (f"; not predicted, so no decision: {', '.join(missing)}" if missing else ""))
    written, failures = write_predictions(result, out)
    _print_prediction_summary(result)
    _print_failures(result.failures, failures)
    console.print(f"wrote {written}", soft_wrap=True)
    if result.n_failed:
        raise typer.Exit(1)


@app.command("submit")
def submit_command(
    input_csv: Path = typer.Argument(..., help="CSV with a Path column (like the competition's input)."),
    output_csv: Path = typer.Argument(..., help="Competition CSV to write: Study + the 5 tasks."),
    model: list[Path] = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    root: Path | None = typer.Option(None, "--root", help=_ROOT_HELP),
    views: str = typer.Option("max", "--views", help="Combine a study's views by max or mean."),
    frontal_only: bool = typer.Option(
        False, "--frontal-only", help="Frontal views only (a study without a readable frontal uses its other views)."
    ),
    fill_missing: str | None = typer.Option(None, "--fill-missing", help=_FILL_HELP),
    tta: str = typer.Option("none", "--tta", help="Test-time augmentation: none or flip."),
    batch_size: int = typer.Option(32, "--batch-size"),
    device: str = typer.Option("auto", "--device"),
    workers: int = typer.Option(0, "--workers"),
    which: str = typer.Option("best", "--which", help="Weights of each run: best or last."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write a competition submission (one row per study), checked against the official scorer's rules."""
    from chexcft.submission import submit

    report = submit(
        input_csv, output_csv, model, root=root, how=views, frontal_only=frontal_only, fill_missing=fill_missing,
        tta=tta, batch_size=batch_size, device=device, workers=workers, which=which, progress=not quiet,
    )
    if report.out_path is None:
        return
    _print_prediction_summary(report.prediction)
    _print_failures(report.prediction.failures, None)
    if report.build.lateral_fallback_studies:
        studies = report.build.lateral_fallback_studies
        console.print(f"[yellow]{len(studies)} study(ies) have no readable frontal view; used their other views:[/] "
                      + ", ".join(studies[:_SHOWN_FAILURES]) + (" ..." if len(studies) > _SHOWN_FAILURES else ""))
    if report.build.filled_studies:
        studies = report.build.filled_studies
        console.print(f"[yellow]{len(studies)} study(ies) with no readable image got the training prevalence "
                      f"({report.prior_source}):[/] " + ", ".join(studies[:_SHOWN_FAILURES])
                      + (" ..." if len(studies) > _SHOWN_FAILURES else ""))
    console.print(f"wrote {report.out_path}: {len(report.frame)} studies, views combined by {views}; "
                  "passes the scorer's checks")


@app.command("bundle")
def bundle_command(
    model: list[Path] = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Bundle folder to create (must not exist, or use --force)."),
    views: str = typer.Option("max", "--views", help="Combine a study's views by max or mean."),
    frontal_only: bool = typer.Option(False, "--frontal-only"),
    fill_missing: str | None = typer.Option(None, "--fill-missing", help=_FILL_HELP),
    tta: str = typer.Option("none", "--tta"),
    which: str = typer.Option("best", "--which"),
    force: bool = typer.Option(False, "--force", help="Replace an earlier bundle in --out."),
) -> None:
    """Build a self-contained offline submission folder: `python src/predict.py INPUT_CSV OUTPUT_CSV`."""
    from chexcft.bundle import build_bundle

    info = build_bundle(
        model, out, views=views, frontal_only=frontal_only, fill_missing=fill_missing, tta=tta, which=which,
        force=force,
    )
    table = Table("dependency", "version", title=f"bundle {info.path}")
    for name, version in info.dependencies.items():
        table.add_row(name, version or "not installed")
    console.print(table)
    console.print(f"{len(info.models)} model(s), {len(info.vendored)} vendored chexcft module(s); "
                  f"run: cd {info.path} && python src/predict.py INPUT_CSV OUTPUT_CSV")
