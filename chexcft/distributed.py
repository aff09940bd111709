"""Process-group plumbing shared by training and prediction: joining under torchrun, rank info, barriers."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch.distributed as dist


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


def shutdown_process_group() -> None:
    """Leave the process group, if one was joined (call once, when the command is done)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
