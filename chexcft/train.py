"""Training entry points: `TrainConfig` and `train(config) -> run directory` (see chexcft.training for the parts).

Single process: `chexcft train ...`; multi-GPU or multi-process CPU: `torchrun --nproc_per_node=K -m chexcft train ...`
(DDP, NCCL on GPUs, gloo on CPU; only rank 0 writes). `--resume` continues an interrupted run from its last
end-of-epoch checkpoint; on CPU the result equals an uninterrupted run bit for bit.
"""

from __future__ import annotations

from chexcft.training.config import TrainConfig
from chexcft.distributed import shutdown_process_group
from chexcft.training.loop import CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE, SCHEDULE, is_finished, train

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "PREDICTIONS_FILE",
    "SCHEDULE",
    "TrainConfig",
    "is_finished",
    "shutdown_process_group",
    "train",
]
