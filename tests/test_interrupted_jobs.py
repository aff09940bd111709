"""SIGKILL `prepare`, `cft`, `predict`, `submit` and `bundle` just before their k-th filesystem write (tests/kill.py).

For each command: count its writes W once, then for a seeded sample of k in 1..W (always the first and the last)
kill it there and check that its output location holds nothing a later step accepts, the previous complete
output, or the new complete one (never a mix), that no temporary file or folder is visible as an output, and
that re-running the same command completes with exactly the output of an uninterrupted run and leaves no
temporaries behind. Training's own SIGKILL/resume tests are in tests/test_train.py.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from chexcft.cli import app
from tests.kill import run_forked
from tests.prediction_builders import add_unreadable_study, make_prediction_tree, make_tiny_run
from tests.train_helpers import IMAGE_SIZE, TinyData, make_tiny_data, run_cli, tiny_config

FRESH, PREVIOUS = "fresh", "previous"  # the output location starts empty / holds an older complete output
ALL = 1000  # n_points: kill at every write
Snapshot = dict[str, bytes] | None  # what a later step would read at the output location (None: nothing accepted)


@dataclass
class Job:
    """One command, where it writes, how a later step reads that place, and the states to start from."""

    name: str
    args: list[str]
    output: Path  # the file or folder the command produces
    read: Callable[[Path], Snapshot]  # the output as the next step sees it; None when absent or refused
    previous_args: list[str] | None = None  # a different run of the command that leaves the older output
    exit_codes: tuple[int, ...] = (0,)
    saved: dict[str, Path] = field(default_factory=dict)  # scenario -> copy of the output location's start state


def _stray(output: Path) -> list[str]:
    """Temporaries of the atomic writers (`.NAME.*` beside the output, dot files inside it) left behind."""
    beside = [p for p in output.parent.glob(f".{output.name}.*")]
    inside = [p for p in output.rglob(".*") if p.name != ".lock"] if output.is_dir() else []
    return sorted(str(p) for p in beside + inside)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _files(folder: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, bytes]:
    """Every visible file under a folder by relative path (temporaries start with '.', so they never match)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts) and not skip(p)
    }


def _difference(a: Snapshot, b: Snapshot) -> str:
    """The first differing line of each differing file, for assertion messages."""
    if a is None or b is None:
        return f"{'nothing' if a is None else sorted(a)} vs {'nothing' if b is None else sorted(b)}"
    lines = []
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            pairs = zip((a.get(name) or b"").splitlines(), (b.get(name) or b"").splitlines())
            first = next(((x, y) for x, y in pairs if x != y), (b"(length)", b""))
            lines.append(f"{name}: {first[0][:300]!r} != {first[1][:300]!r}")
    return "; ".join(lines)


def _cli(args: list[str]) -> Any:
    """Run the command in-process (the re-runs: no kill needed, no interpreter start-up)."""
    return CliRunner().invoke(app, args)


def _kill_points(total: int, n: int, seed: int) -> list[int]:
    """The first and the last write plus n - 2 seeded ones between."""
    middle = list(range(2, total))
    return sorted({1, total, *random.Random(seed).sample(middle, min(len(middle), max(0, n - 2)))})


def _start(job: Job, scenario: str) -> None:
    """Put the output location into the scenario's start state (saved once per scenario)."""
    folder = job.output.parent
    folder.mkdir(parents=True, exist_ok=True)
    for entry in list(folder.iterdir()):
        if entry.name == job.output.name or entry.name.startswith(f".{job.output.name}."):
            _remove(entry)
    saved = job.saved.get(scenario)
    if saved is not None and saved.exists():
        (shutil.copytree if saved.is_dir() else shutil.copy2)(saved, job.output)


def _check_kills(job: Job, scenario: str, n_points: int, seed: int) -> None:
    """Kill at sampled writes from this scenario's start; check what is left, then that a re-run completes."""
    _start(job, scenario)
    old = job.read(job.output)
    assert (old is None) == (scenario == FRESH)
    reference = _cli(job.args)  # in-process first: also warms this process up for the forks (no first-use writes)
    assert reference.exit_code in job.exit_codes, reference.output
    new = job.read(job.output)
    assert new is not None and new != old
    _start(job, scenario)
    counted = run_forked(job.args, "count", 0)
    assert counted.returncode in job.exit_codes and counted.writes >= 2, counted.output[-2000:]
    assert job.read(job.output) == new, _difference(job.read(job.output), new)
    total = counted.writes
    for k in _kill_points(total, n_points, seed):
        _start(job, scenario)
        killed = run_forked(job.args, "writes", k)
        assert killed.returncode == -signal.SIGKILL, f"{job.name}: write {k} of {total}: {killed.output[-2000:]}"
        left = job.read(job.output)
        assert left is None or left == old or left == new, f"{job.name} ({scenario}) killed before write {k}/{total}"
        rerun = _cli(job.args)
        assert rerun.exit_code in job.exit_codes, f"re-run after a kill at write {k}: {rerun.output}"
        again = job.read(job.output)
        assert again == new, f"{job.name} ({scenario}): re-run after a kill at write {k}/{total}: {_difference(again, new)}"
        assert not _stray(job.output), f"{job.name}: temporaries left after the re-run (kill at write {k})"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyData:
    """48 training / 24 validation images with their 32 px cache."""
    return make_tiny_data(tmp_path_factory.mktemp("interrupted_tiny"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory):
    """An input with a DICOM study and an unreadable image, and two tiny runs with CFT heads."""
    base = tmp_path_factory.mktemp("interrupted_predict")
    data = make_prediction_tree(base / "data", seed=3)
    runs = [make_tiny_run(base / "runs" / name, train_csv=data.train_csv, root=data.root, seed=seed, cft=True)
            for name, seed in (("a", 4), ("b", 5))]
    return data, runs, base


def _save(job: Job, scenario: str, scratch: Path) -> None:
    """Run the job's older variant and keep its output as the PREVIOUS start state."""
    _start(job, FRESH)
    assert job.previous_args is not None
    result = _cli(job.previous_args)
    assert result.exit_code in job.exit_codes, result.output
    kept = scratch / f"{job.name}-{scenario}"
    shutil.move(job.output, kept)
    job.saved[scenario] = kept


# --- prepare -----------------------------------------------------------------------------------------------


def _read_cache(folder: Path) -> Snapshot:
    """Every cached image by path, as train/cft read them (ImageCache.open), or None when the cache is refused."""
    from chexcft.data.cache import ImageCache
    from chexcft.errors import InvalidDatasetError

    try:
        cache = ImageCache.open(folder)
    except InvalidDatasetError:
        return None
    index = cache.index
    return {row.path: (cache.image(row.slot).tobytes() if row.ok else row.reason.encode())
            for row in index.itertuples(index=False)}


def _prepare_job(tiny: TinyData, folder: Path) -> Job:
    common = ["--root", str(tiny.root), "--size", str(IMAGE_SIZE), "--workers", "0", "--no-progress"]
    out = folder / "cache" / f"{IMAGE_SIZE}px"
    return Job("prepare", ["prepare", "--csv", str(tiny.valid_csv), "--out", str(out), *common], out, _read_cache,
               previous_args=["prepare", "--csv", str(tiny.train_csv), "--out", str(out), *common])


@pytest.mark.parametrize("scenario", [FRESH, PREVIOUS])
def test_prepare_killed_before_a_write(tiny: TinyData, tmp_path: Path, scenario: str) -> None:
    job = _prepare_job(tiny, tmp_path)
    if scenario == PREVIOUS:  # a cache of the training images, to which prepare adds the validation images
        _save(job, scenario, tmp_path)
    _check_kills(job, scenario, n_points=8, seed=11)


def test_train_after_a_killed_prepare_completes_the_cache(tiny: TinyData, tmp_path: Path) -> None:
    from chexcft.training import train

    job = _prepare_job(tiny, tmp_path)  # here `python -m tests.kill` in a new interpreter, as the training tests do
    counted = run_cli(job.args, kill=("count", 0))
    assert counted.returncode == 0, counted.stderr[-2000:]
    total = int(re.search(r"KILL-COUNT writes=(\d+)", counted.stderr).group(1))
    _start(job, FRESH)
    assert run_cli(job.args, kill=("writes", total // 2)).returncode == -signal.SIGKILL
    assert _read_cache(job.output) is None  # an interrupted build is refused until completed
    run = train(tiny_config(tiny, tmp_path / "run", cache_dir=str(job.output.parent)))
    assert (run / "weights" / "best.safetensors").is_file()
    assert _read_cache(job.output) is not None


# --- cft -----------------------------------------------------------------------------------------------------


def _read_cft(folder: Path) -> Snapshot:
    """The CFT outputs predict reads (head, calibration) and the reports; None when there are none."""
    from chexcft.runs import load_run

    files = _files(folder, skip=lambda p: "features" in p.relative_to(folder).parts) if folder.is_dir() else {}
    if "report.csv" in files:  # timings differ from run to run; everything else must not
        report = pd.read_csv(io.BytesIO(files["report.csv"]))
        files["report.csv"] = report.drop(columns=[c for c in report.columns if "seconds" in c]).to_csv().encode()
    if "report.json" in files:
        files["report.json"] = json.dumps(_without_timings(json.loads(files["report.json"]))).encode()
    run = load_run(folder.parent)  # what predict loads: must succeed with or without a cft/ folder
    assert run.has_cft == ("head.safetensors" in files) and (run.calibration is not None) == ("calibration.json" in files)
    return files or None


def _without_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if "seconds" not in k}
    return [_without_timings(v) for v in obj] if isinstance(obj, list) else obj


@pytest.fixture(scope="module")
def cft_run(tiny: TinyData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight run (no CFT yet) over the tiny data."""
    return make_tiny_run(tmp_path_factory.mktemp("interrupted_cft") / "run", train_csv=tiny.train_csv,
                         root=tiny.root, image_size=IMAGE_SIZE, seed=6)


@pytest.mark.parametrize("scenario", [FRESH, PREVIOUS])
def test_cft_killed_before_a_write(tiny: TinyData, cft_run: Path, tmp_path: Path, scenario: str) -> None:
    base = ["cft", "--run", str(cft_run), "--train-csv", str(tiny.train_csv), "--valid-csv", str(tiny.valid_csv),
            "--root", str(tiny.root), "--cache-dir", str(tiny.cache_dir / f"{IMAGE_SIZE}px"), "--method", "bp",
            "--patience", "3", "--device", "cpu", "--selection-alpha", "1"]
    job = Job("cft", [*base, "--max-steps", "4"], cft_run / "cft", _read_cft, previous_args=[*base, "--max-steps", "1"])
    if scenario == PREVIOUS:
        _save(job, scenario, tmp_path)
    _check_kills(job, scenario, n_points=6, seed=12)


# --- predict, submit, bundle ----------------------------------------------------------------------------------


PREDICTIONS, FAILURES, SUBMISSION = "predictions.csv", "predictions.failures.csv", "submission.csv"


def _read_predictions(folder: Path) -> Snapshot:
    """The predictions with the failures list beside them: an older list beside newer predictions is a mix."""
    if not (folder / PREDICTIONS).is_file():
        return None
    return {name: (folder / name).read_bytes() for name in (PREDICTIONS, FAILURES) if (folder / name).is_file()}


@pytest.mark.parametrize("scenario", [FRESH, PREVIOUS])
def test_predict_killed_before_a_write(tree, tmp_path: Path, scenario: str) -> None:
    data, runs, _ = tree
    out = tmp_path / "out"
    common = ["--root", str(data.root), "-o", str(out / PREDICTIONS), "--device", "cpu", "-q"]
    job = Job("predict", ["predict", "-m", str(runs[0]), "-i", str(data.input_csv), *common], out, _read_predictions,
              exit_codes=(1,))  # 1: the input has an unreadable image
    if scenario == PREVIOUS:  # other predictions, and a failures list with one more image
        unreadable_csv, _ = add_unreadable_study(data)
        job.previous_args = ["predict", "-m", str(runs[1]), "-i", str(unreadable_csv), *common]
        _save(job, scenario, tmp_path)
    _check_kills(job, scenario, n_points=ALL, seed=13)


def _submission_reader(input_csv: Path) -> Callable[[Path], Snapshot]:
    """The submission as the scorer reads it, which must pass the scorer's checks whenever it is there."""
    from chexcft.submission import check_submission, read_submission

    def read(folder: Path) -> Snapshot:
        if not (folder / SUBMISSION).is_file():
            return None
        check_submission(read_submission(folder / SUBMISSION), pd.read_csv(input_csv))
        return {SUBMISSION: (folder / SUBMISSION).read_bytes()}

    return read


@pytest.mark.parametrize("scenario", [FRESH, PREVIOUS])
def test_submit_killed_before_a_write(tree, tmp_path: Path, scenario: str) -> None:
    data, runs, _ = tree
    out = tmp_path / "out"
    common = [str(data.input_csv), str(out / SUBMISSION), "--root", str(data.root), "--device", "cpu", "-q"]
    job = Job("submit", ["submit", *common, "-m", str(runs[0])], out, _submission_reader(data.input_csv),
              previous_args=["submit", *common, "-m", str(runs[1])])
    if scenario == PREVIOUS:
        _save(job, scenario, tmp_path)
    _check_kills(job, scenario, n_points=ALL, seed=14)


def _read_bundle(folder: Path) -> Snapshot:
    """Every file of the bundle (its creation time left out); None when there is no bundle folder."""
    if not folder.is_dir():
        return None
    files = _files(folder)
    settings = json.loads(files["bundle.json"])  # a bundle folder without its bundle.json would be a defect
    settings.pop("created")
    files["bundle.json"] = json.dumps(settings, sort_keys=True).encode()
    return files


@pytest.mark.slow
@pytest.mark.parametrize("scenario", [FRESH, PREVIOUS])
def test_bundle_killed_before_a_write(tree, tmp_path: Path, scenario: str) -> None:
    data, runs, _ = tree
    out = tmp_path / "bundle"
    common = ["--out", str(out), "--force", "--views", "mean", "--fill-missing", "prior"]
    job = Job("bundle", ["bundle", "-m", str(runs[0]), *common], out, _read_bundle,
              previous_args=["bundle", "-m", str(runs[1]), *common])
    if scenario == PREVIOUS:
        _save(job, scenario, tmp_path)
    _check_kills(job, scenario, n_points=6, seed=15)
    # The next step: the re-built bundle runs and writes a submission the scorer accepts.
    written = tmp_path / "scored" / SUBMISSION
    written.parent.mkdir()
    ran = subprocess.run([sys.executable, str(out / "src" / "predict.py"), str(data.input_csv), str(written)],
                         cwd=data.root, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert _submission_reader(data.input_csv)(written.parent) is not None
