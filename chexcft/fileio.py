"""Atomic writes and content hashes: nothing half-written is ever left behind."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


# Temporaries are named `.TARGET.chexcft-PID-RANDOM[.tmp]` (`-old-` for a folder renamed aside): a later write of the
# same target removes those whose process is gone, so a killed job leaves nothing behind once it is re-run.
_TAG = "chexcft"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(target)
    fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 files, and writers that recreate the file (safetensors) keep that: give the result
        # the permissions an ordinary open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside `target`; it replaces `target` only if the block succeeds.

    The old folder is renamed aside before the new one is renamed in and only then deleted, so a kill at any
    moment leaves the old complete folder, the new complete folder, or (between the two renames) none.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(target)
    staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target), dir=target.parent))
    aside: Path | None = None
    try:
        # mkdtemp creates a 0700 folder; give it the permissions an ordinary mkdir would.
        os.chmod(staging, 0o777 & ~_current_umask())
        yield staging
        if target.exists():
            aside = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target, "old-"), dir=target.parent))
            os.replace(target, aside)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        if aside is not None and aside.exists():
            shutil.rmtree(aside)


def _temporary_prefix(target: Path, kind: str = "") -> str:
    return f".{target.name}.{_TAG}-{os.getpid()}-{kind}"


def _remove_dead_temporaries(target: Path) -> None:
    """Delete the temporaries of earlier writes of `target` whose process no longer exists (killed mid-write)."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.{_TAG}-(\d+)-")
    for entry in target.parent.glob(f".{glob.escape(target.name)}.{_TAG}-*"):
        match = pattern.match(entry.name)
        if match is None or _process_exists(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes to `target` atomically and return its path."""
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(target)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text to `target` atomically and return its path."""
    return atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike[str], obj: Any) -> Path:
    """Write `obj` as indented JSON to `target` atomically and return its path."""
    return atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_csv(target: str | os.PathLike[str], frame: Any, **to_csv_kwargs: Any) -> Path:
    """Write a pandas DataFrame as CSV to `target` atomically (index off unless asked)."""
    to_csv_kwargs.setdefault("index", False)
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)
    return Path(target)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_json_object(path: str | os.PathLike[str], missing: str, what: str = "") -> dict[str, Any]:
    """A JSON object file; InvalidRunError with `missing` when absent, naming the file when unreadable or not an object."""
    from chexcft.errors import InvalidRunError

    path = Path(path)
    if not path.is_file():
        raise InvalidRunError(missing)
    try:
        data = read_json(path)
    except (OSError, ValueError) as exc:
        raise InvalidRunError(f"{path}: unreadable{' ' + what if what else ''} ({exc})") from None
    if not isinstance(data, dict):
        raise InvalidRunError(f"{path}: expected a JSON object")
    return data


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
