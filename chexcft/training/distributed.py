"""The trainer's distributed pieces: a per-epoch sampler and DDP unwrapping (process groups: chexcft.distributed)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from chexcft.distributed import DistInfo


class EpochSampler(DistributedSampler):
    """DistributedSampler whose order depends only on (seed, epoch), so a resumed epoch sees the same batches.

    Each rank's share is cut to whole batches (like drop_last) so that batch norm never sees a batch of one.
    `repeats` (one count per item, from chexcft.training.oversample) lets an item appear several times per
    epoch; the order stays seeded.
    """

    def __init__(self, n_items: int, info: DistInfo, seed: int, batch_size: int, repeats: np.ndarray | None = None) -> None:
        self.pool = np.repeat(np.arange(n_items), repeats) if repeats is not None else np.arange(n_items)
        super().__init__(range(len(self.pool)), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)
        self.batch_size = batch_size

    def _share(self) -> list[int]:
        indices = [int(self.pool[i]) for i in super().__iter__()]
        if len(indices) >= self.batch_size:
            indices = indices[: len(indices) - len(indices) % self.batch_size]
        return indices

    def __iter__(self) -> Iterator[int]:
        return iter(self._share())

    def __len__(self) -> int:
        share = self.num_samples
        return share - share % self.batch_size if share >= self.batch_size else share


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
