"""NIH ChestX-ray14 label files (Data_Entry_2017 and nih1000 labels.csv) mapped onto CheXpert observations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexcft.data import NIH_TO_CHEXPERT, missing_files, read_nih_csv, read_table
from chexcft.data.frame import FRAME_COLUMNS
from chexcft.data.nih import MAPPED_OBSERVATIONS
from chexcft.errors import InvalidDatasetError
from chexcft.schema import OBSERVATIONS

DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
ROWS = [
    "00000001_000.png,Cardiomegaly,0,1,58,M,PA,2682,2749,0.143,0.143",
    "00000001_001.png,Cardiomegaly|Emphysema,1,1,58,M,PA,2894,2729,0.143,0.143",
    "00000003_000.png,Hernia,0,3,81,F,PA,2582,2991,0.143,0.143",
    "00000013_005.png,Effusion|Infiltration|Mass|Nodule|Pleural_Thickening,5,13,60,M,AP,3056,2544,0.139,0.139",
    "00000030_000.png,No Finding,0,30,79,F,AP,2500,2048,0.171,0.171",
]


def _data_entry(tmp_path: Path, rows: list[str] = ROWS) -> Path:
    csv = tmp_path / "Data_Entry_2017.csv"
    csv.write_text(DATA_ENTRY_HEADER + "\n" + "\n".join(rows) + "\n")
    return csv


def test_mapping_table_is_the_documented_one() -> None:
    assert {k: v for k, v in NIH_TO_CHEXPERT.items() if v} == {
        "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Consolidation": "Consolidation",
        "Edema": "Edema", "Effusion": "Pleural Effusion", "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
        "Mass": "Lung Lesion", "Nodule": "Lung Lesion", "Infiltration": "Lung Opacity",
        "Pleural_Thickening": "Pleural Other", "No Finding": "No Finding",
    }
    assert set(OBSERVATIONS) - set(MAPPED_OBSERVATIONS) == {"Enlarged Cardiomediastinum", "Fracture", "Support Devices"}


def test_data_entry_format(tmp_path: Path) -> None:
    frame = read_nih_csv(_data_entry(tmp_path), tmp_path / "images")
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["Path"].tolist()[:2] == ["patient00001/study1/00000001_000.png", "patient00001/study2/00000001_001.png"]
    assert frame["study"].tolist()[:2] == ["patient00001/study1", "patient00001/study2"]
    assert frame["patient"].tolist() == ["patient00001", "patient00001", "patient00003", "patient00013", "patient00030"]
    assert frame["abs_path"].iloc[0] == str(tmp_path / "images" / "00000001_000.png")
    assert frame["Sex"].tolist() == ["Male", "Male", "Female", "Male", "Female"]
    assert frame["Age"].tolist() == [58, 58, 81, 60, 79]
    assert frame["view"].tolist() == ["PA", "PA", "PA", "AP", "AP"]
    for unmapped in ("Enlarged Cardiomediastinum", "Fracture", "Support Devices"):
        assert frame[unmapped].isna().all()
    mapped = frame[list(MAPPED_OBSERVATIONS)]
    assert mapped.notna().all().all() and set(np.unique(mapped.to_numpy())) <= {0.0, 1.0}
    assert frame.loc[0, "Cardiomegaly"] == 1 and frame.loc[0, "No Finding"] == 0
    assert mapped.iloc[2].sum() == 0  # Hernia only: every mapped observation negative
    row = frame.iloc[3]
    assert (row["Pleural Effusion"], row["Lung Opacity"], row["Lung Lesion"], row["Pleural Other"]) == (1, 1, 1, 1)
    assert row["Cardiomegaly"] == 0
    assert frame.loc[4, "No Finding"] == 1 and mapped.iloc[4].sum() == 1
    assert missing_files(frame) == frame["abs_path"].tolist()


def test_old_age_format_and_images_in_subfolders(tmp_path: Path) -> None:
    rows = [r.replace(",58,", ",058Y,") for r in ROWS]
    sub = tmp_path / "images_002" / "images"
    sub.mkdir(parents=True)
    (sub / "00000003_000.png").write_bytes(b"x")
    frame = read_nih_csv(_data_entry(tmp_path, rows), tmp_path)
    assert frame["Age"].tolist()[:2] == [58, 58]
    assert frame["abs_path"].iloc[2] == str(sub / "00000003_000.png")


def test_unknown_finding_names_row(tmp_path: Path) -> None:
    rows = ROWS[:2] + [ROWS[2].replace("Hernia", "Hernia|Dragon")]
    with pytest.raises(InvalidDatasetError, match=r"line 4 \(data row 3\).*'Dragon'"):
        read_nih_csv(_data_entry(tmp_path, rows))


def test_bad_patient_id_and_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(InvalidDatasetError, match=r"line 3 \(data row 2\), column 'Patient ID'"):
        read_nih_csv(_data_entry(tmp_path, [ROWS[0], ROWS[1].replace(",1,58,", ",x,58,")]))
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"Image Index": ["a.png"], "Finding Labels": ["Edema"]}).to_csv(bad, index=False)
    with pytest.raises(InvalidDatasetError, match="missing column.*Patient ID"):
        read_nih_csv(bad)


def test_read_table_dispatches_data_entry(tmp_path: Path) -> None:
    frame = read_table(_data_entry(tmp_path), tmp_path)
    assert len(frame) == len(ROWS) and frame["abs_path"].iloc[0] == str(tmp_path / "00000001_000.png")


def _nih_dir(shared_dir: Path | None, tmp_path: Path) -> Path:
    """The real nih1000 folder when ../shared is present, else a generated one in its labels.csv format."""
    if shared_dir is not None and (shared_dir / "data" / "nih1000" / "labels.csv").is_file():
        return shared_dir / "data" / "nih1000"
    folder = tmp_path / "nih1000"
    (folder / "images").mkdir(parents=True)
    findings = ["No Finding", "Effusion|Atelectasis", "Cardiomegaly", "Nodule"]
    rows = []
    for index, finding in enumerate(findings):
        name = f"{index + 1:08d}_000.png"
        (folder / "images" / name).write_bytes(b"png")
        flags = {k: int(k in finding.split("|")) for k in NIH_TO_CHEXPERT}
        rows.append({"Image Index": name, "split": "train", "Finding Labels": finding, **flags,
                     "Patient ID": index + 1, "Patient Age": 50, "Patient Gender": "F", "View Position": "PA",
                     "Follow-up #": 0})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def test_nih1000_labels_format(shared_dir: Path | None, tmp_path: Path) -> None:
    folder = _nih_dir(shared_dir, tmp_path)
    raw = pd.read_csv(folder / "labels.csv")
    frame = read_table(folder / "labels.csv")
    assert len(frame) == len(raw) and missing_files(frame) == []
    assert frame["abs_path"].iloc[0] == str(folder / "images" / raw["Image Index"].iloc[0])
    # The 0/1 finding columns of labels.csv agree with the mapped Finding Labels.
    np.testing.assert_array_equal(frame["Pleural Effusion"].to_numpy(), raw["Effusion"].to_numpy(dtype=float))
    lesion = ((raw["Mass"] == 1) | (raw["Nodule"] == 1)).to_numpy(dtype=float)
    np.testing.assert_array_equal(frame["Lung Lesion"].to_numpy(), lesion)
    assert frame["patient"].nunique() == raw["Patient ID"].nunique()
