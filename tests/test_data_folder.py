"""A folder of images without labels: recursive, sorted, study = the image's folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from chexcft.data import read_image_folder, read_table
from chexcft.data.frame import FRAME_COLUMNS
from chexcft.errors import InvalidDatasetError
from chexcft.keys import patient_key, study_key
from chexcft.schema import OBSERVATIONS
from tests.builders import synthetic_xray


def test_folder_is_listed_recursively_and_sorted(tmp_path: Path) -> None:
    folder = tmp_path / "scans"
    for relative in ["b/study2/x.png", "b/study1/y.JPG", "a/top.jpeg", "z.png", "a/.hidden/h.png", ".dot.png"]:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synthetic_xray(16, 16, 0)).save(target, format="PNG")
    (folder / "notes.txt").write_text("not an image")
    frame = read_image_folder(folder)
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["Path"].tolist() == ["scans/a/top.jpeg", "scans/b/study1/y.JPG", "scans/b/study2/x.png", "scans/z.png"]
    assert frame["study"].tolist() == ["scans/a", "scans/b/study1", "scans/b/study2", "scans"]
    assert frame["study"].tolist() == [study_key(p) for p in frame["Path"]]
    assert frame["abs_path"].tolist() == [str(folder / p.partition("/")[2]) for p in frame["Path"]]
    assert frame["patient"].tolist() == [patient_key(p) for p in frame["Path"]]
    assert frame[list(OBSERVATIONS)].isna().all().all()
    assert (frame["view"] == "unknown").all()
    assert read_table(folder)["Path"].tolist() == frame["Path"].tolist()


def test_empty_and_missing_folder(tmp_path: Path) -> None:
    assert read_image_folder(tmp_path).empty
    assert list(read_image_folder(tmp_path).columns) == list(FRAME_COLUMNS)
    with pytest.raises(InvalidDatasetError, match="not a folder"):
        read_image_folder(tmp_path / "nope")


def test_extensionless_dicom_is_found_by_content(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    source = get_testdata_file("CT_small.dcm")
    (tmp_path / "study1").mkdir()
    (tmp_path / "study1" / "IMG0001").write_bytes(Path(source).read_bytes())
    (tmp_path / "study1" / "README").write_text("hello")
    frame = read_image_folder(tmp_path)
    assert frame["Path"].tolist() == [f"{tmp_path.name}/study1/IMG0001"]
