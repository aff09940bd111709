"""The batched on-device augmentation (kornia) and model_input, the one uint8 -> model input conversion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chexcft.augmentation import Augmentation, AugmentationSpec, step_seed
from chexcft.device import resolve_device
from chexcft.inputs import model_input

SIZE = 48


def smooth_batch(n: int = 8, size: int = SIZE) -> torch.Tensor:
    """uint8 (n, 1, size, size) smooth images with a black letterbox band, like cached radiographs."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = 0.3 + 0.4 * np.sin(xx / 7.0) * np.cos(yy / 9.0) ** 2
    images = np.stack([np.roll(base, k, axis=1) for k in range(n)])[:, None]
    images[..., :, :3] = 0.0
    return torch.from_numpy(np.round(images * 255).astype(np.uint8))


def test_model_input_scales_uint8_on_the_device_without_augmentation() -> None:
    settings = resolve_device("cpu")
    pixels = smooth_batch(3)
    x = model_input(pixels, settings)
    assert x.dtype == torch.float32 and x.shape == (3, 1, SIZE, SIZE)
    torch.testing.assert_close(x, pixels.float() / 255.0, rtol=0, atol=0)
    torch.testing.assert_close(model_input(pixels[:, 0], settings), x, rtol=0, atol=0)  # (B, S, S) gains the channel
    floats = torch.rand(2, 1, 8, 8)
    assert torch.equal(model_input(floats, settings), floats)  # floats in [0, 1] pass unchanged
    with pytest.raises(ValueError, match="seed"):
        model_input(pixels, settings, Augmentation())


def test_augmentation_is_a_function_of_the_seed_and_leaves_the_global_rng_alone() -> None:
    settings = resolve_device("cpu")
    pixels = smooth_batch()
    augmentation = Augmentation()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = model_input(pixels, settings, augmentation, seed=step_seed(0, 1, 2))
    b = model_input(pixels, settings, Augmentation(), seed=step_seed(0, 1, 2))  # a fresh pipeline: same draws
    assert torch.equal(torch.rand(3), expected_next)  # fork_rng: the caller's stream did not move
    assert torch.equal(a, b)
    c = model_input(pixels, settings, augmentation, seed=step_seed(0, 1, 3))
    assert not torch.equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0 and a.dtype == torch.float32


def test_probabilities_are_per_image() -> None:
    """With prob 0.5 some images of a batch are left exactly as they were and others are changed."""
    settings = resolve_device("cpu")
    pixels = smooth_batch(32)
    out = model_input(pixels, settings, Augmentation(), seed=11)
    plain = pixels.float() / 255.0
    unchanged = [(out[i] == plain[i]).all().item() for i in range(len(out))]
    assert 0 < sum(unchanged) < len(out)  # (1/8 of images get no step at all: 32 images make both sides likely)
    always = Augmentation(AugmentationSpec(prob=1.0))(plain.clone(), seed=11)
    assert not any((always[i] == plain[i]).all().item() for i in range(len(out)))
    never = Augmentation(AugmentationSpec(prob=0.0))(plain.clone(), seed=11)
    assert torch.equal(never, plain)


def test_each_step_draws_the_documented_distribution() -> None:
    plain = smooth_batch(64).float() / 255.0
    centre = (slice(None), slice(None), slice(12, 36), slice(12, 36))
    # noise only: zero mean, per-image std uniform in [0, 0.02] -> mean std 0.01, none above 0.02
    noise = Augmentation(AugmentationSpec(prob=1.0, rotate_deg=0, translate=0, scale=0, gamma=(1, 1)))
    diff = (noise(plain.clone(), seed=1) - plain)[centre]
    per_image = diff.flatten(1).std(dim=1)
    assert abs(float(diff.mean())) < 2e-3 and float(per_image.max()) < 0.022
    assert 0.006 < float(per_image.mean()) < 0.014 and float(per_image.min()) < 0.004
    # gamma only: x ** g with g in [0.8, 1.25] keeps black and white, moves mid-greys both ways
    gamma = Augmentation(AugmentationSpec(prob=1.0, rotate_deg=0, translate=0, scale=0, noise_std=0))
    out = gamma(plain.clone(), seed=2)
    g = torch.log(out[centre].clamp_min(1e-4)) / torch.log(plain[centre].clamp_min(1e-4))
    g = torch.nanmedian(g.flatten(1), dim=1).values
    assert 0.79 < float(g.min()) < 0.9 and 1.15 < float(g.max()) < 1.26
    # affine only: a small warp of a smooth image stays close in the centre, black comes in only at the borders
    affine = Augmentation(AugmentationSpec(prob=1.0, gamma=(1, 1), noise_std=0))
    warped = affine(plain.clone(), seed=3)
    assert float((warped - plain)[centre].abs().mean()) < 0.15 and not torch.equal(warped, plain)


def test_step_seeds_differ_by_every_coordinate() -> None:
    seeds = {step_seed(s, e, k, r) for s in (0, 1) for e in (0, 1) for k in (0, 1) for r in (0, 1)}
    assert len(seeds) == 16 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(3, 2, 1, 0) == step_seed(3, 2, 1, 0)
