"""The performance page's numbers and figures, from chexcft.evaluation and chexcft.calibration.

Study-level AUC with bootstrap 95% intervals (chexcft.evaluation.evaluate), ROC curves with the radiologists'
operating points (chexcft.evaluation.plots.plot_roc), reliability diagrams before/after calibration (image level,
curves and ECE from chexcft.calibration), and each run's CFT report (RUN_DIR/cft/report.csv).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexcft.errors import ChexcftError
from chexcft.schema import COMPETITION_TASKS, OBSERVATIONS, STUDY_COLUMN

CFT_REPORT = Path("cft") / "report.csv"


def labelled_rows(probabilities: np.ndarray, labels: pd.DataFrame) -> np.ndarray:
    """Images that were readable (finite predictions) and carry at least one label (covered by the ground truth)."""
    readable = np.isfinite(np.asarray(probabilities, dtype=np.float64)).all(axis=1)
    return readable & labels.notna().any(axis=1).to_numpy()


def evaluable_findings(labels: pd.DataFrame, observations: Sequence[str]) -> tuple[str, ...]:
    """Findings predicted and labelled 0/1 for every image (what a study-level AUC can be computed on)."""
    out = []
    for name in observations:
        if name in labels.columns:
            values = labels[name].to_numpy(dtype=np.float64)
            if len(values) and np.isin(values, (0.0, 1.0)).all():
                out.append(name)
    return tuple(out)


def study_groundtruth(paths: Sequence[str], labels: pd.DataFrame, findings: Sequence[str]) -> pd.DataFrame:
    """Study-level ground truth [Study, findings] (max over a study's images) from image-level 0/1 labels."""
    from chexcft.evaluation import aggregate_by_study

    frame = labels[list(findings)].reset_index(drop=True).copy()
    frame.insert(0, "Path", list(paths))
    return aggregate_by_study(frame, how="max", columns=list(findings))


def study_predictions(frame: pd.DataFrame, findings: Sequence[str], how: str = "max") -> pd.DataFrame:
    """Study-level predictions [Study, findings] from image-level Path + findings (readable images only)."""
    from chexcft.evaluation import aggregate_by_study

    return aggregate_by_study(frame[["Path", *findings]], how=how, columns=list(findings))


def _common_studies(groundtruth: pd.DataFrame, predictions: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Ground truth restricted to the studies every prediction table has (unreadable studies drop out)."""
    keep = set(groundtruth[STUDY_COLUMN])
    for frame in predictions.values():
        keep &= set(frame[STUDY_COLUMN])
    if not keep:
        raise ChexcftError("no study has both ground truth and a prediction")
    return groundtruth[groundtruth[STUDY_COLUMN].isin(keep)].reset_index(drop=True)


def _restricted(groundtruth: pd.DataFrame, predictions: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    keys = set(groundtruth[STUDY_COLUMN])
    return {name: frame[frame[STUDY_COLUMN].isin(keys)].reset_index(drop=True) for name, frame in predictions.items()}


def auc_rows(
    groundtruth: pd.DataFrame, predictions: Mapping[str, pd.DataFrame], findings: Sequence[str],
    bootstrap: int = 1000, seed: int = 0,
) -> list[dict[str, Any]]:
    """chexcft.evaluation.evaluate rows (AUC, bootstrap CI, radiologists below) for study-level tables."""
    from chexcft.evaluation import evaluate

    truth = _common_studies(groundtruth, predictions)
    return evaluate(truth, _restricted(truth, predictions), ensembles=(), bootstrap=bootstrap, seed=seed,
                    tasks=tuple(findings))


def auc_table(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One line per finding: positives, then per model its AUC and 95% interval, and radiologists below the curve.

    A finding with fewer than MIN_CLASS_COUNT positives or negatives shows "unreliable" instead of an interval.
    """
    if not rows:
        return pd.DataFrame()
    findings = list(rows[0]["auc"])
    table = pd.DataFrame({"finding": findings, "positives": [rows[0]["positives"].get(f) for f in findings],
                          "studies": [rows[0]["n_studies"]] * len(findings)})
    for row in rows:
        name = row["name"]
        reliable = row.get("reliable") or {}
        table[f"{name} AUC"] = [row["auc"][f] for f in findings]
        table[f"{name} 95% CI"] = [_interval(row["ci"].get(f)) if reliable.get(f, True) else "unreliable"
                                   for f in findings]
    first = rows[0]
    table[f"radiologists below {first['name']} (of 3)"] = [
        "" if first["radiologists_below"].get(f) is None else str(first["radiologists_below"][f]) for f in findings]
    notes = {**(first.get("unreliable") or {}), **(first.get("undefined") or {})}
    table["note"] = [notes.get(f, "") for f in findings]
    return table


def _interval(ci: Sequence[float | None] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def mean_aucs(rows: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float | None, list[float | None]]]:
    """Each row's mean AUC over its findings and its bootstrap 95% interval, by row name."""
    return {row["name"]: (row["mean_auc"], list(row.get("mean_auc_ci") or [None, None])) for row in rows}


def roc_png(groundtruth: pd.DataFrame, predictions: Mapping[str, pd.DataFrame],
            tasks: Sequence[str] = COMPETITION_TASKS) -> bytes:
    """PNG bytes of the ROC panels (one per competition task) with the three radiologists' points."""
    from chexcft.evaluation import score_table
    from chexcft.evaluation.plots import plot_roc

    truth = _common_studies(groundtruth, predictions)
    table = score_table(truth, _restricted(truth, predictions), ensembles=(), tasks=tuple(tasks))
    with tempfile.TemporaryDirectory(prefix="chexcft-roc-") as folder:
        return plot_roc(table, Path(folder) / "roc.png").read_bytes()


def reliability(y: np.ndarray, probabilities: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability curve (mean predicted vs observed rate per bin), ECE and Brier score on labels y in {0, 1}."""
    from chexcft.calibration import brier_score, expected_calibration_error, known_pairs, reliability_curve

    p, y = known_pairs(probabilities, y)
    curve = reliability_curve(p, y, bins)
    return {"n": int(len(y)), "predicted": curve["predicted"].to_numpy(), "observed": curve["observed"].to_numpy(),
            "ece": expected_calibration_error(p, y, bins) if len(y) else float("nan"), "brier": brier_score(p, y)}


def reliability_table(labels: pd.DataFrame, before: np.ndarray, after: np.ndarray, observations: Sequence[str],
                      findings: Sequence[str], bins: int = 10) -> pd.DataFrame:
    """Per finding: images with a 0/1 label, ECE and Brier before and after calibration."""
    lines = []
    for name in findings:
        column = list(observations).index(name)
        y = labels[name].to_numpy(dtype=np.float64)
        b, a = reliability(y, before[:, column], bins), reliability(y, after[:, column], bins)
        lines.append({"finding": name, "images": b["n"], "ECE before": b["ece"], "ECE after": a["ece"],
                      "Brier before": b["brier"], "Brier after": a["brier"]})
    return pd.DataFrame(lines)


def reliability_figure(labels: pd.DataFrame, before: np.ndarray, after: np.ndarray, observations: Sequence[str],
                       findings: Sequence[str], bins: int = 10) -> Any:
    """A matplotlib figure: one reliability diagram per finding, before and after calibration."""
    from chexcft.evaluation.summary import reliability_figure as named_curves_figure

    columns = [list(observations).index(name) for name in findings]
    truth = labels[list(findings)].to_numpy(dtype=np.float64)
    return named_curves_figure(truth, {"before": before[:, columns], "after": after[:, columns]}, tuple(findings), bins)


def cft_reports(run_dirs: Sequence[str | os.PathLike[str]], names: Sequence[str]) -> dict[str, pd.DataFrame | None]:
    """Each run's CFT report (RUN_DIR/cft/report.csv) by member name; None for a run without CFT."""
    reports: dict[str, pd.DataFrame | None] = {}
    for run_dir, name in zip(run_dirs, names):
        path = Path(run_dir) / CFT_REPORT
        if not path.is_file():
            reports[name] = None
            continue
        try:
            reports[name] = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise ChexcftError(f"{path}: cannot read the CFT report ({exc})") from None
    return reports


def before_after_columns(report: pd.DataFrame) -> list[tuple[str, str]]:
    """Pairs of numeric report columns with a metric before and after CFT: held-out AUC first, then validation AUC."""
    pairs = []
    for column in report.columns:
        if "before" in str(column):
            after = str(column).replace("before", "after")
            if after in report.columns and pd.api.types.is_numeric_dtype(report[column]):
                pairs.append((str(column), after))

    def rank(pair: tuple[str, str]) -> int:
        name = pair[0]
        return 0 if name.startswith("test_auc") else 1 if name.startswith("valid_auc") else 2 if "auc" in name else 3

    return sorted(pairs, key=rank)


def cft_note(run_dir: str | os.PathLike[str]) -> str | None:
    """The CFT report's caveat (RUN_DIR/cft/report.json `note`, e.g. that validation numbers are optimistic)."""
    from chexcft.fileio import read_json

    path = Path(run_dir) / "cft" / "report.json"
    try:
        note = read_json(path).get("note") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return str(note) if note else None


def known_findings(observations: Sequence[str]) -> tuple[str, ...]:
    """The competition tasks among `observations` (the ROC page needs all five for the radiologist points)."""
    return tuple(task for task in COMPETITION_TASKS if task in observations and task in OBSERVATIONS)


MANUAL = "manual"
SAVED = "saved (thresholds.json)"
RULE_CHOICES: tuple[str, ...] = ("youden", "sensitivity=0.9", "specificity=0.9", "ppv=0.8")


def saved_thresholds(model_dirs: Sequence[str | os.PathLike[str]]) -> dict[str, Any] | None:
    """The thresholds.json of the one model (run or ensemble) directory the viewer was started with, else None."""
    from chexcft.evaluation.operating import THRESHOLDS_FILE, load_thresholds

    if len(model_dirs) != 1 or not (Path(model_dirs[0]) / THRESHOLDS_FILE).is_file():
        return None
    return load_thresholds(model_dirs[0])


def threshold_choices(model_dirs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The threshold control's options: manual, the saved thresholds when there are any, then the rules."""
    return [MANUAL, *([SAVED] if saved_thresholds(model_dirs) is not None else []), *RULE_CHOICES]


def rule_thresholds(rule: str, labels: pd.DataFrame, probabilities: np.ndarray, observations: Sequence[str]
                    ) -> dict[str, float]:
    """Per finding, the rule's threshold chosen on these images' 0/1 labels (image level); findings without one omitted."""
    from chexcft.evaluation.operating import choose_threshold, parse_rule

    chosen = parse_rule(rule)
    out = {}
    for column, name in enumerate(observations):
        if name not in labels.columns:
            continue
        y = labels[name].to_numpy(dtype=np.float64)
        scores = np.asarray(probabilities, dtype=np.float64)[:, column]
        known = np.isfinite(scores) & np.isin(y, (0.0, 1.0))
        threshold = choose_threshold(y[known], scores[known], chosen)
        if threshold is not None:
            out[name] = threshold
    return out
