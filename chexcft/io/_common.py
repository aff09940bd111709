"""What every reader shares: the XRay result, the error helper, file access and the small pixel maths."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeAlias

import numpy as np

from chexcft.errors import UnreadableImageError

Source: TypeAlias = str | os.PathLike | BinaryIO  # a path, or a binary file object such as an upload

# ITU-R BT.601 luma weights, the ones PIL's convert("L") uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


@dataclass
class XRay:
    """A decoded radiograph: float32 (h, w) pixels in [0, 1], row-major as displayed, bright = dense; plus metadata."""

    pixels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def unreadable(name: str, reason: str) -> UnreadableImageError:
    """Build the one error type for bad files, naming the file and the reason."""
    return UnreadableImageError(f"{name}: {reason}")


def source_name(source: Source) -> str:
    """A printable name for a path or a binary file object."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "<stream>"))


@contextmanager
def open_source(source: Source) -> Iterator[tuple[BinaryIO, str, int]]:
    """Open a path (or take a binary file object) for reading; yield (seekable file, name, size in bytes)."""
    name = source_name(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if path.is_dir():
                raise unreadable(name, "is a directory, not an image file")
            handle = open(path, "rb")
        except FileNotFoundError as exc:
            raise unreadable(name, "file not found") from exc
        except OSError as exc:
            raise unreadable(name, f"cannot open ({exc.strerror or exc})") from exc
        with handle:
            size = os.fstat(handle.fileno()).st_size
            yield handle, name, size
        return
    try:
        data = source.read()
    except Exception as exc:
        raise unreadable(name, f"cannot read the stream ({exc})") from exc
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise unreadable(name, "the stream is not opened in binary mode")
    yield io.BytesIO(bytes(data)), name, len(data)


def check_pixel_count(name: str, height: int, width: int, max_pixels: int) -> None:
    """Refuse empty images and images larger than max_pixels, from header sizes, before anything is decoded."""
    if height <= 0 or width <= 0:
        raise unreadable(name, f"image header declares an empty size ({height} x {width})")
    if height * width > max_pixels:
        raise unreadable(
            name,
            f"decompression bomb refused: {height} x {width} = {height * width:,} pixels "
            f"exceeds max_pixels={max_pixels:,}",
        )


def to_grey(arr: np.ndarray) -> np.ndarray:
    """Collapse (h, w, 3/4) colour to (h, w) luma as float64 (alpha ignored); grey passes through as float64."""
    if arr.ndim == 2:
        return arr.astype(np.float64, copy=False)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[..., 0].astype(np.float64, copy=False)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        return arr[..., :3].astype(np.float64, copy=False) @ LUMA
    raise ValueError(f"unexpected pixel array shape {arr.shape}")


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map center +- width/2 linearly onto [0, 1] (DICOM LINEAR_EXACT), clipping outside."""
    low = center - width / 2.0
    return np.clip((values.astype(np.float64, copy=False) - low) / width, 0.0, 1.0)


def scale_range(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map [low, high] linearly onto [0, 1] (either order), clipping outside."""
    if high == low:
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values.astype(np.float64, copy=False) - low) / (high - low), 0.0, 1.0)


def finish(values: np.ndarray) -> np.ndarray:
    """Final pixels: float32, NaN-free, clipped to [0, 1], C-contiguous (may reuse its input as the output)."""
    out = np.ascontiguousarray(values, dtype=np.float32)
    if not out.flags.writeable:
        out = out.copy()
    np.fmax(out, 0.0, out=out)  # fmax/fmin map NaN to the bound, so NaN -> 0 and +-inf -> 1 / 0
    np.fmin(out, 1.0, out=out)
    return out


def check_window(window: tuple[float, float] | None) -> tuple[float, float] | None:
    """Validate a (center, width) override: two finite numbers, width > 0."""
    if window is None:
        return None
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"window must be (center, width), got {window!r}") from exc
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise ValueError(f"window must be finite with width > 0, got {window!r}")
    return center, width
