"""The trainer's step mechanics: gradient accumulation, --compile, and augmentation that loader workers cannot change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chexcft.training import train
from chexcft.training import checkpoint as ckpt
from tests.train_helpers import make_tiny_data, tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A 48/24-image data set with its cache already built (the one test_train.py uses)."""
    return make_tiny_data(tmp_path_factory.mktemp("tiny-steps"))


def _optimizer_steps(run_dir: Path) -> int:
    """Adam's step count in the run's last checkpoint."""
    from chexcft.models import HeadLayout, build_model

    config = json.loads((run_dir / "config.json").read_text())
    model = build_model("tiny", HeadLayout(tuple(config["observations"])), seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    ckpt.load_checkpoint(run_dir, model, optimizer, scheduler, torch.amp.GradScaler("cpu", enabled=False))
    return int(next(iter(optimizer.state.values()))["step"])


def test_accumulation_steps_the_optimiser_once_per_group(tiny, tmp_path: Path) -> None:
    # 48 images, batch 8: 6 micro-batches per epoch; --accumulate 4 -> groups of 4 and 2 -> 2 updates per epoch
    run = train(tiny_config(tiny, tmp_path / "acc", epochs=2, accumulate=4))
    config = json.loads((run / "config.json").read_text())
    assert config["scheduler"]["steps_per_epoch"] == 2 and config["accumulate"] == 4
    assert config["effective_batch_size"] == 32
    assert _optimizer_steps(run) == 4
    plain = train(tiny_config(tiny, tmp_path / "plain", epochs=1))
    assert _optimizer_steps(plain) == 6


def test_bad_accumulate_is_refused(tiny, tmp_path: Path) -> None:
    from chexcft.errors import ChexcftError

    with pytest.raises(ChexcftError, match="--accumulate"):
        tiny_config(tiny, tmp_path / "bad", accumulate=0).validate()


def test_compile_wraps_the_training_model_only(tiny, tmp_path: Path, monkeypatch) -> None:
    compiled: list[torch.nn.Module] = []

    def fake_compile(model: torch.nn.Module) -> torch.nn.Module:
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    run = train(tiny_config(tiny, tmp_path / "compiled", compile=True))
    assert len(compiled) == 1 and json.loads((run / "config.json").read_text())["compile"] is True
    assert (run / "weights" / "best.safetensors").is_file()  # weights saved from the uncompiled module


def test_loader_workers_do_not_change_the_augmented_run(tiny, tmp_path: Path) -> None:
    """Augmentation is drawn on the device from (seed, epoch, step, rank): 0 or 2 workers give the same weights."""
    runs = [train(tiny_config(tiny, tmp_path / f"w{workers}", workers=workers, seed=3)) for workers in (0, 2)]
    config = json.loads((runs[0] / "config.json").read_text())
    assert "kornia" in config["augmentation"]
    a, b = (load_file(str(run / "weights" / "last.safetensors")) for run in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
