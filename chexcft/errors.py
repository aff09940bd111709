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


SHOWN_CHARACTERS = 200


def shown(value: object, limit: int = SHOWN_CHARACTERS) -> str:
    """An offending value for an error message: its repr, cut to about `limit` characters (saying how long it was)."""
    if value is None or (isinstance(value, float) and value != value):
        return "a blank cell"
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value):,} characters)"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shown_list(values: list[object], limit: int = 30) -> str:
    """Comma-separated shown() values, the first `limit` of them (header cells, unknown names)."""
    parts = [shown(v, 60) for v in values[:limit]]
    more = f", ... ({len(values)} in all)" if len(values) > limit else ""
    return ", ".join(parts) + more
