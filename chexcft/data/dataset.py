"""A torch Dataset of uint8 batches over cache slots, and the one DataLoader factory (batch sampler, device options)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler, SequentialSampler

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
    """Batches dict(image uint8 (B,1,S,S), target (B,C), mask (B,C), index (B,)) read from an ImageCache.

    Indexed by a list of positions (a batch sampler's batch); the pixels stay uint8 until `chexcft.augmentation.
    model_input` converts (and, in training, augments) them on the device.
    """

    def __init__(
        self,
        cache: ImageCache,
        slots: Sequence[int] | np.ndarray,
        targets: np.ndarray | None = None,
        mask: np.ndarray | None = None,
    ) -> None:
        """Wrap `slots` (from `cache.rows_for`; no -1) with optional targets/mask (n, C)."""
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

    def __len__(self) -> int:
        """Number of images."""
        return len(self.slots)

    def __getitem__(self, positions: Sequence[int] | np.ndarray | int) -> dict[str, Any]:
        """A batch (or one item, for an int): uint8 pixels (B, 1, S, S) read in one go, targets, masks, positions."""
        if np.ndim(positions) == 0:
            one = self[[int(positions)]]
            return {key: value[0] for key, value in one.items()}
        index = np.asarray(positions, dtype=np.int64).reshape(-1)
        pixels = self.cache.images(self.slots[index])
        return {
            "image": torch.from_numpy(pixels)[:, None],
            "target": torch.from_numpy(self.targets[index]),
            "mask": torch.from_numpy(self.mask[index]),
            "index": torch.from_numpy(index),
        }


def _seed_worker(worker_id: int, seed: int) -> None:
    """Give each loader worker its own NumPy seed (nothing random runs in workers: augmentation is on the device)."""
    np.random.seed((seed * 1000 + worker_id) % (2**32))


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    settings: DeviceSettings,
    workers: int,
    sampler: Sampler | None = None,
    seed: int = 0,
) -> DataLoader:
    """The DataLoader every job uses: whole uint8 batches from a batch sampler, loader options from DeviceSettings.

    Each worker call reads one batch of slots (one memory-map read, `ImageCache.images`) and returns it
    uncollated; workers are spawned processes (ImageCache reopens its memory map in each). `sampler` gives the
    order of positions (else sequential, or shuffled with a generator seeded by `seed`).
    """
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    if sampler is None:
        sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)  # type: ignore[arg-type]
    batches = BatchSampler(sampler, batch_size=int(batch_size), drop_last=False)
    options = settings.loader_options(workers)
    return DataLoader(
        dataset,
        sampler=batches,
        batch_size=None,
        worker_init_fn=functools.partial(_seed_worker, seed=int(seed)) if options["num_workers"] else None,
        generator=generator,
        **options,
    )
