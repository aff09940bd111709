"""Read an NIH ChestX-ray14 download folder in place: Data_Entry labels, images found on disk, official splits.

Layout (NIH_ROOT, as NIH ships it): `Data_Entry_2017_v2020.csv` (or the older `Data_Entry_2017.csv`), the split
lists `train_val_list.txt` and `test_list.txt` (one image file name per line), and the images in `images/` or
`images_001/images/` ... `images_012/images/`. Each image is found under NIH_ROOT by its file name and its `Path`
is relative to NIH_ROOT, so chexcft.keys derives patient and study from the NIH file name `PPPPPPPP_FFF.png`
(patient PPPPPPPP; one image per study). The file name must agree with `Patient ID` and `Follow-up #`.

Splits: with both lists, test is test_list.txt and a validation split is carved from train_val_list.txt by
patient (NIH has no official one); without the lists, train / valid / test are drawn by patient. Both are seeded
(chexcft.data.splits.split_by_patient), so no patient is ever in two splits.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from chexcft.data.frame import add_derived_columns
from chexcft.data.nih import index_images, read_nih_entries
from chexcft.data.splits import split_by_patient
from chexcft.errors import ChexcftError, InvalidDatasetError, shown
from chexcft.keys import NIH_NAME

DATA_ENTRY_FILES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
MISSING_RULES: tuple[str, ...] = ("drop", "keep", "error")
MISSING_FOLDER = "images"  # where a kept (--missing keep) image that is not on disk is expected
SHOWN_NAMES = 5


@dataclass
class NihRelease:
    """The common frame (Path relative to the root), each row's split (empty from read_nih_images), and the listed
    images not on disk."""

    frame: pd.DataFrame
    split: pd.Series
    missing: list[str] = field(default_factory=list)
    split_source: str = ""
    repeated: list[str] = field(default_factory=list)  # listed images found in two folders with the same bytes


def is_nih_root(folder: str | os.PathLike[str]) -> bool:
    """Whether a folder holds NIH ChestX-ray14's Data_Entry_2017(_v2020).csv."""
    return any((Path(folder) / name).is_file() for name in DATA_ENTRY_FILES)


def data_entry_file(root: str | os.PathLike[str]) -> Path:
    """ROOT/Data_Entry_2017_v2020.csv or ROOT/Data_Entry_2017.csv; InvalidDatasetError naming both when absent."""
    for name in DATA_ENTRY_FILES:
        if (Path(root) / name).is_file():
            return Path(root) / name
    raise InvalidDatasetError(f"{root}: no {' or '.join(DATA_ENTRY_FILES)}: not an NIH ChestX-ray14 folder")


def _check_names(raw: pd.DataFrame, csv_path: Path) -> pd.Series:
    """The Image Index column, each an NIH file name listed once and agreeing with Patient ID and Follow-up #."""
    names = raw["Image Index"].str.strip()

    def refuse(bad: pd.Series, reason: str) -> None:
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy(bool))[0])
            raise InvalidDatasetError(f"{csv_path}: line {row + 2} (data row {row + 1}), column 'Image Index': "
                                      f"{shown(names.iloc[row])}: {reason}")

    refuse(names.str.contains(r"[/\\]|^~", regex=True),
           f"a path, not a file name; it could leave the data root {csv_path.parent}")
    parts = names.str.extract(f"^{NIH_NAME}$", flags=re.IGNORECASE)
    refuse(parts[0].isna(), "not an NIH file name PPPPPPPP_FFF.png (patient, follow-up), from which chexcft "
           "derives the patient and the study")
    for group, column in ((0, "Patient ID"), (1, "Follow-up #")):
        if column in raw:
            refuse(parts[group].astype(int) != raw[column], f"the file name disagrees with column {column!r}")
    duplicated = names.duplicated()
    if duplicated.any():
        first = int(np.flatnonzero((names == names[duplicated].iloc[0]).to_numpy())[0])
        refuse(duplicated, f"the image is listed twice (first on line {first + 2})")
    return names


def _inside(paths: list[str], root: Path, csv_path: Path) -> None:
    """Refuse a found image that is a symbolic link leading outside the data root."""
    anchor = os.path.realpath(root)
    for path in paths:
        if os.path.islink(path) and os.path.commonpath([os.path.realpath(path), anchor]) != anchor:
            raise InvalidDatasetError(f"{csv_path}: image {path} is a symbolic link to {os.path.realpath(path)}, "
                                      f"which leaves the data root {anchor}")


def _read_list(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [n for n in names if "/" in n or "\\" in n]
    if bad:
        raise InvalidDatasetError(f"{path}: {shown(bad[0])} is a path; the list holds image file names")
    return names


def _official_split(frame: pd.DataFrame, names: pd.Series, root: Path, valid_fraction: float,
                    seed: int) -> pd.Series:
    """test from test_list.txt; train / valid carved by patient from train_val_list.txt; "" when in neither."""
    train_val, test = set(_read_list(root / TRAIN_VAL_LIST)), set(_read_list(root / TEST_LIST))
    both = sorted(train_val & test)
    if both:
        raise InvalidDatasetError(f"{root / TEST_LIST}: {len(both)} image(s) also in {TRAIN_VAL_LIST}, e.g. "
                                  f"{', '.join(both[:SHOWN_NAMES])}")
    split = pd.Series(np.where(names.isin(test), "test", np.where(names.isin(train_val), "train", "")),
                      index=frame.index, dtype=object, name="split")
    shared = set(frame.loc[split == "test", "patient"]) & set(frame.loc[split == "train", "patient"])
    if shared:
        raise InvalidDatasetError(f"{root}: patient(s) {', '.join(sorted(shared)[:SHOWN_NAMES])} have images in both "
                                  f"{TRAIN_VAL_LIST} and {TEST_LIST}; a patient must stay in one split")
    carved = split_by_patient(frame[split == "train"], {"train": 1.0 - valid_fraction, "valid": valid_fraction},
                              seed=seed)
    split.loc[carved["valid"].index] = "valid"
    return split


def _patient_split(frame: pd.DataFrame, valid_fraction: float, test_fraction: float, seed: int) -> pd.Series:
    fractions = {"train": 1.0 - valid_fraction - test_fraction, "valid": valid_fraction, "test": test_fraction}
    split = pd.Series("", index=frame.index, dtype=object, name="split")
    for name, part in split_by_patient(frame, fractions, seed=seed).items():
        split.loc[part.index] = name
    return split


def read_nih_images(root: str | os.PathLike[str], missing: str = "drop") -> NihRelease:
    """NIH_ROOT -> the common frame (Data_Entry order, Path relative to NIH_ROOT) and the images not on disk or
    found twice, without splits (`split` is empty).

    `missing`: what to do with listed images not found under NIH_ROOT: drop them, keep them (Path
    images/<name>) or raise.
    """
    if missing not in MISSING_RULES:
        raise ChexcftError(f"unknown missing-image rule {missing!r}; expected one of {', '.join(MISSING_RULES)}")
    root = Path(os.path.abspath(root))
    csv_path = data_entry_file(root)
    raw, frame = read_nih_entries(csv_path)
    names = _check_names(raw, csv_path)
    found, repeated = index_images(root, names)
    on_disk = names.isin(list(found)).to_numpy(bool)
    absent = names[~on_disk].tolist()
    if absent and missing == "error":
        raise InvalidDatasetError(f"{csv_path}: {len(absent)} listed image(s) are not under {root}, e.g. "
                                  f"{', '.join(absent[:SHOWN_NAMES])}")
    if missing == "drop":
        frame, names = frame[on_disk], names[on_disk]
    frame, names = frame.reset_index(drop=True), names.reset_index(drop=True)
    abs_paths = [found.get(n, str(root / MISSING_FOLDER / n)) for n in names]
    _inside(abs_paths, root, csv_path)
    frame.insert(0, "Path", [Path(p).relative_to(root).as_posix() for p in abs_paths])
    frame = add_derived_columns(frame, abs_paths, str(csv_path))
    return NihRelease(frame, pd.Series(dtype=object, name="split"), absent, "", repeated)


def read_nih_release(root: str | os.PathLike[str], *, valid_fraction: float = 0.1, test_fraction: float = 0.2,
                     seed: int = 0, missing: str = "drop") -> NihRelease:
    """NIH_ROOT -> `read_nih_images` with each image's split: test_list.txt and train_val_list.txt (valid carved by
    patient), or without them all three drawn by patient (`test_fraction` applies only then)."""
    for option, value in (("valid fraction", valid_fraction), ("test fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ChexcftError(f"the {option} must be in [0, 1), got {value:g}")
    release = read_nih_images(root, missing)
    root, frame = Path(os.path.abspath(root)), release.frame
    lists = [(root / name).is_file() for name in (TRAIN_VAL_LIST, TEST_LIST)]
    if all(lists):
        split = _official_split(frame, frame["Path"].str.rpartition("/")[2], root, valid_fraction, seed)
        source = f"{TEST_LIST}; train and valid (by patient, seed {seed}) from {TRAIN_VAL_LIST}"
    elif any(lists):
        absent_list = TEST_LIST if lists[0] else TRAIN_VAL_LIST
        raise InvalidDatasetError(f"{root}: {absent_list} is missing (found only one of {TRAIN_VAL_LIST} and "
                                  f"{TEST_LIST}); give both, or neither to split by patient")
    else:
        if valid_fraction + test_fraction >= 1.0:
            raise ChexcftError(f"valid fraction {valid_fraction:g} + test fraction {test_fraction:g} leave no train")
        split = _patient_split(frame, valid_fraction, test_fraction, seed)
        source = f"by patient (seed {seed}; no {TRAIN_VAL_LIST} / {TEST_LIST})"
    release.split, release.split_source = split, source
    return release
