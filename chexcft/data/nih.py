"""Read NIH ChestX-ray14 label files (Data_Entry_2017 and the nih1000 labels.csv) as CheXpert-style frames."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import numpy as np
import pandas as pd

from chexcft.data.csvfile import read_csv
from chexcft.data.frame import add_derived_columns
from chexcft.errors import InvalidDatasetError, shown, shown_list
from chexcft.schema import OBSERVATIONS

# The one mapping from NIH findings to CheXpert observations (None: no CheXpert counterpart).
# CheXpert observations that no NIH finding maps to stay blank (NaN); mapped ones are 1 if any of
# their NIH findings is present, else 0 (NIH has no uncertain labels).
NIH_TO_CHEXPERT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Infiltration": "Lung Opacity",
    "Pleural_Thickening": "Pleural Other",
    "No Finding": "No Finding",
    "Emphysema": None,
    "Fibrosis": None,
    "Hernia": None,
}
MAPPED_OBSERVATIONS: tuple[str, ...] = tuple(o for o in OBSERVATIONS if o in NIH_TO_CHEXPERT.values())
REQUIRED_COLUMNS: tuple[str, ...] = ("Image Index", "Finding Labels", "Patient ID")
_SEX = {"M": "Male", "F": "Female"}


def is_nih_header(columns: list[str]) -> bool:
    """Whether a CSV header looks like an NIH label file."""
    return "Image Index" in columns and "Finding Labels" in columns


def nih_labels(findings: pd.Series, source: str = "NIH labels") -> pd.DataFrame:
    """CheXpert label columns (float, NaN for unmapped observations) from '|'-separated NIH findings."""
    dummies = findings.fillna("").astype(str).str.replace(" ", "", regex=False).str.replace(
        "NoFinding", "No Finding", regex=False
    ).str.get_dummies(sep="|")
    unknown = [name for name in dummies.columns if name not in NIH_TO_CHEXPERT]
    if unknown:
        row = int(np.flatnonzero(dummies[unknown].to_numpy().any(axis=1))[0])
        raise InvalidDatasetError(
            f"{source}: line {row + 2} (data row {row + 1}), column 'Finding Labels': unknown NIH finding(s) "
            f"{shown_list(unknown, 10)}; known: {', '.join(NIH_TO_CHEXPERT)}"
        )
    labels = pd.DataFrame(np.nan, index=findings.index, columns=list(OBSERVATIONS))
    for observation in MAPPED_OBSERVATIONS:
        sources = [f for f, o in NIH_TO_CHEXPERT.items() if o == observation and f in dummies.columns]
        present = dummies[sources].to_numpy().any(axis=1) if sources else np.zeros(len(findings), bool)
        labels[observation] = present.astype(np.float64)
    return labels


def read_nih_entries(csv_path: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the raw rows, Patient ID and Follow-up # as whole numbers, and their CheXpert columns but Path) of an NIH CSV."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InvalidDatasetError(f"{csv_path}: CSV file not found")
    raw = read_csv(csv_path, low_memory=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise InvalidDatasetError(f"{csv_path}: not an NIH label file, missing column(s) {', '.join(missing)}")
    patient = pd.to_numeric(raw["Patient ID"], errors="coerce")
    follow_up = pd.to_numeric(raw.get("Follow-up #", pd.Series(0, index=raw.index)), errors="coerce")
    for name, values in (("Patient ID", patient), ("Follow-up #", follow_up)):
        bad = values.isna() | (values < 0) | (values != values.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InvalidDatasetError(
                f"{csv_path}: line {row + 2} (data row {row + 1}), column {name!r}: "
                f"{shown(raw[name].iloc[row])} is not a whole number"
            )
    raw = raw.assign(**{"Image Index": raw["Image Index"].astype(str), "Patient ID": patient.astype(int)})
    if "Follow-up #" in raw:
        raw["Follow-up #"] = follow_up.astype(int)
    frame = nih_labels(raw["Finding Labels"], str(csv_path))
    frame.insert(0, "Sex", raw["Patient Gender"].map(_SEX) if "Patient Gender" in raw else np.nan)
    age = raw["Patient Age"].astype(str).str.extract(r"(\d+)")[0] if "Patient Age" in raw else None
    frame.insert(1, "Age", pd.to_numeric(age, errors="coerce") if age is not None else np.nan)
    frame.insert(2, "Frontal/Lateral", "Frontal")
    frame.insert(3, "AP/PA", raw["View Position"] if "View Position" in raw else np.nan)
    return raw, frame


def read_nih_csv(csv_path: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read an NIH label CSV; Path is a CheXpert-style key patientNNNNN/studyK/<Image Index>, abs_path the real file."""
    csv_path = Path(csv_path)
    raw, frame = read_nih_entries(csv_path)
    names = raw["Image Index"]
    follow_up = raw["Follow-up #"] if "Follow-up #" in raw else pd.Series(0, index=raw.index)
    frame.insert(0, "Path", [
        f"patient{p:05d}/study{f + 1}/{n}" for p, f, n in zip(raw["Patient ID"], follow_up, names)
    ])
    folder = Path(images_dir) if images_dir is not None else _default_images_dir(csv_path)
    return add_derived_columns(frame, _locate(folder, names), str(csv_path))


def _default_images_dir(csv_path: Path) -> Path:
    images = csv_path.parent / "images"
    return images if images.is_dir() else csv_path.parent


def index_images(folder: str | os.PathLike[str], names: pd.Series) -> tuple[dict[str, str], list[str]]:
    """(file name -> absolute path of every file under `folder`, the `names` found more than once).

    The walk is sorted and the first of equal names is used. A listed name found again with the same bytes
    (an archive extracted twice) is returned as a repeat; with other bytes it is an InvalidDatasetError naming
    both files, since which one the labels describe cannot be told.
    """
    found: dict[str, str] = {}
    again: dict[str, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(os.path.abspath(folder)):
        dirnames.sort()
        for filename in sorted(filenames):
            path = os.path.join(dirpath, filename)
            if filename in found:
                again.setdefault(filename, []).append(path)
            else:
                found[filename] = path
    listed = set(names)
    repeats = sorted(name for name in again if name in listed)
    for name in repeats:
        for other in again[name]:
            if not filecmp.cmp(found[name], other, shallow=False):
                raise InvalidDatasetError(f"{found[name]} and {other}: two different images named {name}; the labels "
                                          "cannot say which one they describe (remove or rename one)")
    return found, repeats


def _locate(folder: Path, names: pd.Series) -> list[str]:
    """Absolute file paths; NIH's download spreads images over images_001/images ... images_012/images."""
    folder = Path(os.path.abspath(folder))
    if len(names) == 0 or (folder / names.iloc[0]).exists() or not folder.is_dir():
        return [str(folder / n) for n in names]
    found, _ = index_images(folder, names)
    return [found.get(n, str(folder / n)) for n in names]
