"""Format detection from file content (magic numbers), plus header-only size probes for PNG and JPEG."""

from __future__ import annotations

import io
import struct
from typing import BinaryIO, NamedTuple

from chexcft.io._common import Source, open_source

SUPPORTED_FORMATS: tuple[str, ...] = ("dicom", "png", "jpeg")
HEAD_BYTES = 512

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "jpeg2000"),
    (b"\xff\x4f\xff\x51", "jpeg2000"),
    (b"%PDF", "pdf"),
    (b"PK\x03\x04", "zip"),
    (b"\x1f\x8b", "gzip"),
)
# Groups a DICOM data set without preamble plausibly starts with (file meta, identifying, patient, acquisition...).
_DICOM_FIRST_GROUPS = frozenset({0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028})
_DICOM_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)
# SOF markers (baseline, extended, progressive, lossless; differential; arithmetic) and JPEG-LS SOF55.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})


class PngHeader(NamedTuple):
    """The fields of a PNG IHDR chunk the reader needs."""

    width: int
    height: int
    bit_depth: int
    color_type: int


class JpegFrame(NamedTuple):
    """The fields of a JPEG start-of-frame segment the reader needs."""

    marker: int
    precision: int
    height: int
    width: int
    components: int


def _looks_like_raw_dicom(head: bytes) -> bool:
    """True when the bytes start like a DICOM data set written without the 128-byte preamble and 'DICM'."""
    if len(head) < 8:
        return False
    for endian in ("<", ">"):
        group, _element = struct.unpack(endian + "HH", head[:4])
        if group not in _DICOM_FIRST_GROUPS:
            continue
        if head[4:6] in _DICOM_VRS:
            return True
        (length,) = struct.unpack(endian + "I", head[4:8])
        if length < (1 << 24) or length == 0xFFFFFFFF:
            return True
    return False


def sniff_bytes(head: bytes) -> str:
    """The format of a file from its first bytes: 'dicom', 'png', 'jpeg', another known name, or 'unknown'."""
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    for magic, kind in _OTHER_MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if _looks_like_raw_dicom(head):
        return "dicom"
    return "unknown"


def sniff_format(path: Source) -> str:
    """Detect a file's format from its content: 'dicom', 'png' or 'jpeg' (supported), else another name or 'unknown'."""
    with open_source(path) as (handle, _name, _size):
        return sniff_bytes(handle.read(HEAD_BYTES))


def png_header(head: bytes) -> PngHeader | None:
    """Parse the IHDR chunk that must follow the PNG signature (None if absent or cut short)."""
    if len(head) < 26 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return PngHeader(width, height, head[24], head[25])


def png_significant_bits(handle: BinaryIO) -> int | None:
    """The grey significant bits an sBIT chunk before the image data declares (None without one)."""
    handle.seek(8)
    while True:
        head = handle.read(8)
        if len(head) < 8:
            return None
        (length,) = struct.unpack(">I", head[:4])
        kind = head[4:8]
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"sBIT":
            body = handle.read(min(length, 4))
            return body[0] if body else None
        handle.seek(length + 4, 1)


def jpeg_frame(handle: BinaryIO) -> JpegFrame | None:
    """Walk JPEG marker segments from the start of `handle` to the first SOF (None if there is none before SOS/EOF)."""
    handle.seek(0)
    if handle.read(2) != b"\xff\xd8":
        return None
    while True:
        byte = handle.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            return None
        marker_byte = handle.read(1)
        while marker_byte == b"\xff":
            marker_byte = handle.read(1)
        if not marker_byte:
            return None
        marker = marker_byte[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):
            return None
        raw_length = handle.read(2)
        if len(raw_length) < 2:
            return None
        (length,) = struct.unpack(">H", raw_length)
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            body = handle.read(6)
            if len(body) < 6:
                return None
            precision, height, width, components = struct.unpack(">BHHB", body)
            return JpegFrame(marker, precision, height, width, components)
        handle.seek(length - 2, 1)


def j2k_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from the SIZ segment of a JPEG 2000 codestream (raw or inside a JP2 box), or None."""
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0 or len(data) < start + 24:
        return None
    _lsiz, _rsiz, xsiz, ysiz, x_offset, y_offset = struct.unpack(">HHIIII", data[start + 4 : start + 24])
    return ysiz - y_offset, xsiz - x_offset


def compressed_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) a JPEG or JPEG 2000 frame declares in its header, or None when it declares none."""
    if data.startswith(b"\xff\xd8"):
        frame = jpeg_frame(io.BytesIO(data))
        return None if frame is None else (frame.height, frame.width)
    return j2k_size(data[:4096])
