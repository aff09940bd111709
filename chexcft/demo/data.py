"""The bundled demo data: real NIH ChestX-ray14 pixels in the CheXpert layout.

- data/demo (NIH1000, 64 px): train/valid/test split by patient, CheXpert-like partial labels on train.
- data/nih617 (617 other patients, 320 px): the external held-out set, one image per patient, full labels.
Both are built from ../shared/data by the functions here (`python -m chexcft.demo.data`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from chexcft.data.nih import MAPPED_OBSERVATIONS, read_nih_csv
from chexcft.data.splits import split_by_patient
from chexcft.errors import InvalidDatasetError
from chexcft.fileio import atomic_directory, atomic_write_csv, atomic_write_json
from chexcft.schema import COMPETITION_TASKS, CSV_HEADER, OBSERVATIONS, UNCERTAIN

RELEASE = "CheXpert-v1.0-demo"
SPLITS: tuple[str, ...] = ("train", "valid", "test")
EXTERNAL_RELEASE = "CheXpert-v1.0-nih617"  # the external held-out set: data/nih617/<this>/test.csv
SPLIT_FRACTIONS: dict[str, float] = {"train": 0.70, "valid": 0.15, "test": 0.15}
MIN_TASK_POSITIVES = 3  # per competition task, in every split
MAX_PATIENT_SHARE = 0.20  # no patient may hold more of valid's or test's images than this

# The partial-label protocol applied to train (see data/README.md).
KNOWN_FRACTION = 0.35  # each mapped label is kept as its true 1/0 with this probability
UNCERTAIN_IF_POSITIVE = 0.40  # a hidden true positive becomes -1 with this probability, else blank
UNCERTAIN_IF_RELATED = 0.80  # a hidden true negative on an image with a related positive becomes -1 ...
UNCERTAIN_OTHERWISE = 0.10  # ... otherwise -1 with this probability; the rest become blank
# Observations that radiologists hedge on together (a report mentioning one tends to hedge the others).
RELATED_GROUPS: tuple[tuple[str, ...], ...] = (
    ("Atelectasis", "Consolidation", "Pneumonia", "Lung Opacity", "Edema", "Pleural Effusion"),
    ("Cardiomegaly", "Edema", "Pleural Effusion"),
    ("Pleural Effusion", "Pleural Other", "Pneumothorax"),
    ("Lung Lesion", "Lung Opacity"),
)


def demo_root() -> Path:
    """The demo data root (the folder that contains CheXpert-v1.0-demo/)."""
    return Path(__file__).resolve().parents[2] / "data" / "demo"


def demo_csv(split: str) -> Path:
    """The demo CSV of a split (train, valid or test)."""
    if split not in SPLITS:
        raise InvalidDatasetError(f"unknown demo split {split!r}; expected one of {', '.join(SPLITS)}")
    path = demo_root() / RELEASE / f"{split}.csv"
    if not path.is_file():
        raise InvalidDatasetError(f"{path}: bundled demo CSV not found (it ships with the source checkout, data/demo)")
    return path


def external_root() -> Path:
    """The external held-out set's data root (the folder that contains CheXpert-v1.0-nih617/)."""
    return Path(__file__).resolve().parents[2] / "data" / "nih617"


def external_csv() -> Path:
    """The external held-out set's CSV (617 NIH patients, full labels, CheXpert layout)."""
    path = external_root() / EXTERNAL_RELEASE / "test.csv"
    if not path.is_file():
        raise InvalidDatasetError(f"{path}: bundled external CSV not found (it ships with the source checkout, data/nih617)")
    return path


def build_external_data(nih_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Convert an NIH folder (labels.csv + images/) into one CheXpert-layout test split with full labels."""
    nih_dir, out_dir = Path(nih_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / EXTERNAL_RELEASE).is_dir():
        raise InvalidDatasetError(f"{out_dir}: exists, is not empty and holds no {EXTERNAL_RELEASE}/; refusing to overwrite it")
    frame = read_nih_csv(nih_dir / "labels.csv", nih_dir / "images")
    with atomic_directory(out_dir) as staging:
        part = _chexpert_rows(frame, "test", EXTERNAL_RELEASE)
        for source, relative in zip(part["source"], part["Path"]):
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        atomic_write_csv(staging / EXTERNAL_RELEASE / "test.csv", part[list(CSV_HEADER)])
        if (nih_dir / "SOURCE.txt").is_file():
            shutil.copyfile(nih_dir / "SOURCE.txt", staging / EXTERNAL_RELEASE / "SOURCE.txt")
    return out_dir


def related_positive(truth: np.ndarray, observations: tuple[str, ...] = OBSERVATIONS) -> np.ndarray:
    """(n, C) bool: the image has a positive on an observation related to this one (not counting itself)."""
    related = np.zeros((len(observations), len(observations)), dtype=bool)
    for group in RELATED_GROUPS:
        for a in group:
            for b in group:
                if a != b and a in observations and b in observations:
                    related[observations.index(a), observations.index(b)] = True
    positive = np.nan_to_num(truth, nan=0.0) == 1.0
    return (positive.astype(np.int64) @ related.T.astype(np.int64)) > 0


def hide_labels(truth: pd.DataFrame, seed: int, known_fraction: float = KNOWN_FRACTION) -> pd.DataFrame:
    """Apply the partial-label protocol to full 1/0 labels (NaN for unmapped observations stays NaN)."""
    values = truth[list(OBSERVATIONS)].to_numpy(dtype=np.float64)
    rng = np.random.default_rng([seed, 1])
    keep = rng.random(values.shape) < known_fraction
    draw = rng.random(values.shape)
    p_uncertain = np.where(
        values == 1.0,
        UNCERTAIN_IF_POSITIVE,
        np.where(related_positive(values), UNCERTAIN_IF_RELATED, UNCERTAIN_OTHERWISE),
    )
    hidden = np.where(draw < p_uncertain, UNCERTAIN, np.nan)
    out = np.where(keep, values, hidden)
    out[np.isnan(values)] = np.nan
    # CheXpert's "No Finding" is only ever 1 or blank.
    no_finding = OBSERVATIONS.index("No Finding")
    out[:, no_finding] = np.where(keep[:, no_finding] & (values[:, no_finding] == 1.0), 1.0, np.nan)
    result = truth.copy()
    result[list(OBSERVATIONS)] = out
    return result


def pseudo_label_errors(
    train: pd.DataFrame, truth: pd.DataFrame, tasks: tuple[str, ...] = COMPETITION_TASKS
) -> pd.DataFrame:
    """Per task: how often U-Ones and U-Zeros (blank read as negative) pseudo-labels disagree with the truth."""
    rows = []
    for task in tasks:
        label = train[task].to_numpy(dtype=np.float64)
        true = truth[task].to_numpy(dtype=np.float64)
        ones = np.where(np.isin(label, [1.0, UNCERTAIN]), 1.0, 0.0)
        zeros = np.where(label == 1.0, 1.0, 0.0)
        n_pos, n_neg = int((true == 1).sum()), int((true == 0).sum())
        rows.append({
            "task": task,
            "positives": n_pos,
            "negatives": n_neg,
            "known": float(np.isin(label, [0.0, 1.0]).mean()),
            "uncertain": float((label == UNCERTAIN).mean()),
            "blank": float(np.isnan(label).mean()),
            "u_ones_false_pos": int(((ones == 1) & (true == 0)).sum()),
            "u_ones_false_neg": int(((ones == 0) & (true == 1)).sum()),
            "u_ones_error": float((ones != true).mean()),
            "u_zeros_false_neg": int(((zeros == 0) & (true == 1)).sum()),
            "u_zeros_error": float((zeros != true).mean()),
        })
    return pd.DataFrame(rows)


def build_demo_data(
    nih_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    known_fraction: float = KNOWN_FRACTION,
) -> Path:
    """Convert an NIH folder (labels.csv + images/) into the CheXpert-layout demo data under out_dir."""
    nih_dir, out_dir = Path(nih_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / RELEASE).is_dir():
        raise InvalidDatasetError(f"{out_dir}: exists, is not empty and holds no {RELEASE}/; refusing to overwrite it")
    frame = read_nih_csv(nih_dir / "labels.csv", nih_dir / "images")
    split_seed, splits = _split(frame, seed)
    with atomic_directory(out_dir) as staging:
        release = staging / RELEASE
        for split in SPLITS:
            part = _chexpert_rows(splits[split], split)
            for source, relative in zip(part["source"], part["Path"]):
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
            labels = part[list(CSV_HEADER)]
            if split == "train":
                atomic_write_csv(staging / "train_truth.csv", labels)
                labels = hide_labels(labels, seed, known_fraction)
            atomic_write_csv(release / f"{split}.csv", labels)
        if (nih_dir / "SOURCE.txt").is_file():
            shutil.copyfile(nih_dir / "SOURCE.txt", release / "SOURCE.txt")
        atomic_write_json(staging / "protocol.json", _protocol(seed, split_seed, known_fraction))
    return out_dir


def _split(frame: pd.DataFrame, seed: int) -> tuple[int, dict[str, pd.DataFrame]]:
    """The first split seed (seed, seed+1, ...) whose split passes _acceptable."""
    for attempt in range(5000):
        splits = split_by_patient(frame, SPLIT_FRACTIONS, seed + attempt)
        if _acceptable(splits):
            return seed + attempt, splits
    raise InvalidDatasetError(
        f"no patient split gives every task {MIN_TASK_POSITIVES} positives in every split with no patient holding "
        f"over {MAX_PATIENT_SHARE:.0%} of valid or test"
    )


def _acceptable(splits: dict[str, pd.DataFrame]) -> bool:
    """Every task has enough positives in every split, and valid/test are not dominated by one patient."""
    if any((splits[s][task] == 1).sum() < MIN_TASK_POSITIVES for s in SPLITS for task in COMPETITION_TASKS):
        return False
    return all(
        splits[s]["patient"].value_counts().iloc[0] <= MAX_PATIENT_SHARE * len(splits[s]) for s in ("valid", "test")
    )


def _chexpert_rows(frame: pd.DataFrame, split: str, release: str = RELEASE) -> pd.DataFrame:
    """CheXpert Paths (patient = NIH id, study = follow-up + 1) and sources, sorted by patient and study."""
    patient = frame["patient"].str.removeprefix("patient").astype(int)
    study = frame["study"].str.rpartition("/")[2].str.removeprefix("study").astype(int)
    part = frame.assign(_patient=patient.to_numpy(), _study=study.to_numpy()).sort_values(["_patient", "_study"])
    part = part.assign(
        source=part["abs_path"],
        Path=[
            f"{release}/{split}/patient{p:05d}/study{s}/view1_frontal.png"
            for p, s in zip(part["_patient"], part["_study"])
        ],
        Age=part["Age"].astype("Int64"),
    )
    return part.reset_index(drop=True)


def _protocol(seed: int, split_seed: int, known_fraction: float) -> dict[str, object]:
    return {
        "seed": seed,
        "split_seed": split_seed,
        "split_fractions": SPLIT_FRACTIONS,
        "min_task_positives": MIN_TASK_POSITIVES,
        "max_patient_share": MAX_PATIENT_SHARE,
        "known_fraction": known_fraction,
        "uncertain_if_positive": UNCERTAIN_IF_POSITIVE,
        "uncertain_if_related": UNCERTAIN_IF_RELATED,
        "uncertain_otherwise": UNCERTAIN_OTHERWISE,
        "related_groups": [list(g) for g in RELATED_GROUPS],
        "mapped_observations": list(MAPPED_OBSERVATIONS),
    }


if __name__ == "__main__":  # regenerate both: python -m chexcft.demo.data ../shared/data
    import sys

    shared = Path(sys.argv[1]) if len(sys.argv) > 1 else demo_root().parents[2] / "shared" / "data"
    print(build_demo_data(shared / "nih1000", demo_root()))
    print(build_external_data(shared / "nih617", external_root()))
