"""The common shape of every data table: CheXpert columns plus abs_path, study, patient and view."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from chexcft.errors import ChexcftError, InvalidDatasetError, shown
from chexcft.keys import patient_keys, study_keys
from chexcft.schema import (
    CSV_HEADER,
    FRONTAL_VIEWS,
    METADATA_COLUMNS,
    OBSERVATIONS,
    VIEW_FRONTAL_AP,
    VIEW_FRONTAL_OTHER,
    VIEW_FRONTAL_PA,
    VIEW_LATERAL,
    VIEW_UNKNOWN,
)

DERIVED_COLUMNS: tuple[str, ...] = ("abs_path", "study", "patient", "view")
FRAME_COLUMNS: tuple[str, ...] = CSV_HEADER + DERIVED_COLUMNS
ALL_VIEWS: tuple[str, ...] = (VIEW_FRONTAL_AP, VIEW_FRONTAL_PA, VIEW_FRONTAL_OTHER, VIEW_LATERAL, VIEW_UNKNOWN)


def view_column(frontal_lateral: pd.Series, ap_pa: pd.Series, paths: pd.Series) -> pd.Series:
    """Derive the view (AP, PA, frontal, lateral, unknown) from Frontal/Lateral, AP/PA and the file name."""
    fl = frontal_lateral.astype("string").str.strip().str.lower().fillna("")
    projection = ap_pa.astype("string").str.strip().str.upper().fillna("")
    name = paths.astype("string").str.replace(r"^.*/", "", regex=True).str.lower().fillna("")
    # When Frontal/Lateral is blank, CheXpert file names (view1_frontal.jpg) still say which it is.
    frontal = (fl == "frontal") | ((fl == "") & name.str.contains("frontal", regex=False))
    lateral = (fl == "lateral") | ((fl == "") & name.str.contains("lateral", regex=False))
    view = np.full(len(fl), VIEW_UNKNOWN, dtype=object)
    view[frontal.to_numpy(bool)] = VIEW_FRONTAL_OTHER
    has_projection = (frontal | (fl == "")).to_numpy(bool)
    view[has_projection & (projection == "AP").to_numpy(bool)] = VIEW_FRONTAL_AP
    view[has_projection & (projection == "PA").to_numpy(bool)] = VIEW_FRONTAL_PA
    # LL / RL (left / right lateral decubitus) are marked "Frontal" in CheXpert but are lateral views.
    view[lateral.to_numpy(bool) | projection.isin(["LL", "RL"]).to_numpy(bool)] = VIEW_LATERAL
    return pd.Series(view, index=frontal_lateral.index, name="view")


def add_derived_columns(frame: pd.DataFrame, abs_paths: pd.Series | list[str], source: str) -> pd.DataFrame:
    """Complete a frame holding CheXpert columns with abs_path, study, patient and view, in FRAME_COLUMNS order."""
    for column in METADATA_COLUMNS:
        if column not in frame.columns:
            frame[column] = np.nan
    for column in OBSERVATIONS:
        if column not in frame.columns:
            frame[column] = np.nan
    frame[list(OBSERVATIONS)] = frame[list(OBSERVATIONS)].astype(np.float64)
    paths = frame["Path"].astype("string").str.replace("\\", "/", regex=False).str.rstrip("/")
    studies = study_keys(paths)
    no_folder = studies.isna().to_numpy(bool)
    if no_folder.any():
        row = int(np.flatnonzero(no_folder)[0])
        raise InvalidDatasetError(
            f"{source}: line {row + 2} (data row {row + 1}), column 'Path': {shown(frame['Path'].iloc[row])} has no "
            "folder, so it has no study "
            f"(expected e.g. CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg)"
        )
    frame["Path"] = paths.astype(str)
    frame["abs_path"] = np.asarray(abs_paths, dtype=object)
    frame["study"] = studies.astype(object).to_numpy()
    frame["patient"] = patient_keys(paths, studies)
    frame["view"] = view_column(frame["Frontal/Lateral"], frame["AP/PA"], paths)
    return frame[list(FRAME_COLUMNS)]


def empty_frame() -> pd.DataFrame:
    """A frame with FRAME_COLUMNS and no rows."""
    frame = pd.DataFrame({column: pd.Series(dtype=object) for column in FRAME_COLUMNS})
    frame[list(OBSERVATIONS)] = frame[list(OBSERVATIONS)].astype(np.float64)
    return frame


def label_matrix(frame: pd.DataFrame, observations: Iterable[str] = OBSERVATIONS) -> np.ndarray:
    """The (n, C) float32 label matrix with 1, 0, -1 and NaN for blank."""
    return frame[list(observations)].to_numpy(dtype=np.float32)


def filter_views(frame: pd.DataFrame, views: str | Iterable[str]) -> pd.DataFrame:
    """Keep rows whose view is in `views` ("frontal" means every frontal view: AP, PA and frontal; "all" keeps all)."""
    wanted: set[str] = set()
    for view in [views] if isinstance(views, str) else list(views):
        if view == "all":
            wanted.update(ALL_VIEWS)
        elif view == VIEW_FRONTAL_OTHER:
            wanted.update(FRONTAL_VIEWS)
        elif view in ALL_VIEWS:
            wanted.add(view)
        else:
            raise ChexcftError(f"unknown view {view!r}; expected one of {', '.join(ALL_VIEWS + ('all',))}")
    return frame[frame["view"].isin(wanted)]
