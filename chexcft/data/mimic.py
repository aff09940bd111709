"""Read MIMIC-CXR-JPG (v2.0.0) as the common table shape: one row per image, CheXpert labels, view, split.

Layout (as torchxrayvision's MIMIC_Dataset reads it): under MIMIC_ROOT,
- `mimic-cxr-2.0.0-chexpert.csv` or `-negbio.csv` (`subject_id`, `study_id`, the 14 CheXpert observations as
  1 / 0 / -1 / blank): labels per study, from the CheXpert (or NegBio) labeler;
- `mimic-cxr-2.0.0-metadata.csv` (`dicom_id`, `subject_id`, `study_id`, `ViewPosition`, ...): one row per image;
- `mimic-cxr-2.0.0-split.csv` (`dicom_id`, `study_id`, `subject_id`, `split` = train / validate / test);
- images at `files/p{first two digits of subject}/p{subject}/s{study}/{dicom_id}.jpg`.
Each CSV may also be gzipped (`.csv.gz`, as PhysioNet ships them).

`Path` is that image path relative to MIMIC_ROOT, so the study is `files/pXX/pSUBJECT/sSTUDY` and the patient
`files/pXX/pSUBJECT` (chexcft.keys). Views: PA and AP are frontal; LATERAL, LL and XTABLE LATERAL are lateral;
anything else (AP AXIAL, LAO, SWIMMERS, ..., or blank) is kept, its ViewPosition recorded in `AP/PA` and its
view `unknown`: never dropped silently (chexcft.data.frame.filter_views selects views).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from chexcft.data.csvfile import read_csv
from chexcft.data.frame import add_derived_columns
from chexcft.errors import InvalidDatasetError, shown, shown_list
from chexcft.schema import OBSERVATIONS

LABEL_FILES: dict[str, str] = {"chexpert": "mimic-cxr-2.0.0-chexpert.csv", "negbio": "mimic-cxr-2.0.0-negbio.csv"}
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
SPLIT_NAMES: dict[str, str] = {"train": "train", "validate": "valid", "test": "test"}
FRONTAL = ("PA", "AP")
LATERAL = ("LATERAL", "LL", "XTABLE LATERAL")
_IDS = ("subject_id", "study_id")


def mimic_file(root: str | os.PathLike[str], name: str, required: bool = True) -> Path | None:
    """ROOT/name or ROOT/name.gz; InvalidDatasetError naming both when a required file is absent."""
    root = Path(root)
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise InvalidDatasetError(f"{root}: no {name} (or {name}.gz): not a MIMIC-CXR-JPG folder")
    return None


def is_mimic_root(folder: str | os.PathLike[str]) -> bool:
    """Whether a folder holds MIMIC-CXR-JPG's metadata file."""
    return mimic_file(folder, METADATA_FILE, required=False) is not None


def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    # Ids as written: a blank or damaged id elsewhere must not turn every id of the column into a float.
    frame = read_csv(path, low_memory=False, dtype={column: str for column in ("dicom_id", *_IDS)})
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InvalidDatasetError(f"{path}: missing column(s) {', '.join(missing)} (header: {shown_list(list(frame.columns))})")
    return frame


def _first(bad: pd.Series | np.ndarray) -> int:
    """Index of the first True."""
    return int(np.flatnonzero(np.asarray(bad))[0])


def _whole_numbers(frame: pd.DataFrame, path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    for column in columns:
        text = frame[column].astype("string").str.strip()
        bad = ~text.str.fullmatch(r"\d+").fillna(False)
        if bad.any():
            row = _first(bad)
            raise InvalidDatasetError(
                f"{path}: line {row + 2} (data row {row + 1}), column {column!r}: {shown(frame[column].iloc[row])} is "
                "not a whole number"
            )
        frame[column] = text.astype(str)
    return frame


def _labels(path: Path) -> pd.DataFrame:
    labels = _whole_numbers(_read(path, _IDS + OBSERVATIONS), path, _IDS)
    duplicated = labels.duplicated(list(_IDS))
    if duplicated.any():
        row = _first(duplicated)
        raise InvalidDatasetError(f"{path}: line {row + 2}, columns 'subject_id', 'study_id': study "
                                  f"{shown(labels['study_id'].iloc[row])} is listed twice")
    values = labels[list(OBSERVATIONS)].apply(pd.to_numeric, errors="coerce")
    bad = ~(values.isin([1.0, 0.0, -1.0]) | labels[list(OBSERVATIONS)].isna())
    if bad.to_numpy().any():
        row, col = np.argwhere(bad.to_numpy())[0]
        raise InvalidDatasetError(
            f"{path}: line {row + 2} (data row {row + 1}), column {OBSERVATIONS[col]!r}: label "
            f"{shown(labels[OBSERVATIONS[col]].iloc[row])} is not 1, 0, -1 or blank"
        )
    labels[list(OBSERVATIONS)] = values
    return labels[list(_IDS + OBSERVATIONS)]


def read_mimic(root: str | os.PathLike[str], labeler: str = "chexpert") -> tuple[pd.DataFrame, pd.Series]:
    """MIMIC_ROOT -> (the common frame, one row per image in metadata order; each row's split train/valid/test).

    Images of a study without a labels row keep blank labels; images missing from the split file get split "".
    """
    if labeler not in LABEL_FILES:
        raise InvalidDatasetError(f"unknown MIMIC labeler {labeler!r}; expected one of {', '.join(LABEL_FILES)}")
    root = Path(os.path.abspath(root))
    meta_path = mimic_file(root, METADATA_FILE)
    meta = _read(meta_path, ("dicom_id",) + _IDS)
    meta = _whole_numbers(meta, meta_path, _IDS)
    meta["dicom_id"] = meta["dicom_id"].astype(str).str.strip()
    bad = ~meta["dicom_id"].str.fullmatch(r"[A-Za-z0-9-]+")
    if bad.any():
        row = _first(bad)
        raise InvalidDatasetError(f"{meta_path}: line {row + 2}, column 'dicom_id': {shown(meta['dicom_id'].iloc[row])} "
                                  "is not an image id")
    if meta["dicom_id"].duplicated().any():
        row = _first(meta["dicom_id"].duplicated())
        raise InvalidDatasetError(f"{meta_path}: line {row + 2}, column 'dicom_id': image "
                                  f"{shown(meta['dicom_id'].iloc[row])} is listed twice")
    labels = _labels(mimic_file(root, LABEL_FILES[labeler]))
    joined = meta.merge(labels, on=list(_IDS), how="left", validate="many_to_one")
    subject, study = joined["subject_id"], joined["study_id"]
    frame = pd.DataFrame({
        "Path": "files/p" + subject.str[:2] + "/p" + subject + "/s" + study + "/" + joined["dicom_id"] + ".jpg",
    })
    view = joined["ViewPosition"].astype("string").str.strip().str.upper() if "ViewPosition" in joined else None
    if view is None:
        view = pd.Series(pd.NA, index=joined.index, dtype="string")
    frame["Sex"] = np.nan
    frame["Age"] = np.nan
    frame["Frontal/Lateral"] = np.where(view.isin(FRONTAL).fillna(False), "Frontal",
                                        np.where(view.isin(LATERAL).fillna(False), "Lateral", None))
    # The recorded projection: AP / PA for frontal views, else the ViewPosition as written (LL, LAO, AP AXIAL...).
    frame["AP/PA"] = view.where(view != "LATERAL").astype(object).where(view.notna(), np.nan)
    for column in OBSERVATIONS:
        frame[column] = joined[column].to_numpy(dtype=np.float64)
    frame = add_derived_columns(frame, (str(root) + "/" + frame["Path"]).tolist(), str(meta_path))
    split = pd.Series("", index=frame.index, name="split", dtype=object)
    split_path = mimic_file(root, SPLIT_FILE, required=False)
    if split_path is not None:
        splits = _read(split_path, ("dicom_id", "split"))
        names = splits["split"].astype("string").str.strip().str.lower()
        unknown = ~names.isin(list(SPLIT_NAMES)).fillna(False)
        if unknown.any():
            row = _first(unknown)
            raise InvalidDatasetError(f"{split_path}: line {row + 2} (data row {row + 1}), column 'split': "
                                      f"{shown(splits['split'].iloc[row])} is not a split name; expected "
                                      f"{', '.join(SPLIT_NAMES)}")
        names = names.astype(str)
        by_image = dict(zip(splits["dicom_id"].astype(str).str.strip(), names.map(SPLIT_NAMES)))
        split = joined["dicom_id"].map(by_image).fillna("").rename("split")
        split.index = frame.index
    return frame, split
