"""Patient-level cross-fitted evaluation of CFT: every image is scored by a head fitted without its patient.

The pool should hold only images the backbone did not train on: on its own training images the features
are fitted to the (pseudo-)labels the backbone learned from, so a head fitted or scored there is biased
(in-sample features separate the classes better than new images' do). Each of K folds of patients is held
out in turn: CFT (the public CategoryWiseFineTuner, its defaults) re-fits the trained head's rows on the
*known* labels (`fit_labels`, 1/0, NaN unknown) of the other folds, with the significance gate on a fixed
validation split, and scores the held-out fold. The held-out scores of all folds are pooled, and per finding
the paired gain AUC(after) - AUC(before) is measured against the *true* labels (`true_labels`) with a
patient-cluster bootstrap (patients resampled with replacement, the same replicates for both heads).
A finding with fewer than MIN_CLASS_COUNT positives or negatives gets no interval (flagged unreliable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chexcft.errors import ChexcftError
from chexcft.evaluation.bootstrap import LEVEL
from chexcft.evaluation.metrics import MIN_CLASS_COUNT, is_reliable, roc_auc, weighted_auc


@dataclass
class CrossFitResult:
    """Per finding: the pooled out-of-fold AUC before and after CFT, the paired gain and its interval."""

    table: pd.DataFrame
    before: np.ndarray  # (n, C) out-of-fold logits of the trained head
    after: np.ndarray  # (n, C) out-of-fold logits of each fold's CFT head
    folds: np.ndarray  # (n,) the fold that held each image out
    truth: np.ndarray  # (n, C) the evaluation labels (1/0, NaN unknown)
    groups: list[str] = field(default_factory=list)  # the patient of each image
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: settings and the per-finding rows."""
        rows = self.table.replace({np.nan: None}).to_dict(orient="records")
        return {"settings": self.settings, "findings": rows}


def patient_folds(groups: Sequence[Any], k: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per row: patients shuffled with `seed` and dealt round-robin, so no patient spans folds."""
    groups = np.asarray([str(g) for g in groups])
    unique = np.unique(groups)
    if k < 2 or k > unique.size:
        raise ChexcftError(f"--cross-fit needs 2 <= K <= {unique.size} (the number of patients), got {k}")
    order = np.random.default_rng(seed).permutation(unique.size)
    fold_of = np.empty(unique.size, dtype=np.int64)
    fold_of[order] = np.arange(unique.size) % k
    return fold_of[np.searchsorted(unique, groups)]


def cluster_weights(groups: Sequence[Any], n_boot: int, seed: int) -> np.ndarray:
    """Image multiplicities (n_boot, n) of a patient-cluster bootstrap: patients drawn with replacement."""
    _, index = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    n_patients = int(index.max()) + 1 if index.size else 0
    counts = np.random.default_rng(seed).multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=n_boot)
    return counts[:, index]


def _interval(replicates: np.ndarray) -> tuple[float, float]:
    tail = (1.0 - LEVEL) / 2.0 * 100.0
    finite = replicates[np.isfinite(replicates)]
    if finite.size < 0.9 * replicates.size:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def cross_fit_cft(
    features: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray,
    fit_labels: np.ndarray,
    true_labels: np.ndarray,
    groups: Sequence[Any],
    valid_features: np.ndarray,
    valid_labels: np.ndarray,
    *,
    observations: Sequence[str],
    k: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    tuner_params: Mapping[str, Any] | None = None,
) -> CrossFitResult:
    """Cross-fit CFT over the pool's patients (see the module docstring); arrays are (n, d) / (n, C) / (C, d)."""
    from chexcft.cft.finetuner import CategoryWiseFineTuner

    features = np.asarray(features, dtype=np.float32)
    weight, bias = np.asarray(weight, dtype=np.float32), np.asarray(bias, dtype=np.float32)
    true_labels = np.asarray(true_labels, dtype=np.float64)
    observations = tuple(observations)
    folds = patient_folds(groups, k, seed)
    before = features @ weight.T + bias
    after = before.copy()
    replaced = np.zeros((k, len(observations)), dtype=bool)
    for fold in range(k):
        fit, held = folds != fold, folds == fold
        tuner = CategoryWiseFineTuner(seed=seed + fold, observations=observations, **dict(tuner_params or {}))
        tuner.fit(weight, bias, features[fit], np.asarray(fit_labels)[fit], valid_features, valid_labels)
        after[held] = features[held] @ np.asarray(tuner.weight_, dtype=np.float32).T + np.asarray(tuner.bias_)
        replaced[fold] = (tuner.report_["method_kept"] != "original").to_numpy()
    boot = cluster_weights(groups, n_boot, seed)
    rows = []
    for c, name in enumerate(observations):
        y = true_labels[:, c]
        known = np.isin(y, (0.0, 1.0))
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        row: dict[str, Any] = {"observation": name, "n": int(known.sum()), "n_pos": n_pos, "n_neg": n_neg,
                               "folds_replaced": int(replaced[:, c].sum()), "k": k,
                               "reliable": is_reliable(n_pos, n_neg)}
        if n_pos and n_neg:
            auc_before, auc_after = roc_auc(y[known], before[known, c]), roc_auc(y[known], after[known, c])
            row.update(auc_before=auc_before, auc_after=auc_after, gain=auc_after - auc_before)
            if row["reliable"] and n_boot > 0:
                w = boot[:, known]
                gains = weighted_auc(y[known], after[known, c], w) - weighted_auc(y[known], before[known, c], w)
                row["gain_ci_low"], row["gain_ci_high"] = _interval(gains)
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=["observation", "n", "n_pos", "n_neg", "auc_before", "auc_after", "gain",
                                                "gain_ci_low", "gain_ci_high", "reliable", "folds_replaced", "k"])
    settings = {"k": k, "seed": seed, "n_boot": n_boot, "images": int(features.shape[0]),
                "patients": int(np.unique(np.asarray([str(g) for g in groups])).size), "level": LEVEL,
                "min_class_count": MIN_CLASS_COUNT, "tuner": dict(tuner_params or {}),
                "interval": "patient-cluster bootstrap of the paired gain (same replicates for both heads)"}
    return CrossFitResult(table, before, after, folds, true_labels, [str(g) for g in groups], settings)


def cross_fit_run(
    run_dir: Any,
    pool: Sequence[tuple[Any, Any]],
    valid_csv: Any,
    valid_root: Any = None,
    *,
    k: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    known: str = "explicit",
    fit_labels: Any = None,
    tuner_params: Mapping[str, Any] | None = None,
    cache_dir: Any = None,
    settings: Any = None,
    write: bool = True,
) -> CrossFitResult:
    """Cross-fit CFT of a run over the images of `pool` ((csv, root) pairs); writes RUN_DIR/cft/crossfit.{json,csv}.

    Evaluation labels are each pool CSV's 1/0 labels; CFT fits on `fit_labels(true_labels, observations)`
    when given (e.g. a partial-label protocol), else on the same labels read with the `known` policy.
    """
    from pathlib import Path

    from chexcft.cft.pipeline import _finite, split_features
    from chexcft.fileio import atomic_write_csv, atomic_write_json
    from chexcft.keys import patient_key

    common = dict(cache_dir=cache_dir, settings=settings)
    parts = [split_features(run_dir, csv, root, known="explicit", **common) for csv, root in pool]
    valid = split_features(run_dir, valid_csv, valid_root, known=known, **common)
    features = np.concatenate([p.features for p in parts])
    truth = np.concatenate([p.labels for p in parts]).astype(np.float64)
    groups = [f"{i}:{patient_key(path)}" for i, p in enumerate(parts) for path in p.paths]
    observations = parts[0].observations
    if fit_labels is not None:
        labels = np.asarray(fit_labels(truth, observations), dtype=np.float32)
    else:
        from chexcft.cft.pipeline import cft_labels

        raw = np.concatenate([split_features(run_dir, csv, root, known=known, **common).labels for csv, root in pool])
        labels = cft_labels(raw, known)
    result = cross_fit_cft(features, parts[0].weight, parts[0].bias, labels, truth, groups, valid.features,
                           valid.labels, observations=observations, k=k, seed=seed, n_boot=n_boot,
                           tuner_params=tuner_params)
    result.settings["pool"] = [str(csv) for csv, _ in pool]
    result.settings["valid"] = str(valid_csv)
    result.settings["fit_labels"] = "given protocol" if fit_labels is not None else f"the pool's labels ({known})"
    if write:
        out = Path(run_dir) / "cft"
        atomic_write_csv(out / "crossfit.csv", result.table)
        atomic_write_json(out / "crossfit.json", _finite(result.summary()))
    return result
