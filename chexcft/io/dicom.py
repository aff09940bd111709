"""DICOM reader on pydicom's pixel pipeline: first frame, modality LUT, VOI LUT or window, MONOCHROME1, bit depth."""

from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, apply_windowing
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from chexcft.io._common import XRay, check_pixel_count, finish, linear_window, scale_range, to_grey, unreadable
from chexcft.io.phi import is_phi
from chexcft.io.sniff import compressed_size
from chexcft.schema import VIEW_FRONTAL_AP, VIEW_FRONTAL_PA, VIEW_LATERAL, VIEW_UNKNOWN

PIXEL_KEYWORDS: tuple[str, ...] = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MONOCHROME: frozenset[str] = frozenset({"MONOCHROME1", "MONOCHROME2"})
# Colour interpretations pydicom's pipeline turns into RGB (YBR_FULL/_422 converted; RCT/ICT decoded as RGB).
COLOUR: frozenset[str] = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR"})
_VIEW_POSITIONS = {"AP": VIEW_FRONTAL_AP, "PA": VIEW_FRONTAL_PA, "LL": VIEW_LATERAL, "RL": VIEW_LATERAL,
                   "LAT": VIEW_LATERAL, "LATERAL": VIEW_LATERAL, "LLD": VIEW_LATERAL, "RLD": VIEW_LATERAL}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_MAX_LISTED_VALUES = 16


class _Bounded:
    """A binary file whose read(n) never asks for more than is left, so a corrupt element length cannot allocate gigabytes."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._size = handle.seek(0, 2)
        handle.seek(0)

    def read(self, size: int | None = -1) -> bytes:
        """Read up to size bytes (all that is left when size is None or negative)."""
        if size is None or size < 0:
            return self._handle.read()
        return self._handle.read(min(size, max(0, self._size - self._handle.tell())))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def _dataset(handle: BinaryIO, name: str, *, stop_before_pixels: bool = False) -> Dataset:
    """Parse a file already sniffed as DICOM (force=True also accepts files without the 128-byte preamble)."""
    handle.seek(0)
    try:
        return pydicom.dcmread(_Bounded(handle), force=True, stop_before_pixels=stop_before_pixels)  # type: ignore[arg-type]
    except Exception as exc:
        raise unreadable(name, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from exc


def _ensure_transfer_syntax(ds: Dataset, name: str) -> None:
    """Give a data set stored without file meta the transfer syntax it was actually read with."""
    if ds.file_meta.get("TransferSyntaxUID"):
        return
    implicit, little = getattr(ds, "original_encoding", (None, None))
    raw = ds.get("PixelData")
    if raw is not None and bytes(raw[:4]) == b"\xfe\xff\x00\xe0":
        raise unreadable(name, "compressed pixel data but no Transfer Syntax UID to say how")
    if little is False:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    elif implicit is False:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian


def _check_compressed_size(ds: Dataset, name: str, max_pixels: int) -> None:
    """Refuse a compressed first frame whose own JPEG / JPEG 2000 header declares too many pixels (a bomb in disguise)."""
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated or "PixelData" not in ds:
        return
    try:
        items = generate_fragments(ds.PixelData)
        next(items)  # the Basic Offset Table item always comes first
        first_fragment = next(items)
    except (StopIteration, ValueError, TypeError):
        return  # malformed encapsulation: the decoder reports it
    size = compressed_size(bytes(first_fragment))
    if size is not None:
        check_pixel_count(name, size[0], size[1], max_pixels)


def _stored_range(ds: Dataset) -> tuple[float, float]:
    """The output range pydicom's windowing maps onto: stored-value range after the modality LUT or rescale."""
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(ds.get("PixelRepresentation", 0) or 0) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _file_window(ds: Dataset) -> tuple[float, float] | None:
    """The first (center, width) in the file if present and usable by its VOI LUT function."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    try:
        center, width = ds["WindowCenter"].value, ds["WindowWidth"].value
        center = float(center[0] if ds["WindowCenter"].VM > 1 else center)
        width = float(width[0] if ds["WindowWidth"].VM > 1 else width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID") or not (np.isfinite(center) and np.isfinite(width)):
        return None
    if width < 1 if function == "LINEAR" else width <= 0:
        return None
    return center, width


def _grey_pixels(
    arr: np.ndarray, ds: Dataset, *, use_voi: bool, window: tuple[float, float] | None, meta: dict[str, Any]
) -> np.ndarray:
    """Monochrome stored values -> [0, 1]: modality LUT, then override window / VOI LUT / file window / full range."""
    if arr.dtype.kind == "f":
        values = arr.astype(np.float64)
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
    else:
        values = apply_modality_lut(arr, ds)
        low, high = _stored_range(ds)
    meta["window"], meta["voi"] = None, "none"
    if window is not None:
        meta["window"], meta["voi"] = window, "override"
        return linear_window(values, *window)
    if use_voi and ds.get("VOILUTSequence"):
        lut_data = ds.VOILUTSequence[0].get("LUTData")
        if lut_data is not None and len(np.atleast_1d(lut_data)) > 1:
            meta["voi"] = "lut"
            lut = np.atleast_1d(np.asarray(lut_data, dtype=np.float64))
            return scale_range(apply_voi_lut(values, ds, index=0, prefer_lut=True), lut.min(), lut.max())
    file_window = _file_window(ds) if use_voi else None
    if file_window is not None:
        meta["window"] = file_window
        meta["voi"] = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return scale_range(apply_windowing(values, ds, index=0), low, high)
    return scale_range(values, low, high)


def read_dicom(
    handle: BinaryIO, name: str, *, apply_voi_lut: bool, window: tuple[float, float] | None, max_pixels: int
) -> XRay:
    """Read the first frame of a DICOM image into an XRay (bright = dense)."""
    ds = _dataset(handle, name)
    if not any(keyword in ds for keyword in PIXEL_KEYWORDS):
        if len(ds) == 0:
            raise unreadable(name, "no DICOM data elements could be read (corrupt or truncated file)")
        if "Rows" in ds:
            raise unreadable(name, "DICOM file has image attributes but no pixel data (truncated, or Pixel Data missing)")
        raise unreadable(name, "DICOM file has no pixel data (not an image object)")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise unreadable(name, "DICOM image has no valid Rows/Columns") from exc
    check_pixel_count(name, rows, columns, max_pixels)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not photometric:
        photometric = "MONOCHROME2" if samples == 1 else "RGB"
        ds.PhotometricInterpretation = photometric
    if photometric not in MONOCHROME | COLOUR:
        raise unreadable(name, f"unsupported photometric interpretation {photometric!r}")
    _ensure_transfer_syntax(ds, name)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_compressed_size(ds, name, max_pixels)
    ds.pixel_array_options(index=0)
    arr = ds.pixel_array
    if arr.ndim not in (2, 3) or arr.shape[:2] != (rows, columns):
        raise unreadable(name, f"decoded pixel array has shape {arr.shape}, expected {rows} x {columns}")
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    view_position = str(ds.get("ViewPosition", "") or "").strip().upper()
    meta: dict[str, Any] = {
        "format": "dicom",
        "original_size": (rows, columns),
        "bits": bits,
        "photometric": photometric,
        "view": _VIEW_POSITIONS.get(view_position, VIEW_UNKNOWN) if view_position else None,
        "view_position": view_position or None,
        "frames": frames,
        "transfer_syntax": str(ds.file_meta.TransferSyntaxUID),
        "modality": str(ds.get("Modality", "") or "") or None,
    }
    if photometric in MONOCHROME:
        if arr.ndim != 2:
            raise unreadable(name, f"{photometric} image decoded with {arr.shape[2]} samples per pixel")
        pixels = _grey_pixels(arr, ds, use_voi=apply_voi_lut, window=window, meta=meta)
        if photometric == "MONOCHROME1":
            pixels = 1.0 - pixels
    else:
        if photometric == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            full = 255.0 if arr.dtype == np.uint8 else 65535.0
        else:
            full = float(2**bits - 1)
        grey = to_grey(arr)
        meta["window"], meta["voi"] = window, "override" if window is not None else "none"
        pixels = linear_window(grey, *window) if window is not None else grey / full
    return XRay(finish(pixels), meta)


def _value_text(element: Any) -> str:
    """A readable one-line string for a data element's value."""
    if element.VR in _BINARY_VRS:
        length = len(element.value) if element.value is not None else 0
        return f"<{length} bytes>"
    value = element.value
    if element.VM > _MAX_LISTED_VALUES and isinstance(value, (list, tuple, MultiValue)):
        shown = ", ".join(str(v) for v in list(value)[:_MAX_LISTED_VALUES])
        return f"[{shown}, ...] ({element.VM} values)"
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


def _element_name(element: Any) -> str:
    """The element's keyword, or its tag for private and unknown elements."""
    return element.keyword or f"({element.tag.group:04X},{element.tag.element:04X})"


def _flatten(ds: Dataset, include_phi: bool, prefix: str, out: dict[str, str]) -> None:
    """Add every element of ds (recursing into sequences) to out, skipping PHI unless include_phi."""
    for element in ds:
        if element.tag in (0x7FE00010, 0x7FE00008, 0x7FE00009):
            continue
        if not include_phi and is_phi(element):
            continue
        key = prefix + _element_name(element)
        if element.VR == "SQ":
            items = element.value or []
            out[key] = f"<sequence of {len(items)} item(s)>"
            for index, item in enumerate(items):
                _flatten(item, include_phi, f"{key}[{index}].", out)
        else:
            out[key] = _value_text(element)


def dicom_header(handle: BinaryIO, name: str, *, include_phi: bool) -> dict[str, str]:
    """Header elements (file meta first, pixel data left out) as keyword -> readable value string."""
    ds = _dataset(handle, name, stop_before_pixels=True)
    if len(ds) == 0 and len(ds.file_meta) == 0:
        raise unreadable(name, "DICOM file has no readable header elements")
    out: dict[str, str] = {}
    _flatten(ds.file_meta, include_phi, "", out)
    _flatten(ds, include_phi, "", out)
    return out
