"""chexcft.predict and `chexcft predict`: per-image probabilities, ensembles, TTA, failures, torchrun shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.data import read_table
from chexcft.errors import InvalidRunError
from chexcft.predict import expand_model_dirs, failures_path, predict_paths, predict_table, shared_observations
from chexcft.preprocess import load_for_model
from chexcft.runs import load_run
from chexcft.schema import COMPETITION_TASKS, OBSERVATIONS
from tests.prediction_builders import make_prediction_tree, make_tiny_run

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def tree(tmp_path: Path):
    return make_prediction_tree(tmp_path / "data")


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    return make_tiny_run(tmp_path / "runs" / "a", image_size=32, seed=1, cft=True)


def _expected_proba(run_dir: Path, abs_paths: list[str], flip: bool = False) -> np.ndarray:
    run = load_run(run_dir)
    images = torch.from_numpy(np.stack([load_for_model(p, run.image_size) for p in abs_paths])[:, None]).float() / 255.0
    if not flip:
        return run.predict_proba(images).astype(np.float64)
    logits = 0.5 * (run.predict_logits(images) + run.predict_logits(torch.flip(images, dims=[-1])))  # TTA: logit mean
    return run.calibration.apply(logits, run.observations).astype(np.float64)


def _logits(run_dir: Path, abs_paths: list[str]) -> np.ndarray:
    run = load_run(run_dir)
    images = torch.from_numpy(np.stack([load_for_model(p, run.image_size) for p in abs_paths])[:, None]).float() / 255.0
    return run.predict_logits(images).astype(np.float64)


def test_one_row_per_readable_image_with_calibrated_cft_probabilities(tree, run_dir: Path) -> None:
    table = read_table(tree.input_csv, tree.root)
    result = predict_table(table, [run_dir], batch_size=4, device="cpu")
    assert list(result.predictions.columns) == ["Path", *OBSERVATIONS]
    assert len(result.predictions) == len(table) - 1
    assert result.failures["Path"].tolist() == [tree.broken_image]
    assert result.failures["reason"].iloc[0]  # the reader's reason, not empty
    readable = table[table["Path"] != tree.broken_image]
    assert result.predictions["Path"].tolist() == readable["Path"].tolist()  # input order, Path as written
    assert f"{tree.dicom_study}/view1_frontal.dcm" in set(result.predictions["Path"])
    values = result.predictions[list(OBSERVATIONS)].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    np.testing.assert_allclose(values, _expected_proba(run_dir, readable["abs_path"].tolist()), atol=1e-6)
    raw = load_run(run_dir, use_cft=False)
    assert not np.allclose(values[:3], raw.predict_proba(
        torch.from_numpy(np.stack([load_for_model(p, 32) for p in readable["abs_path"][:3]])[:, None]).float() / 255.0
    ), atol=1e-3)


def test_flip_tta_averages_the_image_and_its_mirror(tree, run_dir: Path) -> None:
    table = read_table(tree.input_csv, tree.root).iloc[:5]
    result = predict_table(table, [run_dir], tta="flip", device="cpu")
    expected = _expected_proba(run_dir, table["abs_path"].tolist(), flip=True)
    np.testing.assert_allclose(result.predictions[list(OBSERVATIONS)].to_numpy(), expected, atol=1e-6)


def test_runs_given_together_are_the_mean_logit_over_the_shared_observations(tree, tmp_path: Path, run_dir: Path) -> None:
    other = make_tiny_run(tmp_path / "runs" / "b", observations=COMPETITION_TASKS[::-1], image_size=40, seed=2)
    table = read_table(tree.input_csv, tree.root).iloc[:6]
    paths = table["abs_path"].tolist()
    result = predict_table(table, [run_dir, other], device="cpu")
    assert result.observations == tuple(name for name in OBSERVATIONS if name in COMPETITION_TASKS)
    assert set(result.dropped_observations) == set(OBSERVATIONS) - set(COMPETITION_TASKS)
    # an ad-hoc ensemble: members' logits after CFT, before their calibration, averaged; no calibration
    first = pd.DataFrame(_logits(run_dir, paths), columns=list(OBSERVATIONS))
    second = pd.DataFrame(_logits(other, paths), columns=list(COMPETITION_TASKS[::-1]))
    mean = (first[list(result.observations)] + second[list(result.observations)]) / 2
    expected = 1.0 / (1.0 + np.exp(-mean.to_numpy()))
    np.testing.assert_allclose(result.predictions[list(result.observations)].to_numpy(), expected, atol=1e-6)


def test_an_ensemble_directory_expands_to_its_members(tmp_path: Path) -> None:
    ensemble = tmp_path / "ens"
    for index in range(2):
        make_tiny_run(ensemble / f"member-{index}", seed=index)
    (ensemble / "ensemble.json").write_text(json.dumps({"members": ["member-0", "member-1"]}))
    single = make_tiny_run(tmp_path / "single")
    members = [ensemble.resolve() / "member-0", ensemble.resolve() / "member-1"]
    assert expand_model_dirs([ensemble, single]) == [*members, single]
    with pytest.raises(InvalidRunError, match="nowhere"):
        expand_model_dirs([tmp_path / "nowhere"])


def test_observation_sets_without_overlap_cannot_be_averaged() -> None:
    with pytest.raises(InvalidRunError, match="share no observation"):
        shared_observations([("Edema",), ("Atelectasis",)])


def test_loader_workers_flag_unreadable_files_without_failing_the_batch(tree, run_dir: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "gone" / "view1_frontal.png")
    table = read_table(tree.input_csv, tree.root).iloc[:4]
    paths = [*table["abs_path"], missing, str(tree.root / tree.broken_image)]
    result = predict_paths(paths, [run_dir], batch_size=3, workers=1, device="cpu")
    assert result.predictions["Path"].tolist() == paths[:4]
    assert result.failures["Path"].tolist() == paths[4:]
    assert all(result.failures["reason"].str.len() > 0)


def test_cli_predict_writes_predictions_and_failures_and_exits_1(tree, run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "predictions.csv"
    result = CliRunner().invoke(
        app, ["predict", "--model", str(run_dir), "--input", str(tree.input_csv), "--root", str(tree.root),
              "--out", str(out), "--device", "cpu", "--quiet"],
    )
    assert result.exit_code == 1, result.output
    assert tree.broken_image in result.output
    written = pd.read_csv(out)
    failures = pd.read_csv(failures_path(out))
    assert failures_path(out).name == "predictions.failures.csv"
    assert failures["Path"].tolist() == [tree.broken_image]
    assert len(written) == len(tree.frame) - 1 and list(written.columns) == ["Path", *OBSERVATIONS]


def test_cli_predict_on_a_folder_exits_0_when_all_readable(tree, run_dir: Path, tmp_path: Path) -> None:
    folder = tree.root / tree.dicom_study
    out = tmp_path / "folder.csv"
    result = CliRunner().invoke(
        app, ["predict", "-m", str(run_dir), "-i", str(folder), "-o", str(out), "--device", "cpu", "-q", "--tta", "flip"]
    )
    assert result.exit_code == 0, result.output
    written = pd.read_csv(out)
    assert sorted(Path(p).name for p in written["Path"]) == ["view1_frontal.dcm", "view2_lateral.jpg"]
    assert pd.read_csv(failures_path(out)).empty


@pytest.mark.slow
def test_torchrun_shards_and_rank0_writes_the_same_file(tree, run_dir: Path, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    out = tmp_path / "ddp" / "predictions.csv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "chexcft", "predict", "--model", str(run_dir),
         "--input", str(tree.input_csv), "--root", str(tree.root), "--out", str(out), "--device", "cpu",
         "--batch-size", "3", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path,
    )
    assert done.returncode != 0, done.stderr  # one image is unreadable
    merged = pd.read_csv(out)
    single = predict_table(read_table(tree.input_csv, tree.root), [run_dir], device="cpu").predictions
    assert merged["Path"].tolist() == single["Path"].tolist()
    np.testing.assert_allclose(merged[list(OBSERVATIONS)].to_numpy(), single[list(OBSERVATIONS)].to_numpy(), atol=1e-6)
    assert pd.read_csv(failures_path(out))["Path"].tolist() == [tree.broken_image]
