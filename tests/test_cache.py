"""The preprocessing cache: build, incremental rebuild, failures, interrupted builds, lookups."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexcft.data import cache as cache_module
from chexcft.data.cache import BUILDING, MANIFEST, ImageCache, build_cache, ensure_cache
from chexcft.errors import InvalidDatasetError
from chexcft.preprocess import GEOMETRY_VERSION, load_for_model
from tests.builders import synthetic_xray

SIZE = 32


def write_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n small X-ray-like images, PNG and JPEG alternating, portrait and landscape."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        shape = (48, 40) if i % 2 == 0 else (40, 56)
        path = folder / f"img{i:03d}.{'png' if i % 2 == 0 else 'jpg'}"
        Image.fromarray(synthetic_xray(*shape, seed=seed + i)).save(path)
        paths.append(path)
    return paths


def change_file(path: Path, seed: int) -> None:
    """Rewrite an image with different content and make sure its mtime moves."""
    before = path.stat().st_mtime_ns
    Image.fromarray(synthetic_xray(44, 52, seed=seed)).save(path, format="PNG" if path.suffix == ".png" else "JPEG")
    os.utime(path, ns=(before + 5_000_000_000, before + 5_000_000_000))


@pytest.fixture()
def counted_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every path the (in-process) cache builder decodes."""
    reads: list[str] = []

    def counting(path: str, size: int) -> np.ndarray:
        reads.append(str(path))
        return load_for_model(path, size)

    monkeypatch.setattr(cache_module, "load_for_model", counting)
    return reads


def build(paths, out, size=SIZE, **kwargs):
    kwargs.setdefault("workers", 0)
    kwargs.setdefault("progress", False)
    return build_cache([str(p) for p in paths], out, size, **kwargs)


def test_build_stores_letterboxed_images_and_manifest(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 5)
    result = build(paths, tmp_path / "cache")
    assert (result.n_total, result.n_read, result.n_reused, result.n_failed) == (5, 5, 0, 0)
    assert "5 read" in result.summary() and "0 failed" in result.summary()
    cache = ImageCache.open(tmp_path / "cache")
    assert cache.size == SIZE and len(cache) == 5
    assert cache.manifest["geometry_version"] == GEOMETRY_VERSION and cache.manifest["count"] == 5
    assert set(cache.index.columns) >= {"path", "slot", "ok"}
    slots = cache.rows_for(paths)
    assert sorted(slots.tolist()) == [0, 1, 2, 3, 4]
    stack = cache.images(slots)
    assert stack.shape == (5, SIZE, SIZE) and stack.dtype == np.uint8
    for path, slot, image in zip(paths, slots, stack, strict=True):
        expected = load_for_model(path, SIZE)
        np.testing.assert_array_equal(image, expected)
        np.testing.assert_array_equal(cache.image(slot), expected)
    assert not (tmp_path / "cache" / BUILDING).exists()
    assert pd.read_csv(tmp_path / "cache" / "failures.csv").empty


def test_rebuild_rereads_only_changed_and_new_files(tmp_path: Path, counted_reads: list[str]) -> None:
    paths = write_images(tmp_path / "img", 6)
    out = tmp_path / "cache"
    build(paths, out)
    before = ImageCache.open(out)
    old_slots = before.rows_for(paths)
    assert len(counted_reads) == 6

    counted_reads.clear()
    unchanged = build(paths, out)
    assert (unchanged.n_read, unchanged.n_reused) == (0, 6) and counted_reads == []

    change_file(paths[2], seed=99)
    extra = write_images(tmp_path / "more", 1, seed=50)[0]
    counted_reads.clear()
    result = build([*paths, extra], out)
    assert sorted(counted_reads) == sorted([str(paths[2]), str(extra)])
    assert (result.n_total, result.n_read, result.n_reused) == (7, 2, 5)
    after = ImageCache.open(out)
    new_slots = after.rows_for(paths)
    keep = [i for i in range(6) if i != 2]
    np.testing.assert_array_equal(new_slots[keep], old_slots[keep])
    np.testing.assert_array_equal(after.image(new_slots[2]), load_for_model(paths[2], SIZE))
    np.testing.assert_array_equal(after.image(after.rows_for([extra])[0]), load_for_model(extra, SIZE))
    for i in keep:
        np.testing.assert_array_equal(after.image(new_slots[i]), load_for_model(paths[i], SIZE))


def test_changed_size_rereads_everything(tmp_path: Path, counted_reads: list[str]) -> None:
    paths = write_images(tmp_path / "img", 3)
    out = tmp_path / "cache"
    build(paths, out)
    counted_reads.clear()
    result = build(paths, out, size=40)
    assert result.n_read == 3 and len(counted_reads) == 3
    cache = ImageCache.open(out)
    assert cache.size == 40 and cache.images(cache.rows_for(paths)).shape == (3, 40, 40)
    assert len(list(out.glob("images-*.u8"))) == 1  # the 32 px data file was removed


def test_unrequested_entries_are_kept_unless_pruned(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 4)
    out = tmp_path / "cache"
    build(paths[:2], out)
    build(paths[2:], out)
    assert (ImageCache.open(out).rows_for(paths) >= 0).all()
    build(paths[2:], out, prune=True)
    assert ImageCache.open(out).rows_for(paths).tolist()[:2] == [-1, -1]


def test_failures_are_recorded_and_the_build_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_images(tmp_path / "img", 3)
    corrupt = tmp_path / "img" / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(300))
    empty = tmp_path / "img" / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "img" / "missing.png"
    crashing = write_images(tmp_path / "crash", 1, seed=7)[0]

    def reader(path: str, size: int) -> np.ndarray:
        if Path(path) == crashing:
            raise RuntimeError("decoder exploded")
        return load_for_model(path, size)

    monkeypatch.setattr(cache_module, "load_for_model", reader)
    out = tmp_path / "cache"
    result = build([*good, corrupt, empty, missing, crashing], out)
    assert (result.n_total, result.n_failed) == (7, 4)
    assert "4 failed" in result.summary()
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures.columns) == ["file", "reason"]
    reasons = dict(zip(failures["file"], failures["reason"], strict=True))
    assert set(reasons) == {str(corrupt), str(empty), str(missing), str(crashing)}
    assert "not found" in reasons[str(missing)]
    assert "RuntimeError" in reasons[str(crashing)] and "decoder exploded" in reasons[str(crashing)]
    assert str(empty) in reasons[str(empty)] or "empty" in reasons[str(empty)].lower()
    cache = ImageCache.open(out)
    slots = cache.rows_for([*good, corrupt, empty, missing, crashing])
    assert (slots[:3] >= 0).all() and (slots[3:] == -1).all()
    assert cache.n_slots == 3  # failed images take no slot


def test_rows_for_missing_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_images(tmp_path / "img", 2)
    out = tmp_path / "cache"
    build(paths, out)
    cache = ImageCache.open(out)
    monkeypatch.chdir(tmp_path)
    slots = cache.rows_for([Path("img") / paths[1].name, tmp_path / "nope.png", paths[0]])
    assert slots.dtype == np.int64
    assert slots[0] >= 0 and slots[1] == -1 and slots[2] >= 0
    assert cache.rows_for([]).shape == (0,)
    with pytest.raises(IndexError, match="-1"):
        cache.image(-1)


def test_interrupted_first_build_is_detected_and_recovered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_images(tmp_path / "img", 5)
    calls = []

    def interrupted(path: str, size: int) -> np.ndarray:
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return load_for_model(path, size)

    monkeypatch.setattr(cache_module, "load_for_model", interrupted)
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        build(paths, out)
    assert not (out / MANIFEST).exists()
    with pytest.raises(InvalidDatasetError, match="incomplete"):
        ImageCache.open(out)
    monkeypatch.setattr(cache_module, "load_for_model", load_for_model)
    assert build(paths, out).n_read == 5
    cache = ImageCache.open(out)
    assert (cache.rows_for(paths) >= 0).all()


def test_interrupted_rebuild_keeps_previous_state_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_images(tmp_path / "img", 5)
    out = tmp_path / "cache"
    build(paths, out)
    change_file(paths[0], seed=101)
    change_file(paths[3], seed=102)
    extra = write_images(tmp_path / "more", 2, seed=60)
    calls: list[str] = []

    def interrupted(path: str, size: int) -> np.ndarray:
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return load_for_model(path, size)

    monkeypatch.setattr(cache_module, "load_for_model", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build([*paths, *extra], out)
    with pytest.raises(InvalidDatasetError, match="incomplete"):
        ImageCache.open(out)

    calls.clear()
    monkeypatch.setattr(cache_module, "load_for_model", lambda p, s: (calls.append(p), load_for_model(p, s))[1])
    result = build([*paths, *extra], out)
    assert sorted(calls) == sorted(map(str, [paths[0], paths[3], *extra]))
    assert result.n_reused == 3
    cache = ImageCache.open(out)
    for path in [*paths, *extra]:
        np.testing.assert_array_equal(cache.image(cache.rows_for([path])[0]), load_for_model(path, SIZE))


def test_killed_build_process_is_detected_and_recovered(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 6)
    out = tmp_path / "cache"
    script = textwrap.dedent(
        f"""
        import time
        from chexcft.data import cache
        from chexcft.preprocess import load_for_model

        def slow(path, size):
            time.sleep(0.5)
            return load_for_model(path, size)

        cache.load_for_model = slow
        cache.build_cache({[str(p) for p in paths]!r}, {str(out)!r}, {SIZE}, workers=0, progress=False)
        """
    )
    repo = Path(__file__).resolve().parent.parent
    process = subprocess.Popen([sys.executable, "-c", script], cwd=repo)
    try:
        deadline = time.monotonic() + 60
        while not (out / BUILDING).exists():
            assert process.poll() is None, "the build process ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1.2)  # two of the six slow reads
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    with pytest.raises(InvalidDatasetError, match="incomplete"):
        ImageCache.open(out)
    assert build(paths, out).n_read == 6
    assert (ImageCache.open(out).rows_for(paths) >= 0).all()


def test_parallel_build_matches_in_process_build(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "img", 40)
    serial = build(paths, tmp_path / "serial", workers=0)
    parallel = build(paths, tmp_path / "parallel", workers=2)
    assert serial.n_read == parallel.n_read == 40
    a, b = ImageCache.open(tmp_path / "serial"), ImageCache.open(tmp_path / "parallel")
    np.testing.assert_array_equal(a.images(a.rows_for(paths)), b.images(b.rows_for(paths)))


def test_ensure_cache_builds_once_and_updates_when_stale(tmp_path: Path, counted_reads: list[str]) -> None:
    paths = write_images(tmp_path / "img", 4)
    frame = pd.DataFrame({"abs_path": [str(p) for p in paths]})
    out = tmp_path / "cache"
    cache = ensure_cache(frame, out, SIZE, workers=0, progress=False)
    assert (cache.rows_for(paths) >= 0).all() and len(counted_reads) == 4
    counted_reads.clear()
    ensure_cache(frame, out, SIZE, workers=0, progress=False)
    assert counted_reads == []
    change_file(paths[1], seed=77)
    cache = ensure_cache([str(p) for p in paths], out, SIZE, workers=0, progress=False)
    assert counted_reads == [str(paths[1])]
    np.testing.assert_array_equal(cache.image(cache.rows_for([paths[1]])[0]), load_for_model(paths[1], SIZE))


def test_open_refuses_what_is_not_a_cache(tmp_path: Path) -> None:
    with pytest.raises(InvalidDatasetError, match="does not exist"):
        ImageCache.open(tmp_path / "absent")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / MANIFEST).write_text('{"format": "something else"}')
    with pytest.raises(InvalidDatasetError, match="not a chexcft image cache"):
        ImageCache.open(tmp_path / "other")


def test_prepare_command_caches_a_chexpert_tree(chexpert_tree, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from chexcft.cli import app

    broken = chexpert_tree.root / chexpert_tree.train["Path"].iloc[1]
    broken.write_bytes(b"")
    out = tmp_path / "prepared"
    args = ["prepare", "--csv", str(chexpert_tree.train_csv), "--root", str(chexpert_tree.release_dir),
            "--size", str(SIZE), "--out", str(out), "--workers", "0", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 failed" in " ".join(result.output.split())
    cache = ImageCache.open(out)
    slots = cache.rows_for([chexpert_tree.root / p for p in chexpert_tree.train["Path"]])
    assert slots[1] == -1 and (np.delete(slots, 1) >= 0).all()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "0 read" in " ".join(again.output.split())
