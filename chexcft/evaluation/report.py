"""`evaluate`: AUCs, bootstrap and DeLong intervals, radiologist counts and comparisons as JSON-ready rows.

JSON layout: a list of rows, one per prediction file (named by its stem) then one per ensemble
(named `ensemble-mean`, `ensemble-mean-logit`, `ensemble-rank`, `ensemble-weighted`). Every row has `name`, `kind`,
`auc`, `mean_auc`, `ci`, `mean_auc_ci`, `delong_ci`, `radiologists_below`, `key`, `n_studies` (rows joined
on `key`), `positives`, `negatives`, `reliable`, `bootstrap`. Undefined AUCs are null with the reason under
`undefined`. A finding with fewer than MIN_CLASS_COUNT positives or negatives has `reliable` false, its reason
under `unreliable`, and null intervals (`ci`, `delong_ci`): no interval that only looks precise. Rows evaluated
from files (chexcft.evaluation.findings) add `lacking` (findings only one side has), `mapping` (CheXpert
observations made from NIH columns) and `not_labelled` (ground-truth columns without labels). The weighted
ensemble adds `folds` (the cross-fitting scheme) and `weights` (per task, per fold, model -> weight).
A comparison `--compare A B` is stored in row A under `comparisons` (a list): per task the
DeLong test of AUC(A) - AUC(B), and for the mean AUC the paired-bootstrap interval of the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from rich.table import Table

from chexcft.errors import ChexcftError
from chexcft.evaluation.aggregate import align_to_groundtruth
from chexcft.evaluation.bootstrap import (
    LEVEL,
    bootstrap_aucs,
    mean_over_tasks,
    percentile_interval,
    stratified_weights,
)
from chexcft.evaluation.delong import delong_interval, delong_test
from chexcft.evaluation.ensembles import (
    ENSEMBLES,
    CrossFit,
    cross_fit_weighted,
    mean_ensemble,
    mean_logit_ensemble,
    rank_ensemble,
)
from chexcft.evaluation.findings import FindingMatch
from chexcft.evaluation.metrics import (
    MIN_CLASS_COUNT,
    class_counts,
    reliability_note,
    task_aucs,
    undefined_auc_reason,
)
from chexcft.evaluation.radiologists import benchmark_points, count_below
from chexcft.schema import COMPETITION_TASKS, STUDY_COLUMN

ENSEMBLE_PREFIX = "ensemble-"


@dataclass
class ScoreTable:
    """Ground truth (n, T; 1, 0 or NaN = not labelled) and every row's aligned scores (n, T), in the truth's order.

    `studies` holds the join keys (studies, or image paths / ids when `key` is another column).
    """

    studies: list[str]
    tasks: tuple[str, ...]
    labels: np.ndarray
    scores: dict[str, np.ndarray]
    kinds: dict[str, str] = field(default_factory=dict)
    cross_fit: CrossFit | None = None
    members: list[str] = field(default_factory=list)
    key: str = STUDY_COLUMN
    match: FindingMatch | None = None


def _round(value: float, digits: int = 6) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def score_table(
    groundtruth: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], *, ensembles: Sequence[str] = ("mean",),
    folds: int = 5, seed: int = 0, tasks: tuple[str, ...] = COMPETITION_TASKS, weighted_budget: int = 300,
    key: str = STUDY_COLUMN, match: FindingMatch | None = None,
) -> ScoreTable:
    """Align every prediction table to the ground truth (on column `key`) and add the requested ensembles' scores."""
    unknown = [e for e in ensembles if e not in ENSEMBLES]
    if unknown:
        raise ChexcftError(f"unknown ensemble(s) {', '.join(unknown)}; choose from {', '.join(ENSEMBLES)}")
    if not predictions:
        raise ChexcftError("no prediction tables to evaluate")
    labels = groundtruth[list(tasks)].to_numpy(dtype=np.float64)
    if "weighted" in ensembles and np.isnan(labels).any():
        raise ChexcftError("the weighted ensemble needs every row labelled for every finding (some are not labelled)")
    table = ScoreTable(list(groundtruth[key].astype(str)), tuple(tasks), labels, {}, key=key, match=match)
    for name, frame in predictions.items():
        table.scores[name] = align_to_groundtruth(groundtruth, frame, name, tasks, key=key)
        table.kinds[name] = "model"
    table.members = list(predictions)
    stack = np.stack([table.scores[name] for name in table.members])
    for kind in ensembles:
        name = ENSEMBLE_PREFIX + kind
        if name in table.scores:
            raise ChexcftError(f"a prediction file is named {name!r}, which clashes with the ensemble row")
        if kind == "mean":
            table.scores[name] = mean_ensemble(stack)
        elif kind == "mean-logit":
            table.scores[name] = mean_logit_ensemble(stack)
        elif kind == "rank":
            table.scores[name] = rank_ensemble(stack)
        else:
            table.cross_fit = cross_fit_weighted(stack, labels, tuple(tasks), n_splits=folds, seed=seed,
                                                 budget=weighted_budget)
            table.scores[name] = table.cross_fit.scores
        table.kinds[name] = "ensemble"
    return table


def _cross_fit_fields(fit: CrossFit, members: list[str], tasks: tuple[str, ...], labels: np.ndarray) -> dict[str, Any]:
    per_task: dict[str, list[dict[str, Any]]] = {task: [] for task in tasks}
    weights: dict[str, list[dict[str, float]]] = {task: [] for task in tasks}
    for f in fit.folds:
        t = tasks.index(f.task)
        per_task[f.task].append({
            "fold": f.fold, "n_fit": int(f.fit_index.size), "n_eval": int(f.eval_index.size),
            "eval_positives": int(labels[f.eval_index, t].sum()), "fit_auc": _round(f.fit_auc),
        })
        weights[f.task].append({m: _round(w) for m, w in zip(members, f.weights)})
    folds = {
        "scheme": "stratified k-fold cross-fitting per task (sklearn StratifiedKFold, shuffle=True): weights fitted "
                  "on k-1 folds score the held-out fold; AUC over the concatenated out-of-fold scores",
        "n_splits": fit.n_splits, "seed": fit.seed, "optimizer": f"nevergrad {fit.optimizer}",
        "budget_per_fold": fit.budget, "parametrisation": "softmax of free parameters (weights on the simplex)",
        "per_task": per_task,
    }
    return {"folds": folds, "weights": weights}


def _comparison(table: ScoreTable, a: str, b: str, boot_weights: np.ndarray | None) -> dict[str, Any]:
    per_task: dict[str, Any] = {}
    for t, task in enumerate(table.tasks):
        test = delong_test(table.labels[:, t], table.scores[a][:, t], table.scores[b][:, t])
        per_task[task] = {"auc_difference": _round(test.difference), "std_error": _round(test.std_error),
                          "z": _round(test.z), "p_value": _round(test.p_value, 8)}
    diff = float(np.nanmean(task_aucs(table.labels, table.scores[a]) - task_aucs(table.labels, table.scores[b])))
    out: dict[str, Any] = {"against": b, "method": "DeLong (Sun & Xu 2014), two-sided", "tasks": per_task,
                           "mean_auc_difference": _round(diff)}
    if boot_weights is not None:
        reps = (mean_over_tasks(bootstrap_aucs(table.labels, table.scores[a], boot_weights))
                - mean_over_tasks(bootstrap_aucs(table.labels, table.scores[b], boot_weights)))
        low, high = percentile_interval(reps)
        out["mean_auc_difference_ci"] = [_round(low), _round(high)]
        out["mean_auc_difference_ci_method"] = "paired stratified bootstrap (same replicates for both rows)"
    return out


def evaluate_table(
    table: ScoreTable, *, bootstrap: int = 1000, seed: int = 0, compare: Sequence[tuple[str, str]] = (),
    radiologist_rule: str = "scorer",
) -> list[dict[str, Any]]:
    """JSON-ready rows for every score set of `table` (see the module docstring for the layout)."""
    for pair in compare:
        for name in pair:
            if name not in table.scores:
                raise ChexcftError(f"--compare: no row named {name!r}; rows are {', '.join(table.scores)}")
    boot_weights = stratified_weights(table.labels, bootstrap, seed) if bootstrap > 0 else None
    rows: list[dict[str, Any]] = []
    points = benchmark_points(table.tasks, table.key, table.studies)
    for name, scores in table.scores.items():
        aucs = task_aucs(table.labels, scores)
        row: dict[str, Any] = {"name": name, "kind": table.kinds[name]}
        if table.kinds[name] == "ensemble":
            row["members"] = list(table.members)
        row["key"] = table.key
        row["n_studies"] = len(table.studies)
        counts = [class_counts(table.labels[:, t]) for t in range(len(table.tasks))]
        row["positives"] = {task: counts[t][0] for t, task in enumerate(table.tasks)}
        row["negatives"] = {task: counts[t][1] for t, task in enumerate(table.tasks)}
        row["auc"] = {task: _round(aucs[t]) for t, task in enumerate(table.tasks)}
        notes = {task: reliability_note(*counts[t]) for t, task in enumerate(table.tasks)}
        row["reliable"] = {task: notes[task] is None for task in table.tasks}
        unreliable = {task: note for task, note in notes.items() if note is not None}
        if unreliable:
            row["unreliable"] = unreliable
        defined = aucs[np.isfinite(aucs)]
        row["mean_auc"] = _round(defined.mean()) if defined.size else None
        undefined = {task: undefined_auc_reason(table.labels[:, t]) for t, task in enumerate(table.tasks)
                     if not np.isfinite(aucs[t])}
        if undefined:
            row["undefined"] = undefined
        if boot_weights is not None:
            reps = bootstrap_aucs(table.labels, scores, boot_weights)
            low, high = percentile_interval(reps)
            row["ci"] = {task: [_round(low[t]), _round(high[t])] if row["reliable"][task] else [None, None]
                         for t, task in enumerate(table.tasks)}
            mlow, mhigh = percentile_interval(mean_over_tasks(reps))
            row["mean_auc_ci"] = [_round(mlow), _round(mhigh)]
        else:
            row["ci"] = {task: [None, None] for task in table.tasks}
            row["mean_auc_ci"] = [None, None]
        row["bootstrap"] = {"replicates": int(bootstrap), "seed": int(seed), "level": LEVEL,
                            "method": "percentile; studies resampled within strata of their label pattern"}
        row["delong_ci"] = {task: [_round(v) for v in delong_interval(table.labels[:, t], scores[:, t])]
                            if row["reliable"][task] else [None, None] for t, task in enumerate(table.tasks)}
        row["radiologists_below"] = {
            task: count_below(table.labels[:, t], scores[:, t], points[task], radiologist_rule)
            if points[task] else None for t, task in enumerate(table.tasks)
        }
        row["radiologist_rule"] = radiologist_rule
        if table.match is not None:
            if table.kinds[name] == "model":
                row["lacking"] = table.match.lacking(name)
            if table.match.mapping:
                row["mapping"] = dict(table.match.mapping)
            if table.match.unlabelled:
                row["not_labelled"] = list(table.match.unlabelled)
        if name == ENSEMBLE_PREFIX + "weighted" and table.cross_fit is not None:
            row.update(_cross_fit_fields(table.cross_fit, table.members, table.tasks, table.labels))
        comparisons = [_comparison(table, a, b, boot_weights) for a, b in compare if a == name]
        if comparisons:
            row["comparisons"] = comparisons
        rows.append(row)
    return rows


def evaluate(
    groundtruth: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], ensembles: Sequence[str] = ("mean",),
    bootstrap: int = 1000, seed: int = 0, *, folds: int = 5, compare: Sequence[tuple[str, str]] = (),
    tasks: tuple[str, ...] = COMPETITION_TASKS, radiologist_rule: str = "scorer", weighted_budget: int = 300,
) -> list[dict[str, Any]]:
    """Evaluate study-level prediction tables (and ensembles of them) against a study-level ground truth."""
    table = score_table(groundtruth, predictions, ensembles=ensembles, folds=folds, seed=seed, tasks=tasks,
                        weighted_budget=weighted_budget)
    return evaluate_table(table, bootstrap=bootstrap, seed=seed, compare=compare, radiologist_rule=radiologist_rule)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _auc_cell(row: Mapping[str, Any], task: str) -> str:
    auc = row["auc"].get(task)
    if auc is None:
        return "n/a"
    if not row.get("reliable", {}).get(task, True):
        return f"{auc:.4f} (unreliable)"
    low, high = (row.get("ci") or {}).get(task, [None, None])
    return f"{auc:.4f}" + ("" if low is None else f" [{low:.4f}, {high:.4f}]")


def render_table(rows: Sequence[Mapping[str, Any]], tasks: tuple[str, ...] = COMPETITION_TASKS) -> Table:
    """A rich table, one line per finding: positives/negatives, each row's AUC [95% CI], radiologists below."""
    table = Table(title="ROC-AUC [95% CI] per finding; (r k/3): radiologists on or below the curve")
    table.add_column("finding")
    table.add_column("pos/neg", justify="right")
    for row in rows:
        table.add_column(str(row["name"]), justify="right")
    first = rows[0] if rows else {}
    for task in tasks:
        counts = f"{first.get('positives', {}).get(task, '')}/{first.get('negatives', {}).get(task, '')}"
        cells = []
        for row in rows:
            below = row["radiologists_below"].get(task)
            cells.append(_auc_cell(row, task) + ("" if below is None else f" (r {below}/3)"))
        table.add_row(task, counts, *cells)
    means = []
    for row in rows:
        low, high = row["mean_auc_ci"]
        means.append(f"{_fmt(row['mean_auc'])}" + ("" if low is None else f" [{low:.4f}, {high:.4f}]"))
    table.add_row("mean", "", *means, end_section=False)
    notes = sorted({note for row in rows for note in (row.get("unreliable") or {}).values()})
    if notes:
        table.caption = f"unreliable: fewer than {MIN_CLASS_COUNT} positives or negatives, so no interval is shown"
    return table


def render_lacking(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Lines naming the findings that were not evaluated because one side lacks them, and the NIH mapping used."""
    lines = []
    first = rows[0] if rows else {}
    if first.get("not_labelled"):
        lines.append(f"not labelled in the ground truth: {', '.join(first['not_labelled'])}")
    for observation, sources in (first.get("mapping") or {}).items():
        lines.append(f"mapped: {observation} = {sources}")
    for row in rows:
        lacking = row.get("lacking") or {}
        for field_name, text in (("not_predicted", "ground-truth findings it does not predict"),
                                 ("not_in_groundtruth", "its findings the ground truth lacks"),
                                 ("no_counterpart", "NIH findings without a CheXpert counterpart")):
            if lacking.get(field_name):
                lines.append(f"{row['name']}: {text}: {', '.join(lacking[field_name])}")
    return lines


def render_comparisons(rows: Sequence[Mapping[str, Any]], tasks: tuple[str, ...] = COMPETITION_TASKS) -> Table | None:
    """A rich table of the DeLong comparisons stored in the rows, or None when there are none."""
    pairs = [(row["name"], c) for row in rows for c in row.get("comparisons", [])]
    if not pairs:
        return None
    table = Table(title="DeLong tests: AUC(A) - AUC(B) (p-value)")
    table.add_column("A - B")
    for task in tasks:
        table.add_column(task, justify="right")
    table.add_column("mean (paired bootstrap CI)", justify="right")
    for name, comp in pairs:
        cells = []
        for task in tasks:
            d = comp["tasks"][task]
            cells.append("n/a" if d["auc_difference"] is None else f"{d['auc_difference']:+.4f} (p={d['p_value']:.3g})")
        ci = comp.get("mean_auc_difference_ci")
        mean = _fmt(comp["mean_auc_difference"]) + ("" if not ci or ci[0] is None else f" [{ci[0]:+.4f}, {ci[1]:+.4f}]")
        table.add_row(f"{name} - {comp['against']}", *cells, mean)
    return table
