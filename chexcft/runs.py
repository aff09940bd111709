"""Run directories: config.json, safetensors weights, the optional CFT head and calibration; loading a run back.

Layout of RUN_DIR: config.json, weights/{best,last}.safetensors, checkpoint/, metrics.csv, valid_predictions.csv,
cft/head.safetensors (weight (C, d), bias (C,)), cft/calibration.json ({"method": "platt", "observations": [...],
"a": [...], "b": [...]}, p = sigmoid(a * logit + b)).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from chexcft.device import DeviceSettings, inference_mode, resolve_device
from chexcft.errors import InvalidRunError, InvalidWeightsError
from chexcft.fileio import atomic_path, atomic_write_json, file_sha256, read_json, read_json_object
from chexcft.inputs import model_input
from chexcft.models import ChexModel, HeadLayout, build_model
from chexcft.models.weights import METADATA_KEY, model_spec_from_metadata, read_safetensors
from chexcft.provenance import environment_info

CONFIG_FILE = "config.json"
WEIGHTS_DIR = "weights"
CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.csv"
PREDICTIONS_FILE = "valid_predictions.csv"
CFT_DIR = "cft"
CFT_HEAD_FILE = "head.safetensors"
CALIBRATION_FILE = "calibration.json"
WHICH: tuple[str, ...] = ("best", "last")

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RunPaths:
    """Where each part of a run directory lives."""

    root: Path

    @property
    def config(self) -> Path:
        """config.json."""
        return self.root / CONFIG_FILE

    def weights(self, which: str = "best") -> Path:
        """weights/<which>.safetensors."""
        return self.root / WEIGHTS_DIR / f"{which}.safetensors"

    @property
    def checkpoint(self) -> Path:
        """checkpoint/ (resume state)."""
        return self.root / CHECKPOINT_DIR

    @property
    def metrics(self) -> Path:
        """metrics.csv."""
        return self.root / METRICS_FILE

    @property
    def valid_predictions(self) -> Path:
        """valid_predictions.csv."""
        return self.root / PREDICTIONS_FILE

    @property
    def cft_head(self) -> Path:
        """cft/head.safetensors."""
        return self.root / CFT_DIR / CFT_HEAD_FILE

    @property
    def calibration(self) -> Path:
        """cft/calibration.json."""
        return self.root / CFT_DIR / CALIBRATION_FILE


def run_paths(run_dir: PathLike) -> RunPaths:
    """The file layout of a run directory."""
    return RunPaths(Path(run_dir))


def write_config(run_dir: PathLike, config: Mapping[str, Any], *, train_csv: PathLike | None = None) -> Path:
    """Write RUN_DIR/config.json atomically: the settings plus environment_info() and the train CSV's sha256."""
    payload = dict(config)
    payload.setdefault("environment", environment_info())
    if train_csv is not None:
        payload["train_csv_sha256"] = file_sha256(train_csv)
    return atomic_write_json(run_paths(run_dir).config, payload)


def read_config(run_dir: PathLike) -> dict[str, Any]:
    """RUN_DIR/config.json as a dict; InvalidRunError when missing or not JSON."""
    path = run_paths(run_dir).config
    return read_json_object(path, f"{path}: missing; {Path(run_dir)} is not a complete run directory")


def _unwrap(model: Any) -> ChexModel:
    while not isinstance(model, ChexModel) and isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module  # DistributedDataParallel and friends
    if not isinstance(model, ChexModel):
        raise TypeError(f"expected a ChexModel, got {type(model).__name__}")
    return model


def save_weights(model: torch.nn.Module, path: PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Save the backbone and trained head (no CFT override) as safetensors, the model spec in its metadata."""
    from safetensors.torch import save_file

    chex = _unwrap(model)
    meta = {METADATA_KEY: json.dumps(chex.spec()), "format": "pt"}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(chex.base_state_dict(), str(tmp), metadata=meta)
    return Path(path)


def load_weights(path: PathLike) -> dict[str, torch.Tensor]:
    """Load a safetensors state dict (never unpickles); InvalidWeightsError for a corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidRunError(f"{path}: weights file missing")
    return read_safetensors(path)[0]


def load_weights_spec(path: PathLike) -> dict[str, Any] | None:
    """The model spec stored in a weights file's metadata (None when absent)."""
    path = Path(path)
    return model_spec_from_metadata(read_safetensors(path)[1], path)


@dataclass(frozen=True)
class Calibration:
    """Per-observation Platt scaling, p = sigmoid(a * logit + b), applied by observation name.

    The same calibration.json that chexcft.calibration.PlattCalibration fits and writes; this frozen
    form maps columns by name, so a calibration of some observations fits any model that has them.
    """

    observations: tuple[str, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]
    method: str = "platt"

    def __post_init__(self) -> None:
        if self.method != "platt":
            raise ValueError(f"unsupported calibration method {self.method!r} (only platt)")
        if not (len(self.observations) == len(self.a) == len(self.b)):
            raise ValueError("calibration needs one a and one b per observation")
        if not all(math.isfinite(v) for v in (*self.a, *self.b)):
            raise ValueError("calibration parameters must be finite numbers")

    def apply(self, logits: np.ndarray, observations: Sequence[str]) -> np.ndarray:
        """(N, C) logits in `observations` order -> probabilities (uncalibrated columns: plain sigmoid)."""
        logits = np.asarray(logits, dtype=np.float64)
        scaled = logits.copy()
        for name, a, b in zip(self.observations, self.a, self.b):
            if name in observations:
                col = list(observations).index(name)
                scaled[:, col] = a * logits[:, col] + b
        return (1.0 / (1.0 + np.exp(-scaled))).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The calibration.json form."""
        return {"method": self.method, "observations": list(self.observations), "a": list(self.a), "b": list(self.b)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Parse the calibration.json form."""
        return cls(
            tuple(str(o) for o in data["observations"]),
            tuple(float(v) for v in data["a"]),
            tuple(float(v) for v in data["b"]),
            str(data.get("method", "platt")),
        )


def read_calibration(path: PathLike) -> Calibration:
    """Read cft/calibration.json (parsed by chexcft.calibration); InvalidRunError naming the file when malformed."""
    from chexcft.calibration import PlattCalibration

    platt = PlattCalibration.load(path)
    try:
        return Calibration.from_dict(platt.to_dict())
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidRunError(f"{path}: invalid calibration file ({exc})") from None


def write_calibration(path: PathLike, calibration: Any) -> Path:
    """Write cft/calibration.json atomically from a Calibration or a chexcft.calibration.PlattCalibration."""
    return atomic_write_json(path, Calibration.from_dict(calibration.to_dict()).to_dict())


def write_cft_head(
    run_dir: PathLike, weight: np.ndarray | torch.Tensor, bias: np.ndarray | torch.Tensor, *, target: PathLike | None = None
) -> Path:
    """Write cft/head.safetensors (weight (C, d), bias (C,) float32) atomically (or to `target`)."""
    from safetensors.torch import save_file

    tensors = {
        "weight": torch.as_tensor(np.asarray(weight, dtype=np.float32)).contiguous(),
        "bias": torch.as_tensor(np.asarray(bias, dtype=np.float32)).contiguous(),
    }
    target = Path(target) if target is not None else run_paths(run_dir).cft_head
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp))
    return target


def _model_spec(paths: RunPaths, weights: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    spec = model_spec_from_metadata(read_safetensors(weights)[1], weights)
    if spec is None and isinstance(config.get("model"), Mapping):
        spec = dict(config["model"])
    if spec is None:
        raise InvalidRunError(f"{paths.root}: neither {weights.name} nor config.json describes the model (arch, layout)")
    return spec


def _load_cft_head(model: ChexModel, path: Path) -> None:
    tensors = load_weights(path)
    if set(tensors) != {"weight", "bias"}:
        raise InvalidRunError(f"{path}: expected exactly the tensors weight and bias, found {sorted(tensors)}")
    try:
        model.set_binary_head(tensors["weight"].float(), tensors["bias"].float())
    except ValueError as exc:
        raise InvalidRunError(f"{path}: {exc}") from None


@dataclass
class LoadedRun:
    """A run's model ready for prediction, with its config and optional calibration."""

    model: ChexModel
    config: dict[str, Any]
    calibration: Calibration | None
    path: Path
    settings: DeviceSettings | None = None

    @property
    def observations(self) -> tuple[str, ...]:
        """Observation names of predict_proba's columns."""
        return self.model.layout.observations

    @property
    def image_size(self) -> int | None:
        """The image size the run was trained at (None if config.json doesn't say)."""
        value = self.config.get("image_size") or (self.config.get("settings") or {}).get("image_size")
        return int(value) if value else None

    @property
    def has_cft(self) -> bool:
        """True when a CFT head overrides the trained head's binary logits."""
        return self.model.binary_override is not None

    def _settings(self) -> DeviceSettings:
        if self.settings is None:
            self.settings = resolve_device("auto")
            self.settings.place_model(self.model)
        return self.settings

    def _logits(self, images: torch.Tensor | np.ndarray, use_override: bool, batch_size: int) -> np.ndarray:
        settings = self._settings()
        x = torch.as_tensor(images)
        self.model.eval()
        out = []
        with inference_mode(settings):
            for start in range(0, x.shape[0], batch_size):
                batch = model_input(x[start : start + batch_size], settings)  # uint8 cache images: scaled to [0, 1]
                out.append(self.model.predict_logits(batch, use_override=use_override).float().cpu().numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, len(self.observations)), np.float32)

    def predict_logits(self, images: torch.Tensor | np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, C) binary logits with the CFT head when present (before calibration)."""
        return self._logits(images, True, batch_size)

    def predict_proba(self, images: torch.Tensor | np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, C) probabilities for images (N, 1, H, W) float in [0, 1] (or uint8): CFT head + calibration when present."""
        logits = self._logits(images, True, batch_size)
        if self.calibration is not None:
            return self.calibration.apply(logits, self.observations)
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)

    def raw_proba(self, images: torch.Tensor | np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(N, C) probabilities of the trained head: no CFT head, no calibration."""
        logits = self._logits(images, False, batch_size)
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)


def load_run(
    run_dir: PathLike, which: str = "best", use_cft: bool = True, *, settings: DeviceSettings | None = None
) -> LoadedRun:
    """Rebuild a run's model from its config and weights (no pretrained file needed), plus its CFT head/calibration."""
    paths = run_paths(run_dir)
    if not paths.root.is_dir():
        raise InvalidRunError(f"{paths.root}: run directory does not exist")
    if which not in WHICH:
        raise InvalidRunError(f"unknown weights {which!r}; expected one of {', '.join(WHICH)}")
    config = read_config(paths.root)
    pointer = paths.checkpoint / "latest.json"
    if pointer.is_file():
        try:
            finished = bool(read_json(pointer).get("finished"))
        except (OSError, ValueError, AttributeError):
            finished = False
        if not finished:
            raise InvalidRunError(
                f"{paths.root}: the run is unfinished (interrupted or still training); finish it with "
                "`chexcft train ... --resume` before using its weights"
            )
    weights = paths.weights(which)
    if not weights.is_file():
        raise InvalidRunError(f"{weights}: missing (is the run finished? try which='last')")
    spec = _model_spec(paths, weights, config)
    try:
        layout = HeadLayout.from_dict(spec["layout"])
        model = build_model(spec["arch"], layout, init="random", normalization=spec["normalization"])
        model.init = str(spec.get("init", "random"))  # provenance only: the weights come from the run
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidRunError(f"{paths.root}: model description is invalid ({exc})") from None
    state = load_weights(weights)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shapes = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or bad_shapes:
        raise InvalidWeightsError(
            f"{weights}: does not fit the model it describes (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shapes {bad_shapes[:3]})"
        )
    model.load_state_dict(state, strict=True)
    calibration = None
    if use_cft:
        if paths.cft_head.is_file():
            _load_cft_head(model, paths.cft_head)
        if paths.calibration.is_file():
            calibration = read_calibration(paths.calibration)
            unknown = [o for o in calibration.observations if o not in layout.observations]
            if unknown:
                raise InvalidRunError(f"{paths.calibration}: calibrates observations the model lacks: {unknown}")
    model.eval()
    if settings is not None:
        settings.place_model(model)
    return LoadedRun(model=model, config=config, calibration=calibration, path=paths.root, settings=settings)
