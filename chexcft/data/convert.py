"""Write other datasets as CheXpert-format CSVs (train.csv, valid.csv, test.csv): one table format, many sources."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from chexcft.data.frame import filter_views
from chexcft.data.mimic import read_mimic
from chexcft.data.nih_release import read_nih_release
from chexcft.errors import InvalidDatasetError
from chexcft.fileio import atomic_write_csv
from chexcft.schema import CSV_HEADER

SPLITS: tuple[str, ...] = ("train", "valid", "test")


def write_splits(frame: pd.DataFrame, split: pd.Series, out: str | os.PathLike[str]) -> dict[str, tuple[Path, int]]:
    """OUT/{train,valid,test}.csv in CheXpert's column layout (each written atomically); rows per split."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unassigned = int((split == "").sum())
    if unassigned == len(split) and len(split):
        raise InvalidDatasetError("no image has a split (is the split file missing?)")
    written = {}
    for name in SPLITS:
        rows = frame[(split == name).to_numpy()]
        path = atomic_write_csv(out / f"{name}.csv", rows[list(CSV_HEADER)], index=False, float_format="%g")
        written[name] = (Path(path), len(rows))
    return written


def convert_frame(frame: pd.DataFrame, split: pd.Series, out: str | os.PathLike[str], views: str = "all",
                  **extra: object) -> dict[str, object]:
    """Keep `views`, write OUT/{train,valid,test}.csv; a summary (images, views, kept, unassigned, written, extra)."""
    counts = frame["view"].value_counts().to_dict()
    kept = filter_views(frame, views)
    written = write_splits(kept, split.loc[kept.index], out)
    return {"images": len(frame), "kept": len(kept), "views": counts,
            "unassigned": int((split.loc[kept.index] == "").sum()), "written": written, **extra}


def convert_mimic(root: str | os.PathLike[str], out: str | os.PathLike[str], *, labeler: str = "chexpert",
                  views: str = "all") -> dict[str, object]:
    """MIMIC-CXR-JPG -> OUT/{train,valid,test}.csv with Path relative to ROOT; a summary of what was written."""
    frame, split = read_mimic(root, labeler)
    return convert_frame(frame, split, out, views)


def convert_nih(root: str | os.PathLike[str], out: str | os.PathLike[str], *, views: str = "all",
                valid_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,
                missing: str = "drop") -> dict[str, object]:
    """NIH ChestX-ray14 -> OUT/{train,valid,test}.csv with Path relative to ROOT; a summary of what was written."""
    release = read_nih_release(root, valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed,
                               missing=missing)
    return convert_frame(release.frame, release.split, out, views, missing=release.missing, missing_rule=missing,
                         split_source=release.split_source, repeated=release.repeated)
