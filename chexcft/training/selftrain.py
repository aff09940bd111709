"""U-SelfTrained: train a U-Ignore model in RUN_DIR/selftrain_stage1, predict the uncertain labels, relabel."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from chexcft.device import DeviceSettings
from chexcft.fileio import atomic_path
from chexcft.training import data as tdata
from chexcft.training.config import TrainConfig
from chexcft.distributed import DistInfo, barrier
from chexcft.training.validation import predict_probabilities

PROBABILITIES_FILE = "train_probabilities.safetensors"
SELFTRAIN_DIR = "selftrain_stage1"


def self_train_relabel(
    config: TrainConfig,
    info: DistInfo,
    settings: DeviceSettings,
    cache: Any,
    train: tdata.SplitData,
    observations: Sequence[str],
    policies: dict[str, str],
    raw: np.ndarray,
    train_run: Callable[[TrainConfig], Path],
) -> np.ndarray:
    """Return `raw` (n, C) with the uncertain entries of U-SelfTrained observations replaced by stage-1 probabilities.

    `train_run` trains the first stage (the trainer passes itself, so this module does not import the loop).
    """
    chosen = tuple(obs for obs in observations if policies[obs] == "U-SelfTrained")
    stage_dir = config.run_dir / SELFTRAIN_DIR
    stage = config.replace(
        out=str(stage_dir),
        policy="U-Ignore",
        observations=chosen,
        cache_dir=str(config.resolved_cache_dir.parent),
        resume=True,
    )
    train_run(stage)
    probs_file = stage_dir / PROBABILITIES_FILE
    if info.is_main and not probs_file.is_file():
        probs = _predict_train(stage_dir, settings, cache, train, config.batch_size)
        with atomic_path(probs_file) as tmp:
            save_file({"probabilities": torch.from_numpy(probs)}, str(tmp), metadata={"observations": "\n".join(chosen)})
    barrier(info)
    stage_probs = load_file(str(probs_file))["probabilities"].numpy()
    full = np.zeros_like(raw, dtype=np.float32)
    columns = np.array([obs in chosen for obs in observations])
    full[:, columns] = stage_probs
    from chexcft.labels import relabel_uncertain

    return relabel_uncertain(raw, full, hard=False, columns=columns)


def _predict_train(stage_dir: Any, settings: DeviceSettings, cache: Any, train: tdata.SplitData, batch_size: int) -> np.ndarray:
    """Stage-1 best model's probabilities on every training image (no augmentation)."""
    from chexcft.data.dataset import CachedXrayDataset, make_loader
    from chexcft.runs import load_run

    model = settings.place_model(load_run(stage_dir, which="best", use_cft=False).model)
    dataset = CachedXrayDataset(cache, train.slots)
    loader = make_loader(dataset, batch_size, False, settings, 0)
    return predict_probabilities(model, loader, settings, len(dataset))
