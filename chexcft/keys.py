"""Study and patient keys derived from image paths, as the official scorer derives them."""

from __future__ import annotations

import re

_PATIENT_RE = re.compile(r"(?:^|/)(patient\d+)(?:/|$)")


def normalise_path(path: str) -> str:
    """Return a path with forward slashes and no trailing slash."""
    return str(path).replace("\\", "/").rstrip("/")


def study_key(path: str) -> str:
    """The study of an image: its path without the file name (…/patient64541/study1)."""
    normalised = normalise_path(path)
    head, sep, _ = normalised.rpartition("/")
    if not sep:
        raise ValueError(f"image path {path!r} has no folder, so it has no study key")
    return head


def patient_key(path: str) -> str:
    """The patient of an image: the `patientNNNNN` folder in its path, else the study's parent folder."""
    match = _PATIENT_RE.search(normalise_path(path))
    if match:
        return match.group(1)
    study = study_key(path)
    return study.rpartition("/")[0] or study


def scorer_study_key(study: str) -> str:
    """The key the official scorer joins on: the study with exactly one trailing slash."""
    return normalise_path(study) + "/"
