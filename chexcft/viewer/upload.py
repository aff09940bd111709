"""One uploaded file: size-limited, format sniffed from content, decoded by chexcft.io (never unpickled)."""

from __future__ import annotations

import io

from chexcft.errors import UnreadableImageError
from chexcft.io import XRay, dicom_header, read_xray, sniff_format

MAX_UPLOAD_MB = 50
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
UPLOAD_TYPES: tuple[str, ...] = ("dcm", "dicom", "png", "jpg", "jpeg")


def _stream(name: str, data: bytes) -> io.BytesIO:
    stream = io.BytesIO(data)
    stream.name = name  # the reader names the file in its errors
    return stream


def check_upload_size(name: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
    """UnreadableImageError naming the file when it is larger than the limit."""
    if len(data) > max_bytes:
        raise UnreadableImageError(
            f"{name}: file is {len(data) / 2**20:.1f} MB, over the upload limit of {max_bytes / 2**20:.0f} MB"
        )


def read_upload(name: str, data: bytes, max_bytes: int = MAX_UPLOAD_BYTES,
                window: tuple[float, float] | None = None) -> XRay:
    """Decode one uploaded DICOM/PNG/JPEG (content decides, not the name); UnreadableImageError with the reason."""
    check_upload_size(name, data, max_bytes)
    return read_xray(_stream(name, data), window=window)


def upload_format(name: str, data: bytes) -> str:
    """The uploaded file's format from its content ('dicom', 'png', 'jpeg', another name or 'unknown')."""
    return sniff_format(_stream(name, data))


def upload_header(name: str, data: bytes, include_phi: bool = False) -> dict[str, str] | None:
    """The DICOM header of an upload (PHI dropped unless asked), or None for PNG/JPEG."""
    if upload_format(name, data) != "dicom":
        return None
    return dicom_header(_stream(name, data), include_phi=include_phi)
