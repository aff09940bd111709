"""Portable bundles: paths relative to the bundle, nothing from the build machine; a moved bundle still runs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from chexcft.bundle import build_bundle
from chexcft.cli import app
from chexcft.errors import ChexcftError
from chexcft.portable import portable, portable_text
from chexcft.runs import load_run, read_config, run_paths, save_weights
from chexcft.schema import COMPETITION_TASKS
from chexcft.submission import read_submission, submit
from tests.prediction_builders import make_prediction_tree, make_tiny_run
from tests.test_bundle import _run_bundle

REPO = Path(__file__).resolve().parent.parent


def _machine_specific_run(run: Path, data: Path) -> Path:
    """Give a tiny run the absolute paths a real run records: settings, a file: init, weights metadata."""
    config = read_config(run)
    config["settings"] = {"train_csv": config["train_csv"], "root": config["root"], "out": str(run),
                          "cache_dir": str(data / "cache" / "32px"), "init": f"file:{data}/pretrained/w.safetensors"}
    config["cache_dir"] = str(data / "cache" / "32px")
    config["model"]["init"] = f"file:{data}/pretrained/w.safetensors"
    run_paths(run).config.write_text(json.dumps(config))
    loaded = load_run(run, use_cft=False)
    loaded.model.init = f"file:{data}/pretrained/w.safetensors"
    save_weights(loaded.model, run_paths(run).weights("best"))
    return run


def test_a_moved_bundle_runs_without_its_runs_and_names_no_build_path(tmp_path: Path) -> None:
    tree = make_prediction_tree(tmp_path / "data", seed=3)
    runs = [
        _machine_specific_run(make_tiny_run(tmp_path / "runs" / "a", train_csv=tree.train_csv, root=tree.root,
                                            seed=4, cft=True), tmp_path / "data"),
        make_tiny_run(tmp_path / "runs" / "b", train_csv=tree.train_csv, root=tree.root, seed=5,
                      observations=COMPETITION_TASKS),
    ]
    bundle = tmp_path / "bundle"
    built = CliRunner().invoke(app, ["bundle", "-m", str(runs[0]), "-m", str(runs[1]), "--out", str(bundle),
                                     "--fill-missing", "prior"])
    assert built.exit_code == 0, built.output
    expected = submit(tree.input_csv, tmp_path / "expected.csv", runs, root=tree.root, fill_missing="prior",
                      device="cpu").frame

    moved = tmp_path / "elsewhere" / "moved-bundle"
    shutil.copytree(bundle, moved)
    shutil.rmtree(bundle)
    shutil.rmtree(tmp_path / "runs")
    markers = [str(tmp_path), str(REPO), sys.prefix, str(Path.home()) + "/"]
    for path in moved.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            leaked = [m for m in markers if m.encode() in data]
            assert not leaked, f"{path.relative_to(moved)} names {leaked}"
    settings = json.loads((moved / "bundle.json").read_text())
    assert all(not Path(name).is_absolute() for name in settings["models"])
    config = json.loads((moved / settings["models"][0] / "config.json").read_text())
    assert config["settings"]["train_csv"] == "train.csv" and config["settings"]["out"] == "."
    assert config["model"]["init"] == "file:w.safetensors" and config["train_csv_sha256"]

    done = _run_bundle(moved, tree.root, str(tree.input_csv), str(tmp_path / "out.csv"))
    assert done.returncode == 0, done.stderr
    produced = read_submission(tmp_path / "out.csv")
    assert produced["Study"].tolist() == expected["Study"].tolist()
    tasks = list(COMPETITION_TASKS)
    np.testing.assert_allclose(produced[tasks].to_numpy(), expected[tasks].to_numpy(), atol=1e-6)


def test_portable_text_keeps_relative_and_url_text() -> None:
    run = Path("/srv/alice/runs/r1")
    assert portable_text("/srv/alice/runs/r1/weights/best.safetensors", run) == "weights/best.safetensors"
    assert portable_text("/srv/alice/data/train.csv", run) == "train.csv"
    assert portable_text(r"C:\Users\alice\train.csv") == "train.csv"
    assert portable_text("~/data/x.csv") == "x.csv"
    assert portable_text("prevalence of positive labels in /srv/alice/t.csv, /srv/bob/u.csv") == \
        "prevalence of positive labels in t.csv, u.csv"
    for kept in ("CheXpert-v1.0-small/train/patient1", "lr/100", "https://example.org/a/b", "U-Ignore"):
        assert portable_text(kept) == kept
    assert portable({"a": ["/x/y.csv", 3, None], "/k/key": True}) == {"a": ["y.csv", 3, None], "key": True}


def test_building_refuses_a_path_the_sanitiser_missed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import chexcft.bundle as bundle_module

    run = make_tiny_run(tmp_path / "runs" / "a", observations=COMPETITION_TASKS)
    monkeypatch.setattr(bundle_module, "portable", lambda value, inside=None: value)  # a sanitiser that does nothing
    config = read_config(run)
    config["root"] = str(tmp_path / "data root with spaces")
    run_paths(run).config.write_text(json.dumps(config))
    with pytest.raises(ChexcftError, match="build-machine paths"):
        build_bundle([run], tmp_path / "b")
    assert not (tmp_path / "b").exists()
