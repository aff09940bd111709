"""read_table dispatch: CheXpert CSV, Path-only CSV, NIH CSV (see test_data_nih) and folders (test_data_folder)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from chexcft.data import missing_files, read_chexpert_csv, read_table
from chexcft.errors import InvalidDatasetError
from chexcft.keys import patient_key, study_key
from chexcft.schema import OBSERVATIONS


def test_chexpert_csv(chexpert_tree) -> None:
    frame = read_table(chexpert_tree.valid_csv)
    pd.testing.assert_frame_equal(frame, read_chexpert_csv(chexpert_tree.valid_csv))


def test_path_only_csv_has_nan_labels(chexpert_tree) -> None:
    csv = chexpert_tree.root / "input.csv"
    chexpert_tree.valid[["Path"]].to_csv(csv, index=False)
    frame = read_table(csv, root=chexpert_tree.release_dir)
    assert frame[list(OBSERVATIONS)].isna().all().all()
    assert missing_files(frame) == []
    # No Frontal/Lateral column: the CheXpert file name still gives frontal / lateral.
    names = frame["Path"].str.rpartition("/")[2]
    assert (frame["view"] == names.map(lambda n: "frontal" if "frontal" in n else "lateral")).all()


def test_path_only_csv_still_refuses_escapes(chexpert_tree) -> None:
    csv = chexpert_tree.root / "input.csv"
    pd.DataFrame({"Path": ["a/b/c.jpg", "../../etc/passwd"]}).to_csv(csv, index=False)
    with pytest.raises(InvalidDatasetError, match=r"line 3 .*'\.\.'"):
        read_table(csv)


def test_partial_observation_columns_are_an_error(chexpert_tree) -> None:
    csv = chexpert_tree.root / "partial.csv"
    chexpert_tree.valid[["Path", "Edema"]].to_csv(csv, index=False)
    with pytest.raises(InvalidDatasetError, match="missing observation column"):
        read_table(csv)


def test_unrecognised_and_missing_inputs(tmp_path: Path) -> None:
    csv = tmp_path / "other.csv"
    pd.DataFrame({"file": ["a.png"]}).to_csv(csv, index=False)
    with pytest.raises(InvalidDatasetError, match="unrecognised CSV"):
        read_table(csv)
    with pytest.raises(InvalidDatasetError, match="no such file or folder"):
        read_table(tmp_path / "absent.csv")


def test_keys_agree_with_chexcft_keys_on_unusual_paths(tmp_path: Path) -> None:
    paths = ["x/patient2/patient3/y.png", "a/patient1x/b.png", "patient5/s/v.png", "a\\patient7\\s1\\v.png",
             "top/only.png", "./d/patient9/study2/view1_frontal.jpg", "d/e/f/g/h.dcm"]
    csv = tmp_path / "paths.csv"
    pd.DataFrame({"Path": paths}).to_csv(csv, index=False)
    frame = read_table(csv)
    assert frame["study"].tolist() == [study_key(p) for p in frame["Path"]]
    assert frame["patient"].tolist() == [patient_key(p) for p in frame["Path"]]
    assert frame["patient"].tolist()[:4] == ["patient2", "a", "patient5", "patient7"]
    assert frame["Path"].iloc[5] == "d/patient9/study2/view1_frontal.jpg"
