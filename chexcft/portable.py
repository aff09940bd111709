"""Recorded settings without the build machine: absolute paths become paths relative to a folder, or bare names.

Used when a run's files leave the machine that made them (chexcft.bundle): config.json and the weights'
metadata keep every setting, but `/home/alice/data/train.csv` is recorded as `train.csv`, a file inside the run
folder as its path relative to it, and `file:/home/alice/w.safetensors` as `file:w.safetensors`.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

# An absolute POSIX, home-relative or Windows path inside free text (URLs such as https://... are left alone).
_EMBEDDED = re.compile(r"(?<![\w.:/\\])(?:~|[A-Za-z]:)?[/\\][^\s,;'\"()\[\]{}<>|]+")
_WINDOWS = re.compile(r"^[A-Za-z]:[\\/]")


def _is_absolute(text: str) -> bool:
    return text.startswith(("/", "~", "\\\\")) or bool(_WINDOWS.match(text))


def _name(path: str, inside: Path | None) -> str:
    if inside is not None and path.startswith("/"):
        try:
            return Path(os.path.normpath(path)).relative_to(inside).as_posix()
        except ValueError:
            pass
    name = PureWindowsPath(path).name if ("\\" in path or _WINDOWS.match(path)) else PurePosixPath(path).name
    return name or "."


def portable_text(text: str, inside: Path | None = None) -> str:
    """One string with its absolute paths replaced (relative to `inside` when below it, else the bare name)."""
    if _is_absolute(text):
        return _name(text, inside)
    if text.startswith("file:") and _is_absolute(text[5:]):
        return "file:" + _name(text[5:], inside)
    return _EMBEDDED.sub(lambda match: _name(match.group(0), inside), text)


def portable(value: Any, inside: Path | None = None) -> Any:
    """A JSON-like value with portable_text applied to every string in it (keys included)."""
    if isinstance(value, str):
        return portable_text(value, inside)
    if isinstance(value, dict):
        return {portable_text(str(k), inside): portable(v, inside) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v, inside) for v in value]
    return value


def machine_markers(paths: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
    """Strings that identify the build machine: the given absolute paths, the home folder, the user's folder."""
    markers = {os.path.abspath(os.fspath(p)) for p in paths if os.fspath(p)}
    markers.add(str(Path.home()))
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    if user:
        markers.update({f"/{user}/", f"\\{user}\\"})
    return sorted(m for m in markers if len(m) > 2)


def found_markers(text: str, markers: Iterable[str]) -> list[str]:
    """The machine markers that occur in text."""
    return [m for m in markers if m in text]
