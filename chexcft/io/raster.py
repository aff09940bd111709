"""PNG and JPEG readers (PIL; pylibjpeg-libjpeg for 12/16-bit and lossless JPEG that PIL cannot decode)."""

from __future__ import annotations

import warnings
from typing import Any, BinaryIO, NamedTuple

import numpy as np
from PIL import Image, ImageOps

from chexcft.errors import UnreadableImageError
from chexcft.io._common import XRay, check_pixel_count, finish, linear_window, to_grey, unreadable
from chexcft.io.sniff import HEAD_BYTES, JpegFrame, jpeg_frame, png_header, png_significant_bits

_PNG_COLOR_TYPES = frozenset({0, 2, 3, 4, 6})
_MODE_PHOTOMETRIC = {"1": "MONOCHROME2", "L": "MONOCHROME2", "LA": "MONOCHROME2", "I": "MONOCHROME2",
                     "RGB": "RGB", "RGBA": "RGBA", "P": "PALETTE COLOR", "PA": "PALETTE COLOR",
                     "CMYK": "CMYK", "YCbCr": "YBR_FULL"}
# PIL decodes these baseline/extended/progressive 8-bit frames; everything else goes to libjpeg.
_PIL_JPEG_MARKERS = frozenset({0xC0, 0xC1, 0xC2})


class _Probe(NamedTuple):
    """What the header says before decoding: PNG bit depth, JPEG frame, and which decoder to use."""

    png_bits: int | None
    frame: JpegFrame | None
    use_libjpeg: bool
    significant_bits: int | None = None


def _probe(handle: BinaryIO, name: str, fmt: str, max_pixels: int) -> _Probe:
    """Parse the PNG IHDR or JPEG SOF and refuse oversized images before any decoding."""
    handle.seek(0)
    if fmt == "png":
        header = png_header(handle.read(HEAD_BYTES))
        if header is None:
            raise unreadable(name, "truncated or corrupt PNG (no IHDR header)")
        if header.color_type not in _PNG_COLOR_TYPES:
            raise unreadable(name, f"unsupported PNG colour type {header.color_type}")
        check_pixel_count(name, header.height, header.width, max_pixels)
        significant = png_significant_bits(handle) if header.color_type in (0, 4) else None
        if significant is not None and not 1 <= significant <= header.bit_depth:
            significant = None  # an sBIT the bit depth contradicts says nothing usable
        return _Probe(header.bit_depth, None, False, significant)
    frame = jpeg_frame(handle)
    if frame is None:
        return _Probe(None, None, False)  # no SOF before the scan: let PIL report what is wrong
    check_pixel_count(name, frame.height or 1, frame.width, max_pixels)
    return _Probe(None, frame, frame.marker not in _PIL_JPEG_MARKERS or frame.precision != 8)


def _pil_values(image: Image.Image, png_bits: int | None) -> tuple[np.ndarray, float]:
    """Grey values of a loaded PIL image (float32 for grey, float64 luma for colour) and the value meaning white."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.float32), 1.0
    if mode == "L":
        return np.asarray(image, dtype=np.float32), 255.0
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.float32), 65535.0
    if mode == "I":
        return np.asarray(image).astype(np.float64), float(2 ** (png_bits or 16) - 1)
    if mode in ("RGB", "RGBA"):
        return to_grey(np.asarray(image)), 255.0
    if mode == "LA":
        return np.asarray(image)[..., 0].astype(np.float32), 255.0
    return to_grey(np.asarray(image.convert("RGB"))), 255.0


def _significant_white(values: np.ndarray, white: float, bits: int | None, significant: int | None) -> float:
    """The white level of grey PNG samples with sBIT: 2**significant - 1 when the values were stored unscaled.

    The PNG standard asks writers to scale samples up to the full bit depth (then the low bits are zero and
    the full-range white stays right); many medical exporters write raw 12-bit values into 16-bit samples with
    sBIT 12 instead. Values that fit in the significant bits and are not all multiples of the left shift are
    such raw values.
    """
    if significant is None or bits is None or significant >= bits or white != float(2**bits - 1):
        return white
    high = float(2**significant - 1)
    shift = 2 ** (bits - significant)
    if values.size and float(values.max()) <= high and np.any(np.mod(values, shift) != 0):
        return high
    return white


def _read_with_pil(handle: BinaryIO, name: str, fmt: str, max_pixels: int, png_bits: int | None) -> tuple[
    np.ndarray, float, dict[str, Any]
]:
    """Decode a PNG or 8-bit JPEG with PIL (EXIF orientation applied): grey values, full-white value, metadata."""
    handle.seek(0)
    # Our max_pixels check replaces PIL's warning; PIL's hard limit (2x Image.MAX_IMAGE_PIXELS) still applies.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(handle, formats=["PNG"] if fmt == "png" else ["JPEG", "MPO"])
        except Image.DecompressionBombError as exc:
            raise unreadable(name, f"decompression bomb refused by PIL ({exc})") from exc
        width, height = image.size
        check_pixel_count(name, height, width, max_pixels)
        image.load()
    frames = int(getattr(image, "n_frames", 1) or 1)
    mode = image.mode
    orientation = int(image.getexif().get(0x0112, 1) or 1)
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    values, white = _pil_values(image, png_bits)
    meta: dict[str, Any] = {
        "format": fmt,
        "original_size": (int(values.shape[0]), int(values.shape[1])),
        "bits": png_bits if png_bits is not None else 8,
        "photometric": _MODE_PHOTOMETRIC.get(mode, mode),
        "mode": mode,
        "frames": frames,
        "exif_orientation": orientation,
    }
    return values, white, meta


def _read_with_libjpeg(handle: BinaryIO, fmt: str, frame: JpegFrame) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Decode a JPEG that PIL cannot (12/16-bit, lossless, JPEG-LS) with pylibjpeg-libjpeg."""
    from libjpeg import decode

    handle.seek(0)
    arr = decode(handle.read())
    values = to_grey(arr)
    meta: dict[str, Any] = {
        "format": fmt,
        "original_size": (int(values.shape[0]), int(values.shape[1])),
        "bits": frame.precision,
        "photometric": "MONOCHROME2" if frame.components == 1 else "RGB",
        "frames": 1,
    }
    return values, float(2**frame.precision - 1), meta


def _has_end_marker(handle: BinaryIO, fmt: str) -> bool:
    """Whether the file ends as a complete PNG (IEND chunk) or JPEG (EOI marker) does."""
    handle.seek(0, 2)
    handle.seek(max(0, handle.tell() - 16))
    tail = handle.read()
    return b"IEND" in tail if fmt == "png" else b"\xff\xd9" in tail


def read_raster(
    handle: BinaryIO, name: str, fmt: str, *, window: tuple[float, float] | None, max_pixels: int
) -> XRay:
    """Read a PNG or JPEG file into an XRay (window, if given, is in the file's own grey levels)."""
    probe = _probe(handle, name, fmt, max_pixels)
    try:
        if probe.use_libjpeg and probe.frame is not None:
            values, white, meta = _read_with_libjpeg(handle, fmt, probe.frame)
        else:
            values, white, meta = _read_with_pil(handle, name, fmt, max_pixels, probe.png_bits)
            if probe.significant_bits is not None and meta["mode"] in ("L", "LA", "I", "I;16", "I;16B"):
                white = _significant_white(values, white, probe.png_bits, probe.significant_bits)
                meta["significant_bits"] = probe.significant_bits
                meta["bits"] = probe.significant_bits if white == 2**probe.significant_bits - 1 else meta["bits"]
    except UnreadableImageError:
        raise
    except Exception as exc:
        if not _has_end_marker(handle, fmt):
            raise unreadable(name, f"truncated {fmt.upper()} file (no end marker; decoder said: {exc})") from exc
        raise
    meta["window"] = window
    meta["voi"] = "override" if window is not None else "none"
    meta["view"] = None
    pixels = linear_window(values, *window) if window is not None else values * (1.0 / white)
    return XRay(finish(pixels), meta)
