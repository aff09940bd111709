"""Grad-CAM heatmaps (pytorch-grad-cam) of one finding's binary logit, in the original image's geometry.

    heat = finding_heatmap(model, pixels, observation_index, size)   # float32 (h, w) in [0, 1]

The model sees the letterboxed square (chexcft.preprocess.letterbox); the heatmap is mapped back by cutting the
padding off and resizing to the original image, so it lines up with what the viewer shows. The target is the
binary logit the predictions come from (the CFT head when the run has one); calibration is monotonic per finding,
so it does not change the heatmap.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from PIL import Image
from torch import nn

from chexcft.preprocess import letterbox

class BinaryLogits(nn.Module):
    """Wrap a ChexModel so that forward(x) gives its (N, C) binary logits (with the CFT head when set)."""

    def __init__(self, model: nn.Module, use_override: bool = True) -> None:
        super().__init__()
        self.model = model
        self.use_override = use_override

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) in [0, 1] -> (N, C) binary logits."""
        return self.model.predict_logits(x, use_override=self.use_override)


def gradcam(model: nn.Module, square: np.ndarray, observation: int, *, use_override: bool = True) -> np.ndarray:
    """Grad-CAM of one observation's logit for a (S, S) model input (uint8, or float in [0, 1]) -> (S, S) in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    image = np.asarray(square)
    if image.ndim != 2 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square 2-D model input, got shape {image.shape}")
    x = torch.as_tensor(image, dtype=torch.float32)
    if image.dtype == np.uint8:
        x = x / 255.0
    # Grad-CAM hooks layers and accumulates gradients: work on a private copy so that a model shared with other
    # threads (the viewer's cached runs) is never touched.
    private = copy.deepcopy(model).eval()
    x = x[None, None].to(next(private.parameters()).device)
    wrapped = BinaryLogits(private, use_override)
    with torch.enable_grad(), GradCAM(model=wrapped, target_layers=[private.target_layer]) as cam:
        heat = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(observation))])[0]
    heat = np.nan_to_num(np.asarray(heat, dtype=np.float32), nan=0.0)
    return np.clip(heat, 0.0, 1.0)


def unletterbox(square: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Map a (S, S) map on the letterboxed square back onto the original (h, w) image (padding cut off)."""
    size = square.shape[0]
    height, width = shape
    scale = size / max(height, width)
    new_h, new_w = max(1, round(height * scale)), max(1, round(width * scale))
    top, left = (size - new_h) // 2, (size - new_w) // 2
    inner = np.ascontiguousarray(square[top : top + new_h, left : left + new_w], dtype=np.float32)
    resized = Image.fromarray(inner, mode="F").resize((width, height), resample=Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def finding_heatmap(
    model: nn.Module, pixels: np.ndarray, observation: int, size: int, *, use_override: bool = True
) -> np.ndarray:
    """Grad-CAM of one finding for a decoded X-ray (float (h, w) in [0, 1]) at the model's input size, as (h, w)."""
    square = letterbox(np.asarray(pixels, dtype=np.float32), size)
    return unletterbox(gradcam(model, square, observation, use_override=use_override), pixels.shape)


def mean_heatmap(heatmaps: list[np.ndarray]) -> np.ndarray:
    """The mean of several models' heatmaps, rescaled to [0, 1] (an ensemble's heatmap)."""
    if not heatmaps:
        raise ValueError("no heatmaps to average")
    mean = np.mean(np.stack(heatmaps), axis=0)
    top = float(mean.max())
    return (mean / top).astype(np.float32) if top > 0 else mean.astype(np.float32)
