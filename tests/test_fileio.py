"""Atomic writes leave either the old file or the complete new one, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from chexcft.fileio import atomic_path, atomic_write_csv, atomic_write_json, atomic_write_text, file_sha256, read_json


def test_atomic_write_replaces_content_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "out" / "report.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["report.txt"]


def test_failed_write_keeps_previous_file_and_removes_temporary(tmp_path):
    target = tmp_path / "config.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("interrupted")
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_written_files_get_umask_permissions_not_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        target = atomic_write_csv(tmp_path / "table.csv", pd.DataFrame({"x": [1, 2]}))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert pd.read_csv(target)["x"].tolist() == [1, 2]


def test_file_sha256_matches_hashlib(tmp_path):
    import hashlib

    target = tmp_path / "blob.bin"
    target.write_bytes(b"x" * 3_000_000)
    assert file_sha256(target, chunk_size=1 << 16) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def test_atomic_directory_replaces_the_folder_only_on_success(tmp_path):
    from chexcft.fileio import atomic_directory

    target = tmp_path / "bundle"
    with atomic_directory(target) as staging:
        (staging / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as staging:
            (staging / "b.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    previous = os.umask(0o022)
    try:
        with atomic_directory(target) as staging:
            (staging / "c.txt").write_text("second")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert sorted(p.name for p in target.iterdir()) == ["c.txt"]
