"""All device logic in one place: choosing the device, mixed precision, pinned memory, copies."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from chexcft.errors import ChexcftError


@dataclass(frozen=True)
class DeviceSettings:
    """How tensors move and compute on one device."""

    device: torch.device
    mixed_precision: bool
    pin_memory: bool
    non_blocking: bool

    @property
    def is_cuda(self) -> bool:
        """True when computing on a CUDA device."""
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Return the autocast context: float16 autocast on CUDA with mixed precision, else a no-op."""
        if self.mixed_precision and self.is_cuda:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Return a gradient scaler that is active only under CUDA mixed precision."""
        return torch.amp.GradScaler("cuda", enabled=self.mixed_precision and self.is_cuda)

    def to(self, obj: Any) -> Any:
        """Move a tensor (or a dict/list/tuple of tensors) to the device, non-blocking where it helps."""
        if isinstance(obj, torch.Tensor):
            return obj.to(self.device, non_blocking=self.non_blocking)
        if isinstance(obj, dict):
            return {key: self.to(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.to(value) for value in obj)
        return obj


def resolve_device(preference: str = "auto", *, mixed_precision: bool = True, local_rank: int | None = None) -> DeviceSettings:
    """Pick the device: "auto" takes CUDA when present, else CPU; "cuda[:N]" fails clearly without CUDA."""
    preference = (preference or "auto").lower()
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ChexcftError(f"device {preference!r} was requested but CUDA is not available on this machine")
        if preference == "cuda":
            rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", "0"))
            device = torch.device("cuda", rank)
        else:
            device = torch.device(preference)
        torch.cuda.set_device(device)
        return DeviceSettings(device=device, mixed_precision=mixed_precision, pin_memory=True, non_blocking=True)
    if preference != "cpu":
        raise ChexcftError(f"unknown device {preference!r}; use auto, cpu, cuda or cuda:N")
    return DeviceSettings(device=torch.device("cpu"), mixed_precision=False, pin_memory=False, non_blocking=False)


@contextlib.contextmanager
def inference_mode(settings: DeviceSettings) -> Iterator[None]:
    """Context for prediction: no autograd, autocast where enabled."""
    with torch.inference_mode(), settings.autocast():
        yield


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for a reproducible run."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def data_device(*values: Any) -> torch.device:
    """The device that already holds the data: the first non-CPU tensor's device among `values`, else the CPU."""
    for value in values:
        if isinstance(value, torch.Tensor) and value.device.type != "cpu":
            return value.device
    return torch.device("cpu")


def compute_device(preference: str | None, *values: Any) -> torch.device:
    """Where to compute on `values`: None computes where they are (NumPy and CPU tensors: the CPU), else resolve_device."""
    if preference is None:
        return data_device(*values)
    return resolve_device(preference, mixed_precision=False).device
