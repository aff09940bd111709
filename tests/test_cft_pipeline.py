"""run_cft / `chexcft cft` on a tiny run: files written, run round trip, held-out report, cached features."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from chexcft.cft import CategoryWiseFineTuner
from chexcft.cft.pipeline import OPTIMISTIC_NOTE, cft_labels, run_cft
from chexcft.device import resolve_device
from chexcft.models import HeadLayout, build_model
from chexcft.runs import load_run, run_paths, save_weights, write_config
from chexcft.schema import OBSERVATIONS

SIZE = 32


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny random-weight run plus train/valid/test CSV slices of the demo data (or a generated tree)."""
    from chexcft.data import read_table
    from chexcft.data.cache import ensure_cache

    folder = tmp_path_factory.mktemp("cft_run")
    try:
        from chexcft.demo.data import demo_csv, demo_root

        sources = {split: demo_csv(split) for split in ("train", "valid", "test")}
        root = demo_root()
        if not all(p.is_file() for p in sources.values()):
            raise FileNotFoundError
        csvs = {}
        for split, n in (("train", 160), ("valid", 70), ("test", 70)):
            csvs[split] = folder / f"{split}.csv"
            pd.read_csv(sources[split]).head(n).to_csv(csvs[split], index=False)
    except (ImportError, FileNotFoundError):
        from tests.builders import make_chexpert_tree

        tree = make_chexpert_tree(folder / "tree", n_patients=30, seed=0, with_laterals=False)
        root = tree.root
        valid = pd.read_csv(tree.valid_csv)
        csvs = {"train": tree.train_csv, "valid": folder / "valid.csv", "test": folder / "test.csv"}
        valid.iloc[::2].to_csv(csvs["valid"], index=False)
        valid.iloc[1::2].to_csv(csvs["test"], index=False)
    frames = [read_table(csvs[s], root) for s in csvs]
    cache_dir = folder / "cache"
    ensure_cache(pd.concat(frames, ignore_index=True), cache_dir, SIZE, workers=0, progress=False)
    model = build_model("tiny", HeadLayout(OBSERVATIONS, ()), seed=3)
    model.eval()
    run = folder / "run"
    write_config(run, {"image_size": SIZE, "model": model.spec(), "cache_dir": str(cache_dir)})
    save_weights(model, run_paths(run).weights("best"))
    return run, csvs, Path(root), cache_dir


def _small_tuner() -> CategoryWiseFineTuner:
    return CategoryWiseFineTuner(method="both", max_steps=15, patience=5, lr=1e-2, population=8, seed=0)


def test_run_cft_writes_outputs_and_the_run_predicts_with_them(tiny_run) -> None:
    run, csvs, root, _ = tiny_run
    out = run_cft(run, csvs["train"], csvs["valid"], root, csvs["test"], tuner=_small_tuner(), n_boot=50,
                  settings=resolve_device("cpu"))
    assert out == run / "cft"
    for name in ("head.safetensors", "calibration.json", "report.csv", "report.json", "auc_before_after.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "report.json").read_text())
    assert summary["held_out"] is True and summary["note"] is None
    assert len(summary["test"]["per_category"]) == len(OBSERVATIONS)
    assert len(summary["test"]["mean_gain_ci"]) == 2
    report = pd.read_csv(out / "report.csv")
    assert list(report["observation"]) == list(OBSERVATIONS)
    assert {"test_auc_before", "test_auc_after", "test_gain_ci_low", "method_kept"} <= set(report.columns)

    # round trip: the fine-tuned run predicts exactly what applying weight_/bias_ + calibration by hand gives
    from safetensors.numpy import load_file

    head = load_file(str(out / "head.safetensors"))
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["method"] == "platt" and calibration["observations"] == list(OBSERVATIONS)
    images = torch.rand(5, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    loaded = load_run(run)
    assert loaded.has_cft
    with torch.no_grad():
        features = loaded.model.features(images).numpy()
    logits = features @ head["weight"].T + head["bias"]
    expected = 1 / (1 + np.exp(-(np.asarray(calibration["a"]) * logits + np.asarray(calibration["b"]))))
    np.testing.assert_allclose(loaded.predict_proba(images), expected, rtol=1e-4, atol=1e-5)
    raw = load_run(run, use_cft=False).predict_proba(images)
    assert not np.allclose(raw, loaded.predict_proba(images))


def test_features_are_reused_and_no_test_split_is_flagged_optimistic(tiny_run, monkeypatch) -> None:
    run, csvs, root, _ = tiny_run
    run_cft(run, csvs["train"], csvs["valid"], root, tuner=_small_tuner(), n_boot=20, settings=resolve_device("cpu"))
    import chexcft.features

    def fail(*args, **kwargs):
        raise AssertionError("features were recomputed although the CSV and weights did not change")

    monkeypatch.setattr(chexcft.features, "export_features", fail)
    out = run_cft(run, csvs["train"], csvs["valid"], root, tuner=_small_tuner(), n_boot=20, settings=resolve_device("cpu"))
    summary = json.loads((out / "report.json").read_text())
    assert summary["held_out"] is False
    assert summary["note"] == OPTIMISTIC_NOTE
    assert summary["test"] is None


def test_cft_labels_known_policies() -> None:
    raw = np.array([[1.0, 0.0, -1.0, np.nan]], dtype=np.float32)
    np.testing.assert_array_equal(cft_labels(raw, "explicit"), [[1.0, 0.0, np.nan, np.nan]])
    np.testing.assert_array_equal(cft_labels(raw, "explicit+blank"), [[1.0, 0.0, np.nan, 0.0]])


def test_cli_cft_and_errors(tiny_run) -> None:
    from typer.testing import CliRunner

    from chexcft.cli import app

    run, csvs, root, _ = tiny_run
    runner = CliRunner()
    args = ["cft", "--run", str(run), "--train-csv", str(csvs["train"]), "--valid-csv", str(csvs["valid"]),
            "--test-csv", str(csvs["test"]), "--root", str(root), "--method", "bp", "--max-steps", "5",
            "--patience", "3", "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "mean test AUC" in result.output
    result = runner.invoke(app, [*args, "--known", "everything"])
    assert result.exit_code != 0
    assert "unknown --known" in str(result.exception) + result.output
    result = runner.invoke(app, [*args, "--selection-alpha", "0"])
    assert result.exit_code != 0, "a significance level of 0 is refused"
    result = runner.invoke(app, [*args, "--early-stopping", "valid"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*args, "--early-stopping", "test"])
    assert result.exit_code != 0 and "early_stopping" in str(result.exception) + result.output


def test_cli_selection_alpha_reaches_the_estimator(tiny_run, monkeypatch) -> None:
    from typer.testing import CliRunner

    from chexcft.cft import pipeline
    from chexcft.cli import app

    seen = []
    real_run_cft = pipeline.run_cft

    def spy(*args, tuner=None, **kwargs):
        seen.append(tuner.selection_alpha)
        return real_run_cft(*args, tuner=tuner, **kwargs)

    monkeypatch.setattr(pipeline, "run_cft", spy)
    run, csvs, root, _ = tiny_run
    base = ["cft", "--run", str(run), "--train-csv", str(csvs["train"]), "--valid-csv", str(csvs["valid"]),
            "--root", str(root), "--method", "bp", "--max-steps", "3", "--patience", "2", "--device", "cpu"]
    for alpha in ("0.2", "1"):
        result = CliRunner().invoke(app, [*base, "--selection-alpha", alpha])
        assert result.exit_code == 0, result.output
    assert seen == [0.2, None]


def test_ensemble_mode_fine_tunes_every_member(tiny_run, tmp_path) -> None:
    import shutil

    from chexcft.cft.pipeline import run_cft_ensemble
    from chexcft.fileio import atomic_write_json

    run, csvs, root, _ = tiny_run
    ensemble = tmp_path / "ensemble"
    for name in ("member-0", "member-1"):
        shutil.copytree(run, ensemble / name, ignore=shutil.ignore_patterns("cft"))
    atomic_write_json(ensemble / "ensemble.json", {"members": ["member-0", "member-1"]})
    outs = run_cft_ensemble(ensemble, csvs["train"], csvs["valid"], root, csvs["test"], tuner=_small_tuner(),
                            n_boot=20, settings=resolve_device("cpu"))
    assert [p.parent.name for p in outs] == ["member-0", "member-1"]
    for out in outs:
        assert (out / "head.safetensors").is_file() and (out / "report.json").is_file()
        assert load_run(out.parent).has_cft


def test_cli_cross_fit_writes_per_finding_gains(tiny_run) -> None:
    from typer.testing import CliRunner

    from chexcft.cli import app

    run, csvs, root, _ = tiny_run
    args = ["cft", "--run", str(run), "--train-csv", str(csvs["train"]), "--valid-csv", str(csvs["valid"]),
            "--test-csv", str(csvs["test"]), "--root", str(root), "--method", "bp", "--max-steps", "5",
            "--patience", "3", "--device", "cpu", "--cross-fit", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cross-fitted CFT, 2 patient folds" in " ".join(result.output.split())  # rich wraps the title
    table = pd.read_csv(run / "cft" / "crossfit.csv")
    assert {"observation", "gain", "gain_ci_low", "reliable", "folds_replaced"} <= set(table.columns)
    # few positives in a 70-image slice: such findings are flagged and get no interval
    assert table.loc[~table["reliable"], "gain_ci_low"].isna().all()
    no_test = [a for a in args if a not in ("--test-csv", str(csvs["test"]))]
    result = CliRunner().invoke(app, no_test)
    assert result.exit_code != 0 and "--test-csv" in str(result.exception) + result.output
