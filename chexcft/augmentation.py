"""Training augmentation of whole batches on the training device (kornia.augmentation), seeded per step.

`chexcft.inputs.model_input` applies it to the batch after the transfer and the float conversion. The training
augmentation (kornia.augmentation, per-sample parameters on the whole batch), each step drawn
independently per image with probability `prob`:

- affine: rotation by up to +-`rotate_deg` degrees, scaling by a factor in [1 - `scale`, 1 + `scale`] per axis,
  translation by up to +-`translate` x S pixels per axis, about the image centre (bilinear, black outside the
  image, like the letterbox padding);
- gamma: x -> x ** gamma with gamma uniform in `gamma`;
- noise: zero-mean Gaussian noise whose standard deviation is uniform in [0, `noise_std`] per image;

then a clip to [0, 1]. kornia draws from torch's global generator, so each call runs inside
`torch.random.fork_rng` seeded with the step's own seed (`step_seed`): a step's augmentation depends only on
(run seed, epoch, step, rank), not on loader workers or on what ran before, and a resumed run replays it exactly.

Why kornia and not torchvision.transforms.v2: v2's RandomAffine draws one angle/shift/scale per call (scalar
`.item()` draws), so a (B, C, H, W) batch gets the same transform for every image, with integer-rounded shifts
and one isotropic scale; v2 has no random gamma and its GaussianNoise has a fixed sigma, and RandomApply's `p` is
per call. Per-image draws would need a Python loop over the batch. kornia draws every parameter per image in one
batched call (RandomAffine with per-axis scale, RandomGamma, per-image gates), on the images' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from kornia.augmentation import ImageSequential, RandomAffine, RandomGamma, RandomGaussianNoise


@dataclass(frozen=True)
class AugmentationSpec:
    """The training augmentation's distributions (the defaults are chexcft's training augmentation)."""

    prob: float = 0.5
    rotate_deg: float = 7.0
    translate: float = 0.04
    scale: float = 0.06
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.02


class RandomNoiseOfRandomStd(RandomGaussianNoise):
    """kornia's RandomGaussianNoise with the standard deviation drawn per image, uniform in [0, max_std]."""

    def __init__(self, max_std: float, p: float) -> None:
        """Unit noise from kornia, scaled per image by a std uniform in [0, max_std]."""
        super().__init__(mean=0.0, std=1.0, p=p)
        self.max_std = float(max_std)

    def generate_parameters(self, batch_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        """kornia's unit noise field plus one std per image, both drawn on the generator's device."""
        params = super().generate_parameters(batch_shape)
        noise = params["gaussian_noise"]
        params["noise_std"] = torch.rand(batch_shape[0], device=noise.device, dtype=noise.dtype) * self.max_std
        return params

    def apply_transform(
        self, input: torch.Tensor, params: dict[str, torch.Tensor], flags: dict[str, Any], transform: Any = None
    ) -> torch.Tensor:
        """Add the noise, scaled per image."""
        std = params["noise_std"].to(input.device, input.dtype).view(-1, *([1] * (input.ndim - 1)))
        return input + params["gaussian_noise"].to(input.device, input.dtype) * std


class Augmentation(torch.nn.Module):
    """The training augmentation of float (B, C, S, S) batches in [0, 1], seeded per call."""

    def __init__(self, spec: AugmentationSpec | None = None) -> None:
        """Build the kornia pipeline for `spec` (chexcft's defaults when None)."""
        super().__init__()
        self.spec = spec = spec or AugmentationSpec()
        low, high = 1.0 - spec.scale, 1.0 + spec.scale
        self.pipeline = ImageSequential(
            RandomAffine(
                degrees=spec.rotate_deg,
                translate=(spec.translate, spec.translate),
                scale=(low, high, low, high),
                resample="bilinear",
                padding_mode="zeros",
                p=spec.prob,
            ),
            RandomGamma(gamma=spec.gamma, p=spec.prob),
            RandomNoiseOfRandomStd(spec.noise_std, p=spec.prob),
        )
        self._device: torch.device | None = None

    def _draw_on(self, device: torch.device) -> None:
        """Draw the random parameters (and the noise field) on the images' device, not on the CPU then copied."""
        if device != self._device:
            for step in self.pipeline.children():
                step.set_rng_device_and_dtype(device, torch.float32)
            self._device = device

    @torch.no_grad()
    def forward(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """Augment a batch with the draws of `seed` (the global RNG state is left as it was); clip to [0, 1]."""
        self._draw_on(images.device)
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=images.device.type):
            torch.manual_seed(int(seed))
            out = self.pipeline(images)
        return out.clamp_(0.0, 1.0)


def step_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """A 63-bit augmentation seed for one training micro-batch of one process."""
    return int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1, dtype=np.uint64)[0]) >> 1
