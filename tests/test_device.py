"""chexcft.device decisions: CPU as it is, CUDA decisions with torch.cuda mocked (no GPU here)."""

from __future__ import annotations

import pytest
import torch

from chexcft import device as dev
from chexcft.errors import ChexcftError


def test_cpu_settings_change_nothing() -> None:
    settings = dev.resolve_device("cpu")
    assert settings.device == torch.device("cpu") and not settings.is_cuda
    assert settings.amp_dtype is None and not settings.uses_grad_scaler and not settings.channels_last
    assert not settings.grad_scaler().is_enabled()
    x = torch.rand(2, 1, 8, 8)
    assert settings.layout(x) is x and settings.to(x) is x
    assert settings.loader_options(0) == {"num_workers": 0, "pin_memory": False}
    options = settings.loader_options(2)
    assert options["persistent_workers"] and options["prefetch_factor"] == 2 and options["multiprocessing_context"] == "spawn"
    batches = [{"image": x}]
    assert list(settings.prefetch(batches)) == batches
    model = torch.nn.Linear(2, 2)
    assert settings.compile(model, False) is model
    with settings.autocast():
        assert not torch.is_autocast_enabled()


def _fake_cuda(monkeypatch: pytest.MonkeyPatch, bf16: bool) -> list[torch.device]:
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(torch.device(d)))
    return chosen


@pytest.mark.parametrize(("bf16", "dtype"), [(True, torch.bfloat16), (False, torch.float16)])
def test_cuda_takes_bf16_where_supported_else_fp16_with_a_scaler(monkeypatch, bf16: bool, dtype: torch.dtype) -> None:
    chosen = _fake_cuda(monkeypatch, bf16)
    settings = dev.resolve_device("auto", local_rank=1)
    assert settings.device == torch.device("cuda", 1) and chosen == [torch.device("cuda", 1)]
    assert settings.amp_dtype == dtype and settings.mixed_precision
    assert settings.uses_grad_scaler == (dtype == torch.float16)
    assert settings.channels_last and settings.pin_memory and settings.non_blocking
    options = settings.loader_options(4)
    assert options["pin_memory"] and options["persistent_workers"] and options["prefetch_factor"] == 4
    x = torch.rand(2, 3, 8, 8)
    assert settings.layout(x).is_contiguous(memory_format=torch.channels_last)


def test_cuda_without_mixed_precision_and_explicit_index(monkeypatch) -> None:
    _fake_cuda(monkeypatch, True)
    settings = dev.resolve_device("cuda:3", mixed_precision=False)
    assert settings.device == torch.device("cuda", 3)
    assert settings.amp_dtype is None and not settings.mixed_precision and not settings.uses_grad_scaler
    assert settings.channels_last


def test_compile_is_torch_compile_when_asked(monkeypatch) -> None:
    calls: list[torch.nn.Module] = []
    monkeypatch.setattr(torch, "compile", lambda model: calls.append(model) or "compiled")
    model = torch.nn.Linear(2, 2)
    assert dev.resolve_device("cpu").compile(model, True) == "compiled" and calls == [model]


def test_bad_requests_fail_clearly(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ChexcftError, match="CUDA is not available"):
        dev.resolve_device("cuda")
    with pytest.raises(ChexcftError, match="unknown device"):
        dev.resolve_device("tpu")
    assert dev.resolve_device("auto").device.type == "cpu"
