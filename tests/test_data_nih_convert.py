"""`chexcft convert nih`: an NIH ChestX-ray14 folder in the real layout -> CheXpert-format CSVs usable with --root."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.data import read_table, split_by_patient
from chexcft.data.chexpert import read_chexpert_csv
from chexcft.data.convert import convert_nih
from chexcft.data.nih_release import read_nih_release
from chexcft.errors import ChexcftError, InvalidDatasetError
from chexcft.evaluation.aggregate import aggregate_by_study
from chexcft.keys import patient_key, scorer_study_key, study_key
from chexcft.schema import CSV_HEADER, OBSERVATIONS
from chexcft.submission import input_studies
from tests.nih_builders import make_nih_tree

SPLITS = ("train", "valid", "test")


@pytest.fixture()
def nih(tmp_path: Path, demo_data_dir: Path):
    if not (demo_data_dir / "demo" / "train_truth.csv").is_file():
        pytest.skip("data/demo (the bundled NIH images the fixture is built from) is absent")
    return make_nih_tree(tmp_path / "nih", demo_data_dir)


def _written(out: Path, root: Path) -> dict[str, pd.DataFrame]:
    return {name: read_chexpert_csv(out / f"{name}.csv", root=root) for name in SPLITS}


def test_header_labels_views_and_keys(nih, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    summary = convert_nih(nih.root, out, valid_fraction=0.2)
    for name in SPLITS:
        assert (out / f"{name}.csv").read_text().splitlines()[0] == ",".join(CSV_HEADER)
    frame = pd.concat(_written(out, nih.root).values(), ignore_index=True)
    assert len(frame) == len(nih.entries) - 1 == summary["kept"]
    assert all(Path(p).is_file() for p in frame["abs_path"])
    assert set(frame["Path"].str.rpartition("/")[0]) == {"images_001/images", "images_002/images"}
    entries = nih.entries.set_index("Image Index").loc[frame["Path"].str.rpartition("/")[2]]
    found = entries["Finding Labels"].str.split("|")
    has = lambda *names: found.map(lambda f: any(n in f for n in names)).to_numpy(float)  # noqa: E731
    np.testing.assert_array_equal(frame["Pleural Effusion"], has("Effusion"))
    np.testing.assert_array_equal(frame["Lung Lesion"], has("Mass", "Nodule"))
    np.testing.assert_array_equal(frame["Lung Opacity"], has("Infiltration"))
    np.testing.assert_array_equal(frame["Pleural Other"], has("Pleural_Thickening"))
    np.testing.assert_array_equal(frame["No Finding"], has("No Finding"))
    assert (entries["Finding Labels"] == "Effusion|Mass|Nodule|Hernia").any()
    for blank in ("Enlarged Cardiomediastinum", "Fracture", "Support Devices"):
        assert frame[blank].isna().all()
    only_unmapped = entries["Finding Labels"].isin(["Hernia", "Emphysema", "Fibrosis"]).to_numpy()
    assert only_unmapped.any() and (frame.loc[only_unmapped, ["Cardiomegaly", "No Finding"]] == 0).all().all()
    assert frame["view"].tolist() == entries["View Position"].tolist() == frame["AP/PA"].tolist()
    assert set(frame["view"]) == {"AP", "PA"} and (frame["Frontal/Lateral"] == "Frontal").all()
    assert frame["Sex"].tolist() == entries["Patient Gender"].map({"M": "Male", "F": "Female"}).tolist()
    # Keys: one study per image (the path without .png); the patient from the file name, across image folders.
    assert frame["study"].tolist() == frame["Path"].str.removesuffix(".png").tolist()
    assert frame["patient"].tolist() == [f"{p:08d}" for p in entries["Patient ID"]]
    assert frame["study"].is_unique and frame["patient"].nunique() == entries["Patient ID"].nunique()
    straddling = frame.groupby("patient")["Path"].agg(lambda p: p.str.split("/").str[0].nunique())
    assert (straddling > 1).any()  # one patient's images sit in images_001 and images_002: still one patient
    assert frame["study"].tolist() == [study_key(p) for p in frame["Path"]]
    assert frame["patient"].tolist() == [patient_key(p) for p in frame["Path"]]


def test_official_lists_valid_carved_by_patient_and_missing_images(nih, tmp_path: Path) -> None:
    summary = convert_nih(nih.root, tmp_path / "a", valid_fraction=0.3, seed=1)
    written = _written(tmp_path / "a", nih.root)
    names = {n: set(f["Path"].str.rpartition("/")[2]) for n, f in written.items()}
    assert names["test"] == set(nih.test)
    assert names["train"] | names["valid"] == set(nih.train_val) - set(nih.absent)
    assert names["valid"] and names["train"]
    patients = {n: set(f["patient"]) for n, f in written.items()}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not patients[a] & patients[b], (a, b)
    assert summary["missing"] == nih.absent and "by patient, seed 1" in summary["split_source"]
    again = convert_nih(nih.root, tmp_path / "b", valid_fraction=0.3, seed=1)
    assert again["written"]["valid"][1] == summary["written"]["valid"][1]
    assert (tmp_path / "a" / "valid.csv").read_bytes() == (tmp_path / "b" / "valid.csv").read_bytes()
    kept = read_nih_release(nih.root, missing="keep")
    row = kept.frame["Path"] == f"images/{nih.absent[0]}"
    assert row.sum() == 1 and kept.split[row].iloc[0] in ("train", "valid") and kept.missing == nih.absent
    with pytest.raises(InvalidDatasetError, match=rf"1 listed image\(s\) are not under .*{nih.absent[0]}"):
        read_nih_release(nih.root, missing="error")


def test_split_by_patient_without_the_lists(nih, tmp_path: Path) -> None:
    (nih.root / "test_list.txt").unlink()
    with pytest.raises(InvalidDatasetError, match="test_list.txt is missing"):
        read_nih_release(nih.root)
    (nih.root / "train_val_list.txt").unlink()
    release = read_nih_release(nih.root, valid_fraction=0.2, test_fraction=0.3, seed=3)
    assert set(release.split) == set(SPLITS) and "by patient (seed 3" in release.split_source
    assert release.frame.groupby("patient").apply(lambda g: release.split[g.index].nunique(),
                                                  include_groups=False).eq(1).all()
    same = read_nih_release(nih.root, valid_fraction=0.2, test_fraction=0.3, seed=3)
    assert same.split.tolist() == release.split.tolist()
    with pytest.raises(ChexcftError, match="leave no train"):
        read_nih_release(nih.root, valid_fraction=0.5, test_fraction=0.5)


def _rewrite(nih, column: str, row: int, value: object) -> None:
    entries = nih.entries.copy()
    entries[column] = entries[column].astype(object)
    entries.loc[row, column] = value
    entries.to_csv(nih.root / "Data_Entry_2017_v2020.csv", index=False)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("Finding Labels", "Effusion|Dragon", r"line 5 \(data row 4\), column 'Finding Labels'.*'Dragon'"),
    ("Image Index", "../00000001_000.png", r"line 5 \(data row 4\), column 'Image Index'.*a path, not a file name"),
    ("Image Index", "scan.png", r"line 5 .*'scan.png': not an NIH file name"),
    ("Image Index", "00000001_000.png", r"line 5 .*listed twice \(first on line 2\)"),
    ("Patient ID", 99, r"line 5 .*disagrees with column 'Patient ID'"),
])
def test_bad_rows_are_named(nih, column: str, value: object, message: str) -> None:
    if column == "Image Index" and value == "00000001_000.png":
        _rewrite(nih, "Patient ID", 3, 1)
        entries = pd.read_csv(nih.root / "Data_Entry_2017_v2020.csv")
        entries.loc[3, ["Image Index", "Follow-up #"]] = [value, 0]
        entries.to_csv(nih.root / "Data_Entry_2017_v2020.csv", index=False)
    else:
        _rewrite(nih, column, 3, value)
    with pytest.raises(InvalidDatasetError, match=message) as info:
        read_nih_release(nih.root)
    assert "Data_Entry_2017_v2020.csv" in str(info.value)


def test_missing_column_and_missing_label_file(nih) -> None:
    nih.entries.drop(columns=["Finding Labels"]).to_csv(nih.root / "Data_Entry_2017_v2020.csv", index=False)
    with pytest.raises(InvalidDatasetError, match=r"Data_Entry_2017_v2020.csv: .*missing column\(s\) Finding Labels"):
        read_nih_release(nih.root)
    (nih.root / "Data_Entry_2017_v2020.csv").unlink()
    with pytest.raises(InvalidDatasetError, match="no Data_Entry_2017_v2020.csv or Data_Entry_2017.csv"):
        read_nih_release(nih.root)
    nih.entries.to_csv(nih.root / "Data_Entry_2017.csv", index=False)  # the older file name
    assert len(read_nih_release(nih.root).frame) == len(nih.entries) - 1


def test_cli_reports_missing_images_and_filters_views(nih, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["convert", "nih", str(nih.root), "--out", str(tmp_path / "all")])
    assert result.exit_code == 0, result.output
    assert "1 listed image(s) are not on disk (not written)" in result.output and nih.absent[0] in result.output
    assert f"--root {nih.root}" in " ".join(result.output.split())
    result = runner.invoke(app, ["convert", "nih", str(nih.root), "--out", str(tmp_path / "pa"), "--views", "PA"])
    assert result.exit_code == 0, result.output
    kept = pd.concat(_written(tmp_path / "pa", nih.root).values())
    assert set(kept["view"]) == {"PA"} and len(kept) == int(
        (nih.entries["View Position"] == "PA")[~nih.entries["Image Index"].isin(nih.absent)].sum())
    bad = runner.invoke(app, ["convert", "nih", str(nih.root), "--out", str(tmp_path / "x"), "--missing", "maybe"])
    assert isinstance(bad.exception, ChexcftError) and "unknown missing-image rule 'maybe'" in str(bad.exception)


def test_converted_csv_works_with_root_in_prepare_keys_and_evaluate(nih, tmp_path: Path) -> None:
    csv = tmp_path / "csv"
    runner = CliRunner()
    assert runner.invoke(app, ["convert", "nih", str(nih.root), "--out", str(csv)]).exit_code == 0
    prepared = runner.invoke(app, ["prepare", "--csv", str(csv / "train.csv"), "--root", str(nih.root), "--out",
                                   str(tmp_path / "cache"), "--size", "32", "--workers", "0", "--no-progress"])
    assert prepared.exit_code == 0, prepared.output
    train_rows = len(read_chexpert_csv(csv / "train.csv", root=nih.root))
    said = " ".join(prepared.output.split())
    assert f"{train_rows} images at 32 px" in said and f"{train_rows} read, 0 reused, 0 failed" in said
    test = read_table(csv / "test.csv", nih.root)
    # Study-level code paths: one study per NIH image; patient splits never separate one patient's images.
    assert input_studies(test) == test["study"].tolist()
    values = test[["Path", "Edema"]].fillna(0)
    assert len(aggregate_by_study(values, columns=["Edema"])) == len(test)
    train = read_table(csv / "train.csv", nih.root)
    parts = split_by_patient(train, {"a": 0.5, "b": 0.5}, seed=0)
    assert not set(parts["a"]["patient"]) & set(parts["b"]["patient"])
    from chexcft.viewer.session import load_table

    shown = load_table(csv / "train.csv", nih.root)  # the viewer's Study / Patient (cross-fit groups: patient_key)
    assert shown["Study"].tolist() == train["study"].tolist() and shown["Patient"].tolist() == train["patient"].tolist()
    # Evaluate every labelled finding with the ROC figure: no radiologist points on NIH images.
    rng = np.random.default_rng(0)
    predictions = test[["Path"]].assign(**{o: rng.random(len(test)) for o in OBSERVATIONS})
    predictions.to_csv(tmp_path / "pred.csv", index=False)
    rows, png = tmp_path / "rows.json", tmp_path / "roc.png"
    evaluated = runner.invoke(app, ["evaluate", "--groundtruth", str(csv / "test.csv"), "--predictions",
                                    str(tmp_path / "pred.csv"), "--tasks", "all", "--bootstrap", "0", "--json",
                                    str(rows), "--plot", str(png)])
    assert evaluated.exit_code == 0, evaluated.output
    row = json.loads(rows.read_text())[0]
    assert row["key"] == "Study" and row["n_studies"] == len(test)
    assert "Atelectasis" in row["auc"] and len(row["auc"]) > 5
    assert all(v is None for v in row["radiologists_below"].values())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert scorer_study_key(test["study"].iloc[0]) == test["Path"].iloc[0].removesuffix(".png") + "/"


def test_an_image_in_two_folders_is_reported_when_identical_and_refused_when_not(nih, tmp_path: Path) -> None:
    """An archive extracted twice gives the same name twice: the same bytes are reported and used once; different
    bytes under one name are refused, naming both files (the labels cannot say which one they describe)."""
    first = sorted(nih.root.glob("images_00*/images/*.png"))[0]
    copy = nih.root / "images_009" / "images" / first.name
    copy.parent.mkdir(parents=True)
    copy.write_bytes(first.read_bytes())
    runner = CliRunner()
    result = runner.invoke(app, ["convert", "nih", str(nih.root), "--out", str(tmp_path / "same")])
    assert result.exit_code == 0, result.output
    assert "1 listed image(s) are in more than one folder" in result.output and first.name in result.output
    frame = pd.concat(_written(tmp_path / "same", nih.root).values(), ignore_index=True)
    assert (frame["Path"].str.endswith(first.name)).sum() == 1
    assert frame.loc[frame["Path"].str.endswith(first.name), "Path"].item() == first.relative_to(nih.root).as_posix()

    copy.write_bytes(first.read_bytes()[:-1] + b"\x00")
    with pytest.raises(InvalidDatasetError, match=rf"{first}.*{copy}: two different images named {first.name}"):
        convert_nih(nih.root, tmp_path / "different")
    assert not (tmp_path / "different" / "train.csv").exists()


def test_read_table_reads_an_nih_root_in_place(nih, tmp_path: Path) -> None:
    """An NIH folder works wherever a table is expected, as a MIMIC root does: every listed image with its labels,
    the same rows `convert nih` writes; an image listed but not on disk is kept (it fails when loaded, by name)."""
    in_place = read_table(nih.root)
    assert len(in_place) == len(nih.entries)
    missing = in_place[in_place["Path"].str.endswith(nih.absent[0])]
    assert len(missing) == 1 and not Path(missing["abs_path"].item()).exists()
    convert_nih(nih.root, tmp_path / "csv")
    written = pd.concat(_written(tmp_path / "csv", nih.root).values()).set_index("Path").sort_index()
    same = in_place.set_index("Path").loc[written.index]
    pd.testing.assert_frame_equal(same[list(OBSERVATIONS)], written[list(OBSERVATIONS)], check_dtype=False)
    assert same["study"].tolist() == written["study"].tolist() and same["patient"].tolist() == written["patient"].tolist()
