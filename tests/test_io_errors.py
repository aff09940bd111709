"""chexcft.io bad inputs: each one raises UnreadableImageError naming the file and the reason, and sniff_format."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from chexcft.errors import ChexcftError, UnreadableImageError
from chexcft.io import SUPPORTED_FORMATS, read_xray, sniff_format
from tests.io_builders import corner_image, dicom_dataset, jpeg_with_size, png_with_size, save_dicom


def _png_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg_bytes(arr: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(arr).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(64, 64), dtype=np.uint8)


def _dicom_bytes(tmp_path: Path, **attrs) -> bytes:
    arr = attrs.pop("arr", corner_image(high=4095))
    bits = attrs.pop("bits_stored", 12)
    photometric = attrs.pop("photometric", "MONOCHROME2")
    ds = dicom_dataset(arr, bits_stored=bits, photometric=photometric, **attrs)
    return save_dicom(ds, tmp_path / "source.dcm").read_bytes()


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "bad.png").write_bytes(b"")
    return tmp_path / "bad.png"


def _text(tmp_path: Path) -> Path:
    (tmp_path / "bad.dcm").write_text("Path,Sex,Age\nfoo.jpg,Male,50\n")
    return tmp_path / "bad.dcm"


def _random_bytes(tmp_path: Path) -> Path:
    (tmp_path / "bad.jpg").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return tmp_path / "bad.jpg"


def _truncated_png(tmp_path: Path) -> Path:
    data = _png_bytes(_noise(0))
    (tmp_path / "bad.png").write_bytes(data[: len(data) // 2])
    return tmp_path / "bad.png"


def _png_signature_only(tmp_path: Path) -> Path:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return tmp_path / "bad.png"


def _truncated_jpeg(tmp_path: Path) -> Path:
    data = _jpeg_bytes(_noise(0))
    (tmp_path / "bad.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path / "bad.jpg"


def _jpeg_header_only(tmp_path: Path) -> Path:
    data = _jpeg_bytes(_noise(0))
    (tmp_path / "bad.jpg").write_bytes(data[: data.index(b"\xff\xda")])
    return tmp_path / "bad.jpg"


def _truncated_dicom_pixels(tmp_path: Path) -> Path:
    data = _dicom_bytes(tmp_path)
    (tmp_path / "bad.dcm").write_bytes(data[: len(data) - 1000])
    return tmp_path / "bad.dcm"


def _truncated_dicom_header(tmp_path: Path) -> Path:
    (tmp_path / "bad.dcm").write_bytes(_dicom_bytes(tmp_path)[:300])
    return tmp_path / "bad.dcm"


def _dicom_without_pixels(tmp_path: Path) -> Path:
    ds = dicom_dataset(corner_image(high=255), bits_stored=8)
    del ds.PixelData
    return save_dicom(ds, tmp_path / "bad.dcm")


def _dicom_preamble_then_garbage(tmp_path: Path) -> Path:
    (tmp_path / "bad.dcm").write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(256)) * 8)
    return tmp_path / "bad.dcm"


def _unsupported_photometric(tmp_path: Path) -> Path:
    rgb = np.zeros((8, 8, 3), np.int64)
    ds = dicom_dataset(rgb, photometric="RGB", bits_stored=8)
    ds.PhotometricInterpretation = "HSV"
    return save_dicom(ds, tmp_path / "bad.dcm")


def _dicom_bomb(tmp_path: Path) -> Path:
    ds = dicom_dataset(np.zeros((4, 4), np.int64), bits_stored=8)
    ds.Rows, ds.Columns = 20_000, 20_000  # 400 M pixels claimed, 16 bytes present
    return save_dicom(ds, tmp_path / "bad.dcm")


def _dicom_zero_rows(tmp_path: Path) -> Path:
    ds = dicom_dataset(np.zeros((4, 4), np.int64), bits_stored=8)
    ds.Rows = 0
    return save_dicom(ds, tmp_path / "bad.dcm")


def _png_bomb(tmp_path: Path) -> Path:
    return png_with_size(tmp_path / "bad.png", 30_000, 30_000)


def _jpeg_bomb(tmp_path: Path) -> Path:
    return jpeg_with_size(tmp_path / "bad.jpg", 60_000, 60_000)


def _tiff(tmp_path: Path) -> Path:
    Image.fromarray(_noise(0)).save(tmp_path / "bad.png", format="TIFF")
    return tmp_path / "bad.png"


def _missing(tmp_path: Path) -> Path:
    return tmp_path / "bad.png"


def _directory(tmp_path: Path) -> Path:
    (tmp_path / "bad.png").mkdir()
    return tmp_path / "bad.png"


def _corrupt_jpeg2000_dicom(tmp_path: Path) -> Path:
    try:
        import data_store
    except ImportError:
        pytest.skip("pydicom-data (import data_store) is not installed")
    source = Path(os.path.dirname(data_store.__file__)) / "data" / "emri_small_jpeg_2k_lossless_too_short.dcm"
    (tmp_path / "bad.dcm").write_bytes(source.read_bytes())
    return tmp_path / "bad.dcm"


def _corrupt_jpeg_in_dicom(tmp_path: Path) -> Path:
    from tests.io_builders import jpeg_dicom

    path, jpeg = jpeg_dicom(_noise(0), tmp_path / "src.dcm", bits_stored=8)
    data = path.read_bytes()
    start = data.index(jpeg)
    scan = jpeg.index(b"\xff\xda") + 20
    broken = bytearray(data)
    broken[start + scan : start + len(jpeg) - 2] = b"\xff\x00" * ((len(jpeg) - 2 - scan) // 2) + b"\x00" * (
        (len(jpeg) - 2 - scan) % 2
    )
    (tmp_path / "bad.dcm").write_bytes(bytes(broken))
    return tmp_path / "bad.dcm"


def _jpeg_bomb_inside_dicom(tmp_path: Path) -> Path:
    """An 8 x 8 DICOM whose JPEG frame declares 30000 x 30000: the DICOM header alone would pass."""
    import pydicom
    from pydicom.encaps import encapsulate

    from tests.io_builders import jpeg_dicom

    path, _ = jpeg_dicom(np.zeros((8, 8), np.uint8), tmp_path / "bad.dcm", bits_stored=8)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([jpeg_with_size(tmp_path / "big.jpg", 30_000, 30_000).read_bytes()])
    ds.save_as(path)
    return path


def _j2k_bomb_inside_dicom(tmp_path: Path) -> Path:
    """A 32 x 32 JPEG 2000 DICOM whose codestream SIZ segment is patched to claim 40000 x 40000."""
    import struct

    from pydicom.uid import JPEG2000Lossless

    ds = dicom_dataset(np.zeros((32, 32), np.int64), bits_stored=8)
    ds.compress(JPEG2000Lossless, np.zeros((32, 32), np.uint8))
    data = bytearray(save_dicom(ds, tmp_path / "src.dcm").read_bytes())
    siz = data.index(b"\xff\x4f\xff\x51")
    data[siz + 8 : siz + 16] = struct.pack(">II", 40_000, 40_000)
    (tmp_path / "bad.dcm").write_bytes(bytes(data))
    return tmp_path / "bad.dcm"


BAD_INPUTS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("empty", _empty, "empty file"),
    ("missing", _missing, "not found"),
    ("directory", _directory, "directory"),
    ("text", _text, "not an image"),
    ("random_bytes", _random_bytes, "not an image"),
    ("tiff", _tiff, "unsupported format TIFF"),
    ("truncated_png", _truncated_png, "truncat"),
    ("png_signature_only", _png_signature_only, "truncated or corrupt PNG"),
    ("truncated_jpeg", _truncated_jpeg, "truncat"),
    ("jpeg_header_only", _jpeg_header_only, "truncated JPEG"),
    ("truncated_dicom_pixels", _truncated_dicom_pixels, "less than expected"),
    ("truncated_dicom_header", _truncated_dicom_header, "truncated"),
    ("dicom_without_pixels", _dicom_without_pixels, "no pixel data"),
    ("dicom_preamble_then_garbage", _dicom_preamble_then_garbage, "DICOM"),
    ("unsupported_photometric", _unsupported_photometric, "unsupported photometric interpretation 'HSV'"),
    ("dicom_bomb", _dicom_bomb, "decompression bomb refused: 20000 x 20000"),
    ("dicom_zero_rows", _dicom_zero_rows, "empty size"),
    ("jpeg_bomb_inside_dicom", _jpeg_bomb_inside_dicom, "decompression bomb refused: 30000 x 30000"),
    ("j2k_bomb_inside_dicom", _j2k_bomb_inside_dicom, "decompression bomb refused: 40000 x 40000"),
    ("png_bomb", _png_bomb, "decompression bomb refused: 30000 x 30000"),
    ("jpeg_bomb", _jpeg_bomb, "decompression bomb refused: 60000 x 60000"),
    ("corrupt_jpeg2000_dicom", _corrupt_jpeg2000_dicom, "truncated"),
]


@pytest.mark.filterwarnings("ignore::UserWarning:pydicom")  # pydicom also warns about some broken files
@pytest.mark.parametrize(("builder", "reason"), [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_raises_unreadable_naming_file_and_reason(tmp_path: Path, builder, reason: str) -> None:
    path = builder(tmp_path)
    with pytest.raises(UnreadableImageError) as info:
        read_xray(path)
    message = str(info.value)
    assert str(path) in message
    assert reason.lower() in message.lower(), message
    assert isinstance(info.value, ChexcftError)


def test_corrupt_jpeg_scan_in_dicom_never_leaks_another_exception(tmp_path: Path) -> None:
    """Garbage entropy-coded data may decode to noise or fail; either way only UnreadableImageError may escape."""
    path = _corrupt_jpeg_in_dicom(tmp_path)
    try:
        xray = read_xray(path)
    except UnreadableImageError as exc:
        assert str(path) in str(exc)
    else:
        assert xray.pixels.shape == (64, 64) and np.isfinite(xray.pixels).all()


def test_max_pixels_is_configurable(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(path)
    assert read_xray(path, max_pixels=2000).pixels.shape == (40, 50)
    with pytest.raises(UnreadableImageError, match="decompression bomb.*1,999"):
        read_xray(path, max_pixels=1999)
    dcm = save_dicom(dicom_dataset(np.zeros((40, 50), np.int64), bits_stored=8), tmp_path / "x.dcm")
    with pytest.raises(UnreadableImageError, match="decompression bomb"):
        read_xray(dcm, max_pixels=1999)


def test_pil_decompression_bomb_error_maps_to_ours(tmp_path: Path) -> None:
    """With our limit lifted, PIL's own hard limit (2x Image.MAX_IMAGE_PIXELS) still refuses, as our error."""
    side = int((2 * Image.MAX_IMAGE_PIXELS) ** 0.5) + 100
    path = png_with_size(tmp_path / "big.png", side, side)
    with pytest.raises(UnreadableImageError, match="decompression bomb refused by PIL") as info:
        read_xray(path, max_pixels=10**12)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, Image.DecompressionBombError)


def test_errors_chain_the_original_exception(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError) as info:
        read_xray(_truncated_png(tmp_path))
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("writer", "expected"),
    [
        (lambda p: Image.fromarray(_noise(0)).save(p, format="PNG"), "png"),
        (lambda p: Image.fromarray(_noise(0)).save(p, format="JPEG"), "jpeg"),
        (lambda p: Image.fromarray(_noise(0)).save(p, format="TIFF"), "tiff"),
        (lambda p: p.write_text("hello, world\n" * 20), "unknown"),
        (lambda p: p.write_bytes(b""), "unknown"),
    ],
    ids=["png", "jpeg", "tiff", "text", "empty"],
)
def test_sniff_format_from_content(tmp_path: Path, writer, expected: str) -> None:
    path = tmp_path / "file.dcm"  # the extension must not matter
    writer(path)
    assert sniff_format(path) == expected


@pytest.mark.parametrize("layout", ["preamble", "no_preamble", "no_meta"])
def test_sniff_format_dicom_with_and_without_preamble(tmp_path: Path, layout: str) -> None:
    ds = dicom_dataset(corner_image(high=255), bits_stored=8)
    path = save_dicom(ds, tmp_path / "x.png", preamble=layout == "preamble", implicit=layout == "no_meta")
    assert sniff_format(path) == "dicom"
    assert "dicom" in SUPPORTED_FORMATS


def test_sniff_format_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match="not found"):
        sniff_format(tmp_path / "nope.dcm")
