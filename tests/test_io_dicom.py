"""chexcft.io DICOM reading: real radiographs, generated files for every pixel-pipeline branch, compressed syntaxes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexcft.io import read_xray
from tests.io_builders import corner_image, dicom_dataset, jpeg_dicom, save_dicom

REAL_ORIGINAL = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
REAL_MONO1 = "Fake_MONOHR1.dcm"


def _pydicom_data(name: str) -> Path:
    """A file from the pydicom-data package (a dev dependency), or skip saying it is missing."""
    try:
        import data_store
    except ImportError:
        pytest.skip("pydicom-data (import data_store) is not installed")
    path = Path(os.path.dirname(data_store.__file__)) / "data" / name
    if not path.is_file():
        pytest.skip(f"pydicom-data has no {name}")
    return path


@pytest.fixture()
def real_dicoms(shared_dir: Path | None) -> tuple[Path, Path]:
    """The two real chest DICOMs from ../shared/data/dicom (skip with the reason when absent)."""
    if shared_dir is None:
        pytest.skip("../shared is absent: the real-DICOM checks need ../shared/data/dicom (generated ones still run)")
    folder = shared_dir / "data" / "dicom"
    original, mono1 = folder / REAL_ORIGINAL, folder / REAL_MONO1
    if not (original.is_file() and mono1.is_file()):
        pytest.skip(f"{folder} does not hold {REAL_ORIGINAL} and {REAL_MONO1}")
    return original, mono1


def test_real_dicom_is_read_as_a_chest_image(real_dicoms: tuple[Path, Path]) -> None:
    original, _ = real_dicoms
    xray = read_xray(original)
    assert xray.pixels.dtype == np.float32 and xray.pixels.shape == (1024, 1024)
    assert 0.0 <= xray.pixels.min() and xray.pixels.max() <= 1.0
    assert xray.meta["format"] == "dicom" and xray.meta["photometric"] == "MONOCHROME2"
    assert xray.meta["original_size"] == (1024, 1024) and xray.meta["bits"] == 8
    assert xray.meta["view"] == "PA" and xray.meta["frames"] == 1
    # Same JPEG Baseline frame decoded by PIL: the pixels must match it, not be transposed or rescaled.
    import pydicom
    from pydicom.encaps import generate_frames

    ds = pydicom.dcmread(original)
    jpeg = next(generate_frames(ds.PixelData, number_of_frames=1))
    reference = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float32) / 255.0
    assert np.abs(xray.pixels - reference).mean() < 2 / 255
    assert np.corrcoef(xray.pixels.ravel(), reference.ravel())[0, 1] > 0.99


def test_real_monochrome1_copy_is_the_inverse(real_dicoms: tuple[Path, Path]) -> None:
    original, mono1 = real_dicoms
    a, b = read_xray(original), read_xray(mono1)
    assert b.meta["photometric"] == "MONOCHROME1"
    np.testing.assert_allclose(b.pixels, 1.0 - a.pixels, atol=1e-6)


@pytest.mark.parametrize(
    ("bits_stored", "high"),
    [(8, 255), (12, 4095), (16, 65535), (10, 1023)],
)
def test_unsigned_bit_depths_scale_by_bits_stored(tmp_path: Path, bits_stored: int, high: int) -> None:
    arr = corner_image(high=high, low=0)
    arr[10, 10] = high // 4
    path = save_dicom(dicom_dataset(arr, bits_stored=bits_stored), tmp_path / "x.dcm")
    xray = read_xray(path)
    assert xray.pixels.shape == (48, 32)
    np.testing.assert_allclose(xray.pixels, arr / high, atol=1e-6)
    assert xray.meta["bits"] == bits_stored and xray.meta["window"] is None


def test_signed_16_bit(tmp_path: Path) -> None:
    arr = np.array([[-32768, 0], [32767, -1]], dtype=np.int64)
    path = save_dicom(dicom_dataset(arr, bits_stored=16, signed=True), tmp_path / "s.dcm")
    np.testing.assert_allclose(read_xray(path).pixels, (arr + 32768) / 65535, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    arr = corner_image(high=4095, low=100)
    mono2 = read_xray(save_dicom(dicom_dataset(arr, bits_stored=12), tmp_path / "m2.dcm"))
    mono1 = read_xray(save_dicom(dicom_dataset(arr, bits_stored=12, photometric="MONOCHROME1"), tmp_path / "m1.dcm"))
    np.testing.assert_allclose(mono1.pixels, 1.0 - mono2.pixels, atol=1e-6)
    assert mono1.pixels[0, 0] == pytest.approx(0.0)  # high stored value is dark in MONOCHROME1
    assert mono1.meta["photometric"] == "MONOCHROME1"


def test_file_window_is_applied_and_can_be_ignored(tmp_path: Path) -> None:
    arr = np.array([[1000, 2048, 3000, 4095]], dtype=np.int64)
    ds = dicom_dataset(arr, bits_stored=12, WindowCenter=2048, WindowWidth=1024)
    path = save_dicom(ds, tmp_path / "w.dcm")
    windowed = read_xray(path)
    # DICOM LINEAR: ((x - (c - 0.5)) / (w - 1) + 0.5), clipped.
    np.testing.assert_allclose(windowed.pixels[0], [0.0, (0.5 / 1023) + 0.5, 1.0, 1.0], atol=1e-6)
    assert windowed.meta["window"] == (2048.0, 1024.0) and windowed.meta["voi"] == "LINEAR"
    plain = read_xray(path, apply_voi_lut=False)
    np.testing.assert_allclose(plain.pixels[0], arr[0] / 4095, atol=1e-6)
    assert plain.meta["window"] is None


def test_window_override_wins_over_the_file(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 2000, 4095]], dtype=np.int64)
    ds = dicom_dataset(arr, bits_stored=12, WindowCenter=2048, WindowWidth=1024)
    xray = read_xray(save_dicom(ds, tmp_path / "o.dcm"), window=(1000, 2000))
    np.testing.assert_allclose(xray.pixels[0], [0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert xray.meta["window"] == (1000.0, 2000.0) and xray.meta["voi"] == "override"


def test_rescale_is_applied_before_the_window(tmp_path: Path) -> None:
    # Stored 12 -> -1000 HU, 512 -> 0 HU, 1524 -> 2024 HU with slope 2, intercept -1024.
    arr = np.array([[12, 512, 1524]], dtype=np.int64)
    ds = dicom_dataset(
        arr, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024,
        WindowCenter=0, WindowWidth=2000, VOILUTFunction="LINEAR_EXACT",
    )
    xray = read_xray(save_dicom(ds, tmp_path / "r.dcm"))
    np.testing.assert_allclose(xray.pixels[0], [0.0, 0.5, 1.0], atol=1e-6)
    # The override is in the same (rescaled) units.
    override = read_xray(tmp_path / "r.dcm", window=(-1000, 2000))
    np.testing.assert_allclose(override.pixels[0], [0.5, 1.0, 1.0], atol=1e-6)


def test_rescale_without_window_keeps_the_full_range(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 4095]], dtype=np.int64)
    ds = dicom_dataset(arr, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1024)
    np.testing.assert_allclose(read_xray(save_dicom(ds, tmp_path / "r.dcm")).pixels[0], arr[0] / 4095, atol=1e-6)


def test_voi_lut_sequence(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset

    arr = np.array([[0, 51, 255]], dtype=np.int64)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 12]
    item.LUTData = [4095 - 16 * v for v in range(256)]  # an inverting LUT: proves it was used
    ds = dicom_dataset(arr, bits_stored=8, VOILUTSequence=[item])
    ds.VOILUTSequence[0]["LUTData"].VR = "US"
    xray = read_xray(save_dicom(ds, tmp_path / "lut.dcm"))
    np.testing.assert_allclose(xray.pixels[0], [1.0, 0.8, 0.0], atol=1e-6)
    assert xray.meta["voi"] == "lut"
    np.testing.assert_allclose(read_xray(tmp_path / "lut.dcm", apply_voi_lut=False).pixels[0], arr[0] / 255, atol=1e-6)


@pytest.mark.parametrize("layout", ["native", "jpeg2000", "rle", "no_preamble", "no_meta", "big_endian"])
def test_orientation_is_row_major_as_displayed(tmp_path: Path, layout: str) -> None:
    arr = corner_image(high=4095, low=0)
    ds = dicom_dataset(arr, bits_stored=12, ViewPosition="AP")
    path = tmp_path / f"{layout}.dcm"
    if layout == "jpeg2000":
        from pydicom.uid import JPEG2000Lossless

        ds.compress(JPEG2000Lossless, arr.astype(np.uint16))
        save_dicom(ds, path)
    elif layout == "rle":
        from pydicom.uid import RLELossless

        ds.compress(RLELossless, arr.astype(np.uint16))
        save_dicom(ds, path)
    elif layout == "no_preamble":
        save_dicom(ds, path, preamble=False)
        assert path.read_bytes()[128:132] != b"DICM"
    elif layout == "no_meta":
        save_dicom(ds, path, preamble=False, implicit=True)
        assert path.read_bytes()[:2] == b"\x08\x00"
    elif layout == "big_endian":
        from pydicom.uid import ExplicitVRBigEndian

        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = arr.astype(">u2").tobytes()
        ds.save_as(path, enforce_file_format=True)
    else:
        save_dicom(ds, path)
    xray = read_xray(path)
    assert xray.pixels.shape == (48, 32)
    assert xray.pixels[0, 0] == pytest.approx(1.0)
    assert xray.pixels[0, -1] == pytest.approx(0.0) and xray.pixels[-1, 0] == pytest.approx(0.0)
    np.testing.assert_allclose(xray.pixels, arr / 4095, atol=1e-6)
    assert xray.meta["view"] == "AP"


def test_jpeg_baseline_dicom_matches_the_jpeg(tmp_path: Path) -> None:
    grey = (corner_image(high=255, low=30)).astype(np.uint8)
    path, jpeg = jpeg_dicom(grey, tmp_path / "jb.dcm", bits_stored=8)
    reference = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float32) / 255.0
    xray = read_xray(path)
    assert xray.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.50"
    assert np.abs(xray.pixels - reference).max() <= 3 / 255
    assert xray.pixels[0, 0] > 0.9 and xray.pixels[-5, -5] < 0.2


@pytest.mark.parametrize(
    ("compressed", "uncompressed"),
    [("693_J2KR.dcm", "693_UNCR.dcm"), ("US1_J2KR.dcm", "US1_UNCR.dcm")],  # grey with window; colour (YBR_RCT)
)
def test_jpeg2000_lossless_files_match_their_uncompressed_twins(compressed: str, uncompressed: str) -> None:
    a, b = read_xray(_pydicom_data(compressed)), read_xray(_pydicom_data(uncompressed))
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert a.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.90"


def test_jpeg_lossless_dicom() -> None:
    xray = read_xray(_pydicom_data("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    assert xray.pixels.shape == (768, 1024) and xray.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.70"
    assert 0.0 < xray.pixels.mean() < 1.0


def test_multi_frame_takes_the_first_frame(tmp_path: Path) -> None:
    frames = np.stack([corner_image(high=200, low=10), np.full((48, 32), 77), np.full((48, 32), 99)])
    path = save_dicom(dicom_dataset(frames, bits_stored=8, frames=3), tmp_path / "mf.dcm")
    xray = read_xray(path)
    np.testing.assert_allclose(xray.pixels, frames[0] / 255, atol=1e-6)
    assert xray.meta["frames"] == 3


def test_multi_frame_jpeg2000_takes_the_first_frame() -> None:
    xray = read_xray(_pydicom_data("emri_small_jpeg_2k_lossless.dcm"))
    reference = read_xray(_pydicom_data("emri_small.dcm"))
    assert xray.meta["frames"] == 10 and xray.pixels.shape == (64, 64)
    np.testing.assert_array_equal(xray.pixels, reference.pixels)


def test_rgb_dicom_becomes_luma(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.int64)
    rgb[0, 0] = (255, 255, 255)
    rgb[1, 2] = (255, 0, 0)
    rgb[3, 5] = (0, 0, 255)
    xray = read_xray(save_dicom(dicom_dataset(rgb, photometric="RGB", bits_stored=8), tmp_path / "rgb.dcm"))
    assert xray.pixels.shape == (4, 6) and xray.meta["photometric"] == "RGB"
    assert xray.pixels[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert xray.pixels[1, 2] == pytest.approx(0.299, abs=1e-6)
    assert xray.pixels[3, 5] == pytest.approx(0.114, abs=1e-6)


def test_ybr_full_dicom_becomes_grey() -> None:
    ybr = read_xray(_pydicom_data("SC_ybr_full_uncompressed.dcm"))
    rgb = read_xray(_pydicom_data("SC_rgb.dcm"))
    assert ybr.pixels.shape == rgb.pixels.shape == (100, 100)
    assert np.abs(ybr.pixels - rgb.pixels).max() < 3 / 255


def test_meta_fields(tmp_path: Path) -> None:
    ds = dicom_dataset(corner_image(high=255), bits_stored=8, ViewPosition="LL")
    meta = read_xray(save_dicom(ds, tmp_path / "m.dcm")).meta
    for key in ("format", "original_size", "bits", "photometric", "window", "view", "frames"):
        assert key in meta
    assert meta["view"] == "lateral" and meta["view_position"] == "LL" and meta["original_size"] == (48, 32)
    ds2 = dicom_dataset(corner_image(high=255), bits_stored=8)
    assert read_xray(save_dicom(ds2, tmp_path / "n.dcm")).meta["view"] is None


def test_reads_from_a_binary_stream(tmp_path: Path) -> None:
    arr = corner_image(high=255)
    path = save_dicom(dicom_dataset(arr, bits_stored=8), tmp_path / "s.dcm")
    stream = io.BytesIO(path.read_bytes())
    stream.name = "upload.dcm"
    np.testing.assert_allclose(read_xray(stream).pixels, arr / 255, atol=1e-6)
