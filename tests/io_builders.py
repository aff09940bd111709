"""Writers for the small image files the chexcft.io tests read (DICOM via pydicom, PNG/JPEG via PIL)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def corner_image(height: int = 48, width: int = 32, *, high: int = 255, low: int = 0) -> np.ndarray:
    """An asymmetric test image: a bright 4x3 block at the top-left corner, `low` elsewhere (uint16 values)."""
    arr = np.full((height, width), low, dtype=np.int64)
    arr[:4, :3] = high
    arr[-1, -1] = (high + low) // 2  # mid grey bottom-right, so rows and columns can't be swapped unnoticed
    return arr


def dicom_dataset(
    arr: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 8,
    bits_allocated: int | None = None,
    signed: bool = False,
    frames: int = 1,
    **attrs: Any,
) -> Dataset:
    """A minimal Secondary Capture data set holding `arr` uncompressed ((frames,) rows, cols (, 3))."""
    if bits_allocated is None:
        bits_allocated = 8 if bits_stored <= 8 else 16
    dtype = {(8, False): np.uint8, (8, True): np.int8, (16, False): np.uint16, (16, True): np.int16}[
        (bits_allocated, signed)
    ]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2")
    shape = arr.shape[1:] if frames > 1 else arr.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = np.ascontiguousarray(arr.astype(dtype)).tobytes()
    ds["PixelData"].VR = "OB" if bits_allocated == 8 else "OW"
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def save_dicom(ds: Dataset, path: Path, *, preamble: bool = True, implicit: bool = False) -> Path:
    """Write ds to path; preamble=False writes no 128-byte preamble/'DICM' (implicit=True also drops file meta)."""
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    elif implicit:
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    else:
        ds.save_as(path, enforce_file_format=False)
    return path


def jpeg_dicom(grey: np.ndarray, path: Path, **attrs: Any) -> tuple[Path, bytes]:
    """A JPEG Baseline DICOM whose single fragment is PIL's JPEG encoding of `grey` (uint8); returns (path, jpeg)."""
    buffer = io.BytesIO()
    Image.fromarray(grey.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    jpeg = buffer.getvalue()
    ds = dicom_dataset(grey, **attrs)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.save_as(path, enforce_file_format=True)
    return path, jpeg


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """A PNG chunk with its length and CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_16bit(values: np.ndarray, significant_bits: int | None = None) -> bytes:
    """A 16-bit greyscale PNG written chunk by chunk (PIL cannot write sBIT), optionally with an sBIT chunk."""
    height, width = values.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    chunks = [png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0))]
    if significant_bits is not None:
        chunks.append(png_chunk(b"sBIT", bytes([significant_bits])))
    chunks += [png_chunk(b"IDAT", zlib.compress(raw)), png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def png_with_size(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims width x height (valid CRC) but whose data is a tiny real image: a bomb header."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def jpeg_with_size(path: Path, width: int, height: int) -> Path:
    """A JPEG whose SOF claims width x height but whose scan is a tiny real image: a bomb header."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def read_dataset(path: Path) -> Dataset:
    """pydicom's own parse of a test file (for comparisons)."""
    return pydicom.dcmread(path, force=True)
