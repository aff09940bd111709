"""The one image geometry shared by the cache, training and prediction.

An X-ray (float32 in [0, 1], any aspect ratio) is scaled so that its longer side equals `size`
(antialiased bilinear), centred on a black `size` x `size` square, and quantised to uint8.
The whole field of view is kept: nothing is cropped, so a lateral or landscape image loses no anatomy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

GEOMETRY_VERSION = 1


def letterbox(pixels: np.ndarray, size: int) -> np.ndarray:
    """Scale a 2-D image in [0, 1] to fit a size x size square (aspect kept, centred, black padding) as uint8."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {pixels.shape}")
    if size < 8:
        raise ValueError(f"image size must be at least 8, got {size}")
    height, width = pixels.shape
    scale = size / max(height, width)
    new_h = max(1, round(height * scale))
    new_w = max(1, round(width * scale))
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.float32), mode="F")
    resized = np.asarray(image.resize((new_w, new_h), resample=Image.Resampling.BILINEAR), dtype=np.float32)
    out = np.zeros((size, size), dtype=np.uint8)
    top = (size - new_h) // 2
    left = (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)
    return out


def load_for_model(path: str | Path, size: int) -> np.ndarray:
    """Read any supported X-ray file and return it as the uint8 size x size square the models take."""
    from chexcft.io import read_xray

    return letterbox(read_xray(path).pixels, size)
