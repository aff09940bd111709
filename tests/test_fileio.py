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


def test_a_writer_that_recreates_the_temporary_still_gets_umask_permissions(tmp_path):
    from safetensors.numpy import save_file  # writes a new file in place of the temporary

    import numpy as np

    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "head.safetensors") as tmp:
            save_file({"w": np.zeros(2, np.float32)}, str(tmp))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "head.safetensors").stat().st_mode) == 0o644


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_the_next_write_removes_temporaries_of_killed_writers_of_the_same_target(tmp_path):
    from chexcft.fileio import atomic_directory

    dead, alive = _dead_pid(), os.getppid()  # a finished process and a running one (this test's parent)
    left = [f".out.csv.chexcft-{dead}-ab12_x.tmp", f".bundle.chexcft-{dead}-q9z", f".bundle.chexcft-{dead}-old-k2"]
    running = [f".out.csv.chexcft-{alive}-cd34.tmp", f".bundle.chexcft-{alive}-zz"]
    others = [f".out.csv.7.chexcft-{dead}-x.tmp", "out.csv.bak"]  # another target's temporary, a user's file
    for name in left + running + others:
        (tmp_path / name).mkdir() if "bundle" in name else (tmp_path / name).write_text("partial")
    atomic_write_text(tmp_path / "out.csv", "done")
    with atomic_directory(tmp_path / "bundle") as staging:
        (staging / "a.txt").write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.csv", "bundle", *running, *others])
