"""An NIH ChestX-ray14 folder in the real layout (Data_Entry CSV, images_0XX/images/, split lists), bundled images."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# The real Data_Entry_2017_v2020.csv header.
DATA_ENTRY_COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                      "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]"]
# CheXpert observation -> the NIH finding written for a positive (Lung Lesion alternates Mass / Nodule / both).
INVERSE = {"Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
           "Edema": "Edema", "Pleural Effusion": "Effusion", "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
           "Lung Opacity": "Infiltration", "Pleural Other": "Pleural_Thickening"}
LESION = ("Mass", "Nodule", "Mass|Nodule")
UNMAPPED = ("Hernia", "Emphysema", "Fibrosis")


@dataclass
class NihTree:
    """The folder and what was written: the Data_Entry rows, the split lists, images listed but not on disk."""

    root: Path
    entries: pd.DataFrame
    train_val: list[str]
    test: list[str]
    absent: list[str]


def _findings(row: pd.Series, index: int) -> str:
    """NIH's Finding Labels for a row of CheXpert labels (the demo's true labels)."""
    if row["No Finding"] == 1:
        return "No Finding"
    found = [nih for observation, nih in INVERSE.items() if row[observation] == 1]
    if row["Lung Lesion"] == 1:
        found.append(LESION[index % len(LESION)])
    return "|".join(found) or UNMAPPED[index % len(UNMAPPED)]


def _demo_rows(demo_data_dir: Path) -> pd.DataFrame:
    """The bundled images with their true labels, NIH patient id and follow-up (from the CheXpert-layout Path)."""
    release = demo_data_dir / "demo" / "CheXpert-v1.0-demo"
    truth = pd.read_csv(demo_data_dir / "demo" / "train_truth.csv")
    table = pd.concat([truth] + [pd.read_csv(release / f"{s}.csv") for s in ("valid", "test")], ignore_index=True)
    parts = table["Path"].str.extract(r"patient(\d+)/study(\d+)/")
    return table.assign(source=[str(release.parent / p) for p in table["Path"]], patient=parts[0].astype(int),
                        follow_up=parts[1].astype(int) - 1).sort_values(["patient", "follow_up"], kind="stable")


def make_nih_tree(folder: Path, demo_data_dir: Path, n_patients: int = 16, per_patient: int = 3,
                  test_share: float = 0.3, seed: int = 0) -> NihTree:
    """NIH_ROOT under `folder`: up to `per_patient` images of each of the first patients, spread over two
    images_0XX/images folders (one patient straddles them), official split lists by patient, one image absent."""
    rng = np.random.default_rng(seed)
    rows = _demo_rows(demo_data_dir).groupby("patient", sort=True).head(per_patient)
    patients = sorted(rows["patient"].unique())[:n_patients]
    rows = rows[rows["patient"].isin(patients)].reset_index(drop=True)
    entries = []
    for index, row in rows.iterrows():
        name = f"{row['patient']:08d}_{row['follow_up']:03d}.png"
        entries.append({"Image Index": name, "Finding Labels": _findings(row, index), "Follow-up #": row["follow_up"],
                        "Patient ID": row["patient"], "Patient Age": int(row["Age"]),
                        "Patient Gender": {"Male": "M", "Female": "F"}[row["Sex"]], "View Position": row["AP/PA"],
                        "OriginalImage[Width": 2048, "Height]": 2500, "OriginalImagePixelSpacing[x": 0.143,
                        "y]": 0.143})
    entries = pd.DataFrame(entries, columns=DATA_ENTRY_COLUMNS)
    entries.loc[len(entries) // 3, "Finding Labels"] = "Effusion|Mass|Nodule|Hernia"  # two findings -> Lung Lesion
    order = rng.permutation(patients)
    test_patients = set(order[: max(1, int(len(order) * test_share))])
    in_test = entries["Patient ID"].isin(test_patients)
    test = entries.loc[in_test, "Image Index"].tolist()
    train_val = entries.loc[~in_test, "Image Index"].tolist()
    absent = [train_val[-1]]  # listed in Data_Entry and train_val_list.txt, not on disk
    half = len(entries) // 2
    for index, (name, source) in enumerate(zip(entries["Image Index"], rows["source"])):
        if name in absent:
            continue
        images = folder / f"images_{1 + int(index >= half):03d}" / "images"
        images.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, images / name)
    entries.to_csv(folder / "Data_Entry_2017_v2020.csv", index=False)
    (folder / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
    (folder / "test_list.txt").write_text("\n".join(test) + "\n")
    return NihTree(folder, entries, train_val, test, absent)
