"""read_xray and dicom_header: sniff the content, dispatch to the format reader, turn any failure into one error."""

from __future__ import annotations

from typing import Any, Callable

from chexcft.errors import UnreadableImageError
from chexcft.io._common import Source, XRay, check_window, open_source, unreadable
from chexcft.io.dicom import dicom_header as _dicom_header
from chexcft.io.dicom import read_dicom
from chexcft.io.raster import read_raster
from chexcft.io.sniff import HEAD_BYTES, SUPPORTED_FORMATS, sniff_bytes

DEFAULT_MAX_PIXELS = 100_000_000


def _guarded(source: Source, work: Callable[[Any, str, str], Any]) -> Any:
    """Open source, refuse empty/unsupported content, run work(handle, name, format); any failure -> UnreadableImageError."""
    with open_source(source) as (handle, name, size):
        if size == 0:
            raise unreadable(name, "empty file (0 bytes)")
        fmt = "image"
        try:
            fmt = sniff_bytes(handle.read(HEAD_BYTES))
            if fmt not in SUPPORTED_FORMATS:
                kind = "not an image" if fmt == "unknown" else f"unsupported format {fmt.upper()}"
                raise unreadable(name, f"{kind} (content is not DICOM, PNG or JPEG)")
            return work(handle, name, fmt)
        except UnreadableImageError:
            raise
        except MemoryError as exc:
            raise unreadable(name, "not enough memory to decode the image") from exc
        except RecursionError as exc:
            raise unreadable(name, "corrupt file (nesting too deep)") from exc
        except Exception as exc:
            reason = str(exc).strip() or type(exc).__name__
            if "truncat" in reason.lower() or isinstance(exc, EOFError):
                reason = f"truncated file ({reason})"
            raise unreadable(name, f"cannot decode {fmt.upper()} image: {reason}") from exc


def read_xray(
    path: Source,
    *,
    apply_voi_lut: bool = True,
    window: tuple[float, float] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> XRay:
    """Read a DICOM, PNG or JPEG radiograph as float32 [0, 1] pixels (row-major as displayed, bright = dense)."""
    window = check_window(window)
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")

    def work(handle: Any, name: str, fmt: str) -> XRay:
        if fmt == "dicom":
            return read_dicom(handle, name, apply_voi_lut=apply_voi_lut, window=window, max_pixels=max_pixels)
        return read_raster(handle, name, fmt, window=window, max_pixels=max_pixels)

    return _guarded(path, work)


def dicom_header(path: Source, *, include_phi: bool = False) -> dict[str, str]:
    """A DICOM file's header as keyword -> value text (no pixel data); patient-identifying fields dropped unless include_phi."""

    def work(handle: Any, name: str, fmt: str) -> dict[str, str]:
        if fmt != "dicom":
            raise unreadable(name, f"not a DICOM file (content is {fmt.upper()})")
        return _dicom_header(handle, name, include_phi=include_phi)

    return _guarded(path, work)
