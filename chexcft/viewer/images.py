"""Image panel helpers: window/level ranges, zoom, display conversion, and the heatmap overlay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class WindowRange:
    """The grey-level range window/level sliders move in, and the window to start from."""

    low: float
    high: float
    center: float
    width: float
    from_file: bool  # True when (center, width) is the file's own window


def window_range(meta: dict[str, Any], header: dict[str, str] | None = None) -> WindowRange:
    """Slider range and starting window from read_xray's meta (and a DICOM header's rescale, when given).

    The range is the stored-value range (0 .. 2**bits - 1, through RescaleSlope/Intercept for DICOM); the start is
    the file's window when it has one, else the full range.
    """
    bits = int(meta.get("bits") or 8)
    low, high = 0.0, float(2**bits - 1)
    header = header or {}
    try:
        slope = float(header.get("RescaleSlope", 1) or 1)
        intercept = float(header.get("RescaleIntercept", 0) or 0)
    except ValueError:
        slope, intercept = 1.0, 0.0
    low, high = sorted((low * slope + intercept, high * slope + intercept))
    window = meta.get("window")
    if window is not None and meta.get("voi") != "override":
        center, width = float(window[0]), float(window[1])
        low, high = min(low, center - width / 2), max(high, center + width / 2)
        return WindowRange(low, high, center, width, True)
    return WindowRange(low, high, (low + high) / 2.0, max(high - low, 1.0), False)


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """float [0, 1] pixels -> uint8 for display."""
    return np.clip(np.rint(np.asarray(pixels, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def zoom(image: np.ndarray, factor: float, center_x: float = 0.5, center_y: float = 0.5) -> np.ndarray:
    """Crop to 1/factor of each side around (center_x, center_y) (fractions of width/height), kept inside the image."""
    if factor < 1.0:
        raise ValueError(f"zoom factor must be at least 1, got {factor}")
    height, width = image.shape[:2]
    crop_h, crop_w = max(1, round(height / factor)), max(1, round(width / factor))
    top = int(np.clip(round(center_y * height - crop_h / 2), 0, height - crop_h))
    left = int(np.clip(round(center_x * width - crop_w / 2), 0, width - crop_w))
    return image[top : top + crop_h, left : left + crop_w]


def display_size(image: np.ndarray, longest: int = 720) -> np.ndarray:
    """Resize so the longer side is `longest` pixels (so a zoomed crop fills the panel); uint8 in, uint8 out."""
    height, width = image.shape[:2]
    scale = longest / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, resample=Image.Resampling.BICUBIC))


def overlay(pixels: np.ndarray, heat: np.ndarray, opacity: float, colormap: str = "jet") -> np.ndarray:
    """RGB uint8: grey pixels (float [0, 1]) under a colour-mapped heatmap ([0, 1]) whose opacity grows with the heat.

    Each pixel's blend weight is opacity x heat, so cold regions keep the plain X-ray.
    """
    import matplotlib

    if pixels.shape != heat.shape:
        raise ValueError(f"heatmap shape {heat.shape} differs from the image's {pixels.shape}")
    opacity = float(np.clip(opacity, 0.0, 1.0))
    grey = np.repeat(np.asarray(pixels, dtype=np.float64)[..., None], 3, axis=2)
    colour = matplotlib.colormaps[colormap](np.clip(heat, 0.0, 1.0))[..., :3]
    alpha = opacity * np.clip(np.asarray(heat, dtype=np.float64), 0.0, 1.0)[..., None]
    return to_uint8((1.0 - alpha) * grey + alpha * colour)
