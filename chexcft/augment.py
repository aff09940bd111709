"""Training augmentation (MONAI randomisable transforms) and the matching evaluation transform.

Input: a float32 image (1, S, S) in [0, 1] (tensor or array, channel first), or, for the pipelines built
here with the "fast" backend and for `eval_transform()`, also the cache's uint8 pixels (1, S, S) as they are
(value v meaning v / 255; `takes_uint8` says whether a pipeline does, and `CachedXrayDataset` then skips its own
float conversion); output: a plain float32 torch tensor (1, S, S) in [0, 1]. Training applies, each with
probability `prob` (drawn independently per image):

- affine: rotation by up to +-`rotate_deg` degrees, scaling by a factor in [1 - `scale`, 1 + `scale`] per
  axis, translation by up to +-`translate` x S pixels per axis, about the image centre (bilinear, black
  outside the image, like the letterbox padding);
- contrast: x -> x ** gamma with gamma drawn from `gamma` (MONAI's RandAdjustContrast does the same after
  scaling the image's [min, max] to [0, 1]; identical for letterboxed images, which span 0 .. ~1);
- noise: zero-mean Gaussian noise whose standard deviation is drawn from [0, `noise_std`];

then clips to [0, 1]. `enabled=False` or `prob=0` gives `eval_transform()` (no randomness at all).

Two backends with the same parameters and the same MONAI API (Compose, `set_random_state`, per-transform prob):
- "monai": MONAI's own array transforms RandAffine, RandAdjustContrast, RandGaussianNoise.
- "fast" (default): the same three as MONAI `RandomizableTransform`s whose pixel work is done by OpenCV
  and NumPy, and whose noise is a seeded Gaussian field of 2S x 2S per transform read at a random offset,
  orientation and sign, so an image costs a slice instead of S^2 new normal draws. Per image it does only the
  work of the transforms drawn: uint8 pixels stay uint8 until a drawn transform needs floats and are converted
  once (gamma on uint8 is a 256-entry float32 lookup table, `cv2.LUT`, which also does that conversion);
  the affine is `cv2.warpAffine` (bilinear) in float32 (on this OpenCV, 5.0, faster than its uint8 path and free
  of a rounding step); gamma on floats is `cv2.pow`; the noise is one fused `cv2.scaleAdd` of the field slice.
  Each drawn step allocates at most one new image; a float image a fast step made (`_Owned`) is changed in place
  by the later steps and is already clipped, so nothing is copied or clipped twice (a caller's input is never
  written to). Same draws, parameters and order as before these changes: outputs agree to float rounding.
  MONAI's float grid resampling and per-call noise cost about 10x more on a CPU core than reading a cached
  image, which made the augmentation, not the data, the loader's bottleneck (bench/RESULTS.md).
The transforms are seeded (`seed`); `make_loader` reseeds each worker's copy with its own seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from monai.transforms import Compose, RandAdjustContrast, RandAffine, RandGaussianNoise, RandomizableTransform, Transform

BACKENDS = ("fast", "monai")

_UNIT = np.float32(1.0 / 255.0)


def _as_array(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        return image.detach().as_subclass(torch.Tensor).cpu().numpy()
    return np.asarray(image)


def _plane(image: Any) -> np.ndarray:
    """The 2-D plane of a (1, H, W) image as uint8 (kept) or float32 (converted if needed), never copied needlessly.

    The fast steps never write into their input unless it is `_Owned` (made by an earlier fast step).
    """
    pixels = _as_array(image)[0]
    if pixels.dtype == np.uint8 or pixels.dtype == np.float32:
        return pixels
    return pixels.astype(np.float32)


class _Owned(np.ndarray):
    """A float32 (1, H, W) image in [0, 1] that a fast step made: later steps may overwrite it in place."""


def _owned(plane: np.ndarray) -> _Owned:
    return plane[None].view(_Owned)


class ToUnitTensor(Transform):
    """Return a plain float32 torch tensor in [0, 1]: uint8 pixels are scaled by 1/255, floats clipped."""

    takes_uint8 = True

    def __call__(self, image: Any) -> torch.Tensor:
        """Apply the scaling or the clip (a MONAI MetaTensor loses its metadata)."""
        if isinstance(image, torch.Tensor):
            return image.as_subclass(torch.Tensor).to(torch.float32).clamp(0.0, 1.0)
        pixels = np.asarray(image)
        if isinstance(image, _Owned):  # already float32 in [0, 1] and ours
            return torch.from_numpy(pixels)
        if pixels.dtype == np.uint8:
            return torch.from_numpy(np.multiply(pixels, _UNIT, dtype=np.float32))
        return torch.from_numpy(np.clip(pixels.astype(np.float32, copy=False), 0.0, 1.0))


class FastRandAffine(RandomizableTransform):
    """Random rotation, per-axis scaling and translation about the centre, bilinear with black borders (OpenCV)."""

    takes_uint8 = True

    def __init__(self, prob: float, rotate_deg: float, scale: float, translate_px: float) -> None:
        """Ranges: +-rotate_deg degrees, factor 1 +- scale per axis, +-translate_px pixels per axis."""
        super().__init__(prob)
        self.rotate_deg, self.scale, self.translate_px = rotate_deg, scale, translate_px
        self._params = (0.0, 1.0, 1.0, 0.0, 0.0)
        self._scratch = np.empty((0, 0), dtype=np.float32)  # reused float copy of uint8 input: stays in the CPU cache

    def randomize(self, data: Any = None) -> None:
        """Draw whether to apply, then angle, scales and shifts."""
        super().randomize(None)
        if self._do_transform:
            u = self.R.uniform(-1.0, 1.0, size=5)
            self._params = (
                math.radians(self.rotate_deg) * u[0],
                1.0 + self.scale * u[1],
                1.0 + self.scale * u[2],
                self.translate_px * u[3],
                self.translate_px * u[4],
            )

    def __call__(self, image: Any) -> Any:
        """Warp a (1, H, W) image (uint8 or float in, float32 out when drawn; untouched otherwise)."""
        self.randomize()
        if not self._do_transform:
            return image
        import cv2

        pixels = _plane(image)
        if pixels.dtype == np.uint8:
            if self._scratch.shape != pixels.shape:
                self._scratch = np.empty(pixels.shape, dtype=np.float32)
            pixels = np.multiply(pixels, _UNIT, out=self._scratch, dtype=np.float32)
        else:
            pixels = np.ascontiguousarray(pixels)
        height, width = pixels.shape
        angle, sx, sy, tx, ty = self._params
        cos, sin = math.cos(angle), math.sin(angle)
        linear = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]], dtype=np.float64)
        centre = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
        offset = centre - linear @ centre + np.array([tx, ty])
        matrix = np.hstack([linear, offset[:, None]])
        warped = cv2.warpAffine(
            pixels, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
        )
        return _owned(np.clip(warped, 0.0, 1.0, out=warped))


class FastRandGamma(RandomizableTransform):
    """Random gamma contrast x -> x ** gamma on [0, 1] (black and white stay fixed)."""

    takes_uint8 = True

    def __init__(self, prob: float, gamma: tuple[float, float]) -> None:
        """Gamma drawn uniformly from the `gamma` range."""
        super().__init__(prob)
        self.gamma = gamma
        self._gamma = 1.0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to apply, then gamma."""
        super().randomize(None)
        if self._do_transform:
            self._gamma = float(self.R.uniform(self.gamma[0], self.gamma[1]))

    def __call__(self, image: Any) -> Any:
        """Apply the gamma curve (a lookup table on uint8 pixels, `cv2.pow` on floats); float32 out when drawn."""
        self.randomize()
        if not self._do_transform:
            return image
        import cv2

        pixels = _plane(image)
        if pixels.dtype == np.uint8:
            table = np.power(np.arange(256, dtype=np.float64) / 255.0, self._gamma).astype(np.float32)
            return _owned(cv2.LUT(pixels, table))
        # cv2.pow is several times faster than np.power, but slow on exact zeros (the letterbox padding): lift them.
        lifted = np.clip(pixels, 1e-6, 1.0, out=pixels if isinstance(image, _Owned) else None)
        return _owned(cv2.pow(lifted, self._gamma, dst=lifted))


class FastRandNoise(RandomizableTransform):
    """Zero-mean Gaussian noise, std drawn from [0, std], read from a seeded noise field (see the module docstring)."""

    takes_uint8 = True

    def __init__(self, prob: float, std: float) -> None:
        """Noise standard deviation drawn uniformly from [0, std]."""
        super().__init__(prob)
        self.std = std
        self._fields: dict[int, np.ndarray] = {}
        self._draw = (0, 0, 0, 0.0)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> FastRandNoise:
        """Reseed; the noise field is redrawn from the new state at the next call."""
        self._fields = {}
        super().set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draw whether to apply, then offset, orientation and sign, and the std."""
        super().randomize(None)
        if self._do_transform:
            self._draw = (int(self.R.randint(0, 1 << 30)), int(self.R.randint(0, 1 << 30)), int(self.R.randint(0, 8)),
                          float(self.R.uniform(0.0, self.std)))

    def _field(self, side: int, orientation: int) -> np.ndarray:
        """The noise field (side x side or larger), transposed (bit 4) and column-flipped (bit 2) as contiguous copies.

        Row flips (bit 1) stay views: OpenCV reads those in place, but would copy a transposed or column-flipped view.
        At most four copies (6.5 MB at S = 320), each made once per seed.
        """
        base = self._fields.get(0)
        if base is None or base.shape[0] < side:
            generator = np.random.default_rng(int(self.R.randint(0, 2**31 - 1)))
            self._fields = {0: generator.standard_normal((side, side), dtype=np.float32)}
        key = orientation & 6
        if key not in self._fields:
            field = self._fields[0]
            if key & 4:
                field = field.T
            if key & 2:
                field = field[:, ::-1]
            self._fields[key] = np.ascontiguousarray(field)
        return self._fields[key]

    def __call__(self, image: Any) -> Any:
        """Add the noise (float32 out when drawn)."""
        self.randomize()
        if not self._do_transform:
            return image
        import cv2

        pixels = _plane(image)
        height, width = pixels.shape
        oy, ox, orientation, std = self._draw
        field = self._field(2 * max(height, width), orientation)
        oy %= field.shape[0] - height + 1
        ox %= field.shape[1] - width + 1
        sign = -1.0 if (oy + ox) % 2 else 1.0
        if orientation & 2:  # the mirrored window of the column-flipped copy: the patch [oy.., ox..] reversed
            ox = field.shape[1] - width - ox
        patch = field[oy : oy + height, ox : ox + width]
        if orientation & 1:
            patch = patch[::-1]
        if pixels.dtype == np.uint8:
            noisy = np.multiply(pixels, _UNIT, dtype=np.float32)
        elif isinstance(image, _Owned):
            noisy = pixels
        else:
            noisy = np.array(pixels, dtype=np.float32)
        cv2.scaleAdd(patch, sign * std, noisy, dst=noisy)
        return _owned(np.clip(noisy, 0.0, 1.0, out=noisy))


def takes_uint8(transform: Any) -> bool:
    """Whether `transform` is a Compose of steps that all accept the cache's uint8 pixels (v meaning v / 255)."""
    steps = getattr(transform, "transforms", None)
    return isinstance(transform, Compose) and bool(steps) and all(getattr(step, "takes_uint8", False) for step in steps)


def training_transform(
    seed: int | None = None,
    *,
    image_size: int = 320,
    prob: float = 0.5,
    rotate_deg: float = 7.0,
    translate: float = 0.04,
    scale: float = 0.06,
    gamma: tuple[float, float] = (0.8, 1.25),
    noise_std: float = 0.02,
    enabled: bool = True,
    backend: str = "fast",
) -> Compose:
    """The training augmentation: small random affine, gamma contrast and Gaussian noise, then clip to [0, 1]."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown augmentation backend {backend!r}; use one of {BACKENDS}")
    if not enabled or prob <= 0:
        return eval_transform()
    shift = translate * image_size
    if backend == "monai":
        steps: list[Any] = [
            RandAffine(
                prob=prob,
                rotate_range=(math.radians(rotate_deg),),
                translate_range=(shift, shift),
                scale_range=(scale, scale),
                mode="bilinear",
                padding_mode="zeros",
            ),
            RandAdjustContrast(prob=prob, gamma=gamma),
            RandGaussianNoise(prob=prob, mean=0.0, std=noise_std, dtype=np.float32),
        ]
    else:
        steps = [
            FastRandAffine(prob, rotate_deg, scale, shift),
            FastRandGamma(prob, gamma),
            FastRandNoise(prob, noise_std),
        ]
    transform = Compose([*steps, ToUnitTensor()], map_items=False)
    if seed is not None:
        transform.set_random_state(seed=int(seed) % (2**32))
    return transform


def eval_transform() -> Compose:
    """The evaluation transform: nothing random, only the [0, 1] clip (a no-op on cached images)."""
    return Compose([ToUnitTensor()], map_items=False)


def reseed(transform: Any, seed: int) -> None:
    """Reseed a MONAI transform (and its random children) in place; a no-op for anything without random state."""
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=int(seed) % (2**32))
