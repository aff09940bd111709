"""chexcft.io PNG and JPEG reading: 8/16-bit, grey/RGB/RGBA/LA/palette, EXIF orientation, lossless JPEG, windows."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexcft.io import read_xray
from tests.io_builders import corner_image, png_16bit


def _save(arr: np.ndarray, path: Path, mode: str | None = None, **kwargs) -> Path:
    image = Image.fromarray(arr) if mode is None else Image.fromarray(arr, mode=mode)
    image.save(path, **kwargs)
    return path


def test_png_8_bit_grey_exact_and_oriented(tmp_path: Path) -> None:
    arr = corner_image(high=255, low=0).astype(np.uint8)
    xray = read_xray(_save(arr, tmp_path / "g8.png"))
    assert xray.pixels.dtype == np.float32 and xray.pixels.shape == (48, 32)
    np.testing.assert_allclose(xray.pixels, arr / 255.0, atol=1e-6)
    assert xray.pixels[0, 0] == 1.0 and xray.pixels[-1, 0] == 0.0
    assert xray.meta["format"] == "png" and xray.meta["bits"] == 8 and xray.meta["original_size"] == (48, 32)
    assert xray.meta["photometric"] == "MONOCHROME2" and xray.meta["window"] is None and xray.meta["frames"] == 1


def test_png_16_bit_keeps_its_full_range(tmp_path: Path) -> None:
    arr = corner_image(high=65535, low=0).astype(np.uint16)
    arr[5, 5] = 1  # a value 8-bit conversion would lose
    arr[6, 6] = 40000
    xray = read_xray(_save(arr, tmp_path / "g16.png"))
    np.testing.assert_allclose(xray.pixels, arr / 65535.0, atol=1e-6)
    assert xray.pixels[5, 5] > 0.0
    assert xray.meta["bits"] == 16


def test_png_16_bit_with_sbit_is_scaled_by_its_significant_bits(tmp_path: Path) -> None:
    # Raw 12-bit values in 16-bit samples with sBIT 12 (as many medical exporters write them): white is 4095.
    arr = corner_image(high=4095, low=0).astype(np.uint16)
    arr[5, 5], arr[6, 6] = 1, 3001
    path = tmp_path / "g12.png"
    path.write_bytes(png_16bit(arr, significant_bits=12))
    xray = read_xray(path)
    np.testing.assert_allclose(xray.pixels, arr / 4095.0, atol=1e-6)
    assert xray.pixels.max() == 1.0 and xray.meta["bits"] == 12 and xray.meta["significant_bits"] == 12
    # Without sBIT the same samples are 16-bit values (a dark image), as before.
    path.write_bytes(png_16bit(arr))
    np.testing.assert_allclose(read_xray(path).pixels, arr / 65535.0, atol=1e-6)


def test_png_sbit_on_samples_already_scaled_to_16_bits(tmp_path: Path) -> None:
    # The PNG standard's way: 12-bit values shifted up to 16 bits, sBIT 12 records the original depth.
    arr = (corner_image(high=4095, low=0).astype(np.uint16) << 4).astype(np.uint16)
    path = tmp_path / "shifted.png"
    path.write_bytes(png_16bit(arr, significant_bits=12))
    xray = read_xray(path)
    np.testing.assert_allclose(xray.pixels, arr / 65535.0, atol=1e-6)
    assert xray.meta["bits"] == 16
    # An sBIT larger than the bit depth is ignored.
    path.write_bytes(png_16bit(arr, significant_bits=17))
    np.testing.assert_allclose(read_xray(path).pixels, arr / 65535.0, atol=1e-6)


def test_png_rgb_rgba_la_palette_become_grey(tmp_path: Path) -> None:
    grey = corner_image(high=200, low=20).astype(np.uint8)
    expected = grey / 255.0
    rgb = np.stack([grey] * 3, axis=-1)
    rgba = np.concatenate([rgb, np.full(grey.shape + (1,), 7, np.uint8)], axis=-1)  # alpha is ignored
    la = np.stack([grey, np.full_like(grey, 3)], axis=-1)
    paths = {
        "RGB": _save(rgb, tmp_path / "rgb.png"),
        "RGBA": _save(rgba, tmp_path / "rgba.png"),
        "MONOCHROME2": _save(la, tmp_path / "la.png", mode="LA"),
    }
    Image.fromarray(grey).convert("P").save(tmp_path / "p.png")
    paths["PALETTE COLOR"] = tmp_path / "p.png"
    for photometric, path in paths.items():
        xray = read_xray(path)
        assert xray.meta["photometric"] == photometric, path
        np.testing.assert_allclose(xray.pixels, expected, atol=1e-5, err_msg=str(path))


def test_png_colour_luma_weights(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[0, 1] = (0, 255, 0)
    rgb[0, 2] = (0, 0, 255)
    pixels = read_xray(_save(rgb, tmp_path / "c.png")).pixels
    np.testing.assert_allclose(pixels[0], [0.299, 0.587, 0.114], atol=1e-6)


def test_png_1_bit(tmp_path: Path) -> None:
    arr = corner_image(high=255, low=0).astype(np.uint8)
    Image.fromarray(arr).convert("1").save(tmp_path / "b.png")
    xray = read_xray(tmp_path / "b.png")
    assert xray.pixels[0, 0] == 1.0 and xray.pixels[20, 20] == 0.0 and xray.meta["bits"] == 1


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_grey_and_rgb(tmp_path: Path, mode: str) -> None:
    grey = corner_image(high=250, low=10).astype(np.uint8)
    image = Image.fromarray(grey).convert(mode)
    image.save(tmp_path / "x.jpg", quality=95)
    reference = np.asarray(Image.open(tmp_path / "x.jpg").convert("L"), dtype=np.float32) / 255.0
    xray = read_xray(tmp_path / "x.jpg")
    assert xray.meta["format"] == "jpeg" and xray.meta["bits"] == 8 and xray.pixels.shape == (48, 32)
    assert np.abs(xray.pixels - reference).max() <= 1.5 / 255
    assert xray.pixels[0, 0] > 0.9 and xray.pixels[-6, 0] < 0.15


def test_jpeg_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = np.zeros((20, 30), np.uint8)
    stored[:4, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    xray = read_xray(tmp_path / "rot.jpg")
    assert xray.pixels.shape == (30, 20) and xray.meta["exif_orientation"] == 6
    assert xray.pixels[1, -2] > 0.8 and xray.pixels[1, 1] < 0.2


def test_16_bit_lossless_jpeg_file(tmp_path: Path) -> None:
    """A lossless JPEG that PIL can't decode goes through pylibjpeg-libjpeg and keeps 16 bits."""
    try:
        import data_store
    except ImportError:
        pytest.skip("pydicom-data (import data_store) is not installed")
    import pydicom
    from pydicom.encaps import generate_frames

    source = Path(os.path.dirname(data_store.__file__)) / "data" / "JPEG-LL.dcm"
    ds = pydicom.dcmread(source)
    (tmp_path / "ll.jpg").write_bytes(next(generate_frames(ds.PixelData, number_of_frames=1)))
    xray = read_xray(tmp_path / "ll.jpg")
    assert xray.meta["bits"] == 16 and xray.meta["format"] == "jpeg"
    np.testing.assert_allclose(xray.pixels, ds.pixel_array / 65535.0, atol=1e-6)


def test_window_override_on_png_is_in_grey_levels(tmp_path: Path) -> None:
    arr = np.array([[0, 100, 150, 200, 255]], np.uint8)
    xray = read_xray(_save(arr, tmp_path / "w.png"), window=(150, 100))
    np.testing.assert_allclose(xray.pixels[0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert xray.meta["window"] == (150.0, 100.0)


def test_format_comes_from_content_not_extension(tmp_path: Path) -> None:
    arr = corner_image(high=255).astype(np.uint8)
    _save(arr, tmp_path / "really_a_png.jpg", format="PNG")
    xray = read_xray(tmp_path / "really_a_png.jpg")
    assert xray.meta["format"] == "png"
    np.testing.assert_allclose(xray.pixels, arr / 255.0, atol=1e-6)


def test_reads_from_a_binary_stream() -> None:
    buffer = io.BytesIO()
    Image.fromarray(corner_image(high=255).astype(np.uint8)).save(buffer, format="PNG")
    buffer.seek(0)
    assert read_xray(buffer).pixels[0, 0] == 1.0


def test_bad_window_argument_is_a_programming_error(tmp_path: Path) -> None:
    path = _save(np.zeros((4, 4), np.uint8), tmp_path / "z.png")
    with pytest.raises(ValueError, match="width > 0"):
        read_xray(path, window=(10, 0))
