"""CheXpert CSV layer: header and label validation, both root conventions, path safety, derived columns."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexcft.data import filter_views, label_matrix, missing_files, read_chexpert_csv
from chexcft.data.frame import FRAME_COLUMNS
from chexcft.errors import ChexcftError, InvalidDatasetError
from chexcft.keys import patient_key, study_key
from chexcft.schema import CSV_HEADER, OBSERVATIONS
from tests.builders import RELEASE, make_chexpert_tree, real_chexpert_label_rows


def _rewrite(csv: Path, frame: pd.DataFrame, out: Path | None = None) -> Path:
    target = out or csv
    frame.to_csv(target, index=False)
    return target


def test_reads_tree_with_columns_keys_and_labels(chexpert_tree) -> None:
    frame = read_chexpert_csv(chexpert_tree.train_csv)
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == len(chexpert_tree.train)
    assert frame["study"].tolist() == [study_key(p) for p in frame["Path"]]
    assert frame["patient"].tolist() == [patient_key(p) for p in frame["Path"]]
    assert frame["patient"].str.fullmatch(r"patient\d{5}").all()
    expected = chexpert_tree.train[list(OBSERVATIONS)].to_numpy(dtype=np.float32)
    np.testing.assert_array_equal(label_matrix(frame), expected)  # NaN == NaN in assert_array_equal
    assert label_matrix(frame).dtype == np.float32 and label_matrix(frame).shape == (len(frame), 14)
    assert missing_files(frame) == []
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame["abs_path"])


@pytest.mark.parametrize("convention", ["container", "release", "inferred"])
def test_both_root_conventions_give_the_same_paths(chexpert_tree, convention: str) -> None:
    root = {"container": chexpert_tree.root, "release": chexpert_tree.release_dir, "inferred": None}[convention]
    frame = read_chexpert_csv(chexpert_tree.valid_csv, root=root)
    expected = [str(Path(os.path.abspath(chexpert_tree.root)) / p) for p in chexpert_tree.valid["Path"]]
    assert frame["abs_path"].tolist() == expected
    assert missing_files(frame) == []


def test_csv_beside_the_release_folder_is_inferred(chexpert_tree) -> None:
    moved = shutil.copy(chexpert_tree.train_csv, chexpert_tree.root / "train.csv")
    frame = read_chexpert_csv(moved)
    assert missing_files(frame) == []


def test_missing_files_reports_absent_images(chexpert_tree) -> None:
    frame = read_chexpert_csv(chexpert_tree.train_csv)
    Path(frame["abs_path"].iloc[0]).unlink()
    assert missing_files(frame) == [frame["abs_path"].iloc[0]]


def test_view_column(chexpert_tree) -> None:
    frame = chexpert_tree.train.iloc[:8].copy()
    frame["Frontal/Lateral"] = ["Frontal", "Frontal", "Frontal", "Lateral", "Frontal", "Frontal", np.nan, np.nan]
    frame["AP/PA"] = ["AP", "PA", np.nan, np.nan, "LL", "RL", "AP", np.nan]
    csv = _rewrite(chexpert_tree.train_csv, frame)
    views = read_chexpert_csv(csv)["view"].tolist()
    # The last row has no metadata: its file name (view1_frontal / view2_lateral) decides.
    last_name = frame["Path"].iloc[7].rpartition("/")[2]
    last = "frontal" if "frontal" in last_name else "lateral"
    assert views == ["AP", "PA", "frontal", "lateral", "lateral", "lateral", "AP", last]
    read = read_chexpert_csv(csv)
    assert filter_views(read, "frontal")["view"].tolist() == [v for v in views if v in ("AP", "PA", "frontal")]
    assert filter_views(read, ["PA"])["view"].tolist() == ["PA"]
    with pytest.raises(ChexcftError, match="unknown view 'sideways'"):
        filter_views(read, "sideways")


def test_metadata_columns_other_than_path_may_be_absent(chexpert_tree) -> None:
    frame = chexpert_tree.train.drop(columns=["Sex", "Age", "AP/PA"])
    frame = frame[["Path", "Frontal/Lateral", *OBSERVATIONS]]
    read = read_chexpert_csv(_rewrite(chexpert_tree.train_csv, frame))
    assert list(read.columns) == list(FRAME_COLUMNS)
    assert read["Sex"].isna().all()


def test_missing_path_column(chexpert_tree) -> None:
    csv = _rewrite(chexpert_tree.train_csv, chexpert_tree.train.drop(columns=["Path"]))
    with pytest.raises(InvalidDatasetError, match="required column 'Path'"):
        read_chexpert_csv(csv)


def test_missing_observation_columns_are_named(chexpert_tree) -> None:
    csv = _rewrite(chexpert_tree.train_csv, chexpert_tree.train.drop(columns=["Edema", "Fracture"]))
    with pytest.raises(InvalidDatasetError, match=r"missing observation column\(s\) 'Edema', 'Fracture'") as info:
        read_chexpert_csv(csv)
    assert str(csv) in str(info.value)


def test_unknown_columns_are_named_with_a_hint(chexpert_tree) -> None:
    frame = chexpert_tree.train.rename(columns={"Pleural Effusion": "Pleural Efusion"}).assign(Extra=1)
    csv = _rewrite(chexpert_tree.train_csv, frame)
    with pytest.raises(InvalidDatasetError, match=r"'Pleural Efusion' \(did you mean 'Pleural Effusion'\?\), 'Extra'"):
        read_chexpert_csv(csv)


@pytest.mark.parametrize("value", ["2", "0.5", "yes", "NaN", "1.0.0", "inf"])
def test_bad_label_names_line_and_column(chexpert_tree, value: str) -> None:
    frame = chexpert_tree.train.astype({"Cardiomegaly": object})
    frame.loc[3, "Cardiomegaly"] = value
    csv = _rewrite(chexpert_tree.train_csv, frame)
    with pytest.raises(InvalidDatasetError) as info:
        read_chexpert_csv(csv)
    message = str(info.value)
    assert "line 5 (data row 4" in message and "'Cardiomegaly'" in message and repr(value) in message
    assert "1, 0, -1 or blank" in message


def test_accepted_label_spellings(chexpert_tree) -> None:
    frame = chexpert_tree.train.astype({"Edema": object})
    frame.loc[0:3, "Edema"] = ["1", "-1", "0.0", ""]
    read = read_chexpert_csv(_rewrite(chexpert_tree.train_csv, frame))
    assert read["Edema"].iloc[:3].tolist() == [1.0, -1.0, 0.0] and np.isnan(read["Edema"].iloc[3])


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../x.jpg", r"'\.\.'"),
        (f"{RELEASE}/train/../../outside/view1_frontal.jpg", r"'\.\.'"),
        ("/etc/passwd/study1/x.jpg", "absolute"),
        ("C:/data/patient1/study1/x.jpg", "absolute"),
        ("..\\..\\x\\y.jpg", r"'\.\.'"),
        ("", "empty"),
    ],
)
def test_paths_escaping_the_root_are_refused(chexpert_tree, path: str, reason: str) -> None:
    frame = chexpert_tree.train.copy()
    frame.loc[2, "Path"] = path
    csv = _rewrite(chexpert_tree.train_csv, frame)
    with pytest.raises(InvalidDatasetError, match=reason) as info:
        read_chexpert_csv(csv)
    assert "line 4 (data row 3)" in str(info.value)


def test_symlinked_file_leaving_the_root_is_refused(chexpert_tree, tmp_path: Path) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}_outside.jpg"
    outside.write_bytes(b"not inside the data root")
    victim = chexpert_tree.root / chexpert_tree.train["Path"].iloc[1]
    victim.unlink()
    victim.symlink_to(outside)
    try:
        with pytest.raises(InvalidDatasetError, match="symbolic link") as info:
            read_chexpert_csv(chexpert_tree.train_csv)
        assert "line 3 (data row 2)" in str(info.value)
    finally:
        outside.unlink()


def test_symlinked_folder_leaving_the_root_is_refused(chexpert_tree, tmp_path: Path) -> None:
    patient_dir = (chexpert_tree.root / chexpert_tree.train["Path"].iloc[0]).parent.parent
    elsewhere = tmp_path.parent / f"{tmp_path.name}_elsewhere"
    shutil.move(patient_dir, elsewhere)
    patient_dir.symlink_to(elsewhere, target_is_directory=True)
    try:
        with pytest.raises(InvalidDatasetError, match="leaves the data root"):
            read_chexpert_csv(chexpert_tree.train_csv)
    finally:
        shutil.rmtree(elsewhere)


def test_symlinks_inside_the_root_and_a_linked_release_folder_are_fine(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    tree = make_chexpert_tree(disk, n_patients=3, seed=1)
    # The release folder itself lives elsewhere (a dataset on another disk) and is linked into the root.
    root = tmp_path / "root"
    root.mkdir()
    (root / RELEASE).symlink_to(tree.release_dir, target_is_directory=True)
    first = tree.train["Path"].iloc[0]
    link = tree.root / first
    target = link.with_name("copy.jpg")
    shutil.copy(link, target)
    link.unlink()
    link.symlink_to(target)
    frame = read_chexpert_csv(root / RELEASE / "train.csv", root=root)
    assert missing_files(frame) == []
    assert frame["abs_path"].iloc[0] == str(root / first)


def test_other_top_folders_may_not_be_links_out(chexpert_tree, tmp_path: Path) -> None:
    elsewhere = tmp_path.parent / f"{tmp_path.name}_evil"
    (elsewhere / "p" / "s").mkdir(parents=True)
    (chexpert_tree.root / "evil").symlink_to(elsewhere, target_is_directory=True)
    frame = chexpert_tree.train.copy()
    frame.loc[5, "Path"] = "evil/p/s/view1_frontal.jpg"
    csv = _rewrite(chexpert_tree.train_csv, frame, chexpert_tree.root / "mixed.csv")
    try:
        with pytest.raises(InvalidDatasetError, match="line 7 .*symbolic link"):
            read_chexpert_csv(csv)
    finally:
        shutil.rmtree(elsewhere)


def test_path_without_folder_has_no_study(chexpert_tree) -> None:
    frame = chexpert_tree.train.copy()
    frame.loc[0, "Path"] = "view1_frontal.jpg"
    with pytest.raises(InvalidDatasetError, match="has no folder"):
        read_chexpert_csv(_rewrite(chexpert_tree.train_csv, frame))


def test_missing_or_garbage_csv(tmp_path: Path) -> None:
    with pytest.raises(InvalidDatasetError, match="not found"):
        read_chexpert_csv(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidDatasetError, match="empty"):
        read_chexpert_csv(empty)


def test_full_real_train_csv(tmp_path: Path) -> None:
    real = real_chexpert_label_rows()
    if real is None:
        pytest.skip("torchxrayvision's chexpert_train.csv.gz is not installed")
    csv = tmp_path / "train.csv"
    real.to_csv(csv, index=False)
    frame = read_chexpert_csv(csv)
    assert len(frame) == 223_414
    assert frame["patient"].nunique() == 64_540 and frame["study"].nunique() == 187_641
    # REFERENCE.md section 1: positive / negative / uncertain / blank (checked against the shipped file).
    expected = {
        "Cardiomegaly": (27_000, 11_116, 8_087, 177_211),
        "Edema": (52_246, 20_726, 12_984, 137_458),
        "Consolidation": (14_783, 28_097, 27_742, 152_792),
        "Atelectasis": (33_376, 1_328, 33_739, 154_971),
        "Pleural Effusion": (86_187, 35_396, 11_628, 90_203),
    }
    for task, counts in expected.items():
        values = frame[task]
        assert ((values == 1).sum(), (values == 0).sum(), (values == -1).sum(), values.isna().sum()) == counts
    assert set(frame["No Finding"].dropna()) == {1.0}
    assert frame["view"].value_counts().to_dict() == {"AP": 161_590, "lateral": 32_387 + 17, "PA": 29_420}
    assert frame["abs_path"].iloc[0] == str(tmp_path / real["Path"].iloc[0])
    assert list(frame.columns[: len(CSV_HEADER)]) == list(CSV_HEADER)
