"""Distributed data parallel plumbing: process group set-up under torchrun, and a per-epoch sampler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (world_size 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set WORLD_SIZE > 1 for this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when under torchrun (NCCL on GPU, gloo on CPU); otherwise a single-process DistInfo."""
    if not launched_by_torchrun():
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def local_rank_from_env() -> int | None:
    """LOCAL_RANK set by torchrun, or None."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value is not None else None


def barrier(info: DistInfo) -> None:
    """Wait for every process (no-op in a single process)."""
    if info.distributed:
        dist.barrier()


def broadcast_object(info: DistInfo, value: object) -> object:
    """Rank 0's value on every process."""
    if not info.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def shutdown_process_group() -> None:
    """Leave the process group, if one was joined (call once, when the command is done)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class EpochSampler(DistributedSampler):
    """DistributedSampler whose order depends only on (seed, epoch); yields (epoch, index) pairs.

    Tagging each index with its epoch lets the dataset (also inside persistent loader workers)
    reseed its augmentation from (seed, epoch, worker), so a resumed run sees exactly the images
    and augmentations of an uninterrupted one. Each rank's share is cut to whole batches (like
    drop_last) so that batch norm never sees a batch of one.
    """

    def __init__(self, n_items: int, info: DistInfo, seed: int, batch_size: int) -> None:
        super().__init__(range(n_items), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed)
        self.batch_size = batch_size

    def _share(self) -> list[int]:
        indices = list(super().__iter__())
        if len(indices) >= self.batch_size:
            indices = indices[: len(indices) - len(indices) % self.batch_size]
        return indices

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch = self.epoch
        return iter([(epoch, index) for index in self._share()])

    def __len__(self) -> int:
        share = self.num_samples
        return share - share % self.batch_size if share >= self.batch_size else share


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
