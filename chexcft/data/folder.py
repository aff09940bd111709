"""A folder of images without labels (for prediction): one row per image, the study is the image's folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from chexcft.data.frame import add_derived_columns, empty_frame
from chexcft.errors import InvalidDatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom", ".dic", ".png", ".jpg", ".jpeg")


def read_image_folder(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """Every DICOM/PNG/JPEG under `folder` (recursive, sorted, hidden entries skipped) with NaN labels."""
    folder = Path(os.path.abspath(folder))
    if not folder.is_dir():
        raise InvalidDatasetError(f"{folder}: not a folder")
    relative: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            if not filename.startswith(".") and _is_image(os.path.join(dirpath, filename)):
                relative.append(Path(dirpath, filename).relative_to(folder).as_posix())
    if not relative:
        return empty_frame()
    relative.sort()
    # Path keeps the folder's own name in front so that images at the top level still have a study (the folder).
    frame = pd.DataFrame({"Path": [f"{folder.name}/{r}" for r in relative]})
    frame["Frontal/Lateral"] = np.nan
    frame["AP/PA"] = np.nan
    return add_derived_columns(frame, [str(folder / r) for r in relative], str(folder))


def _is_image(path: str) -> bool:
    extension = os.path.splitext(path)[1].lower()
    if extension in IMAGE_EXTENSIONS:
        return True
    if extension:
        return False
    # DICOM files often have no extension: ask the content sniffer when chexcft.io provides it.
    try:
        from chexcft.io import sniff_format
    except ImportError:
        return False
    try:
        return sniff_format(path) in ("dicom", "png", "jpeg")
    except Exception:  # an unreadable file is simply not listed; the cache reports read failures
        return False
