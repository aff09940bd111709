"""chexcft.io.dicom_header: readable header dict, PHI withheld unless asked for, PHI_KEYWORDS sanity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from chexcft.errors import UnreadableImageError
from chexcft.io import PHI_KEYWORDS, dicom_header
from tests.io_builders import corner_image, dicom_dataset, save_dicom

IDENTIFYING = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-12345",
    "PatientBirthDate": "19400101",
    "PatientAddress": "1 Main Street",
    "OtherPatientIDs": "ALT-9",
    "InstitutionName": "General Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "AccessionNumber": "ACC42",
    "StudyID": "S7",
    "StudyDate": "20200314",
    "StudyTime": "101500",
    "OperatorsName": "Tech^Tom",
    "StationName": "CR-ROOM-3",
    "DeviceSerialNumber": "SN-001",
}


@pytest.fixture()
def identified_dicom(tmp_path: Path) -> Path:
    """A DICOM carrying identifying fields, a private tag, a nested PN in a sequence, and safe fields."""
    ds = dicom_dataset(corner_image(high=255), bits_stored=8, ViewPosition="PA", BodyPartExamined="CHEST")
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    ds.add_new(0x00091010, "LO", "private note naming Jane Doe")
    ds.add_new(0x00191001, "LO", "vendor: PatientName=Doe")  # private without creator
    item = Dataset()
    item.CodeValue = "CXR"
    item.CodingSchemeDesignator = "LOCAL"
    item.CodeMeaning = "Chest X-ray"
    ds.ProcedureCodeSequence = [item]
    person = Dataset()
    person.PersonName = "Nurse^Nancy"
    person.ObservationDateTime = "20200314101500"
    person.CodeMeaning = "observer"
    ds.ContentSequence = [person]
    return save_dicom(ds, tmp_path / "phi.dcm")


def test_phi_is_withheld_by_default(identified_dicom: Path) -> None:
    header = dicom_header(identified_dicom)
    text = repr(header)
    for keyword, value in IDENTIFYING.items():
        assert keyword not in header
        assert value not in text
    assert "Jane" not in text and "Nancy" not in text and "Doe" not in text
    assert not any(key.startswith("(0009,") or key.startswith("(0019,") for key in header)
    assert header["Modality"] == "CR" and header["ViewPosition"] == "PA" and header["BodyPartExamined"] == "CHEST"
    assert header["Rows"] == "48" and header["Columns"] == "32" and header["PhotometricInterpretation"] == "MONOCHROME2"
    assert header["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    assert header["ProcedureCodeSequence"] == "<sequence of 1 item(s)>"
    assert header["ProcedureCodeSequence[0].CodeMeaning"] == "Chest X-ray"
    assert "PixelData" not in header
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in header.items())


def test_include_phi_returns_everything(identified_dicom: Path) -> None:
    header = dicom_header(identified_dicom, include_phi=True)
    for keyword, value in IDENTIFYING.items():
        assert header[keyword] == value
    assert header["ContentSequence[0].PersonName"] == "Nurse^Nancy"
    assert any(key.startswith("(0009,") for key in header)
    assert "PixelData" not in header


def test_phi_keywords_are_real_dicom_keywords() -> None:
    from pydicom.datadict import keyword_dict, repeater_has_keyword

    unknown = sorted(k for k in PHI_KEYWORDS if k not in keyword_dict and not repeater_has_keyword(k))
    assert unknown == []
    for required in ("PatientName", "PatientID", "PatientBirthDate", "PatientAddress", "OtherPatientIDs",
                     "InstitutionName", "ReferringPhysicianName", "AccessionNumber", "StudyID", "StudyDate"):
        assert required in PHI_KEYWORDS


def test_long_values_are_summarised(tmp_path: Path) -> None:
    ds = dicom_dataset(corner_image(high=255), bits_stored=8)
    ds.add_new(0x00181622, "US", list(range(100)))  # 100 values
    ds.add_new(0x00091002, "OB", b"\x00" * 40)
    path = save_dicom(ds, tmp_path / "long.dcm")
    header = dicom_header(path, include_phi=True)
    long_value = next(v for v in header.values() if "100 values" in v)
    assert long_value.startswith("[0, 1, 2")
    assert header["(0009,1002)"] == "<40 bytes>"


def test_header_of_a_file_without_preamble(tmp_path: Path) -> None:
    ds = dicom_dataset(corner_image(high=255), bits_stored=8, ViewPosition="AP")
    path = save_dicom(ds, tmp_path / "raw.dcm", preamble=False, implicit=True)
    assert dicom_header(path)["ViewPosition"] == "AP"


def test_header_of_a_non_dicom_is_unreadable(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "x.dcm", format="PNG")
    with pytest.raises(UnreadableImageError, match="not a DICOM file"):
        dicom_header(tmp_path / "x.dcm")
    (tmp_path / "e.dcm").write_bytes(b"")
    with pytest.raises(UnreadableImageError, match="empty file"):
        dicom_header(tmp_path / "e.dcm")


def test_header_of_the_real_dicom(shared_dir: Path | None) -> None:
    if shared_dir is None:
        pytest.skip("../shared is absent: no real DICOM to read (the generated-header tests still run)")
    path = shared_dir / "data" / "dicom" / "Fake_MONOHR1.dcm"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    header = dicom_header(path)
    assert header["PhotometricInterpretation"] == "MONOCHROME1" and header["ViewPosition"] == "PA"
    assert "PatientID" not in header and "StudyInstanceUID" not in header
    assert dicom_header(path, include_phi=True)["PatientID"] == "16d7f894-55d7-4d95-8957-d18987f0e981"
