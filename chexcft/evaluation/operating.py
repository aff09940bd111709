"""Operating points: a threshold per finding chosen on one split, sensitivity/specificity/PPV/NPV on another.

A score at or above the threshold is a positive decision. Rules (`parse_rule`):
- `youden`: the threshold maximising sensitivity + specificity - 1;
- `sensitivity=X`: the highest threshold whose sensitivity is at least X (the most specific such point);
- `specificity=X`: the lowest threshold whose specificity is at least X (the most sensitive such point);
- `ppv=X`: the lowest threshold whose PPV is at least X (the most sensitive such point).
Candidate thresholds are the distinct scores of the choosing split. Held-out intervals are percentile intervals
over stratified bootstrap multiplicities (chexcft.evaluation.bootstrap), computed for every replicate at once;
like AUCs, findings with fewer than MIN_CLASS_COUNT held-out positives or negatives get no interval.
`thresholds.json` (THRESHOLDS_FILE) saves the chosen thresholds beside a run, for `chexcft predict --decisions`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexcft.errors import ChexcftError
from chexcft.evaluation.bootstrap import percentile_interval
from chexcft.evaluation.metrics import class_counts, is_reliable

THRESHOLDS_FILE = "thresholds.json"
RULES: tuple[str, ...] = ("youden", "sensitivity", "specificity", "ppv")
METRICS: tuple[str, ...] = ("sensitivity", "specificity", "ppv", "npv")
DECISION_PREFIX = "decision_"


@dataclass(frozen=True)
class OperatingRule:
    """How a threshold is chosen: `kind` in RULES and, except for youden, the target value in (0, 1]."""

    kind: str
    target: float | None = None

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}={self.target:g}"


def parse_rule(text: str) -> OperatingRule:
    """`youden`, `sensitivity=0.9`, `specificity=0.9` or `ppv=0.8` -> OperatingRule; ChexcftError otherwise."""
    name, sep, value = str(text).strip().lower().partition("=")
    name = name.strip()
    if name == "youden" and not sep:
        return OperatingRule("youden")
    if name in RULES[1:] and sep:
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if 0.0 < target <= 1.0:
            return OperatingRule(name, target)
    raise ChexcftError(
        f"--operating-point {text!r}: expected youden, sensitivity=X, specificity=X or ppv=X with X in (0, 1]"
    )


def _curve(y: np.ndarray, scores: np.ndarray) -> dict[str, np.ndarray]:
    """At every distinct score (descending) as threshold: TP, FP, and the four rates (NaN where undefined)."""
    known = (y == 0) | (y == 1)
    y, scores = y[known], scores[known]
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(t == 1)[last].astype(np.float64)
    fp = np.cumsum(t == 0)[last].astype(np.float64)
    n_pos, n_neg = float((t == 1).sum()), float((t == 0).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"threshold": s[last], "sensitivity": tp / n_pos, "specificity": 1.0 - fp / n_neg,
                "ppv": tp / (tp + fp), "npv": (n_neg - fp) / (n_neg - fp + n_pos - tp)}


def choose_threshold(y: np.ndarray, scores: np.ndarray, rule: OperatingRule) -> float | None:
    """The rule's threshold on labels `y` (1, 0, NaN ignored) and scores; None when no threshold meets the target."""
    y, scores = np.asarray(y, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = class_counts(y)
    if n_pos == 0 or n_neg == 0:
        return None
    curve = _curve(y, scores)
    thresholds = curve["threshold"]
    if rule.kind == "youden":
        j = curve["sensitivity"] + curve["specificity"] - 1.0
        return float(thresholds[int(np.argmax(j))])
    met = np.flatnonzero(curve[rule.kind] >= rule.target - 1e-12)
    if met.size == 0:
        return None
    # Thresholds descend: the first index meeting a sensitivity target is the highest threshold; specificity and
    # PPV targets take the last (lowest) threshold that still meets them.
    return float(thresholds[met[0] if rule.kind == "sensitivity" else met[-1]])


def decision_counts(y: np.ndarray, scores: np.ndarray, threshold: float, weights: np.ndarray | None = None
                    ) -> np.ndarray:
    """TP, FN, TN, FP at `threshold`: (4,) or, with multiplicities (B, n), (B, 4) for every replicate at once."""
    y, scores = np.asarray(y), np.asarray(scores, dtype=np.float64)
    positive = scores >= threshold
    cells = np.stack([(y == 1) & positive, (y == 1) & ~positive, (y == 0) & ~positive, (y == 0) & positive],
                     axis=1).astype(np.float64)
    if weights is None:
        return cells.sum(axis=0)
    return np.asarray(weights, dtype=np.float64) @ cells


def rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV and NPV from TP, FN, TN, FP along the last axis (NaN where undefined)."""
    tp, fn, tn, fp = (counts[..., i] for i in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp),
                "npv": tn / (tn + fn)}


def _value(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def operating_point(
    rule: OperatingRule, fit_y: np.ndarray, fit_scores: np.ndarray, y: np.ndarray, scores: np.ndarray,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """One finding: the threshold chosen on (fit_y, fit_scores), and the four rates on (y, scores) with intervals."""
    threshold = choose_threshold(fit_y, fit_scores, rule)
    out: dict[str, Any] = {"threshold": _value(threshold) if threshold is not None else None}
    if threshold is None:
        n_pos, n_neg = class_counts(fit_y)
        out["note"] = (f"no threshold reaches {rule} on the choosing split" if n_pos and n_neg
                       else "the choosing split lacks positives or negatives")
        return out
    fitted = rates(decision_counts(fit_y, fit_scores, threshold))
    out["chosen_on"] = {m: _value(fitted[m]) for m in METRICS}
    held = rates(decision_counts(y, scores, threshold))
    out.update({m: _value(held[m]) for m in METRICS})
    n_pos, n_neg = class_counts(y)
    out["reliable"] = is_reliable(n_pos, n_neg)
    if weights is not None and out["reliable"]:
        replicates = rates(decision_counts(y, scores, threshold, weights))
        for m in METRICS:
            low, high = percentile_interval(replicates[m])
            out[f"{m}_ci"] = [_value(low), _value(high)]
    else:
        out.update({f"{m}_ci": [None, None] for m in METRICS})
    return out


def operating_points(
    rule: OperatingRule, tasks: Sequence[str], fit_labels: np.ndarray, fit_scores: np.ndarray, labels: np.ndarray,
    scores: np.ndarray, weights: np.ndarray | None = None,
) -> dict[str, dict[str, Any]]:
    """operating_point for every task (columns of the (n, T) arrays)."""
    return {task: operating_point(rule, fit_labels[:, t], fit_scores[:, t], labels[:, t], scores[:, t], weights)
            for t, task in enumerate(tasks)}


def thresholds_record(rule: OperatingRule, points: Mapping[str, Mapping[str, Any]], row: str,
                      source: Mapping[str, str]) -> dict[str, Any]:
    """The content of thresholds.json: rule, per-finding thresholds (only those chosen), and where they came from."""
    return {"rule": str(rule), "row": row, "decision": "positive when the score >= threshold",
            "thresholds": {task: p["threshold"] for task, p in points.items() if p.get("threshold") is not None},
            "chosen_on": {task: p.get("chosen_on") for task, p in points.items() if p.get("chosen_on")},
            "source": dict(source)}


def load_thresholds(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """FOLDER/thresholds.json (a run or ensemble directory); ChexcftError naming the file when absent or invalid."""
    from chexcft.fileio import read_json

    path = Path(folder) / THRESHOLDS_FILE
    if not path.is_file():
        raise ChexcftError(f"{path}: no thresholds saved (choose them with `chexcft evaluate --operating-point ... "
                           f"--save-thresholds {folder}`)")
    try:
        record = read_json(path)
        thresholds = {str(k): float(v) for k, v in record["thresholds"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ChexcftError(f"{path}: not a thresholds file ({exc})") from None
    return {**record, "thresholds": thresholds}


def add_decisions(frame: pd.DataFrame, thresholds: Mapping[str, float]) -> tuple[pd.DataFrame, list[str]]:
    """A copy of a prediction table with decision_<finding> (0/1) per thresholded finding; the findings left out."""
    from chexcft.evaluation.findings import canonical

    by_key = {canonical(c): c for c in frame.columns}
    out = frame.copy()
    missing = []
    for finding, threshold in thresholds.items():
        column = by_key.get(canonical(finding))
        if column is None:
            missing.append(finding)
            continue
        values = pd.to_numeric(out[column], errors="coerce")
        out[f"{DECISION_PREFIX}{column}"] = np.where(values.isna(), np.nan, (values >= threshold).astype(float))
    return out, missing


# Ensembles whose scores are ranks within the evaluated set (or cross-fitted on it): a threshold chosen on one
# split means nothing on another.
NOT_TRANSFERABLE: tuple[str, ...] = ("ensemble-rank", "ensemble-weighted")


def table_operating_points(table: Any, fit_table: Any, rule: OperatingRule, *, bootstrap: int = 1000,
                           seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per score row of a held-out ScoreTable: thresholds chosen on the same row of `fit_table`, rates held out."""
    from chexcft.evaluation.bootstrap import stratified_weights

    weights = stratified_weights(table.labels, bootstrap, seed) if bootstrap > 0 else None
    out: dict[str, dict[str, Any]] = {}
    for name, scores in table.scores.items():
        entry: dict[str, Any] = {"rule": str(rule), "chosen_on": "validation", "tasks": {}}
        if name in NOT_TRANSFERABLE:
            entry["note"] = "no operating point: this ensemble's scores are ranks or fits within one set"
        elif name not in fit_table.scores:
            entry["note"] = "no validation scores for this row"
        else:
            entry["tasks"] = operating_points(rule, table.tasks, fit_table.labels, fit_table.scores[name],
                                              table.labels, scores, weights)
        out[name] = entry
    return out


def render_operating_points(points: Mapping[str, Mapping[str, Any]]) -> list[Any]:
    """One rich table per row: threshold and held-out sensitivity, specificity, PPV, NPV with 95% intervals."""
    from rich.table import Table

    tables = []
    for name, entry in points.items():
        if not entry.get("tasks"):
            continue
        table = Table(title=f"{name}: operating point {entry['rule']} chosen on validation, held-out rates [95% CI]")
        for column in ("finding", "threshold", *METRICS):
            table.add_column(column, justify="left" if column == "finding" else "right")
        for task, p in entry["tasks"].items():
            if p.get("threshold") is None:
                table.add_row(task, "n/a", p.get("note", ""), "", "", "")
                continue
            cells = []
            for m in METRICS:
                value, (low, high) = p.get(m), p.get(f"{m}_ci", [None, None])
                text = "n/a" if value is None else f"{value:.3f}"
                if value is not None and not p.get("reliable", True):
                    text += " (unreliable)"
                elif low is not None:
                    text += f" [{low:.3f}, {high:.3f}]"
                cells.append(text)
            table.add_row(task, f"{p['threshold']:.4g}", *cells)
        tables.append(table)
    return tables
