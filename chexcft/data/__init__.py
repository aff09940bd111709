"""Data tables: CheXpert / NIH CSVs and image folders as one DataFrame shape, plus patient-level splits."""

from __future__ import annotations

from chexcft.data.chexpert import missing_files, read_chexpert_csv, read_path_csv
from chexcft.data.folder import read_image_folder
from chexcft.data.frame import FRAME_COLUMNS, filter_views, label_matrix
from chexcft.data.nih import NIH_TO_CHEXPERT, read_nih_csv
from chexcft.data.splits import split_by_patient
from chexcft.data.tables import read_table

__all__ = [
    "FRAME_COLUMNS",
    "NIH_TO_CHEXPERT",
    "filter_views",
    "label_matrix",
    "missing_files",
    "read_chexpert_csv",
    "read_image_folder",
    "read_nih_csv",
    "read_path_csv",
    "read_table",
    "split_by_patient",
]
