"""MIMIC-CXR-JPG: the reader on a fixture in the real layout, `chexcft convert mimic`, and train -> evaluate on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.data import read_table
from chexcft.data.chexpert import read_chexpert_csv
from chexcft.data.frame import FRAME_COLUMNS, filter_views
from chexcft.data.mimic import read_mimic
from chexcft.errors import InvalidDatasetError
from chexcft.schema import OBSERVATIONS
from tests.mimic_builders import make_mimic_tree


@pytest.fixture()
def mimic(tmp_path: Path, demo_data_dir: Path):
    if not (demo_data_dir / "demo" / "CheXpert-v1.0-demo" / "train.csv").is_file():
        pytest.skip("data/demo (the bundled NIH images the fixture is built from) is absent")
    return make_mimic_tree(tmp_path / "mimic", demo_data_dir)


def test_reader_keys_views_labels_and_missing_views(mimic) -> None:
    frame, split = read_mimic(mimic.root)
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == len(mimic.metadata)  # no image dropped, whatever its view
    meta = mimic.metadata
    first = meta.iloc[0]
    expected = f"files/p{first.subject_id[:2]}/p{first.subject_id}/s{first.study_id}/{first.dicom_id}.jpg"
    assert frame["Path"].iloc[0] == expected
    assert frame["study"].iloc[0] == expected.rpartition("/")[0]
    assert frame["patient"].iloc[0] == f"files/p{first.subject_id[:2]}/p{first.subject_id}"
    assert all(Path(p).is_file() for p in frame["abs_path"])
    positions = meta["ViewPosition"].astype(object).where(meta["ViewPosition"].notna(), None).tolist()
    views = dict(zip(range(len(frame)), frame["view"]))
    for i, position in enumerate(positions):
        expected_view = {"PA": "PA", "AP": "AP", "LATERAL": "lateral", "LL": "lateral"}.get(position, "unknown")
        assert views[i] == expected_view, (position, views[i])
    odd = [i for i, p in enumerate(positions) if p in ("AP AXIAL", "LAO")]
    missing = [i for i, p in enumerate(positions) if p is None]
    assert odd and missing
    assert set(frame["AP/PA"].iloc[odd]) <= {"AP AXIAL", "LAO"}  # the view as recorded
    assert frame["view"].iloc[missing].eq("unknown").all()
    assert len(filter_views(frame, "frontal")) == sum(p in ("PA", "AP") for p in positions)
    # Labels are per study and keep 1 / 0 / -1 / blank.
    labels = mimic.labels.set_index("study_id")
    for i in (0, len(frame) - 1):
        study = meta["study_id"].iloc[i]
        np.testing.assert_array_equal(frame[list(OBSERVATIONS)].iloc[i].to_numpy(dtype=float),
                                      labels.loc[study, list(OBSERVATIONS)].to_numpy(dtype=float))
    splits = dict(zip(mimic.split["dicom_id"], mimic.split["split"].map({"train": "train", "validate": "valid",
                                                                          "test": "test"})))
    assert split.tolist() == [splits[d] for d in meta["dicom_id"]]
    assert len(read_table(mimic.root)) == len(frame)  # a MIMIC root is a table like any other


def test_reader_names_bad_rows(mimic) -> None:
    meta = mimic.metadata.copy()
    meta.loc[3, "subject_id"] = "10x"
    meta.to_csv(mimic.root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    with pytest.raises(InvalidDatasetError, match=r"metadata\.csv: line 5 .*'subject_id': '10x'"):
        read_mimic(mimic.root)
    (mimic.root / "mimic-cxr-2.0.0-metadata.csv").unlink()
    with pytest.raises(InvalidDatasetError, match="no mimic-cxr-2.0.0-metadata.csv"):
        read_mimic(mimic.root)


def test_reader_names_the_line_of_damaged_files_and_quotes_values_briefly(mimic) -> None:
    import gzip

    labels_gz = mimic.root / "mimic-cxr-2.0.0-chexpert.csv.gz"
    text = gzip.decompress(labels_gz.read_bytes())
    lines = text.split(b"\n")
    lines[3] = lines[3].replace(b",", b",\xe9", 1)  # a Latin-1 byte inside the gzipped labels
    labels_gz.write_bytes(gzip.compress(b"\n".join(lines)))
    with pytest.raises(InvalidDatasetError, match=r"chexpert\.csv\.gz: line 4, column 'study_id': byte 0xE9"):
        read_mimic(mimic.root)
    labels_gz.write_bytes(gzip.compress(text)[:-20])  # a cut download
    with pytest.raises(InvalidDatasetError, match=r"chexpert\.csv\.gz: not a readable gzip file"):
        read_mimic(mimic.root)
    labels_gz.write_bytes(gzip.compress(text))
    split = mimic.split.copy()
    split.loc[2, "split"] = "x" * 10**6
    split.to_csv(mimic.root / "mimic-cxr-2.0.0-split.csv", index=False)
    with pytest.raises(InvalidDatasetError, match=r"split\.csv: line 4 \(data row 3\), column 'split': 'x+'\.\.\.") as caught:
        read_mimic(mimic.root)
    assert len(str(caught.value)) < 500
    meta = mimic.metadata.copy()
    meta.loc[len(meta) - 1, "subject_id"] = None  # a blank id on the last line leaves the other ids as written
    meta.to_csv(mimic.root / "mimic-cxr-2.0.0-metadata.csv", index=False)
    with pytest.raises(InvalidDatasetError, match=rf"line {len(meta) + 1} .*'subject_id': a blank cell"):
        read_mimic(mimic.root)


def test_convert_writes_chexpert_csvs_relative_to_the_root(mimic, tmp_path: Path) -> None:
    out = tmp_path / "csv"
    result = CliRunner().invoke(app, ["convert", "mimic", str(mimic.root), "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame, split = read_mimic(mimic.root)
    for name in ("train", "valid", "test"):
        written = read_chexpert_csv(out / f"{name}.csv", root=mimic.root)
        expected = frame[(split == name).to_numpy()]
        assert written["Path"].tolist() == expected["Path"].tolist()
        assert written["view"].tolist() == expected["view"].tolist()
        np.testing.assert_array_equal(written[list(OBSERVATIONS)].to_numpy(), expected[list(OBSERVATIONS)].to_numpy())
    frontal = tmp_path / "frontal"
    result = CliRunner().invoke(app, ["convert", "mimic", str(mimic.root), "--out", str(frontal), "--views", "frontal"])
    assert result.exit_code == 0, result.output
    kept = pd.concat([read_chexpert_csv(frontal / f"{n}.csv", root=mimic.root) for n in ("train", "valid", "test")])
    assert set(kept["view"]) <= {"AP", "PA"} and len(kept) == int(frame["view"].isin(["AP", "PA"]).sum())


def test_mimic_layout_trains_predicts_and_evaluates_end_to_end(mimic, tmp_path: Path) -> None:
    from tests.train_helpers import run_cli

    csv = tmp_path / "csv"
    runner = CliRunner()
    assert runner.invoke(app, ["convert", "mimic", str(mimic.root), "--out", str(csv), "--views", "frontal"]).exit_code == 0
    run = tmp_path / "run"
    trained = run_cli(["train", "--train-csv", str(csv / "train.csv"), "--valid-csv", str(csv / "valid.csv"),
                       "--root", str(mimic.root), "--out", str(run), "--arch", "tiny", "--image-size", "32",
                       "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--quiet"])
    assert trained.returncode == 0, trained.stderr
    for split in ("valid", "test"):
        predicted = runner.invoke(app, ["predict", "--model", str(run), "--input", str(csv / f"{split}.csv"),
                                        "--root", str(mimic.root), "--out", str(tmp_path / f"{split}_pred.csv"),
                                        "--device", "cpu", "--quiet"])
        assert predicted.exit_code == 0, predicted.output
    rows_path = tmp_path / "rows.json"
    evaluated = runner.invoke(app, [
        "evaluate", "--groundtruth", str(csv / "test.csv"), "--predictions", str(tmp_path / "test_pred.csv"),
        "--tasks", "all", "--unlabelled", "negative", "--uncertain", "ignore", "--bootstrap", "50",
        "--operating-point", "youden", "--validation-groundtruth", str(csv / "valid.csv"),
        "--validation-predictions", str(tmp_path / "valid_pred.csv"), "--save-thresholds", str(run),
        "--json", str(rows_path),
    ])
    assert evaluated.exit_code == 0, evaluated.output
    row = json.loads(rows_path.read_text())[0]
    test = read_chexpert_csv(csv / "test.csv", root=mimic.root)
    assert row["key"] == "Study" and row["n_studies"] == test["study"].nunique()
    assert set(row["auc"]) <= set(OBSERVATIONS) and row["auc"]
    assert all(row["reliable"][t] is False for t in row["auc"])  # a fixture this small has < 10 positives
    assert all(v is None for v in row["radiologists_below"].values())  # CheXpert's readers never saw MIMIC studies
    decided = runner.invoke(app, ["predict", "--model", str(run), "--input", str(csv / "test.csv"), "--root",
                                  str(mimic.root), "--out", str(tmp_path / "decided.csv"), "--device", "cpu",
                                  "--quiet", "--decisions"])
    assert decided.exit_code == 0, decided.output
    frame = pd.read_csv(tmp_path / "decided.csv")
    saved = json.loads((run / "thresholds.json").read_text())["thresholds"]
    for finding, threshold in saved.items():
        np.testing.assert_array_equal(frame[f"decision_{finding}"], (frame[finding] >= threshold).astype(float))
