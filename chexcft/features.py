"""Feature export for CFT: frozen penultimate features, the label matrix, the known mask and the binary head.

File (safetensors): features (n, d) float32, labels (n, C) float32 1/0/-1/NaN, known (n, C) uint8 (explicit 1/0),
weight (C, d), bias (C,) = the model's effective binary head; metadata: observations, paths, run, skipped paths.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chexcft.inputs import model_input
from chexcft.device import DeviceSettings, inference_mode, resolve_device
from chexcft.errors import InvalidDatasetError
from chexcft.fileio import atomic_path
from chexcft.models import ChexModel
from chexcft.models.weights import read_safetensors

FORMAT = "chexcft-features"
FORMAT_VERSION = "1"
_TENSORS = ("features", "labels", "known", "weight", "bias")


@dataclass(frozen=True)
class FeatureSet:
    """A feature export read back: arrays aligned by row, head aligned with `observations`."""

    features: np.ndarray  # float32 (n, d)
    labels: np.ndarray  # float32 (n, C): 1, 0, -1, NaN
    known: np.ndarray  # bool (n, C)
    weight: np.ndarray  # float32 (C, d)
    bias: np.ndarray  # float32 (C,)
    observations: tuple[str, ...]
    paths: tuple[str, ...]
    run: str
    skipped: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def logits(self) -> np.ndarray:
        """(n, C) binary logits of the stored head: features @ weight.T + bias."""
        return self.features @ self.weight.T + self.bias


def extract_features(
    model: ChexModel,
    cache: Any,
    slots: Sequence[int] | np.ndarray,
    batch_size: int = 64,
    settings: DeviceSettings | None = None,
) -> np.ndarray:
    """Penultimate features (n, d) float32 of cached images (no augmentation), in eval mode."""
    settings = settings or resolve_device("auto")
    slots = np.asarray(slots, dtype=np.int64).reshape(-1)
    if (slots < 0).any():
        raise InvalidDatasetError(f"{int((slots < 0).sum())} image(s) are missing from the cache (slot -1)")
    from chexcft.data.dataset import CachedXrayDataset, make_loader

    model.eval()
    settings.place_model(model)
    out = np.zeros((len(slots), model.feature_dim), dtype=np.float32)
    loader = make_loader(CachedXrayDataset(cache, slots), batch_size, False, settings, 0)
    with inference_mode(settings):
        for batch in settings.prefetch(loader):
            features = model.features(model_input(batch["image"], settings)).float().cpu().numpy()
            out[batch["index"].cpu().numpy()] = features
    return out


def _label_block(frame: pd.DataFrame, observations: Sequence[str]) -> np.ndarray:
    labels = np.full((len(frame), len(observations)), np.nan, dtype=np.float32)
    for col, name in enumerate(observations):
        if name in frame.columns:
            labels[:, col] = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float32)
    return labels


def _frame_paths(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(paths to look up in the cache, paths to record) for each row."""
    lookup_col = "abs_path" if "abs_path" in frame.columns else "Path"
    if lookup_col not in frame.columns:
        raise InvalidDatasetError("the table has neither an 'abs_path' nor a 'Path' column")
    record_col = "Path" if "Path" in frame.columns else lookup_col
    return frame[lookup_col].astype(str).tolist(), frame[record_col].astype(str).tolist()


def export_features(
    run_dir: str | os.PathLike[str],
    frame: pd.DataFrame,
    cache: Any,
    out_path: str | os.PathLike[str],
    *,
    which: str = "best",
    batch_size: int = 64,
    settings: DeviceSettings | None = None,
) -> Path:
    """Write the run's features for the frame's images (uncached/failed images are skipped and listed) to out_path."""
    from safetensors.torch import save_file

    from chexcft.runs import load_run

    settings = settings or resolve_device("auto")
    run = load_run(run_dir, which=which, use_cft=False, settings=settings)
    model = run.model
    observations = model.layout.observations
    lookup, recorded = _frame_paths(frame)
    slots = np.asarray(cache.rows_for(lookup), dtype=np.int64)
    keep = slots >= 0
    features = extract_features(model, cache, slots[keep], batch_size, settings)
    labels = _label_block(frame, observations)[keep]
    known = ((labels == 1) | (labels == 0)).astype(np.uint8)
    weight, bias = model.effective_binary_head()
    tensors = {
        "features": torch.from_numpy(features),
        "labels": torch.from_numpy(np.ascontiguousarray(labels)),
        "known": torch.from_numpy(np.ascontiguousarray(known)),
        "weight": weight.float().cpu().contiguous(),
        "bias": bias.float().cpu().contiguous(),
    }
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "observations": json.dumps(list(observations)),
        "multiclass": json.dumps(list(model.layout.multiclass)),
        "paths": json.dumps([p for p, k in zip(recorded, keep) if k]),
        "skipped": json.dumps([p for p, k in zip(recorded, keep) if not k]),
        "run": str(Path(run_dir).resolve()),
        "which": which,
        "arch": model.arch,
        "feature_dim": str(model.feature_dim),
        "image_size": str(getattr(cache, "size", "")),
    }
    with atomic_path(out_path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(out_path)


def load_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read a feature export; InvalidDatasetError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise InvalidDatasetError(f"{path}: feature file not found")
    tensors, metadata = read_safetensors(path)
    missing = [name for name in _TENSORS if name not in tensors]
    if metadata.get("format") != FORMAT or missing:
        raise InvalidDatasetError(f"{path}: not a chexcft feature export (missing {missing or 'format tag'})")
    try:
        observations = tuple(json.loads(metadata["observations"]))
        paths = tuple(json.loads(metadata.get("paths", "[]")))
        skipped = tuple(json.loads(metadata.get("skipped", "[]")))
    except (KeyError, json.JSONDecodeError) as exc:
        raise InvalidDatasetError(f"{path}: unreadable metadata ({exc})") from None
    arrays = {name: tensors[name].numpy() for name in _TENSORS}
    n, d = arrays["features"].shape
    n_obs = len(observations)
    shapes_ok = (
        arrays["labels"].shape == (n, n_obs)
        and arrays["known"].shape == (n, n_obs)
        and arrays["weight"].shape == (n_obs, d)
        and arrays["bias"].shape == (n_obs,)
        and len(paths) == n
    )
    if not shapes_ok:
        raise InvalidDatasetError(f"{path}: array shapes do not agree with each other or with its metadata")
    return FeatureSet(
        features=arrays["features"].astype(np.float32, copy=False),
        labels=arrays["labels"].astype(np.float32, copy=False),
        known=arrays["known"].astype(bool),
        weight=arrays["weight"].astype(np.float32, copy=False),
        bias=arrays["bias"].astype(np.float32, copy=False),
        observations=observations,
        paths=paths,
        run=metadata.get("run", ""),
        skipped=skipped,
        metadata=dict(metadata),
    )
