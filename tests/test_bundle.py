"""chexcft.bundle and `chexcft bundle`: an offline submission folder that runs without chexcft installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from chexcft.bundle import build_bundle, vendored_modules
from chexcft.cli import app
from chexcft.data import read_table
from chexcft.errors import ChexcftError
from chexcft.schema import COMPETITION_TASKS
from chexcft.submission import check_submission, read_submission, submit
from tests.prediction_builders import (
    add_unreadable_study,
    make_prediction_tree,
    make_tiny_run,
    official_score,
    study_groundtruth,
)

# Runs the bundle's program with every editable/installed chexcft finder removed, so only the vendored copy can load.
_WITHOUT_CHEXCFT = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in getattr(f, "__name__", type(f).__name__).lower()]
sys.path[:] = [p for p in sys.path if not p.rstrip("/").endswith("/work/main") and p not in ("", ".")]
program, *args = sys.argv[1:]
sys.argv = [program, *args]
runpy.run_path(program, run_name="__main__")
"""


def _snapshot(*folders: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for folder in folders for p in folder.rglob("*")}


def _run_bundle(bundle: Path, cwd: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    drop = ("PYTHONPATH", "PYTHONSTARTUP", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "TORCH_HOME", "MPLCONFIGDIR")
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    if home is not None:
        env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_CHEXCFT, str(bundle / "src" / "predict.py"), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("bundle")
    tree = make_prediction_tree(base / "data", seed=2)
    runs = [
        make_tiny_run(base / "runs" / "a", train_csv=tree.train_csv, root=tree.root, image_size=32, seed=4, cft=True),
        make_tiny_run(base / "runs" / "b", train_csv=tree.train_csv, root=tree.root, image_size=40, seed=5,
                      observations=COMPETITION_TASKS),
    ]
    bundle = base / "bundle"
    result = CliRunner().invoke(app, ["bundle", "-m", str(runs[0]), "-m", str(runs[1]), "--out", str(bundle),
                                      "--views", "mean", "--fill-missing", "prior", "--tta", "flip"])
    assert result.exit_code == 0, result.output
    return tree, runs, bundle


def test_bundle_layout_readme_and_settings(built) -> None:
    _, runs, bundle = built
    settings = json.loads((bundle / "bundle.json").read_text())
    assert settings["views"] == "mean" and settings["tta"] == "flip" and settings["fill_missing"] == "prior"
    assert set(settings["prior"]) == set(COMPETITION_TASKS)
    assert len(settings["models"]) == 2
    for name in settings["models"]:
        assert (bundle / name / "config.json").is_file()
        assert (bundle / name / "weights" / "best.safetensors").is_file()
    assert (bundle / settings["models"][0] / "cft" / "head.safetensors").is_file()
    assert (bundle / settings["models"][0] / "cft" / "calibration.json").is_file()
    assert not list(bundle.rglob("*.pt")) and not list(bundle.rglob("*.pkl")) and not list(bundle.rglob("__pycache__"))
    assert (bundle / "src" / "predict.py").is_file()
    vendored = {p.relative_to(bundle / "src").as_posix() for p in (bundle / "src" / "chexcft").rglob("*.py")}
    assert {"chexcft/__init__.py", "chexcft/submission.py", "chexcft/predict.py", "chexcft/runs.py"} <= vendored
    assert not any(p.startswith(("chexcft/cli/", "chexcft/training/")) or p == "chexcft/bundle.py" for p in vendored)
    readme = (bundle / "README.md").read_text()
    assert "python src/predict.py INPUT_CSV OUTPUT_CSV" in readme
    from importlib.metadata import version

    assert f"torch=={version('torch')}" in readme and "pandas==" in readme and "pydicom==" in readme
    for relative, digest in settings["files"].items():
        assert digest in readme and (bundle / relative).is_file()


def test_vendored_source_is_this_installation(built) -> None:
    _, _, bundle = built
    modules, _ = vendored_modules()
    for name, source in modules.items():
        copy = bundle / "src" / Path(*name.split(".")).with_suffix(".py")
        if source.name == "__init__.py":
            copy = copy.with_suffix("") / "__init__.py"
        assert copy.read_bytes() == source.read_bytes(), name


def test_bundle_runs_offline_without_chexcft_and_matches_submit(built, tmp_path: Path) -> None:
    tree, runs, bundle = built
    csv, unreadable_study = add_unreadable_study(tree)
    # The paths are relative to the working directory (it holds the release folder), the CSV lies elsewhere.
    work = tree.root
    local_csv = tmp_path / "input" / "test_input.csv"
    local_csv.parent.mkdir()
    local_csv.write_text(csv.read_text())
    home = tmp_path / "home"
    home.mkdir()
    before = _snapshot(bundle, work)
    out = work / "predictions_out.csv"
    done = _run_bundle(bundle, work, str(local_csv), "predictions_out.csv", home=home)
    assert done.returncode == 0, done.stderr
    after = _snapshot(bundle, work)
    assert set(after) - set(before) == {out}, "the bundle wrote something besides its output"
    assert list(home.iterdir()) == [], "the bundle wrote into the home folder (a cache?)"
    assert all(after[p] == before[p] for p in before), "the bundle modified a file"
    assert tree.broken_image in done.stderr and unreadable_study in done.stderr

    table = read_table(local_csv, work)
    produced = read_submission(out)
    check_submission(produced, table)
    official_score(out, study_groundtruth(table))
    expected = submit(local_csv, tmp_path / "cli.csv", runs, root=work, how="mean", tta="flip", fill_missing="prior",
                      device="cpu").frame
    assert produced["Study"].tolist() == expected["Study"].tolist()
    tasks = list(COMPETITION_TASKS)
    np.testing.assert_allclose(produced[tasks].to_numpy(), expected[tasks].to_numpy(), atol=1e-6)
    out.unlink()


def test_bundle_reports_bad_input_with_exit_2(built, tmp_path: Path) -> None:
    _, _, bundle = built
    done = _run_bundle(bundle, tmp_path, str(tmp_path / "missing.csv"), str(tmp_path / "out.csv"))
    assert done.returncode == 2 and "missing.csv" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_bundle_refuses_to_overwrite_without_force(built, tmp_path: Path) -> None:
    _, runs, bundle = built
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    for force in (False, True):  # --force replaces only an earlier bundle, never another folder
        with pytest.raises(ChexcftError, match="already exists|not an earlier bundle"):
            build_bundle(runs[:1], mine, force=force)
    assert (mine / "keep.txt").read_text() == "mine"
    target = tmp_path / "b"
    build_bundle(runs, target)
    (target / "stale.txt").write_text("old")
    with pytest.raises(ChexcftError, match="already exists"):
        build_bundle(runs[:1], target)
    info = build_bundle(runs[:1], target, force=True)
    assert not (target / "stale.txt").exists() and info.models == ["models/00-a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "mine"]  # no staging folder left behind
