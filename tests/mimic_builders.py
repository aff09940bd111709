"""A MIMIC-CXR-JPG tree in the real layout (CSV columns, file names, folders) built from the bundled NIH images."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chexcft.schema import OBSERVATIONS

# Column order of the real files (mimic-cxr-2.0.0-*.csv): the label file lists observations alphabetically.
METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
                    "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
LABEL_COLUMNS = ["subject_id", "study_id", *sorted(OBSERVATIONS)]
SPLIT_COLUMNS = ["dicom_id", "study_id", "subject_id", "split"]
VIEW_CYCLE = ("PA", "AP", "PA", "AP", "PA", "AP")
ODD_VIEWS = ("LATERAL", "LL", "AP AXIAL", "LAO", None)  # the last: ViewPosition missing
VIEW_MEANING = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral",
                "AP AXIAL": "antero-posterior axial", "LAO": "left anterior oblique", None: None}


@dataclass
class MimicTree:
    """The tree's root and the frames written (for checking the reader against what was written)."""

    root: Path
    metadata: pd.DataFrame
    labels: pd.DataFrame
    split: pd.DataFrame


def _source_images(demo_data_dir: Path) -> tuple[list[Path], pd.DataFrame]:
    """The bundled NIH images (CheXpert-layout demo copy) with their CheXpert-format labels, all splits."""
    release = demo_data_dir / "demo" / "CheXpert-v1.0-demo"
    frames = [pd.read_csv(release / f"{split}.csv") for split in ("train", "valid", "test")]
    table = pd.concat(frames, ignore_index=True)
    return [release.parent / p for p in table["Path"]], table


def make_mimic_tree(folder: Path, demo_data_dir: Path, n_subjects: int = 30, seed: int = 0,
                    test_share: float = 0.3, valid_share: float = 0.2) -> MimicTree:
    """MIMIC-CXR-JPG under `folder`: subjects with 1-2 studies, a frontal per study, some laterals and odd views."""
    rng = np.random.default_rng(seed)
    images, table = _source_images(demo_data_dir)
    order = rng.permutation(len(images))
    meta_rows, label_rows, split_rows = [], [], []
    next_image = 0
    for s in range(n_subjects):
        subject = str(10000032 + 7919 * s)
        split = "test" if s < n_subjects * test_share else "validate" if s < n_subjects * (test_share + valid_share) \
            else "train"
        for k in range(1 + int(rng.random() < 0.5)):
            study = str(50000000 + 1000 * s + k)
            source = order[next_image % len(order)]
            views = [VIEW_CYCLE[(s + k) % len(VIEW_CYCLE)]]
            if rng.random() < 0.35:
                views.append(ODD_VIEWS[(s + k) % len(ODD_VIEWS)])
            for view in views:
                src = images[order[next_image % len(order)]]
                next_image += 1
                dicom = "-".join(uuid.UUID(int=int(rng.integers(0, 2**63))).hex[i:i + 8] for i in range(0, 40, 8))
                path = folder / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.open(src).convert("L").save(path, format="JPEG", quality=90)
                meta_rows.append({"dicom_id": dicom, "subject_id": subject, "study_id": study,
                                  "PerformedProcedureStepDescription": "CHEST (PA AND LAT)", "ViewPosition": view,
                                  "Rows": 64, "Columns": 64, "StudyDate": 21800506 + s, "StudyTime": 213014.531,
                                  "ProcedureCodeSequence_CodeMeaning": "CHEST (PA AND LAT)",
                                  "ViewCodeSequence_CodeMeaning": VIEW_MEANING[view],
                                  "PatientOrientationCodeSequence_CodeMeaning": "Erect"})
                split_rows.append({"dicom_id": dicom, "study_id": study, "subject_id": subject, "split": split})
            labels = table.iloc[source]
            label_rows.append({"subject_id": subject, "study_id": study,
                               **{o: labels[o] for o in OBSERVATIONS}})
    metadata = pd.DataFrame(meta_rows, columns=METADATA_COLUMNS)
    labels = pd.DataFrame(label_rows)[LABEL_COLUMNS]
    split = pd.DataFrame(split_rows, columns=SPLIT_COLUMNS)
    metadata.to_csv(folder / "mimic-cxr-2.0.0-metadata.csv", index=False)
    labels.to_csv(folder / "mimic-cxr-2.0.0-chexpert.csv.gz", index=False, compression="gzip")  # shipped gzipped
    split.to_csv(folder / "mimic-cxr-2.0.0-split.csv", index=False)
    return MimicTree(folder, metadata, labels, split)
