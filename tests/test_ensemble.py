"""Ensembles: members differ by seed (and policy), ensemble.json, resumable, load_ensemble, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from chexcft.ensemble import ENSEMBLE_FILE, load_ensemble, member_configs, train_ensemble
from chexcft.errors import InvalidRunError
from chexcft.training import TrainConfig, is_finished
from tests.train_helpers import IMAGE_SIZE, make_tiny_data

MEMBER_FILES = ("config.json", "metrics.csv", "valid_predictions.csv", "weights/best.safetensors", "weights/last.safetensors")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """A 32/16-image data set with its cache already built."""
    return make_tiny_data(tmp_path_factory.mktemp("tiny-ensemble"), n_train=32, n_valid=16)


def _base(tiny, **changes) -> TrainConfig:
    base = TrainConfig(
        train_csv=str(tiny.train_csv), valid_csv=str(tiny.valid_csv), root=str(tiny.root), out="unused",
        cache_dir=str(tiny.cache_dir), arch="tiny", image_size=IMAGE_SIZE, epochs=1, batch_size=8,
        device="cpu", quiet=True, seed=3,
    )  # fmt: skip
    return base.replace(**changes)


def test_member_configs_cycle_seeds_and_policies(tiny, tmp_path: Path) -> None:
    configs = member_configs(3, tmp_path, _base(tiny), ["U-Ones", "U-Zeros"])
    assert [c.seed for c in configs] == [3, 4, 5]
    assert [c.policy for c in configs] == ["U-Ones", "U-Zeros", "U-Ones"]
    assert [Path(c.out).name for c in configs] == ["member-0", "member-1", "member-2"]
    with pytest.raises(Exception, match="at least 1"):
        member_configs(0, tmp_path, _base(tiny))


def test_ensemble_trains_members_and_resumes(tiny, tmp_path: Path) -> None:
    out = tmp_path / "ens"
    directory = train_ensemble(2, out, _base(tiny), policies=["U-Ones", "U-Zeros"])
    manifest = json.loads((directory / ENSEMBLE_FILE).read_text())
    assert manifest["members"] == ["member-0", "member-1"] and manifest["policies"] == ["U-Ones", "U-Zeros"]
    members = load_ensemble(directory)
    assert members == [out / "member-0", out / "member-1"]
    for member in members:
        assert all((member / name).is_file() for name in MEMBER_FILES) and is_finished(member)
    first = load_file(str(members[0] / "weights" / "last.safetensors"))
    second = load_file(str(members[1] / "weights" / "last.safetensors"))
    assert any(not (first[k] == second[k]).all() for k in first)  # different seeds, different models
    assert set(json.loads((members[1] / "config.json").read_text())["policies"].values()) == {"U-Zeros"}

    with pytest.raises(InvalidRunError, match="--resume"):
        train_ensemble(2, out, _base(tiny))
    # Resuming skips finished members and trains only the new one.
    before = (members[0] / "weights" / "last.safetensors").stat().st_mtime_ns
    train_ensemble(3, out, _base(tiny, resume=True), policies=["U-Ones", "U-Zeros"])
    assert (members[0] / "weights" / "last.safetensors").stat().st_mtime_ns == before
    assert len(load_ensemble(out)) == 3 and is_finished(out / "member-2")


def test_load_ensemble_rejects_incomplete_directories(tmp_path: Path) -> None:
    with pytest.raises(InvalidRunError, match="ensemble.json"):
        load_ensemble(tmp_path)
    (tmp_path / ENSEMBLE_FILE).write_text(json.dumps({"members": ["member-0"]}))
    with pytest.raises(InvalidRunError, match="member-0"):
        load_ensemble(tmp_path)


def test_train_ensemble_cli(tiny, tmp_path: Path) -> None:
    from chexcft.cli import app

    out = tmp_path / "cli-ens"
    result = CliRunner().invoke(app, ["train-ensemble", *tiny.args(), "--members", "2", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in load_ensemble(out)] == ["member-0", "member-1"]
    seeds = [json.loads((out / f"member-{i}" / "config.json").read_text())["settings"]["seed"] for i in range(2)]
    assert seeds == [0, 1]


def test_member_specs_set_policy_blank_and_loss(tiny, tmp_path: Path) -> None:
    from chexcft.ensemble import parse_member_spec

    assert parse_member_spec("U-Ones+LL-R") == {"policy": "U-Ones", "blank": "LL-R"}
    assert parse_member_spec("U-Zeros+aucm+lr=0.05+reset-head") == {"policy": "U-Zeros", "loss": "aucm", "lr": 0.05,
                                                                    "reset_head": True}
    assert parse_member_spec("ll-cp+delta-rel=0.3") == {"blank": "LL-Cp", "delta_rel": 0.3}
    for bad, word in (("U-Ones+LL-R+LL-Ct", "blank twice"), ("U-Ones++LL-R", "empty part"), ("U-Ones+lr=fast", "float")):
        with pytest.raises(Exception, match=word):
            parse_member_spec(bad)
    configs = member_configs(3, tmp_path, _base(tiny, lr=1e-3), ["U-Ones+LL-R", "U-Zeros+aucm"])
    assert [(c.policy, c.blank, c.loss) for c in configs] == [("U-Ones", "LL-R", "bce"), ("U-Zeros", "negative", "aucm"),
                                                              ("U-Ones", "LL-R", "bce")]
    assert [c.lr for c in configs] == [1e-3, None, 1e-3]  # the aucm member gets PESG's default lr (0.1)


def test_ensemble_of_mixed_members_records_them_and_checks_resumed_settings(tiny, tmp_path: Path) -> None:
    from chexcft.cli import app

    out = tmp_path / "mixed"
    args = ["train-ensemble", *tiny.args(), "--epochs", "2", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--policies", "U-Ones+LL-R", "--policies", "U-Zeros+aucm"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / ENSEMBLE_FILE).read_text())
    assert manifest["members"] == ["member-0", "member-1"]  # one member per spec when --members is not given
    assert manifest["blanks"] == ["LL-R", "negative"] and manifest["losses"] == ["bce", "aucm"]
    assert manifest["specs"] == ["U-Ones+LL-R", "U-Zeros+aucm"]
    second = json.loads((out / "member-1" / "config.json").read_text())
    assert second["settings"]["loss"] == "aucm" and second["settings"]["lr"] == 0.1 and second["policies"]
    assert (out / "member-0" / "large_loss" / "epoch-0002.csv").is_file()

    # Resuming with other settings for a finished member is an error naming them, unless --force-members.
    result = CliRunner().invoke(app, [*args, "--resume", "--policies", "U-Ones+LL-Ct", "--policies", "U-Zeros+aucm"])
    assert isinstance(result.exception, InvalidRunError)
    message = str(result.exception)
    assert "member-0" in message and "blank" in message and "'LL-R'" in message and "'LL-Ct'" in message
    assert "--force-members" in message
    result = CliRunner().invoke(app, [*args, "--resume", "--force-members", "--policies", "U-Ones+LL-Ct", "--policies",
                                      "U-Zeros+aucm"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / ENSEMBLE_FILE).read_text())["blanks"] == ["LL-R", "negative"]  # what the members are
    # The same settings resume quietly.
    result = CliRunner().invoke(app, [*args, "--resume", "--policies", "U-Ones+LL-R,U-Zeros+aucm"])
    assert result.exit_code == 0, result.output
