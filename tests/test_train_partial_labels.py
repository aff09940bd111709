"""Partial-label training end to end on tiny runs: LL logs and flips, resume after SIGKILL, torchrun, aucm, errors."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from chexcft.errors import ChexcftError
from chexcft.training import TrainConfig, train
from chexcft.training import checkpoint as ckpt
from chexcft.training.large_loss import LOG_DIR, STATE_KEY
from tests.train_helpers import finish, make_tiny_data, run_cli, start_cli, tiny_config


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A 48/24-image data set with its cache already built."""
    return make_tiny_data(tmp_path_factory.mktemp("tiny-pl"))


def _config(tiny, out: Path, **changes) -> TrainConfig:
    return tiny_config(tiny, out, **{"epochs": 3, **changes})


def _killed_then_resumed(tiny, tmp_path: Path, extra: list[str], kill_after_steps: int) -> tuple[Path, Path]:
    """Run ARGS to the end in one folder; in another, SIGKILL after `kill_after_steps` steps, then --resume."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["train", *tiny.args(), "--epochs", "3", "--seed", "5", *extra]
    full_process = start_cli([*args, "--out", str(full)])
    crashed = finish(start_cli([*args, "--out", str(killed)], kill=("steps", kill_after_steps)))
    done = finish(full_process)
    assert done.returncode == 0, done.stderr[-3000:]
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    resumed = run_cli([*args, "--out", str(killed), "--resume"])
    assert resumed.returncode == 0 and "resuming" in resumed.stderr, resumed.stderr[-3000:]
    return full, killed


def _same_weights(a: Path, b: Path) -> None:
    for which in ("last", "best"):
        x, y = (load_file(str(run / "weights" / f"{which}.safetensors")) for run in (a, b))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_llcp_flips_persist_across_a_sigkill_resume(tiny, tmp_path: Path) -> None:
    steps = len(pd.read_csv(tiny.train_csv)) // 8
    full, killed = _killed_then_resumed(tiny, tmp_path, ["--blank", "LL-Cp", "--delta-rel", "3"], steps + 3)
    assert ckpt.latest_pointer(killed)["finished"]
    _same_weights(full, killed)
    flips = [load_file(str(run / "checkpoint" / "epoch-0003" / "state.safetensors"))[f"extra.{STATE_KEY}"] for run in (full, killed)]
    assert torch.equal(flips[0], flips[1]) and flips[0].sum() > 0
    for name in ("epoch-0001.csv", "epoch-0002.csv", "epoch-0003.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(full / LOG_DIR / name), pd.read_csv(killed / LOG_DIR / name))

    logs = [pd.read_csv(full / LOG_DIR / f"epoch-000{e}.csv") for e in (1, 2, 3)]
    assert logs[0].empty and len(logs[1]) > 0 and len(logs[2]) > 0  # warm-up, then a fixed k per batch
    config = json.loads((full / "config.json").read_text())
    n_obs = len(config["observations"])
    assert len(logs[1]) == steps * int(np.ceil(8 * n_obs * 0.03))
    # Only blanks are flipped, each at most once (a flipped entry is an observed positive from then on).
    raw = pd.read_csv(tiny.train_csv).set_index("Path")
    both = pd.concat(logs[1:])
    assert not both.duplicated(["Path", "observation"]).any()
    assert all(np.isnan(raw.at[p, o]) for p, o in zip(both["Path"], both["observation"]))
    assert int(flips[0].sum()) == len(both)
    assert config["large_loss"]["scheme"] == "LL-Cp" and config["settings"]["delta_rel"] == 3


def test_llr_and_llct_modify_only_blanks_with_a_growing_k(tiny, tmp_path: Path) -> None:
    raw = pd.read_csv(tiny.train_csv).set_index("Path")
    for scheme in ("LL-R", "LL-Ct"):
        run = train(_config(tiny, tmp_path / scheme, blank=scheme, delta_rel=2.0))
        logs = [pd.read_csv(run / LOG_DIR / f"epoch-000{e}.csv") for e in (1, 2, 3)]
        n_obs = len(json.loads((run / "config.json").read_text())["observations"])
        steps = len(raw) // 8
        assert [len(log) for log in logs] == [0, steps * int(np.ceil(8 * n_obs * 0.02)), steps * int(np.ceil(8 * n_obs * 0.04))]
        both = pd.concat(logs[1:])
        assert all(np.isnan(raw.at[p, o]) for p, o in zip(both["Path"], both["observation"]))
        assert not load_file(
            str(run / "checkpoint" / "epoch-0003" / "state.safetensors"))[f"extra.{STATE_KEY}"].any()  # no flips


def test_aucm_two_stage_with_oversampling_resumes_bit_identically(tiny, tmp_path: Path) -> None:
    stage1 = train(_config(tiny, tmp_path / "bce", epochs=1))
    init = f"file:{stage1 / 'weights' / 'best.safetensors'}"
    extra = ["--loss", "aucm", "--init", init, "--reset-head", "--oversample", "Cardiomegaly=2"]
    full, killed = _killed_then_resumed(tiny, tmp_path, extra, 9)  # 6-7 steps per epoch: killed in epoch 2
    _same_weights(full, killed)
    record = json.loads((full / "config.json").read_text())
    assert record["optimizer"]["name"].startswith("PESG") and record["settings"]["lr"] == 0.1
    assert record["settings"]["weight_decay"] == 1e-5 and record["oversample"]["factors"] == {"Cardiomegaly": 2}
    metrics = pd.read_csv(full / "metrics.csv")
    assert np.isclose(metrics["lr"].iloc[-1], 0.01)  # lr / 10 after epoch 1
    assert record["scheduler"]["steps_per_epoch"] > len(pd.read_csv(tiny.train_csv)) // 8  # oversampled rows


def test_reset_head_keeps_the_backbone(tiny, tmp_path: Path) -> None:
    from chexcft.models import HeadLayout, build_model
    from chexcft.models.build import reset_head

    run = train(_config(tiny, tmp_path / "bce", epochs=1, lr=1e-2))
    layout = HeadLayout(tuple(json.loads((run / "config.json").read_text())["observations"]))
    loaded = build_model("tiny", layout, init=f"file:{run / 'weights' / 'best.safetensors'}")
    reset = build_model("tiny", layout, init=f"file:{run / 'weights' / 'best.safetensors'}")
    reset_head(reset, seed=0)
    again = build_model("tiny", layout, init=f"file:{run / 'weights' / 'best.safetensors'}")
    reset_head(again, seed=0)
    a, b = loaded.state_dict(), reset.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("head."))
    assert not torch.equal(a["head.weight"], b["head.weight"])
    assert torch.equal(b["head.weight"], again.state_dict()["head.weight"])  # seeded


def test_torchrun_two_processes_train_with_llr(tiny, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"torchrun is not installed beside {sys.executable}")
    out = tmp_path / "ddp"
    done = run_cli(
        ["train", *tiny.args(), "--epochs", "2", "--blank", "LL-R", "--delta-rel", "5", "--out", str(out)],
        launcher=[str(torchrun), "--standalone", "--nproc_per_node=2"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    log = pd.read_csv(out / LOG_DIR / "epoch-0002.csv")
    assert set(log["rank"]) == {0, 1}  # each process selected within its own batches; rank 0 wrote both
    assert ckpt.latest_pointer(out)["finished"]


def test_bad_combinations_are_refused_with_the_reason(tiny, tmp_path: Path) -> None:
    with pytest.raises(ChexcftError, match="cannot be combined"):
        train(_config(tiny, tmp_path / "a", blank="LL-R", loss="aucm"))
    with pytest.raises(ChexcftError, match="delta-rel"):
        train(_config(tiny, tmp_path / "b", blank="LL-Ct", delta_rel=0))
    with pytest.raises(ChexcftError, match="soft targets"):
        train(_config(tiny, tmp_path / "c", loss="aucm", policy="LSR-Ones"))
    with pytest.raises(ChexcftError, match="U-MultiClass"):
        train(_config(tiny, tmp_path / "d", loss="aucm", policy="U-MultiClass"))
    with pytest.raises(ChexcftError, match="oversample"):
        train(_config(tiny, tmp_path / "e", oversample="Cardiomegaly=two"))
