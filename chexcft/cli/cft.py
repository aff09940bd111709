"""`chexcft cft`: Category-wise Fine-Tuning of a run (or of every member of an ensemble)."""

from __future__ import annotations

from pathlib import Path

import typer

from chexcft.cli import app, console


@app.command("cft")
def cft_command(
    run: Path | None = typer.Option(None, "--run", help="Run directory to fine-tune."),
    ensemble: Path | None = typer.Option(None, "--ensemble", help="Ensemble directory: fine-tune every member."),
    train_csv: Path = typer.Option(..., "--train-csv", help="Training CSV (known labels are fitted)."),
    valid_csv: Path = typer.Option(..., "--valid-csv", help="Validation CSV (selects heads, fits calibration)."),
    test_csv: Path | None = typer.Option(None, "--test-csv", help="Held-out CSV, never used for fitting or selection."),
    root: Path | None = typer.Option(None, "--root", help="Folder the CSVs' paths are relative to (default: inferred)."),
    preset: str = typer.Option(
        "default", "--preset",
        help="default (fast, convergence-aware) or authors (the CFT authors' settings exactly: ASL + Adam lr 1e-4, "
        "5000 steps, patience 300, their GA, validation early stopping, any validation gain kept). Flags override it.",
    ),
    method: str | None = typer.Option(None, "--method", help="bp, ga or both (GA refines BP's row) [default: both]."),
    optimizer: str | None = typer.Option(
        None, "--optimizer",
        help="GA: subspace (Nevergrad in a subspace around the row), authors (their GA), or a Nevergrad optimizer "
        "name run on all coordinates (e.g. TwoPointsDE) [default: subspace].",
    ),
    known: str = typer.Option("explicit", "--known", help="explicit (1/0 only) or explicit+blank (blanks as negatives)."),
    metric: str | None = typer.Option(None, "--metric", help="auc or ap (selection and GA fitness) [default: auc]."),
    loss: str | None = typer.Option(None, "--loss", help="BP loss: bce or asl [default: bce]."),
    bp_solver: str | None = typer.Option(None, "--bp-solver", help="auto, newton (penalised, bce) or adam [default: auto]."),
    bp_lambda: list[float] | None = typer.Option(
        None, "--bp-lambda", help="BP penalty grid toward the trained row, in images (repeatable); solved strongest first, the strongest within "
        "one standard error of the best holdout AUC is kept [default: 30000 10000 3000 1000 300 100 30 10 3 1]."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="BP steps and GA generations [default: 100]."),
    patience: int | None = typer.Option(None, "--patience", min=1, help="Steps without improvement [default: 20]."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate [default: 1e-3]."),
    population: int | None = typer.Option(None, "--population", min=2, help="GA population [default: 20]."),
    tol: float | None = typer.Option(None, "--tol", min=0.0, help="Newton BP tolerance per row [default: 1e-5]."),
    time_budget: float | None = typer.Option(
        None, "--time-budget", min=0.0, help="Seconds per category, 0 for unlimited [default: 15]."),
    seed: int = typer.Option(0, "--seed"),
    selection_alpha: float | None = typer.Option(
        None, "--selection-alpha", min=0.0, max=1.0,
        help="Keep a fine-tuned row only if its validation AUC gain is significant at this level "
        "(one-sided paired DeLong); 1 keeps any gain, as the authors' code does [default: 0.05].",
    ),
    early_stopping: str | None = typer.Option(
        None, "--early-stopping",
        help="train-holdout (20% of the known training rows; validation only accepts or rejects) or valid (authors') "
        "[default: train-holdout].",
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Preprocessing cache (default: the run's)."),
    device: str = typer.Option("auto", "--device", help="Device for feature extraction and CFT: auto, cpu, cuda[:N]."),
    cross_fit: int = typer.Option(
        0, "--cross-fit", min=0,
        help="Also cross-fit CFT over --test-csv's patients in K folds (fit on K-1, score the held-out fold) and report "
        "each finding's paired held-out gain with a 95% patient-bootstrap interval (RUN/cft/crossfit.csv). The test "
        "images must be ones the backbone did not train on.",
    ),
    ensemble_rule: str | None = typer.Option(
        None, "--ensemble-rule",
        help="With --ensemble: how members are combined afterwards (mean-logit, mean-prob, rank; default: keep the "
        "recorded rule); the ensemble's calibration is re-fitted on --valid-csv.",
    ),
) -> None:
    """Re-fit each category's head row on its known labels (BP and/or GA), calibrate, report before/after."""
    from rich.table import Table

    from chexcft.cft.finetuner import CategoryWiseFineTuner
    from chexcft.cft.pipeline import run_cft
    from chexcft.device import resolve_device
    from chexcft.ensemble import load_ensemble
    from chexcft.errors import ChexcftError
    from chexcft.fileio import read_json

    if (run is None) == (ensemble is None):
        raise ChexcftError("give exactly one of --run RUN_DIR or --ensemble DIR")
    members = [run] if run is not None else load_ensemble(ensemble)
    if cross_fit and test_csv is None:
        raise ChexcftError("--cross-fit K cross-fits over --test-csv: give the held-out CSV")
    if ensemble_rule is not None:
        from chexcft.combination import check_rule

        if ensemble is None:
            raise ChexcftError("--ensemble-rule needs --ensemble DIR")
        check_rule(ensemble_rule)
    settings = resolve_device(device)
    unset = object()
    given = {"method": method, "optimizer": optimizer, "metric": metric, "loss": loss, "bp_solver": bp_solver,
             "bp_lambdas": tuple(bp_lambda) if bp_lambda else None, "max_steps": max_steps, "patience": patience,
             "lr": lr, "population": population, "tol": tol, "early_stopping": early_stopping,
             "time_budget": unset if time_budget is None else (time_budget or None),
             "selection_alpha": unset if selection_alpha is None else (None if selection_alpha >= 1.0 else selection_alpha)}
    overrides = {key: value for key, value in given.items()
                 if value is not unset and (value is not None or key in ("time_budget", "selection_alpha"))}
    for member in members:
        tuner = CategoryWiseFineTuner.preset(preset, seed=seed, device=str(settings.device), **overrides)
        out = run_cft(member, train_csv, valid_csv, root, test_csv, method=tuner.method, optimizer=tuner.optimizer,
                      known=known, tuner=tuner, cache_dir=cache_dir, seed=seed, settings=settings)
        params = {k: v for k, v in tuner.get_params().items() if k not in ("seed", "observations")}
        summary = read_json(out / "report.json")
        split = "test" if summary["held_out"] else "valid"
        table = Table("observation", "kept", f"{split} AUC before", f"{split} AUC after", "gain 95% CI", title=str(member))
        for row in summary["categories"]:
            def fmt(value):
                return "-" if value is None else f"{value:.3f}"
            ci = (row.get(f"{split}_gain_ci_low"), row.get(f"{split}_gain_ci_high"))
            table.add_row(row["observation"], row["method_kept"], fmt(row.get(f"{split}_auc_before")),
                          fmt(row.get(f"{split}_auc_after")), f"[{fmt(ci[0])}, {fmt(ci[1])}]")
        console.print(table)
        block = summary["test"] if summary["held_out"] else summary["validation"]
        before, after, ci = block["mean_auc_before"], block["mean_auc_after"], block["mean_gain_ci"]
        console.print(f"mean {split} AUC {before:.4f} -> {after:.4f} (gain 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}])"
                      if None not in (before, after, *ci) else f"mean {split} AUC: undefined")
        if not summary["held_out"]:
            console.print(f"[yellow]{summary['note']}[/]")
        console.print(f"wrote {out}")
        if cross_fit:
            from chexcft.cft.crossfit import cross_fit_run

            crossed = cross_fit_run(member, [(test_csv, root)], valid_csv, root, k=cross_fit, seed=seed, known=known,
                                    tuner_params=params, cache_dir=cache_dir, settings=settings)
            console.print(_cross_fit_table(crossed, str(member)))
    if ensemble is not None:
        from chexcft.combination import calibrate_ensemble

        combination = calibrate_ensemble(ensemble, valid_csv, root, ensemble_rule, device=device)
        console.print(f"ensemble {ensemble}: members combined by {combination.rule}, calibration re-fitted on "
                      f"{valid_csv} (recorded in ensemble.json)", soft_wrap=True, highlight=False)


def _cross_fit_table(result, title: str):  # result: chexcft.cft.crossfit.CrossFitResult
    from rich.table import Table

    table = Table("observation", "pos/neg", "AUC before", "AUC after", "gain [95% CI]", "rows replaced",
                  title=f"{title}: cross-fitted CFT, {result.settings['k']} patient folds, "
                        f"{result.settings['images']} held-out images")
    for row in result.table.to_dict(orient="records"):
        def fmt(value, sign=""):
            return "-" if value is None or value != value else f"{value:{sign}.3f}"
        gain = fmt(row["gain"], "+")
        if not row["reliable"]:
            gain += " (unreliable: < 10 pos/neg)"
        elif row["gain_ci_low"] == row["gain_ci_low"]:
            gain += f" [{fmt(row['gain_ci_low'], '+')}, {fmt(row['gain_ci_high'], '+')}]"
        table.add_row(row["observation"], f"{row['n_pos']}/{row['n_neg']}", fmt(row["auc_before"]),
                      fmt(row["auc_after"]), gain, f"{row['folds_replaced']}/{row['k']}")
    return table
