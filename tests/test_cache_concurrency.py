"""Concurrent cache builds: the folder lock makes a second builder wait and reuse, or fail clearly after a timeout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from chexcft.data.cache import BUILDING, ImageCache, build_cache, build_lock, ensure_cache
from chexcft.errors import ChexcftError
from chexcft.preprocess import load_for_model
from tests.test_cache import SIZE, write_images

REPO = Path(__file__).resolve().parent.parent
# `chexcft prepare` whose image reads wait for a go-file, so the second process surely meets a build in progress.
SLOW_PREPARE = textwrap.dedent(
    """
    import os, sys, time
    from chexcft.data import cache
    from chexcft.preprocess import load_for_model

    def slow(path, size):
        while not os.path.exists(os.environ["GO_FILE"]):
            time.sleep(0.02)
        return load_for_model(path, size)

    cache.load_for_model = slow
    from chexcft.cli import main
    sys.argv = ["chexcft", "prepare", *sys.argv[1:]]
    main()
    """
)


def _prepare(images: Path, out: Path, go: Path) -> subprocess.Popen:
    args = ["--csv", str(images), "--out", str(out), "--size", str(SIZE), "--workers", "0", "--no-progress"]
    return subprocess.Popen([sys.executable, "-c", SLOW_PREPARE, *args], cwd=REPO, text=True,
                            env=dict(os.environ, GO_FILE=str(go)), stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _counts(output: str) -> tuple[int, int]:
    found = re.search(r"(\d+) read, (\d+)\s+reused", " ".join(output.split()))
    assert found, output
    return int(found.group(1)), int(found.group(2))


def test_two_prepare_processes_on_one_folder_make_one_valid_cache(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 8)
    out, go = tmp_path / "cache", tmp_path / "go"
    first = _prepare(tmp_path / "img", out, go)
    deadline = time.monotonic() + 120
    while not (out / BUILDING).exists():  # the first builder holds the lock and waits at its first read
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = _prepare(tmp_path / "img", out, go)
    assert second.stderr is not None
    said = second.stderr.readline()  # blocks until the second process reports that it waits
    assert "waiting for another build" in said, said + second.communicate()[1]
    go.touch()
    outputs = [p.communicate(timeout=300) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, outputs
    assert _counts(outputs[0][1]) == (8, 0)
    assert _counts(outputs[1][1]) == (0, 8), "the second builder read images again instead of reusing them"

    cache = ImageCache.open(out)
    assert len(cache.index) == 8 and cache.index["path"].is_unique
    slots = cache.rows_for(paths)
    assert (slots >= 0).all() and len(set(slots.tolist())) == 8
    for path, slot in zip(paths, slots):
        np.testing.assert_array_equal(cache.image(slot), load_for_model(path, SIZE))
    names = sorted(p.name for p in out.iterdir())
    assert [n for n in names if n.startswith("images-")] == [cache.manifest["data_file"]]
    assert [n for n in names if n.startswith("index-")] == [cache.manifest["index_file"]]
    assert BUILDING not in names and not [n for n in names if n.endswith(".tmp")]


def test_a_held_lock_makes_a_builder_give_up_clearly_after_its_timeout(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 2)
    out = tmp_path / "cache"
    with build_lock(out):
        started = time.monotonic()
        with pytest.raises(ChexcftError, match=r"being built by another process.*0\.3 s"):
            build_cache(paths, out, SIZE, workers=0, progress=False, lock_timeout=0.3)
        assert time.monotonic() - started >= 0.3
        with pytest.raises(ChexcftError, match="being built by another process"):
            ensure_cache([str(p) for p in paths], out, SIZE, workers=0, progress=False, lock_timeout=0.2)
    assert build_cache(paths, out, SIZE, workers=0, progress=False).n_read == 2  # released on exit
    assert (ImageCache.open(out).rows_for(paths) >= 0).all()
