"""One entry point for any supported table: CheXpert CSV, Path-only CSV, NIH label CSV, a MIMIC-CXR-JPG or NIH
ChestX-ray14 root, or a folder of images."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from chexcft.data.chexpert import read_chexpert_csv, read_path_csv
from chexcft.data.folder import read_image_folder
from chexcft.data.mimic import is_mimic_root, read_mimic
from chexcft.data.nih import is_nih_header, read_nih_csv
from chexcft.data.nih_release import is_nih_root, read_nih_images
from chexcft.data.csvfile import read_csv
from chexcft.errors import InvalidDatasetError, shown_list
from chexcft.schema import OBSERVATIONS


def read_table(csv_or_folder: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read a CheXpert CSV, a Path-only CSV (labels NaN), an NIH label CSV (root = images), a MIMIC-CXR-JPG or NIH
    ChestX-ray14 root (every listed image, labels in place; one not on disk fails when it is loaded) or a folder."""
    source = Path(csv_or_folder)
    if source.is_dir() and is_mimic_root(source):
        return read_mimic(source)[0]
    if source.is_dir() and is_nih_root(source):
        return read_nih_images(source, missing="keep").frame
    if source.is_dir():
        return read_image_folder(source)
    if not source.is_file():
        raise InvalidDatasetError(f"{source}: no such file or folder")
    columns = [str(c) for c in read_csv(source, nrows=0).columns]
    if is_nih_header(columns):
        return read_nih_csv(source, root)
    if any(c in OBSERVATIONS for c in columns):
        return read_chexpert_csv(source, root)
    if "Path" in columns:
        return read_path_csv(source, root)
    raise InvalidDatasetError(
        f"{source}: unrecognised CSV (header: {shown_list(columns)}); expected a CheXpert CSV, a CSV with a 'Path' "
        "column, or an NIH label file with 'Image Index' and 'Finding Labels'"
    )
