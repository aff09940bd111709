"""The trainer: `TrainConfig` and `train(config) -> run directory`, in small modules.

config (settings), data (tables, targets, cache), loss (masked BCE/CE and the masked AUC-margin loss),
large_loss (Large Loss Matters: LL-R, LL-Ct, LL-Cp and their state), optim (optimiser and schedule per loss),
validation, checkpoint, distributed (sampler), selftrain (U-SelfTrained's first stage), loop (one run).

Single process: `chexcft train ...`; multi-GPU or multi-process CPU: `torchrun --nproc_per_node=K -m chexcft train ...`
(DDP, NCCL on GPUs, gloo on CPU; only rank 0 writes). `--resume` continues an interrupted run from its last
end-of-epoch checkpoint; on CPU the result equals an uninterrupted run bit for bit.
"""

from __future__ import annotations

from typing import Any

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

_HOMES = {
    "TrainConfig": "chexcft.training.config",
    "shutdown_process_group": "chexcft.distributed",
    "CONFIG_FILE": "chexcft.training.loop",
    "METRICS_FILE": "chexcft.training.loop",
    "PREDICTIONS_FILE": "chexcft.training.loop",
    "SCHEDULE": "chexcft.training.loop",
    "is_finished": "chexcft.training.loop",
    "train": "chexcft.training.loop",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing one light submodule (config, large_loss) does not load the whole trainer.
    if name not in _HOMES:
        raise AttributeError(f"module 'chexcft.training' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_HOMES[name]), name)
