"""chexcft.keys: patient and study keys of CheXpert, MIMIC-CXR and NIH ChestX-ray14 paths (scalar and vectorised)."""

from __future__ import annotations

import pandas as pd
import pytest

from chexcft.keys import is_mimic_study, is_nih_study, nih_name, patient_key, patient_keys, scorer_study_key, study_key, study_keys

CASES = [
    # path, study, patient
    ("CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
     "CheXpert-v1.0-small/train/patient00001/study1", "patient00001"),
    ("files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg",
     "files/p10/p10000032/s50414267", "files/p10/p10000032"),
    # NIH images in the CheXpert layout (the demo data, read_nih_csv): the patientNNNNN folder wins.
    ("patient00013/study6/00000013_005.png", "patient00013/study6", "patient00013"),
    # NIH's own layout: one image per study, the patient from the file name whatever the folder.
    ("images_001/images/00000013_005.png", "images_001/images/00000013_005", "00000013"),
    ("images_002/images/00000013_006.png", "images_002/images/00000013_006", "00000013"),
    ("images/00000030_000.png", "images/00000030_000", "00000030"),
    ("00000030_001.png", "00000030_001", "00000030"),
    ("images\\00000030_002.PNG", "images/00000030_002", "00000030"),
    # Not NIH names: the folder rules.
    ("x/00000030_000.jpg", "x", "x"),
    ("x/0000030_000.png", "x", "x"),
]


@pytest.mark.parametrize(("path", "study", "patient"), CASES)
def test_scalar_keys(path: str, study: str, patient: str) -> None:
    assert study_key(path) == study
    assert patient_key(path) == patient


def test_vectorised_keys_agree_with_the_scalar_ones() -> None:
    paths = pd.Series([p.replace("\\", "/") for p, _, _ in CASES], dtype="string")
    studies = study_keys(paths)
    assert studies.tolist() == [s for _, s, _ in CASES]
    assert patient_keys(paths, studies).tolist() == [p for _, _, p in CASES]
    assert study_keys(pd.Series(["only.png", "/x.png"], dtype="string")).isna().all()


def test_nih_names_and_study_keys() -> None:
    assert nih_name("00000013_005.png") == ("00000013", "005")
    assert nih_name("images/00000013_005.png") is None and nih_name("view1_frontal.jpg") is None
    assert is_nih_study("images_001/images/00000013_005") and is_nih_study(scorer_study_key("00000013_005"))
    assert not is_nih_study("patient00013/study6") and not is_nih_study("files/p10/p10000032/s50414267")
    assert is_mimic_study("files/p10/p10000032/s50414267") and is_mimic_study(scorer_study_key("files/p10/p10000032/s50414267"))
    assert not is_mimic_study("patient00013/study6") and not is_mimic_study("images_001/images/00000013_005")
    with pytest.raises(ValueError, match="no folder"):
        study_key("view1_frontal.jpg")
