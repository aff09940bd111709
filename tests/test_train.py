"""The trainer: loss goes down, run directory contents, checkpoints, resume after SIGKILL, torchrun, CLI rules."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from chexcft.errors import InvalidRunError
from chexcft.runs import load_run
from chexcft.training import TrainConfig, train
from chexcft.training import checkpoint as ckpt
from tests.train_helpers import IMAGE_SIZE, finish, make_tiny_data, run_cli, start_cli, tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A 48/24-image data set with its cache already built."""
    return make_tiny_data(tmp_path_factory.mktemp("tiny"))


def _config(tiny, out: Path, **changes) -> TrainConfig:
    return tiny_config(tiny, out, **changes)


@pytest.fixture(scope="module")
def finished_run(tiny, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-epoch run with a high learning rate and no augmentation (so the training loss must fall)."""
    out = tmp_path_factory.mktemp("runs") / "run"
    return train(_config(tiny, out, epochs=4, lr=3e-3, augment=False))


def test_a_few_epochs_lower_the_training_loss(finished_run: Path) -> None:
    metrics = pd.read_csv(finished_run / "metrics.csv")
    assert list(metrics["epoch"]) == [1, 2, 3, 4]
    assert metrics["train_loss"].iloc[-1] < metrics["train_loss"].iloc[0]


def test_run_directory_is_complete(finished_run: Path, tiny) -> None:
    config = json.loads((finished_run / "config.json").read_text())
    for key in ("settings", "observations", "policies", "model", "environment", "train_csv_sha256", "image_size"):
        assert key in config
    assert config["settings"]["epochs"] == 4 and config["image_size"] == IMAGE_SIZE
    from chexcft.fileio import file_sha256

    assert config["train_csv_sha256"] == file_sha256(tiny.train_csv)
    # Default observations: exactly those with a known positive (1) and a known negative (0) in the training CSV.
    raw = pd.read_csv(tiny.train_csv)
    from chexcft.schema import OBSERVATIONS

    assert config["observations"] == [o for o in OBSERVATIONS if (raw[o] == 1).any() and (raw[o] == 0).any()]
    assert (finished_run / "weights" / "best.safetensors").is_file()
    assert (finished_run / "weights" / "last.safetensors").is_file()
    preds = pd.read_csv(finished_run / "valid_predictions.csv")
    assert list(preds.columns) == ["Path", "Study", *config["observations"]]
    assert len(preds) == len(pd.read_csv(tiny.valid_csv))
    metrics = pd.read_csv(finished_run / "metrics.csv")
    best_epoch = int(metrics.loc[metrics["best"], "epoch"].iloc[-1])
    assert ckpt.latest_pointer(finished_run) == {"epoch": 4, "dir": "epoch-0004", "finished": True}
    assert 1 <= best_epoch <= 4
    assert not list(finished_run.rglob("*.tmp"))


def test_best_weights_reproduce_valid_predictions(finished_run: Path, tiny) -> None:
    from chexcft.data import read_table
    from chexcft.data.cache import ImageCache
    from chexcft.data.dataset import CachedXrayDataset

    loaded = load_run(finished_run, which="best", use_cft=False)
    cache = ImageCache.open(tiny.cache_dir / f"{IMAGE_SIZE}px")
    frame = read_table(tiny.valid_csv, tiny.root)
    dataset = CachedXrayDataset(cache, cache.rows_for(frame["abs_path"]))
    images = dataset[list(range(len(dataset)))]["image"]  # uint8 (n, 1, S, S), converted by raw_proba
    probs = loaded.raw_proba(images)
    stored = pd.read_csv(finished_run / "valid_predictions.csv")[list(loaded.observations)].to_numpy()
    np.testing.assert_allclose(probs, stored, rtol=0, atol=1e-6)


def test_checkpoint_round_trip_restores_everything(tmp_path: Path) -> None:
    from chexcft.models import HeadLayout, build_model
    from chexcft.training.loss import masked_loss

    layout = HeadLayout(("Cardiomegaly", "Edema", "Atelectasis"), ("Cardiomegaly",))
    x = torch.rand(6, 1, IMAGE_SIZE, IMAGE_SIZE)
    targets, mask = torch.rand(6, 3).round(), torch.ones(6, 3)
    classes = torch.tensor([[0], [1], [2], [-100], [1], [0]])

    def fresh():
        model = build_model("tiny", layout, seed=1)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
        return model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=False)

    model, optimizer, scheduler, scaler = fresh()
    for _ in range(3):
        optimizer.zero_grad()
        masked_loss(model(x), layout, targets, mask, classes).backward()
        optimizer.step()
        scheduler.step()
    ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, scaler, ckpt.TrainState(epoch=3, best_score=0.5, best_epoch=2))
    expected_draw = torch.rand(3)
    np_draw = np.random.random()

    model2, optimizer2, scheduler2, scaler2 = fresh()
    state = ckpt.load_checkpoint(tmp_path, model2, optimizer2, scheduler2, scaler2)
    assert (state.epoch, state.best_score, state.best_epoch, state.finished) == (3, 0.5, 2, False)
    assert torch.equal(torch.rand(3), expected_draw) and np.random.random() == np_draw
    model.eval(), model2.eval()
    with torch.no_grad():
        assert torch.equal(model.predict_logits(x), model2.predict_logits(x))
    assert scheduler2.state_dict() == scheduler.state_dict()
    saved, restored = optimizer.state_dict()["state"], optimizer2.state_dict()["state"]
    assert saved.keys() == restored.keys()
    for pid, entries in saved.items():
        assert all(torch.equal(entries[k], restored[pid][k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    # One more identical step on both keeps them identical.
    for m, o in ((model, optimizer), (model2, optimizer2)):
        m.train()
        o.zero_grad()
        masked_loss(m(x), layout, targets, mask, classes).backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    # Nothing in the checkpoint needs unpickling: plain safetensors and JSON.
    folder = tmp_path / "checkpoint" / "epoch-0003"
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "state.safetensors"]
    json.loads((folder / "state.json").read_text())


def test_resume_after_sigkill_equals_uninterrupted_run(tiny, tmp_path: Path) -> None:
    from chexcft.cli import app

    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["train", *tiny.args(), "--epochs", "3", "--seed", "7"]
    # 48 images, batch 8 -> 6 steps per epoch: tests/kill.py kills the process in the middle of epoch 3.
    steps = len(pd.read_csv(tiny.train_csv)) // 8
    full_process = start_cli([*args, "--out", str(full)])
    crashed = finish(start_cli([*args, "--out", str(killed)], kill=("steps", 2 * steps + 3)))
    done = finish(full_process)
    assert done.returncode == 0, done.stderr
    assert json.loads((full / "config.json").read_text())["scheduler"]["steps_per_epoch"] == steps
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert ckpt.latest_pointer(killed)["epoch"] == 2  # the epoch in progress is lost, nothing more

    refused = CliRunner().invoke(app, [*args, "--out", str(killed)])
    assert isinstance(refused.exception, InvalidRunError) and "--resume" in str(refused.exception)

    resumed = run_cli([*args, "--out", str(killed), "--resume"])
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    for which in ("last", "best"):
        a = load_file(str(full / "weights" / f"{which}.safetensors"))
        b = load_file(str(killed / "weights" / f"{which}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(
        pd.read_csv(full / "metrics.csv").drop(columns=["images_per_s"]),
        pd.read_csv(killed / "metrics.csv").drop(columns=["images_per_s"]),
    )

    again = CliRunner().invoke(app, [*args, "--out", str(killed), "--resume"])
    assert again.exit_code == 0 and again.exception is None


def test_torchrun_two_processes_write_one_run(tiny, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"torchrun is not installed beside {sys.executable}")
    out = tmp_path / "ddp" / "run"
    done = run_cli(
        ["train", *tiny.args(), "--epochs", "1", "--out", str(out)],
        launcher=[str(torchrun), "--standalone", "--nproc_per_node=2"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert [p.name for p in out.parent.iterdir()] == ["run"]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    assert len(pd.read_csv(out / "metrics.csv")) == 1
    assert (out / "weights" / "best.safetensors").is_file() and ckpt.latest_pointer(out)["finished"]


def test_multiclass_and_selftrained_policies(tiny, tmp_path: Path) -> None:
    out = tmp_path / "paper"
    raw = pd.read_csv(tiny.train_csv)
    chosen = [o for o in ("Atelectasis", "Cardiomegaly", "Pleural Effusion", "Edema") if (raw[o] == 1).any() and (raw[o] == -1).any()]
    policy = f"{chosen[0]}=U-MultiClass,{chosen[1]}=U-SelfTrained"
    run = train(_config(tiny, out, observations=tuple(chosen), policy=policy))
    config = json.loads((run / "config.json").read_text())
    assert config["multiclass"] == [chosen[0]] and config["policies"][chosen[1]] == "U-SelfTrained"
    stage = run / "selftrain_stage1"
    stage_config = json.loads((stage / "config.json").read_text())
    assert stage_config["observations"] == [chosen[1]] and stage_config["policies"] == {chosen[1]: "U-Ignore"}
    assert (stage / "train_probabilities.safetensors").is_file() and ckpt.latest_pointer(stage)["finished"]
    loaded = load_run(run)
    assert set(loaded.observations) == set(chosen)
    assert loaded.model.head.out_features == len(chosen) + 2  # one 3-way head


def test_cli_refuses_to_overwrite_and_reports_bad_options(tiny, tmp_path: Path) -> None:
    from chexcft.cli import app

    out = tmp_path / "taken"
    out.mkdir()
    (out / "something").write_text("x")
    runner = CliRunner()
    result = runner.invoke(app, ["train", *tiny.args(), "--out", str(out)])
    assert isinstance(result.exception, InvalidRunError) and "not empty" in str(result.exception)
    result = runner.invoke(app, ["train", *tiny.args(), "--out", str(tmp_path / "new"), "--arch", "resnet9000"])
    assert "resnet9000" in str(result.exception)
    assert not (tmp_path / "new").exists()
    shutil.rmtree(out)
