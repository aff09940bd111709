"""Run directories: config, safetensors weights round trip, CFT head and calibration applied on load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from chexcft.errors import InvalidRunError, InvalidWeightsError
from chexcft.fileio import file_sha256
from chexcft.models import HeadLayout, build_model
from chexcft.runs import (
    Calibration,
    LoadedRun,
    load_run,
    load_weights,
    load_weights_spec,
    read_config,
    run_paths,
    save_weights,
    write_calibration,
    write_cft_head,
    write_config,
)

LAYOUT = HeadLayout(("Atelectasis", "Cardiomegaly", "Edema"), ("Cardiomegaly",))


def _images(n: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(seed))


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Move BatchNorm statistics away from their defaults so a lost buffer would show."""
    model.train()
    with torch.no_grad():
        model(_images(8, seed=9) * 0.5 + 0.3)
    return model.eval()


def _make_run(tmp_path: Path, model=None, **config) -> tuple[Path, torch.nn.Module]:
    model = model or _trained_like(build_model("tiny", LAYOUT, seed=2))
    run = tmp_path / "run"
    csv = tmp_path / "train.csv"
    csv.write_text("Path,Atelectasis\na.png,1\n")
    write_config(run, {"arch": model.arch, "image_size": 32, "model": model.spec(), **config}, train_csv=csv)
    save_weights(model, run_paths(run).weights("best"))
    save_weights(model, run_paths(run).weights("last"))
    return run, model


def test_config_records_environment_and_csv_hash(tmp_path):
    run, _ = _make_run(tmp_path, seed=4)
    config = read_config(run)
    assert config["seed"] == 4 and config["image_size"] == 32
    assert config["train_csv_sha256"] == file_sha256(tmp_path / "train.csv")
    assert "packages" in config["environment"] and config["environment"]["packages"]["torch"]
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "weights"]  # no temporary files left


def test_round_trip_gives_identical_predictions(tmp_path):
    run, model = _make_run(tmp_path)
    x = _images()
    with torch.no_grad():
        expected_logits = model.predict_logits(x).numpy()
    expected = LoadedRun(model, {}, None, run).predict_proba(x)
    np.testing.assert_allclose(expected, 1 / (1 + np.exp(-expected_logits.astype(np.float64))), rtol=1e-6)
    loaded = load_run(run)
    assert loaded.observations == LAYOUT.observations and loaded.model.layout == LAYOUT
    assert loaded.calibration is None and not loaded.has_cft and loaded.image_size == 32
    np.testing.assert_array_equal(loaded.predict_logits(x), expected_logits)
    np.testing.assert_array_equal(loaded.predict_proba(x), expected)
    np.testing.assert_array_equal(loaded.raw_proba(x), expected)
    np.testing.assert_array_equal(loaded.predict_proba(x.numpy(), batch_size=2), expected)
    as_bytes = (x * 255).round().to(torch.uint8)
    np.testing.assert_array_equal(loaded.predict_proba(as_bytes), loaded.predict_proba(as_bytes.float() / 255.0))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    assert set(load_weights(run_paths(run).weights("best"))) == set(model.state_dict())
    assert load_weights_spec(run_paths(run).weights("last")) == model.spec()
    assert not loaded.model.training


def test_load_run_needs_no_pretrained_file_and_keeps_normalisation(tmp_path):
    source = build_model("tiny", LAYOUT, seed=1, normalization="imagenet")
    init_file = save_weights(source, tmp_path / "init.safetensors")
    model = _trained_like(build_model("tiny", LAYOUT, init=f"file:{init_file}"))
    assert model.normalization == "imagenet"
    run, _ = _make_run(tmp_path, model=model)
    init_file.unlink()
    loaded = load_run(run, which="last")
    assert loaded.model.normalization == "imagenet" and loaded.model.init == f"file:{init_file}"
    x = _images(3)
    np.testing.assert_array_equal(loaded.raw_proba(x), LoadedRun(model, {}, None, run).raw_proba(x))


def test_cft_head_and_calibration_are_applied(tmp_path):
    run, model = _make_run(tmp_path)
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(3, model.feature_dim)).astype(np.float32)
    bias = np.array([0.2, -0.1, 0.05], dtype=np.float32)
    write_cft_head(run, weight, bias)
    calibration = Calibration(("Atelectasis", "Edema"), (1.5, 0.5), (-0.25, 0.75))
    write_calibration(run_paths(run).calibration, calibration)
    assert json.loads(run_paths(run).calibration.read_text())["method"] == "platt"

    x = _images()
    with torch.no_grad():
        z = model.features(x).numpy().astype(np.float64)
        original = torch.sigmoid(model.predict_logits(x)).numpy()
    logits = z @ weight.T + bias
    expected = 1 / (1 + np.exp(-logits))
    expected[:, 0] = 1 / (1 + np.exp(-(1.5 * logits[:, 0] - 0.25)))
    expected[:, 2] = 1 / (1 + np.exp(-(0.5 * logits[:, 2] + 0.75)))
    loaded = load_run(run)
    assert loaded.has_cft and loaded.calibration == calibration
    np.testing.assert_allclose(loaded.predict_proba(x), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.raw_proba(x), original, rtol=1e-6, atol=1e-7)
    plain = load_run(run, use_cft=False)
    assert not plain.has_cft and plain.calibration is None
    np.testing.assert_allclose(plain.predict_proba(x), original, rtol=1e-6, atol=1e-7)


def test_save_weights_unwraps_data_parallel_and_skips_cft_override(tmp_path):
    model = build_model("tiny", LAYOUT)
    model.set_binary_head(torch.zeros(3, model.feature_dim), torch.zeros(3))

    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    path = save_weights(Wrapper(model), tmp_path / "w.safetensors")
    assert not any(k.startswith("binary_override") for k in load_weights(path))


def test_broken_runs_give_clear_errors(tmp_path):
    with pytest.raises(InvalidRunError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    run, model = _make_run(tmp_path)
    with pytest.raises(InvalidRunError, match="middle"):
        load_run(run, which="middle")
    run_paths(run).weights("best").unlink()
    with pytest.raises(InvalidRunError, match="best.safetensors"):
        load_run(run)

    run_paths(run).weights("best").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(InvalidWeightsError, match="best.safetensors"):
        load_run(run)

    bigger = build_model("tiny", HeadLayout(("Atelectasis", "Cardiomegaly", "Edema", "Fracture")))
    from safetensors.torch import save_file

    metadata = {"chexcft_model": json.dumps(model.spec())}  # claims the 3-observation layout
    save_file(bigger.base_state_dict(), str(run_paths(run).weights("best")), metadata=metadata)
    with pytest.raises(InvalidWeightsError, match="wrong shapes"):
        load_run(run)
    save_weights(model, run_paths(run).weights("best"))

    write_cft_head(run, np.zeros((2, model.feature_dim)), np.zeros(2))
    with pytest.raises(InvalidRunError, match="head.safetensors"):
        load_run(run)
    load_run(run, use_cft=False)  # the plain model still loads
    run_paths(run).cft_head.unlink()

    write_calibration(run_paths(run).calibration, Calibration(("Fracture",), (1.0,), (0.0,)))
    with pytest.raises(InvalidRunError, match="Fracture"):
        load_run(run)
    run_paths(run).calibration.write_text('{"method": "platt", "observations": ["Edema"], "a": []}')
    with pytest.raises(InvalidRunError, match="calibration.json"):
        load_run(run)

    run_paths(run).config.unlink()
    with pytest.raises(InvalidRunError, match="config.json"):
        load_run(run)


def test_calibration_written_by_platt_calibration_is_applied(tmp_path):
    from chexcft.calibration import PlattCalibration

    run, model = _make_run(tmp_path)
    x = _images(40, seed=5)
    with torch.no_grad():
        logits = model.predict_logits(x).numpy().astype(np.float64)
    y = (logits > np.median(logits, axis=0)).astype(float)
    y[:3] = 1 - y[:3]  # not perfectly separable
    platt = PlattCalibration().fit(logits, y, LAYOUT.observations)
    write_calibration(run_paths(run).calibration, platt)
    loaded = load_run(run)
    np.testing.assert_allclose(loaded.predict_proba(x), platt.transform(logits), rtol=1e-5, atol=1e-6)
