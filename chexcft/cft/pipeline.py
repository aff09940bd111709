"""run_cft: CFT of a run directory end to end, with calibration and an honest held-out evaluation.

Writes RUN_DIR/cft/: head.safetensors, calibration.json (the run then predicts with both), report.csv,
report.json and auc_before_after.png. Features are exported once per (CSV content, weights, image size)
and reused on later runs (RUN_DIR/cft/features/).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexcft.calibration import PlattCalibration, brier_score, expected_calibration_error
from chexcft.cft.finetuner import CategoryWiseFineTuner
from chexcft.errors import ChexcftError, InvalidRunError
from chexcft.fileio import atomic_directory, atomic_write_csv, atomic_write_json, file_sha256

KNOWN_POLICIES: tuple[str, ...] = ("explicit", "explicit+blank")
OPTIMISTIC_NOTE = "validation numbers are optimistic: the validation split also selected the heads (no --test-csv given)"
PathLike = str | os.PathLike[str]


@dataclass
class SplitFeatures:
    """One split's features, labels for CFT (1/0/NaN) and the stored head."""

    features: np.ndarray
    labels: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    observations: tuple[str, ...]
    path: Path
    paths: tuple[str, ...] = ()  # the Path of each row (the CSV's, as read_table writes it)


def cft_labels(raw: np.ndarray, known: str = "explicit") -> np.ndarray:
    """Labels for CFT from 1/0/-1/NaN: uncertain is unknown; blank is unknown or, with explicit+blank, negative."""
    if known not in KNOWN_POLICIES:
        raise ChexcftError(f"unknown --known {known!r}; choose one of {', '.join(KNOWN_POLICIES)}")
    raw = np.asarray(raw, dtype=np.float32)
    labels = np.where((raw == 1) | (raw == 0), raw, np.nan).astype(np.float32)
    if known == "explicit+blank":
        labels[np.isnan(raw)] = 0.0
    return labels


def _image_size(config: dict[str, Any], run_dir: Path) -> int:
    size = config.get("image_size") or (config.get("settings") or {}).get("image_size")
    if not size:
        raise InvalidRunError(f"{run_dir / 'config.json'}: records no image_size")
    return int(size)


def split_features(run_dir: PathLike, csv: PathLike, root: PathLike | None, *, which: str = "best",
                   cache_dir: PathLike | None = None, known: str = "explicit", settings: Any = None,
                   progress: bool = False) -> SplitFeatures:
    """Features of a CSV's images under a run, exported once per (CSV content, weights, image size) and reused."""
    from chexcft.data import read_table
    from chexcft.data.cache import ensure_cache
    from chexcft.features import export_features, load_features
    from chexcft.runs import read_config, run_paths

    run_dir = Path(run_dir)
    config = read_config(run_dir)
    size = _image_size(config, run_dir)
    weights = run_paths(run_dir).weights(which)
    if not weights.is_file():
        raise InvalidRunError(f"{weights}: missing")
    key = hashlib.sha256(f"{file_sha256(csv)}:{file_sha256(weights)}:{size}:{root}".encode()).hexdigest()[:16]
    out = run_dir / "cft" / "features" / f"{Path(csv).stem}-{key}.safetensors"
    if not out.is_file():
        table = read_table(csv, root)
        if cache_dir is None:
            cache_dir = Path(config["cache_dir"]) if config.get("cache_dir") else run_dir.resolve().parent / "cache" / f"{size}px"
        cache = ensure_cache(table, cache_dir, size, progress=progress)
        export_features(run_dir, table, cache, out, which=which, settings=settings)
    exported = load_features(out)
    return SplitFeatures(exported.features, cft_labels(exported.labels, known), exported.weight, exported.bias,
                         tuple(exported.observations), out, tuple(exported.paths))


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    from chexcft.cft.metrics import population_auc

    known = (y == 0) | (y == 1)
    if not known.any() or y[known].min() == y[known].max():
        return float("nan")
    return float(population_auc(scores[known][None, :], y[known] == 1)[0])


def paired_bootstrap_gain(y: np.ndarray, before: np.ndarray, after: np.ndarray, n_boot: int = 1000,
                          seed: int = 0) -> dict[str, Any]:
    """Held-out AUC gain (after - before) per category and in the mean, with paired 95% bootstrap intervals.

    Rows (images) are resampled with replacement, stratified by label pattern; the same resample scores
    both heads, so the interval is that of the paired difference.
    """
    from chexcft.evaluation.bootstrap import bootstrap_aucs, mean_over_tasks, percentile_interval, stratified_weights

    pattern = np.where(np.isnan(y), -1.0, y)
    weights = stratified_weights(pattern, n_boot, seed)
    rep_before = bootstrap_aucs(y, before, weights)
    rep_after = bootstrap_aucs(y, after, weights)
    gain = rep_after - rep_before
    defined = ~np.all(np.isnan(gain), axis=0)
    mean_gain = mean_over_tasks(gain) if defined.any() else np.full(n_boot, np.nan)
    low, high = percentile_interval(gain)
    mean_low, mean_high = percentile_interval(mean_gain)
    return {"per_category": [[float(a), float(b)] for a, b in zip(low, high)],
            "mean": [float(mean_low), float(mean_high)], "n_boot": n_boot, "seed": seed}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def evaluate_heads(split: SplitFeatures, weight: np.ndarray, bias: np.ndarray, calibration: PlattCalibration,
                   n_boot: int, seed: int) -> dict[str, Any]:
    """AUC before/after per category, the paired bootstrap of the gain, ECE and Brier before/after on one split."""
    before = split.features @ split.weight.T + split.bias
    after = split.features @ weight.T + bias
    y = split.labels
    prob_before, prob_after = _sigmoid(before), calibration.transform(after)
    rows = []
    for c, name in enumerate(split.observations):
        known = (y[:, c] == 0) | (y[:, c] == 1)
        rows.append({
            "observation": name,
            "n": int(known.sum()),
            "n_pos": int((y[:, c] == 1).sum()),
            "auc_before": _auc(y[:, c], before[:, c]),
            "auc_after": _auc(y[:, c], after[:, c]),
            "auc_after_calibrated": _auc(y[:, c], prob_after[:, c]),
            "ece_before": expected_calibration_error(prob_before[known, c], y[known, c]),
            "ece_after": expected_calibration_error(prob_after[known, c], y[known, c]),
            "brier_before": brier_score(prob_before[known, c], y[known, c]),
            "brier_after": brier_score(prob_after[known, c], y[known, c]),
        })
    table = pd.DataFrame(rows)
    interval = paired_bootstrap_gain(y, before, after, n_boot=n_boot, seed=seed)
    table["gain"] = table["auc_after"] - table["auc_before"]
    table["gain_ci_low"] = [ci[0] for ci in interval["per_category"]]
    table["gain_ci_high"] = [ci[1] for ci in interval["per_category"]]
    defined = table["auc_before"].notna() & table["auc_after"].notna()
    return {
        "table": table,
        "mean_auc_before": float(table.loc[defined, "auc_before"].mean()) if defined.any() else float("nan"),
        "mean_auc_after": float(table.loc[defined, "auc_after"].mean()) if defined.any() else float("nan"),
        "mean_gain_ci": interval["mean"],
        "bootstrap": {"n_boot": n_boot, "seed": seed, "paired": True, "unit": "image"},
    }


def plot_auc_before_after(table: pd.DataFrame, out: PathLike, title: str) -> Path:
    """Bar chart of per-category AUC before and after CFT (with the gain's 95% interval when present)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from chexcft.fileio import atomic_path

    shown = table[table["auc_before"].notna()]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(shown) + 2), 4))
    x = np.arange(len(shown))
    ax.bar(x - 0.2, shown["auc_before"], width=0.4, label="before CFT")
    ax.bar(x + 0.2, shown["auc_after"], width=0.4, label="after CFT")
    ax.set_xticks(x, shown["observation"], rotation=45, ha="right")
    low = float(np.nanmin(shown[["auc_before", "auc_after"]].to_numpy())) if len(shown) else 0.5
    ax.set_ylim(max(0.0, low - 0.05), 1.08)
    ax.set_ylabel("AUC")
    ax.set_title(title)
    ax.legend(loc="upper left", ncols=2, fontsize="small")
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return out


def run_cft(
    run_dir: PathLike,
    train_csv: PathLike,
    valid_csv: PathLike,
    root: PathLike | None = None,
    test_csv: PathLike | None = None,
    method: str = "both",
    optimizer: str = "TwoPointsDE",
    known: str = "explicit",
    *,
    tuner: CategoryWiseFineTuner | None = None,
    which: str = "best",
    cache_dir: PathLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    settings: Any = None,
    progress: bool = False,
) -> Path:
    """Fine-tune a run's head category-wise, calibrate it on validation, evaluate on test; write RUN_DIR/cft/."""
    from chexcft.runs import run_paths

    run_dir = Path(run_dir)
    if known not in KNOWN_POLICIES:
        raise ChexcftError(f"unknown --known {known!r}; choose one of {', '.join(KNOWN_POLICIES)}")
    common = dict(which=which, cache_dir=cache_dir, known=known, settings=settings, progress=progress)
    train = split_features(run_dir, train_csv, root, **common)
    valid = split_features(run_dir, valid_csv, root, **common)
    test = split_features(run_dir, test_csv, root, **common) if test_csv is not None else None
    tuner = tuner or CategoryWiseFineTuner(method=method, optimizer=optimizer, seed=seed)
    tuner.observations = train.observations
    tuner.fit(train.weight, train.bias, train.features, train.labels, valid.features, valid.labels)

    valid_logits = valid.features @ tuner.weight_.T + tuner.bias_
    calibration = PlattCalibration().fit(valid_logits, valid.labels, observations=train.observations)
    cft_dir = run_paths(run_dir).cft_head.parent
    # Everything of cft/ is written into a staging folder that replaces cft/ at the end: an interrupted CFT
    # leaves the previous complete cft/ (or none), never a new head beside an old calibration.
    with atomic_directory(cft_dir) as staging:
        _write_cft_outputs(staging, run_dir, tuner, calibration, valid, test, known, n_boot, seed,
                           train_csv, valid_csv, test_csv)
        if (cft_dir / "features").is_dir():  # the exported features are a cache keyed by content: keep them
            os.replace(cft_dir / "features", staging / "features")
    return cft_dir


def _write_cft_outputs(staging: Path, run_dir: Path, tuner: Any, calibration: Any, valid: Any, test: Any, known: str, n_boot: int, seed: int, train_csv: PathLike, valid_csv: PathLike,
                       test_csv: PathLike | None) -> None:
    """Head, calibration, report.csv/json and the before/after plot of one CFT, into `staging`."""
    from chexcft.runs import CALIBRATION_FILE, CFT_HEAD_FILE, write_calibration, write_cft_head

    cft_dir = staging
    write_cft_head(run_dir, tuner.weight_, tuner.bias_, target=staging / CFT_HEAD_FILE)
    write_calibration(staging / CALIBRATION_FILE, calibration)

    report = tuner.report_.copy()
    valid_eval = evaluate_heads(valid, tuner.weight_, tuner.bias_, calibration, n_boot, seed)
    held_out = evaluate_heads(test, tuner.weight_, tuner.bias_, calibration, n_boot, seed) if test else None
    shown = held_out or valid_eval
    for column in ("auc_before", "auc_after", "gain", "gain_ci_low", "gain_ci_high", "ece_before", "ece_after",
                   "brier_before", "brier_after"):
        report[f"{'test' if held_out else 'valid'}_{column}"] = shown["table"][column].to_numpy()
    atomic_write_csv(cft_dir / "report.csv", report)
    summary = {
        "run": str(run_dir.resolve()),
        "method": tuner.method,
        "optimizer": tuner.optimizer,
        "metric": tuner.metric,
        "known": known,
        "settings": {k: v for k, v in tuner.get_params().items() if k != "observations"},
        "splits": {"train": str(train_csv), "valid": str(valid_csv), "test": str(test_csv) if test_csv else None},
        "held_out": held_out is not None,
        "note": None if held_out else OPTIMISTIC_NOTE,
        "categories": report.to_dict(orient="records"),
        "validation": {k: v for k, v in valid_eval.items() if k != "table"} | {"optimistic": True},
        "test": ({k: v for k, v in held_out.items() if k != "table"} | {"per_category": held_out["table"].to_dict(orient="records")})
        if held_out else None,
        "calibration": calibration.to_dict(),
    }
    atomic_write_json(cft_dir / "report.json", _finite(summary))
    title = "held-out test AUC" if held_out else "validation AUC (optimistic: also used for selection)"
    plot_auc_before_after(shown["table"], cft_dir / "auc_before_after.png", title)


def run_cft_ensemble(ensemble_dir: PathLike, train_csv: PathLike, valid_csv: PathLike, root: PathLike | None = None,
                     test_csv: PathLike | None = None, **kwargs: Any) -> list[Path]:
    """run_cft on every member of an ensemble; returns each member's cft/ directory."""
    from chexcft.ensemble import load_ensemble

    return [run_cft(member, train_csv, valid_csv, root, test_csv, **kwargs) for member in load_ensemble(ensemble_dir)]


def _finite(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if np.isfinite(value) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
