"""Feature export: features equal model.features() on the cached images; the stored head reproduces predict_logits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chexcft.device import resolve_device
from chexcft.errors import InvalidDatasetError
from chexcft.features import export_features, extract_features, load_features
from chexcft.models import HeadLayout, build_model
from chexcft.runs import run_paths, save_weights, write_config
from chexcft.schema import OBSERVATIONS

SIZE = 32
LAYOUT = HeadLayout(OBSERVATIONS, ("Cardiomegaly", "Pleural Effusion"))


@pytest.fixture()
def prepared(chexpert_tree, tmp_path):
    """(run dir, model, frame with one unreadable row, cache) for the generated CheXpert tree."""
    from chexcft.data import read_table
    from chexcft.data.cache import ensure_cache

    frame = read_table(chexpert_tree.train_csv, chexpert_tree.root)
    ghost = frame.iloc[[0]].copy()
    ghost["Path"] = "CheXpert-v1.0-small/train/patient99999/study1/view1_frontal.jpg"
    ghost["abs_path"] = str(chexpert_tree.root / ghost["Path"].iloc[0])
    frame = pd.concat([frame.iloc[:2], ghost, frame.iloc[2:]], ignore_index=True)
    cache = ensure_cache(frame, tmp_path / "cache", SIZE, workers=0, progress=False)

    model = build_model("tiny", LAYOUT, seed=3)
    model.train()
    with torch.no_grad():  # non-default BatchNorm statistics, so eval mode matters
        model(torch.rand(8, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0)))
    model.eval()
    run = tmp_path / "run"
    write_config(run, {"image_size": SIZE, "model": model.spec(), "cache_dir": str(tmp_path / "cache")})
    save_weights(model, run_paths(run).weights("best"))
    return run, model, frame, cache


def test_export_matches_model_features_labels_and_head(prepared, tmp_path):
    run, model, frame, cache = prepared
    out = export_features(run, frame, cache, tmp_path / "feats.safetensors", batch_size=3, settings=resolve_device("cpu"))
    fs = load_features(out)

    keep = np.ones(len(frame), dtype=bool)
    keep[2] = False
    assert fs.skipped == (frame["Path"].iloc[2],)
    assert fs.paths == tuple(frame["Path"][keep])
    assert fs.observations == OBSERVATIONS and fs.run == str(run.resolve())

    from chexcft.preprocess import load_for_model

    images = np.stack([load_for_model(p, SIZE) for p in frame["abs_path"][keep]]).astype(np.float32) / 255.0
    x = torch.from_numpy(images)[:, None]
    with torch.no_grad():
        expected = model.features(x).numpy()
        logits = model.predict_logits(x).numpy()
    assert fs.features.shape == (keep.sum(), model.feature_dim) and fs.features.dtype == np.float32
    np.testing.assert_allclose(fs.features, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fs.logits(), logits, rtol=1e-4, atol=1e-5)  # multiclass rows included

    labels = frame[list(OBSERVATIONS)].to_numpy(dtype=np.float32)[keep]
    np.testing.assert_array_equal(fs.labels, labels)  # NaN compares equal here
    np.testing.assert_array_equal(fs.known, (labels == 1) | (labels == 0))
    assert np.isnan(fs.labels).any() and (fs.labels == -1).any()
    weight, bias = model.effective_binary_head()
    np.testing.assert_array_equal(fs.weight, weight.numpy())
    np.testing.assert_array_equal(fs.bias, bias.numpy())


def test_export_ignores_cft_head_of_the_run(prepared, tmp_path):
    from chexcft.runs import write_cft_head

    run, model, frame, cache = prepared
    write_cft_head(run, np.zeros((14, model.feature_dim)), np.ones(14))
    fs = load_features(export_features(run, frame, cache, tmp_path / "f.safetensors"))
    np.testing.assert_array_equal(fs.weight, model.effective_binary_head()[0].numpy())


def test_extract_features_refuses_missing_slots(prepared):
    _, model, _, cache = prepared
    with pytest.raises(InvalidDatasetError, match="missing"):
        extract_features(model, cache, [0, -1], 4, resolve_device("cpu"))


def test_load_features_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"features": torch.zeros(2, 3)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(InvalidDatasetError, match="x.safetensors"):
        load_features(tmp_path / "x.safetensors")
    with pytest.raises(InvalidDatasetError, match="not found"):
        load_features(tmp_path / "absent.safetensors")


def test_cli_features(prepared, chexpert_tree, tmp_path):
    from typer.testing import CliRunner

    from chexcft.cli import app

    run, model, _, _ = prepared
    out = tmp_path / "cli.safetensors"
    args = ["features", "--run", str(run), "--csv", str(chexpert_tree.train_csv), "--root", str(chexpert_tree.root),
            "--out", str(out), "--batch-size", "4", "--device", "cpu", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fs = load_features(out)
    assert len(fs.paths) == len(chexpert_tree.train) and fs.skipped == ()
    assert fs.features.shape[1] == model.feature_dim
    missing = CliRunner().invoke(app, args[:2] + [str(tmp_path / "no-run")] + args[3:])
    assert missing.exit_code != 0
    assert not Path(tmp_path / "no-run").exists()
