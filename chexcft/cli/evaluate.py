"""`chexcft evaluate`: AUCs, intervals, radiologist counts, ensembles, DeLong comparisons and operating points."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from chexcft.cli import app, console
from chexcft.errors import ChexcftError
from chexcft.evaluation.aggregate import AGGREGATIONS, UNCERTAIN_RULES, UNLABELLED_RULES, row_name
from chexcft.fileio import atomic_write_json

# Spelled out here so that importing the CLI does not import Nevergrad (chexcft.evaluation.ensembles.ENSEMBLES).
_ENSEMBLE_NAMES = "mean,mean-logit,rank,weighted"
_KEY_HELP = ("Join column: Study (default; image rows with a Path are combined into studies), Path (per image), "
             "or any other column such as NIH's 'Image Index' (the default for NIH files).")
_TASKS_HELP = ("Findings: competition (the five), all (every labelled ground-truth finding all files predict) or "
               "A,B,... Default: competition when the ground truth has the five, else all.")


@app.command("evaluate")
def evaluate_command(
    groundtruth: Path = typer.Option(..., "--groundtruth", exists=True, dir_okay=False,
                                     help="Ground truth CSV: study level (Study), image level (Path) or --key."),
    predictions: list[Path] = typer.Option(..., "--predictions", exists=True, dir_okay=False,
                                           help="Prediction CSV(s); more files may follow the first."),
    more: Optional[list[Path]] = typer.Argument(None, exists=True, dir_okay=False, show_default=False,
                                                help="Further prediction CSVs."),
    key: Optional[str] = typer.Option(None, "--key", help=_KEY_HELP),
    tasks: Optional[str] = typer.Option(None, "--tasks", help=_TASKS_HELP),
    unlabelled: str = typer.Option("error", "--unlabelled",
                                   help=f"Blank ground-truth cells: {'/'.join(UNLABELLED_RULES)}."),
    uncertain: str = typer.Option("error", "--uncertain",
                                  help=f"Uncertain (-1) ground-truth cells: {'/'.join(UNCERTAIN_RULES)}."),
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
    operating_point: Optional[str] = typer.Option(
        None, "--operating-point", help="youden, sensitivity=X, specificity=X or ppv=X: a threshold per finding "
        "chosen on the validation files, rates reported on the evaluated (held-out) files."),
    valid_groundtruth: Optional[Path] = typer.Option(None, "--validation-groundtruth", exists=True, dir_okay=False,
                                                     help="Ground truth of the split thresholds are chosen on."),
    valid_predictions: Optional[list[Path]] = typer.Option(
        None, "--validation-predictions", exists=True, dir_okay=False,
        help="Validation predictions, one per --predictions file in the same order (repeatable)."),
    save_thresholds: Optional[Path] = typer.Option(
        None, "--save-thresholds", file_okay=False,
        help="Run or ensemble directory to write thresholds.json to (for `chexcft predict --decisions`)."),
    thresholds_row: Optional[str] = typer.Option(
        None, "--thresholds-row", help="Row whose thresholds --save-thresholds writes (default: the last row)."),
) -> None:
    """Evaluate prediction files (and their ensembles) against a ground-truth CSV."""
    from chexcft.evaluation.files import load_evaluation
    from chexcft.evaluation.findings import parse_tasks
    from chexcft.evaluation.report import evaluate_table, render_comparisons, render_lacking, render_table, score_table

    if views not in AGGREGATIONS:
        raise ChexcftError(f"--views must be one of {', '.join(AGGREGATIONS)}, got {views!r}")
    for option, value, allowed in (("--unlabelled", unlabelled, UNLABELLED_RULES),
                                   ("--uncertain", uncertain, UNCERTAIN_RULES)):
        if value not in allowed:
            raise ChexcftError(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    ensembles = [e.strip() for e in ensemble.split(",") if e.strip()]
    chosen_rule = _operating_rule(operating_point, valid_groundtruth, valid_predictions, predictions, more,
                                  save_thresholds)
    files: dict[str, Path] = {}
    for path in [*predictions, *(more or [])]:
        files[row_name(path, set(files))] = path
    inputs = load_evaluation(groundtruth, files, key=key, tasks=parse_tasks(tasks), views=views,
                             unlabelled=unlabelled, uncertain=uncertain)
    with console.status("scoring"):
        table = score_table(inputs.groundtruth, inputs.predictions, ensembles=ensembles, folds=folds, seed=seed,
                            weighted_budget=budget, tasks=inputs.match.tasks, key=inputs.key, match=inputs.match)
        rows = evaluate_table(table, bootstrap=bootstrap, seed=seed, compare=[compare] if compare else [],
                              radiologist_rule=rule)
    if chosen_rule is not None:
        points = _operating_points(chosen_rule, table, inputs, files, valid_groundtruth, valid_predictions,
                                   ensembles=ensembles, views=views, unlabelled=unlabelled, uncertain=uncertain,
                                   bootstrap=bootstrap, seed=seed)
        for row in rows:
            row["operating_point"] = points[row["name"]]
    console.print(render_table(rows, table.tasks))
    if chosen_rule is not None:
        from chexcft.evaluation.operating import render_operating_points

        for rendered in render_operating_points(points):
            console.print(rendered)
        if save_thresholds is not None:
            _save_thresholds(save_thresholds, thresholds_row, rows, chosen_rule, points, valid_groundtruth)
    for line in render_lacking(rows):
        console.print(line)
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


def _operating_rule(text: str | None, valid_groundtruth: Path | None, valid_predictions: list[Path] | None,
                    predictions: list[Path], more: list[Path] | None, save: Path | None):  # noqa: ANN202
    if text is None:
        if valid_groundtruth or valid_predictions or save:
            raise ChexcftError("--validation-groundtruth/--validation-predictions/--save-thresholds need "
                               "--operating-point")
        return None
    from chexcft.evaluation.operating import parse_rule

    rule = parse_rule(text)
    if valid_groundtruth is None or not valid_predictions:
        raise ChexcftError("--operating-point needs --validation-groundtruth and --validation-predictions: thresholds "
                           "are chosen on a validation split, never on the evaluated one")
    if len(valid_predictions) != len(predictions) + len(more or []):
        raise ChexcftError(f"--validation-predictions: {len(valid_predictions)} file(s) for "
                           f"{len(predictions) + len(more or [])} prediction file(s); give one per file, same order")
    return rule


def _operating_points(rule, table, inputs, files, valid_groundtruth, valid_predictions, *,  # noqa: ANN001, ANN202
                      ensembles, views, unlabelled, uncertain, bootstrap, seed):
    from chexcft.evaluation.files import load_evaluation
    from chexcft.evaluation.operating import table_operating_points
    from chexcft.evaluation.report import score_table

    valid_files = dict(zip(files, valid_predictions))
    fit = load_evaluation(valid_groundtruth, valid_files, key=inputs.key, tasks=list(table.tasks), views=views,
                          unlabelled=unlabelled, uncertain=uncertain)
    transferable = [e for e in ensembles if e == "mean"]
    fit_table = score_table(fit.groundtruth, fit.predictions, ensembles=transferable, seed=seed,
                            tasks=table.tasks, key=fit.key)
    return table_operating_points(table, fit_table, rule, bootstrap=bootstrap, seed=seed)


def _save_thresholds(folder, row_name_, rows, rule, points, valid_groundtruth) -> None:  # noqa: ANN001
    from chexcft.evaluation.operating import THRESHOLDS_FILE, thresholds_record

    name = row_name_ or rows[-1]["name"]
    if name not in points:
        raise ChexcftError(f"--thresholds-row: no row named {name!r}; rows are {', '.join(points)}")
    if not points[name].get("tasks"):
        raise ChexcftError(f"--thresholds-row {name}: {points[name].get('note', 'no operating point')}")
    folder.mkdir(parents=True, exist_ok=True)
    record = thresholds_record(rule, points[name]["tasks"], name, {"validation_groundtruth": str(valid_groundtruth)})
    atomic_write_json(folder / THRESHOLDS_FILE, record)
    console.print(f"thresholds of {name} ({rule}) written to {folder / THRESHOLDS_FILE}")
