"""Study and patient keys derived from image paths, as the official scorer derives them.

Three layouts are recognised, checked in this order:
- a `patientNNNNN` folder (CheXpert, and NIH images in the CheXpert layout): the patient is that folder and the
  study the image's folder (…/patient64541/study1);
- an NIH ChestX-ray14 file name `PPPPPPPP_FFF.png` (patient PPPPPPPP, follow-up FFF) anywhere else
  (`images_001/images/00000013_005.png`): NIH has one image per study, so the study is the path without its
  extension (`images_001/images/00000013_005`) and the patient is `PPPPPPPP`, whatever folder the image sits in;
- anything else (MIMIC-CXR `files/p10/p10000032/s50414267/x.jpg`, image folders): the study is the image's
  folder and the patient the study's parent folder.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_PATIENT_FOLDER = r"(?:^|/)patient\d+(?:/|$)"
_PATIENT_RE = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")
NIH_NAME = r"(\d{8})_(\d{3})\.png"  # NIH's Image Index: patient, follow-up
_NIH_NAME_RE = re.compile(rf"^{NIH_NAME}$", re.IGNORECASE)
_NIH_TAIL = r"(?:^|/)\d{8}_\d{3}\.png$"
_NIH_STUDY_RE = re.compile(r"(?:^|/)\d{8}_\d{3}$")
_MIMIC_STUDY_RE = re.compile(r"(?:^|/)p\d+/p\d+/s\d+$")  # files/p10/p10000032/s50414267


def normalise_path(path: str) -> str:
    """Return a path with forward slashes and no trailing slash."""
    return str(path).replace("\\", "/").rstrip("/")


def nih_name(name: str) -> tuple[str, str] | None:
    """(patient, follow-up) of an NIH file name such as 00000013_005.png, else None."""
    match = _NIH_NAME_RE.match(str(name))
    return (match.group(1), match.group(2)) if match else None


def _is_nih(normalised: str) -> bool:
    return nih_name(normalised.rpartition("/")[2]) is not None and not _PATIENT_RE.search(normalised)


def _study_matches(study: str, pattern: re.Pattern[str]) -> bool:
    normalised = normalise_path(study)
    return bool(pattern.search(normalised)) and not _PATIENT_RE.search(normalised)


def is_nih_study(study: str) -> bool:
    """Whether a study key is an NIH image's (the image path without extension, no patientNNNNN folder)."""
    return _study_matches(study, _NIH_STUDY_RE)


def is_mimic_study(study: str) -> bool:
    """Whether a study key is a MIMIC-CXR study's (`…/pXX/pSUBJECT/sSTUDY`, no patientNNNNN folder)."""
    return _study_matches(study, _MIMIC_STUDY_RE)


def study_key(path: str) -> str:
    """The study of an image: its folder (…/patient64541/study1), or for an NIH image its path without extension."""
    normalised = normalise_path(path)
    if _is_nih(normalised):
        return normalised[: -len(".png")]
    head, sep, _ = normalised.rpartition("/")
    if not sep:
        raise ValueError(f"image path {path!r} has no folder, so it has no study key")
    return head


def patient_key(path: str) -> str:
    """The patient of an image: its `patientNNNNN` folder, NIH's 8-digit patient id, else the study's parent folder."""
    normalised = normalise_path(path)
    match = _PATIENT_RE.search(normalised)
    if match:
        return match.group(1)
    if _is_nih(normalised):
        return normalised.rpartition("/")[2][:8]
    study = study_key(path)
    return study.rpartition("/")[0] or study


def scorer_study_key(study: str) -> str:
    """The key the official scorer joins on: the study with exactly one trailing slash."""
    return normalise_path(study) + "/"


def _nih_mask(paths: pd.Series) -> pd.Series:
    tail = paths.str.contains(_NIH_TAIL, case=False, regex=True)
    return (tail & ~paths.str.contains(_PATIENT_FOLDER, regex=True)).fillna(False).astype(bool)


def study_keys(paths: pd.Series) -> pd.Series:
    """study_key of every (normalised) path, vectorised; <NA> where a path has no study (no folder, not NIH)."""
    paths = paths.astype("string")
    nih = _nih_mask(paths)
    folders = paths.str.replace(r"/[^/]*$", "", regex=True)
    folders = folders.where(paths.str.contains("/", regex=False).fillna(False) & (folders != ""))
    return folders.where(~nih, paths.str.slice(stop=-len(".png")))


def patient_keys(paths: pd.Series, studies: pd.Series) -> np.ndarray:
    """patient_key of every (normalised) path given its study_keys, vectorised over the distinct studies."""
    paths = paths.astype("string")
    codes, unique = pd.factorize(studies)
    unique = pd.Series(unique, dtype="string")
    has_patient = unique.str.contains(_PATIENT_FOLDER, regex=True).to_numpy(bool)
    patients = unique.str.replace(r"^(?:.*?/)?(patient\d+)(?:/.*)?$", r"\1", regex=True)
    patients = patients.to_numpy(dtype=object, copy=True)
    for index in np.flatnonzero(~has_patient):
        study = str(unique.iloc[index])
        patients[index] = study.rpartition("/")[0] or study
    out = patients[codes]
    nih = _nih_mask(paths).to_numpy(bool)
    if nih.any():
        out[nih] = paths[nih].str.extract(rf"{NIH_NAME}$", flags=re.IGNORECASE)[0].to_numpy(dtype=object)
    return out
