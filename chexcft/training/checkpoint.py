"""Resume state without pickle: tensors in safetensors, everything else in JSON, committed by a pointer file.

Layout under RUN_DIR/checkpoint/:
  epoch-NNNN/state.safetensors   model.*, optim.<param id>.<name>, optim-extra.<key>.<i>, extra.<name>,
                                 rng.torch, rng.cuda.<i>
  epoch-NNNN/state.json          epoch, best score, optimizer param groups and scalar state, scheduler,
                                 grad scaler, python and numpy RNG states
  latest.json                    {"epoch": N, "dir": "epoch-NNNN", "finished": bool}: written last, atomically,
                                 so a kill at any moment leaves either the previous or the new checkpoint.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from chexcft.errors import InvalidRunError
from chexcft.fileio import atomic_path, atomic_write_json, read_json

CHECKPOINT_DIR = "checkpoint"
POINTER = "latest.json"
FORMAT_VERSION = 1


@dataclass
class TrainState:
    """What a resumed run needs beyond the model: progress, best score so far, optimizer/scheduler/scaler, RNGs."""

    epoch: int  # epochs completed
    best_score: float | None = None
    best_epoch: int | None = None
    finished: bool = False
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # the loss's and Large Loss's own state


def capture_rng() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Python and NumPy RNG states as JSON values, torch (CPU and CUDA) states as tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    json_part = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    return json_part, tensors


def restore_rng(json_part: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Put back the RNG states captured by capture_rng."""
    version, internal, gauss = json_part["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = json_part["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[key] for key in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)


def _is_tensors(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (
        isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, torch.Tensor) for v in value)
    )


def _split_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state_dict["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    # PESG keeps references to its loss's tensors in its groups (restored by its own load_state_dict) and lists of
    # reference tensors at the top level: the former are dropped, the latter stored as optim-extra.<key>.<i>.
    groups = [{k: v for k, v in group.items() if not _is_tensors(v)} for group in state_dict["param_groups"]]
    extra: dict[str, Any] = {}
    for key, value in state_dict.items():
        if key in ("state", "param_groups"):
            continue
        if _is_tensors(value):
            for index, tensor in enumerate(value):
                tensors[f"optim-extra.{key}.{index}"] = tensor
            extra[key] = {"tensors": len(value)}
        else:
            extra[key] = {"value": value}
    return {"param_groups": groups, "scalars": scalars, "extra": extra}, tensors


def _join_optimizer(json_part: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in json_part.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    groups = [dict(group) for group in json_part["param_groups"]]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    joined: dict[str, Any] = {"state": dict(sorted(state.items())), "param_groups": groups}
    for key, entry in json_part.get("extra", {}).items():
        if "tensors" in entry:
            joined[key] = [tensors[f"optim-extra.{key}.{i}"] for i in range(int(entry["tensors"]))]
        else:
            joined[key] = entry["value"]
    return joined


def save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    state: TrainState,
) -> Path:
    """Write the resume state for `state.epoch` (with `state.extra` tensors) and make it the latest; older ones go."""
    base = Path(run_dir) / CHECKPOINT_DIR
    folder = base / f"epoch-{state.epoch:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    optim_json, optim_tensors = _split_optimizer(optimizer.state_dict())
    rng_json, rng_tensors = capture_rng()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optim_tensors)
    tensors.update({f"extra.{k}": v for k, v in state.extra.items()})
    tensors.update(rng_tensors)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(folder / "state.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "chexcft-train-state", "version": str(FORMAT_VERSION)})
    payload = {
        "format_version": FORMAT_VERSION,
        "epoch": state.epoch,
        "best_score": state.best_score,
        "best_epoch": state.best_epoch,
        "finished": state.finished,
        "optimizer": optim_json,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_json,
    }
    atomic_write_json(folder / "state.json", payload)
    atomic_write_json(base / POINTER, {"epoch": state.epoch, "dir": folder.name, "finished": state.finished})
    for old in base.glob("epoch-*"):
        if old.is_dir() and old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def latest_pointer(run_dir: Path) -> dict[str, Any] | None:
    """The committed checkpoint pointer of a run, or None when it has none."""
    pointer = Path(run_dir) / CHECKPOINT_DIR / POINTER
    return read_json(pointer) if pointer.is_file() else None


def load_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
) -> TrainState:
    """Load the latest checkpoint into model/optimizer/scheduler/scaler, restore RNGs, and return the progress."""
    pointer = latest_pointer(run_dir)
    if pointer is None:
        raise InvalidRunError(f"{run_dir}: no checkpoint/{POINTER}, nothing to resume from")
    folder = Path(run_dir) / CHECKPOINT_DIR / pointer["dir"]
    try:
        tensors = load_file(str(folder / "state.safetensors"))
        payload = read_json(folder / "state.json")
    except (OSError, ValueError) as exc:
        raise InvalidRunError(f"{folder}: checkpoint unreadable ({exc})") from exc
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=True)
    optimizer.load_state_dict(_join_optimizer(payload["optimizer"], tensors))
    scheduler.load_state_dict(payload["scheduler"])
    if payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])
    restore_rng(payload["rng"], tensors)
    return TrainState(
        epoch=int(payload["epoch"]),
        best_score=payload.get("best_score"),
        best_epoch=payload.get("best_epoch"),
        finished=bool(payload.get("finished")),
        extra={k[len("extra.") :]: v for k, v in tensors.items() if k.startswith("extra.")},
    )
