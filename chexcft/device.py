"""All device logic in one place: the device, mixed precision, memory format, compilation, loader options, copies."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from chexcft.errors import ChexcftError


@dataclass(frozen=True)
class DeviceSettings:
    """How tensors move and compute on one device: every device decision of the package is made here."""

    device: torch.device
    mixed_precision: bool
    pin_memory: bool
    non_blocking: bool
    amp_dtype: torch.dtype | None = None  # autocast dtype: bfloat16 or float16 on CUDA with mixed precision
    channels_last: bool = False

    @property
    def is_cuda(self) -> bool:
        """True when computing on a CUDA device."""
        return self.device.type == "cuda"

    @property
    def uses_grad_scaler(self) -> bool:
        """True when the loss must be scaled: float16 autocast (bfloat16 has float32's range and needs none)."""
        return self.amp_dtype == torch.float16

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Return the autocast context: bfloat16/float16 autocast on CUDA with mixed precision, else a no-op."""
        if self.amp_dtype is not None:
            return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)
        return contextlib.nullcontext()

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Return a gradient scaler that is active only under float16 autocast."""
        return torch.amp.GradScaler(self.device.type, enabled=self.uses_grad_scaler)

    def to(self, obj: Any) -> Any:
        """Move a tensor (or a dict/list/tuple of tensors) to the device, non-blocking where it helps."""
        if isinstance(obj, torch.Tensor):
            return obj.to(self.device, non_blocking=self.non_blocking)
        if isinstance(obj, dict):
            return {key: self.to(value) for key, value in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.to(value) for value in obj)
        return obj

    def layout(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in the device's memory format (channels_last on CUDA)."""
        if self.channels_last and images.ndim == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def place_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move a model to the device, in its memory format."""
        if self.channels_last:
            return model.to(self.device, memory_format=torch.channels_last)
        return model.to(self.device)

    def compile(self, model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
        """torch.compile the model when asked (parameters are shared: save the uncompiled module)."""
        return torch.compile(model) if enabled else model

    def loader_options(self, workers: int) -> dict[str, Any]:
        """DataLoader keywords: pinned memory on CUDA; persistent, spawned, prefetching workers when there are any."""
        workers = max(0, int(workers))
        options: dict[str, Any] = {"num_workers": workers, "pin_memory": self.pin_memory}
        if workers:
            options.update(
                persistent_workers=True,
                prefetch_factor=4 if self.is_cuda else 2,
                # Spawned, not forked: a fork would inherit OpenMP's thread pools mid-use and can hang.
                multiprocessing_context="spawn",
            )
        return options

    def prefetch(self, batches: Iterable[Any]) -> Iterator[Any]:
        """Yield the batches on the device; on CUDA the next batch is copied on a side stream during this one's step."""
        if not self.is_cuda:
            yield from batches
            return
        stream = torch.cuda.Stream(self.device)
        current = torch.cuda.current_stream(self.device)
        pending: Any = None
        for batch in batches:
            with torch.cuda.stream(stream):
                moved = self.to(batch)
            if pending is not None:
                yield pending
            current.wait_stream(stream)
            _record_stream(moved, current)
            pending = moved
        if pending is not None:
            yield pending


def _record_stream(obj: Any, stream: Any) -> None:
    """Tell the caching allocator that tensors made on a side stream are used on `stream`."""
    if isinstance(obj, torch.Tensor):
        if obj.is_cuda:
            obj.record_stream(stream)
    elif isinstance(obj, dict):
        for value in obj.values():
            _record_stream(value, stream)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _record_stream(value, stream)


def amp_dtype_for(device: torch.device, mixed_precision: bool) -> torch.dtype | None:
    """The autocast dtype: bfloat16 on CUDA devices that support it, float16 on older ones, None off CUDA."""
    if not mixed_precision or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


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
        amp = amp_dtype_for(device, mixed_precision)
        return DeviceSettings(device=device, mixed_precision=amp is not None, pin_memory=True, non_blocking=True,
                              amp_dtype=amp, channels_last=True)
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
