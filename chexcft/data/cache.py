"""The preprocessing cache: every image read once, letterboxed, stored as uint8 in one memory-mapped file.

Layout of a cache folder (one image size per folder):

- `images-<token>.u8`: raw uint8 array of shape (n_slots, size, size), C order; an image is one contiguous block.
- `index-<generation>.csv`: path (absolute), slot (-1 when failed), ok, mtime_ns, bytes (the source file's
  key when it was read) and reason (why it failed).
- `failures.csv`: file, reason for the requested images that could not be read.
- `manifest.json`: format, size, geometry version, data and index file names, slot and entry counts. It is the
  "complete" marker, written last by an atomic rename.
- `building.json`: present only while a build runs; a leftover one means the build was interrupted.
- `.lock`: the advisory lock (fcntl.flock) a build holds; a second build of the same folder waits for it, then
  reuses what the first wrote, or gives up with a clear error after `lock_timeout` seconds.

A rebuild stats every requested file and re-reads only those whose (mtime, size) changed or that are new;
unchanged images keep their slot. New pixels are written only into slots the committed index does not
reference (freed or appended), so an interrupted rebuild never damages the previous complete state and the
next build resumes from it. A different image size or GEOMETRY_VERSION starts a new data file.
Entries for images not requested in a rebuild are kept (train, valid and test can share one cache) unless
`prune=True`. Only one build per folder at a time (the lock); under torchrun only rank 0 builds.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexcft.errors import ChexcftError, InvalidDatasetError, UnreadableImageError
from chexcft.fileio import atomic_write_csv, atomic_write_json, read_json
from chexcft.preprocess import GEOMETRY_VERSION, load_for_model

CACHE_FORMAT = "chexcft-image-cache"
CACHE_FORMAT_VERSION = 1
MANIFEST = "manifest.json"
BUILDING = "building.json"
FAILURES = "failures.csv"
LOCK = ".lock"
LOCK_TIMEOUT = 3600.0  # seconds a second builder waits for the first (a full CheXpert build takes a while)
INDEX_COLUMNS = ("path", "slot", "ok", "mtime_ns", "bytes", "reason")
_CHUNK = 8
_MIN_FOR_POOL = 32  # fewer images are read in-process: starting reader processes would cost more


@dataclass
class CacheBuildResult:
    """What a build did: how many images were read, reused and failed, and which ones failed."""

    out_dir: Path
    size: int
    n_total: int
    n_read: int
    n_reused: int
    n_failed: int
    failures: pd.DataFrame = field(repr=False)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for the console."""
        return (
            f"{self.n_total} images at {self.size} px in {self.out_dir}: {self.n_read} read, "
            f"{self.n_reused} reused, {self.n_failed} failed"
            + (f" (see {self.out_dir / FAILURES})" if self.n_failed else "")
            + f" [{self.seconds:.1f} s]"
        )


def normalise_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute, normalised path strings, the form the index stores."""
    return [os.path.abspath(os.fspath(p)) for p in paths]


def _empty_index() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": pd.Series([], dtype=object),
            "slot": pd.Series([], dtype=np.int64),
            "ok": pd.Series([], dtype=bool),
            "mtime_ns": pd.Series([], dtype=np.int64),
            "bytes": pd.Series([], dtype=np.int64),
            "reason": pd.Series([], dtype=object),
        }
    )


def _read_index(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"path": str, "reason": str}, keep_default_na=False)
    missing = [c for c in INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise InvalidDatasetError(f"image cache index {path} lacks the columns {missing}")
    frame = frame[list(INDEX_COLUMNS)]
    frame["ok"] = frame["ok"].astype(str).str.lower().isin(("true", "1"))
    for column in ("slot", "mtime_ns", "bytes"):
        frame[column] = frame[column].astype(np.int64)
    return frame


@dataclass
class _Committed:
    """The last complete state of a cache folder."""

    manifest: dict[str, Any]
    index: pd.DataFrame


def _load_manifest(out_dir: Path) -> dict[str, Any]:
    manifest_path = out_dir / MANIFEST
    try:
        manifest = read_json(manifest_path)
    except (OSError, ValueError) as exc:
        raise InvalidDatasetError(f"image cache manifest {manifest_path} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT:
        raise InvalidDatasetError(f"{manifest_path} is not a chexcft image cache manifest")
    if manifest.get("format_version") != CACHE_FORMAT_VERSION:
        raise InvalidDatasetError(
            f"{manifest_path} has cache format version {manifest.get('format_version')!r}, "
            f"this chexcft writes {CACHE_FORMAT_VERSION}; rebuild the cache"
        )
    for key in ("size", "geometry_version", "n_slots", "count", "data_file", "index_file"):
        if key not in manifest:
            raise InvalidDatasetError(f"image cache manifest {manifest_path} lacks {key!r}")
    return manifest


def _load_committed(out_dir: Path) -> _Committed | None:
    """The previous complete state, or None when there is none usable (a build then starts from scratch)."""
    if not (out_dir / MANIFEST).is_file():
        return None
    try:
        manifest = _load_manifest(out_dir)
        index = _read_index(out_dir / manifest["index_file"])
        data_file = out_dir / manifest["data_file"]
        needed = int(manifest["n_slots"]) * int(manifest["size"]) ** 2
        if not data_file.is_file() or data_file.stat().st_size < needed:
            return None
    except (InvalidDatasetError, OSError, ValueError):
        return None
    return _Committed(manifest, index)


def _read_one(path: str, size: int) -> tuple[str, np.ndarray | None, str]:
    """Read and letterbox one image; a failure becomes a reason instead of an exception."""
    try:
        return path, load_for_model(path, size), ""
    except UnreadableImageError as exc:
        return path, None, str(exc)
    except Exception as exc:  # noqa: BLE001 - a batch job reports every bad file and goes on
        return path, None, f"{type(exc).__name__}: {exc} ({path})"


def _read_chunk(task: tuple[list[str], int]) -> list[tuple[str, np.ndarray | None, str]]:
    paths, size = task
    return [_read_one(path, size) for path in paths]


def _chunks(paths: Sequence[str], size: int) -> Iterator[tuple[list[str], int]]:
    for start in range(0, len(paths), _CHUNK):
        yield list(paths[start : start + _CHUNK]), size


def default_workers() -> int:
    """All CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _results(todo: list[str], size: int, workers: int) -> Iterator[tuple[str, np.ndarray | None, str]]:
    """Decoded images in completion order: in-process for workers=0, else a spawn-context Pool.

    Spawn, not fork: the parent may hold torch or progress-bar threads, which forked children must not inherit.
    """
    if workers <= 0 or len(todo) < _MIN_FOR_POOL:
        for path in todo:
            yield _read_one(path, size)
        return
    n_processes = min(workers, -(-len(todo) // _CHUNK))
    with multiprocessing.get_context("spawn").Pool(n_processes) as pool:
        for chunk in pool.imap_unordered(_read_chunk, _chunks(todo, size)):
            yield from chunk


def _progress(enabled: bool, total: int) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("caching images"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled or total == 0,
        transient=False,
    )


def _cleanup(out_dir: Path, keep: set[str]) -> None:
    for pattern in ("images-*.u8", "index-*.csv", ".*.tmp"):
        for stale in out_dir.glob(pattern):
            if stale.name not in keep:
                stale.unlink(missing_ok=True)


def _builder(out_dir: Path) -> str:
    try:
        info = read_json(out_dir / BUILDING)
        return f" (pid {info.get('pid')}, started {info.get('started')})"
    except (OSError, ValueError, AttributeError):
        return ""


@contextlib.contextmanager
def build_lock(out_dir: str | os.PathLike[str], timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the cache folder's advisory lock: wait up to `timeout` s for another build (saying so), then ChexcftError."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + max(0.0, float(timeout))
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ChexcftError(
                        f"image cache {out_dir} is being built by another process{_builder(out_dir)}; gave up after "
                        f"waiting {timeout:g} s. Run again when it has finished (or raise the lock timeout)"
                    ) from None
                if not told:
                    print(f"waiting for another build of {out_dir}{_builder(out_dir)} to finish...", file=sys.stderr)
                    told = True
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def build_cache(
    paths: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    size: int,
    *,
    workers: int | None = None,
    progress: bool = True,
    prune: bool = False,
    lock_timeout: float = LOCK_TIMEOUT,
) -> CacheBuildResult:
    """Cache `paths` letterboxed to size x size, re-reading only new or changed files; returns what it did.

    Holds the folder's lock while it works: a concurrent build of the same folder waits (up to lock_timeout
    seconds), then reuses every image the first one cached.
    """
    started = time.perf_counter()
    size = _checked_size(size)
    with build_lock(out_dir, lock_timeout):
        return _build(paths, Path(out_dir), size, workers, progress, prune, started)


def _checked_size(size: int) -> int:
    if int(size) < 8:
        raise ChexcftError(f"image size must be at least 8, got {size}")
    return int(size)


def _build(
    paths: Sequence[str | os.PathLike[str]], out_dir: Path, size: int, workers: int | None, progress: bool,
    prune: bool, started: float,
) -> CacheBuildResult:
    requested = list(dict.fromkeys(normalise_paths(paths)))
    workers = default_workers() if workers is None else int(workers)

    previous = _load_committed(out_dir)
    atomic_write_json(
        out_dir / BUILDING,
        {"pid": os.getpid(), "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")},
    )
    compatible = (
        previous is not None
        and int(previous.manifest["size"]) == size
        and int(previous.manifest["geometry_version"]) == GEOMETRY_VERSION
    )
    if compatible:
        assert previous is not None
        data_name = str(previous.manifest["data_file"])
        committed_slots = int(previous.manifest["n_slots"])
        old_index = previous.index
    else:
        data_name = f"images-{uuid.uuid4().hex[:12]}.u8"
        committed_slots = 0
        old_index = _empty_index()
    old_rows = {row.path: row for row in old_index.itertuples(index=False)}

    requested_set = set(requested)
    rows: list[dict[str, Any]] = []
    if not prune:
        rows.extend(row._asdict() for path, row in old_rows.items() if path not in requested_set)
    todo: list[str] = []
    keys: dict[str, tuple[int, int]] = {}
    n_reused = 0
    for path in requested:
        try:
            stat = os.stat(path)
        except OSError as exc:
            reason = f"file not found: {path}" if isinstance(exc, FileNotFoundError) else f"cannot stat {path}: {exc}"
            rows.append(dict(path=path, slot=-1, ok=False, mtime_ns=-1, bytes=-1, reason=reason))
            continue
        old = old_rows.get(path)
        if old is not None and old.mtime_ns == stat.st_mtime_ns and old.bytes == stat.st_size:
            rows.append(old._asdict())
            n_reused += 1
        else:
            todo.append(path)
            keys[path] = (stat.st_mtime_ns, stat.st_size)

    # Never write into a slot the committed index references: an interrupted build must leave it intact.
    used = {int(r["slot"]) for r in rows if r["ok"]} | set(old_index.loc[old_index["ok"], "slot"].astype(int))
    free = iter(sorted(set(range(committed_slots)) - used))
    next_append = committed_slots
    image_bytes = size * size
    data_path = out_dir / data_name
    high_water = committed_slots
    fd = os.open(data_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        with _progress(progress, len(todo)) as bar:
            task = bar.add_task("read", total=len(todo))
            for path, image, reason in _results(todo, size, workers):
                mtime_ns, n_bytes = keys[path]
                if image is None:
                    rows.append(dict(path=path, slot=-1, ok=False, mtime_ns=mtime_ns, bytes=n_bytes, reason=reason))
                else:
                    slot = next(free, None)
                    if slot is None:
                        slot, next_append = next_append, next_append + 1
                    os.pwrite(fd, np.ascontiguousarray(image, dtype=np.uint8).tobytes(), slot * image_bytes)
                    high_water = max(high_water, slot + 1)
                    rows.append(dict(path=path, slot=slot, ok=True, mtime_ns=mtime_ns, bytes=n_bytes, reason=""))
                bar.advance(task)
        os.ftruncate(fd, high_water * image_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)

    index = pd.DataFrame(rows, columns=list(INDEX_COLUMNS)) if rows else _empty_index()
    requested_rows = index[index["path"].isin(requested_set)]
    failed = requested_rows[~requested_rows["ok"]]
    failures = pd.DataFrame({"file": failed["path"].to_numpy(), "reason": failed["reason"].to_numpy()})
    index_name = f"index-{uuid.uuid4().hex[:12]}.csv"
    atomic_write_csv(out_dir / index_name, index)
    atomic_write_csv(out_dir / FAILURES, failures)
    manifest = {
        "format": CACHE_FORMAT,
        "format_version": CACHE_FORMAT_VERSION,
        "size": size,
        "geometry_version": GEOMETRY_VERSION,
        "dtype": "uint8",
        "data_file": data_name,
        "index_file": index_name,
        "n_slots": high_water,
        "count": int(len(index)),
        "n_ok": int(index["ok"].sum()),
        "n_failed": int((~index["ok"]).sum()),
        "built": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(out_dir / MANIFEST, manifest)
    (out_dir / BUILDING).unlink(missing_ok=True)
    _cleanup(out_dir, keep={data_name, index_name})
    return CacheBuildResult(
        out_dir=out_dir,
        size=size,
        n_total=len(requested),
        n_read=len(todo),
        n_reused=n_reused,
        n_failed=int(len(failures)),
        failures=failures,
        seconds=time.perf_counter() - started,
    )


class ImageCache:
    """Read access to a complete cache folder: the index and the images by slot (memory-mapped, read-only)."""

    def __init__(self, out_dir: Path, manifest: dict[str, Any], index: pd.DataFrame) -> None:
        """Use `ImageCache.open(out_dir)`."""
        self.out_dir = out_dir
        self.manifest = manifest
        self.size = int(manifest["size"])
        self.n_slots = int(manifest["n_slots"])
        self._index: pd.DataFrame | None = index
        self._slot_of: dict[str, int] | None = None
        self._data: np.memmap | None = None
        self._pid = os.getpid()

    @classmethod
    def open(cls, out_dir: str | os.PathLike[str]) -> ImageCache:
        """Open a complete cache; an incomplete (interrupted) or foreign folder raises InvalidDatasetError."""
        out_dir = Path(out_dir)
        if not out_dir.is_dir():
            raise InvalidDatasetError(f"no image cache at {out_dir}: the folder does not exist (run `chexcft prepare`)")
        building = out_dir / BUILDING
        if building.exists():
            try:
                info = read_json(building)
                detail = f" (started {info.get('started')}, pid {info.get('pid')})"
            except (OSError, ValueError, AttributeError):
                detail = ""
            raise InvalidDatasetError(
                f"image cache {out_dir} is incomplete: a build{detail} did not finish or is still running; "
                "run `chexcft prepare` again to complete it"
            )
        if not (out_dir / MANIFEST).is_file():
            raise InvalidDatasetError(
                f"image cache {out_dir} is incomplete: it has no {MANIFEST} (the build was interrupted or never ran); "
                "run `chexcft prepare` to build it"
            )
        manifest = _load_manifest(out_dir)
        data_file = out_dir / manifest["data_file"]
        needed = int(manifest["n_slots"]) * int(manifest["size"]) ** 2
        if not data_file.is_file() or data_file.stat().st_size < needed:
            raise InvalidDatasetError(f"image cache {out_dir} is damaged: {data_file.name} is missing or shorter than {needed} bytes")
        index_file = out_dir / manifest["index_file"]
        if not index_file.is_file():
            raise InvalidDatasetError(f"image cache {out_dir} is damaged: its index {index_file.name} is missing")
        return cls(out_dir, manifest, _read_index(index_file))

    @property
    def index(self) -> pd.DataFrame:
        """The index: path, slot, ok, mtime_ns, bytes, reason (one row per cached or failed image)."""
        if self._index is None:
            self._index = _read_index(self.out_dir / self.manifest["index_file"])
        return self._index

    def _slots(self) -> dict[str, int]:
        if self._slot_of is None:
            ok = self.index[self.index["ok"]]
            self._slot_of = dict(zip(ok["path"], ok["slot"].astype(int), strict=True))
        return self._slot_of

    def rows_for(self, paths: Iterable[str | os.PathLike[str]]) -> np.ndarray:
        """Slot of each path (int64), -1 for images that are not in the cache or failed to read."""
        slot_of = self._slots()
        return np.fromiter((slot_of.get(p, -1) for p in normalise_paths(paths)), dtype=np.int64)

    @property
    def data(self) -> np.ndarray:
        """All slots as a read-only memory-mapped uint8 array (n_slots, size, size), opened once per process."""
        if self._data is None or self._pid != os.getpid():
            shape = (self.n_slots, self.size, self.size)
            if self.n_slots == 0:
                self._data = np.zeros(shape, dtype=np.uint8)  # type: ignore[assignment]
            else:
                self._data = np.memmap(self.out_dir / self.manifest["data_file"], dtype=np.uint8, mode="r", shape=shape)
            self._pid = os.getpid()
        return self._data  # type: ignore[return-value]

    def _check(self, slots: np.ndarray) -> None:
        if slots.size and (slots.min() < 0 or slots.max() >= self.n_slots):
            bad = slots[(slots < 0) | (slots >= self.n_slots)][0]
            raise IndexError(f"slot {bad} is not in image cache {self.out_dir} (0..{self.n_slots - 1}; -1 = missing image)")

    def image(self, slot: int) -> np.ndarray:
        """One image as a uint8 (size, size) array (a copy)."""
        self._check(np.asarray([slot]))
        return np.array(self.data[int(slot)])

    def images(self, slots: Sequence[int] | np.ndarray) -> np.ndarray:
        """Several images as a uint8 (k, size, size) array (a copy): one read, a plain slice for consecutive slots."""
        slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        self._check(slots)
        if slots.size > 1 and bool((np.diff(slots) == 1).all()):
            return np.array(self.data[int(slots[0]) : int(slots[-1]) + 1])
        return np.ascontiguousarray(self.data[slots])

    def __len__(self) -> int:
        """Number of index entries (cached and failed)."""
        return int(self.manifest["count"])

    def __getstate__(self) -> dict[str, Any]:
        """Pickle for DataLoader workers without the memory map or the index (reopened lazily there)."""
        state = self.__dict__.copy()
        state.update(_data=None, _index=None, _slot_of=None)
        return state


def _paths_of(frame_or_paths: pd.DataFrame | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(frame_or_paths, pd.DataFrame):
        for column in ("abs_path", "Path"):
            if column in frame_or_paths.columns:
                return normalise_paths(frame_or_paths[column].astype(str))
        raise InvalidDatasetError("the table has neither an 'abs_path' nor a 'Path' column to cache images from")
    return normalise_paths(frame_or_paths)


def is_current(cache_dir: str | os.PathLike[str], paths: Sequence[str], size: int) -> bool:
    """True when the cache is complete, has this size and geometry, and holds every path unchanged."""
    try:
        cache = ImageCache.open(cache_dir)
    except InvalidDatasetError:
        return False
    if cache.size != size or int(cache.manifest["geometry_version"]) != GEOMETRY_VERSION:
        return False
    index = cache.index
    keys = dict(zip(index["path"], zip(index["mtime_ns"].tolist(), index["bytes"].tolist(), strict=True), strict=True))
    for path in normalise_paths(paths):
        key = keys.get(path)
        if key is None:
            return False
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            if key[0] >= 0:
                return False
            continue  # recorded as missing and still missing
        except OSError:
            return False
        if (stat.st_mtime_ns, stat.st_size) != key:
            return False
    return True


def ensure_cache(
    frame_or_paths: pd.DataFrame | Sequence[str | os.PathLike[str]],
    cache_dir: str | os.PathLike[str],
    size: int,
    *,
    workers: int | None = None,
    progress: bool = True,
    lock_timeout: float = LOCK_TIMEOUT,
) -> ImageCache:
    """Open the cache for these images, building or updating it first when it is missing, incomplete or stale."""
    paths = _paths_of(frame_or_paths)
    size = _checked_size(size)
    if not is_current(cache_dir, paths, size):
        with build_lock(cache_dir, lock_timeout):
            if not is_current(cache_dir, paths, size):  # another process may have built it while we waited
                _build(paths, Path(cache_dir), size, workers, progress, False, time.perf_counter())
    return ImageCache.open(cache_dir)
