"""Model input from image batches: the one conversion shared by training, validation, feature export and prediction.

The uint8 batch moves to the device (non-blocking from pinned memory), is scaled there to float32 in [0, 1],
augmented only when the training loop passes its `chexcft.augmentation.Augmentation`, and is put in the device's
memory layout. The model's own first layer (`chexcft.models.InputNormalization`) then normalises it on the same
device. (No kornia import here: prediction and the offline bundle use this module without the augmentation.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from chexcft.device import DeviceSettings


Augment = Callable[[torch.Tensor, int], torch.Tensor]


def model_input(
    pixels: torch.Tensor, settings: DeviceSettings, augmentation: Augment | None = None, seed: int | None = None
) -> torch.Tensor:
    """Device-ready model input from a uint8 (B, S, S) or (B, 1, S, S) batch, or float in [0, 1]; augmented if asked."""
    x = settings.to(pixels)
    if x.ndim == 3:
        x = x[:, None]
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    if augmentation is not None:
        if seed is None:
            raise ValueError("augmentation needs the step's seed")
        x = augmentation(x, seed)
    return settings.layout(x)
