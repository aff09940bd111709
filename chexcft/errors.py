"""Exception types: everything the package raises on purpose derives from ChexcftError."""

from __future__ import annotations


class ChexcftError(Exception):
    """Base class for errors a user can act on (bad input, missing file, bad configuration)."""


class UnreadableImageError(ChexcftError):
    """An image file cannot be read; the message names the file and the reason."""


class InvalidDatasetError(ChexcftError):
    """A CSV or image folder does not follow the expected format; the message says where."""


class MissingWeightsError(ChexcftError):
    """Pretrained weights are not in the local cache; the message says which file to put where."""


class InvalidRunError(ChexcftError):
    """A run directory is missing, incomplete or inconsistent."""


class SubmissionError(ChexcftError):
    """A submission or prediction file breaks the competition scorer's rules."""


class InvalidWeightsError(ChexcftError):
    """A weights file is unsafe (pickled code), corrupt, or does not fit the model (keys or shapes)."""
