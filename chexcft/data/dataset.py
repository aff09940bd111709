"""A torch Dataset over cache slots, and the one DataLoader factory (pinned memory, persistent, seeded workers)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from chexcft.augment import reseed, takes_uint8
from chexcft.data.cache import ImageCache
from chexcft.device import DeviceSettings
from chexcft.errors import InvalidDatasetError


def _as_matrix(values: Any, n: int, name: str) -> np.ndarray:
    matrix = np.asarray(values, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[:, None]
    if matrix.ndim != 2 or matrix.shape[0] != n:
        raise InvalidDatasetError(f"{name} has shape {matrix.shape}; expected ({n}, C) for {n} images")
    return matrix


class CachedXrayDataset(Dataset):
    """Items dict(image float32 (1,S,S) in [0,1], target (C,), mask (C,), index) read from an ImageCache."""

    def __init__(
        self,
        cache: ImageCache,
        slots: Sequence[int] | np.ndarray,
        targets: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        transform: Callable[[Any], Any] | None = None,
    ) -> None:
        """Wrap `slots` (from `cache.rows_for`; no -1) with optional targets/mask (n, C) and a transform."""
        self.cache = cache
        self.slots = np.asarray(slots, dtype=np.int64).reshape(-1)
        n = len(self.slots)
        missing = int((self.slots < 0).sum())
        if missing:
            raise InvalidDatasetError(
                f"{missing} of {n} images are not in the cache {cache.out_dir} (slot -1: unreadable or missing); "
                "drop those rows before building the dataset (see failures.csv)"
            )
        if n and int(self.slots.max()) >= cache.n_slots:
            raise InvalidDatasetError(f"slot {int(self.slots.max())} is beyond the {cache.n_slots} slots of cache {cache.out_dir}")
        self.targets = np.zeros((n, 0), dtype=np.float32) if targets is None else _as_matrix(targets, n, "targets")
        if mask is None:
            self.mask = np.ones_like(self.targets)
        else:
            self.mask = _as_matrix(mask, n, "mask")
            if self.mask.shape != self.targets.shape:
                raise InvalidDatasetError(f"mask has shape {self.mask.shape} but targets have {self.targets.shape}")
        self.transform = transform

    def __len__(self) -> int:
        """Number of images."""
        return len(self.slots)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Item i: the cached image scaled to [0, 1] (then transformed), its target, mask and position i."""
        pixels = np.asarray(self.cache.data[self.slots[i]])[None]
        if takes_uint8(self.transform):  # the transform scales the uint8 pixels itself, once, where it is cheapest
            image: Any = self.transform(pixels)
        else:
            image = torch.from_numpy(np.multiply(pixels, np.float32(1.0 / 255.0), dtype=np.float32))
            if self.transform is not None:
                image = self.transform(image)
        image = torch.as_tensor(image, dtype=torch.float32)
        if type(image) is not torch.Tensor:
            image = image.as_subclass(torch.Tensor)  # a MONAI MetaTensor becomes a plain tensor
        return {
            "image": image.contiguous(),
            "target": torch.from_numpy(self.targets[i]),
            "mask": torch.from_numpy(self.mask[i]),
            "index": int(i),
        }


def _seed_worker(worker_id: int, seed: int) -> None:
    """Give each loader worker its own reproducible augmentation stream and NumPy seed."""
    info = torch.utils.data.get_worker_info()
    worker_seed = seed * 1000 + worker_id
    np.random.seed(worker_seed % (2**32))
    try:
        import cv2

        cv2.setNumThreads(1)  # like torch in loader workers: one thread each, the workers are the parallelism
    except ImportError:  # pragma: no cover - OpenCV is a dependency
        pass
    if info is not None:
        reseed(getattr(info.dataset, "transform", None), worker_seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    settings: DeviceSettings,
    workers: int,
    sampler: Sampler | None = None,
    seed: int = 0,
) -> DataLoader:
    """The DataLoader every job uses: pinned memory per DeviceSettings, persistent seeded workers, seeded shuffle.

    Workers are spawned processes (the dataset is pickled; ImageCache reopens its memory map in each worker).
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    if workers <= 0:
        reseed(getattr(dataset, "transform", None), int(seed) * 1000)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=max(0, int(workers)),
        pin_memory=settings.pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=functools.partial(_seed_worker, seed=int(seed)) if workers > 0 else None,
        generator=generator,
        prefetch_factor=4 if workers > 0 else None,
        # Spawned, not forked: a fork would inherit OpenCV's and OpenMP's thread pools mid-use and can hang.
        multiprocessing_context="spawn" if workers > 0 else None,
    )
