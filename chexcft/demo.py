"""The end-to-end demo on the bundled data: cache -> ensemble -> CFT -> held-out evaluation -> submission -> report.

Every stage calls the library (chexcft.data.cache, chexcft.ensemble, chexcft.cft, chexcft.predict,
chexcft.evaluation, chexcft.submission, chexcft.report). Re-running reuses what is finished (the cache, trained
members, CFT heads) unless `fresh=True`; evaluation, submission and report are recomputed every time (seconds).

Layout of OUT (default runs/demo):
    demo.json                      the settings (a re-run with other settings needs --fresh) and stage timings
    cache/<size>px/                the preprocessing cache (train, valid and test images)
    ensemble/ensemble.json         the ensemble; members in ensemble/member-i (run directories, with cft/)
    predictions/                   test-split image predictions per member, before and after CFT
    evaluation/                    test-split AUC rows (JSON) before and after CFT
    submission/test_submission.csv competition-format submission for the test split (scorer-checked)
    report.md, plots/*.png         the report
"""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from chexcft.errors import ChexcftError
from chexcft.fileio import atomic_write_json, read_json
from chexcft.schema import COMPETITION_TASKS

STATE_FILE = "demo.json"
STAGES: tuple[str, ...] = ("prepare", "train", "cft", "evaluate", "submit", "report")
DEFAULT_POLICIES: tuple[str, ...] = ("U-Ones", "U-Zeros", "U-Ignore")
Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoSettings:
    """Every setting of a demo run (stored in OUT/demo.json; a re-run must match them or pass fresh=True)."""

    members: int = 3
    policies: tuple[str, ...] = DEFAULT_POLICIES
    arch: str = "densenet121"
    image_size: int = 64
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    cft_method: str = "both"
    cft_max_steps: int = 1000
    cft_patience: int = 150
    cft_population: int = 50
    bootstrap: int = 1000
    quick: bool = False

    @classmethod
    def for_run(cls, members: int = 3, image_size: int | None = None, epochs: int | None = None,
                quick: bool = False) -> DemoSettings:
        """The full demo's settings, or --quick's (tiny architecture, 1 epoch, small CFT and bootstrap budgets)."""
        if quick:
            base = cls(arch="tiny", image_size=32, epochs=1, batch_size=64, cft_max_steps=40, cft_patience=10,
                       cft_population=8, bootstrap=100, quick=True)
        else:
            base = cls()
        changes: dict[str, Any] = {"members": int(members)}
        if image_size is not None:
            changes["image_size"] = int(image_size)
        if epochs is not None:
            changes["epochs"] = int(epochs)
        settings = dataclasses.replace(base, **changes)
        if settings.members < 1:
            raise ChexcftError(f"--members must be at least 1, got {settings.members}")
        return settings

    def member_policies(self) -> list[str]:
        """The uncertainty policy of each member (cycled)."""
        return [self.policies[i % len(self.policies)] for i in range(self.members)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        data = dataclasses.asdict(self)
        data["policies"] = list(self.policies)
        return data


@dataclass
class DemoResult:
    """Where everything the demo wrote is, the held-out AUC rows before and after CFT, and stage timings."""

    out: Path
    settings: DemoSettings
    report: Path
    submission: Path
    ensemble: Path
    members: list[Path]
    cache: Path
    evaluation: dict[str, Path]
    predictions: dict[str, Path]
    plots: dict[str, Path]
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    view_command: str
    seconds: dict[str, float] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        """Wall time of all stages."""
        return float(sum(self.seconds.values()))


@dataclass(frozen=True)
class DemoData:
    """The bundled data: root and the three split CSVs."""

    root: Path
    train_csv: Path
    valid_csv: Path
    test_csv: Path

    @classmethod
    def bundled(cls) -> DemoData:
        """data/demo of this checkout."""
        from chexcft.data.demo import demo_csv, demo_root

        return cls(demo_root(), demo_csv("train"), demo_csv("valid"), demo_csv("test"))


def _echo_default(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message, highlight=False)


def _stage_header(echo: Echo, index: int, name: str, detail: str) -> None:
    echo(f"[bold cyan][{index}/{len(STAGES)}] {name}[/]: {detail}")


def _reset_out(out: Path, fresh: bool, settings: DemoSettings) -> dict[str, Any]:
    """Clear OUT for --fresh (only a demo folder or an empty one); refuse settings that differ from a previous run."""
    state_file = out / STATE_FILE
    if out.exists() and not out.is_dir():
        raise ChexcftError(f"--out {out} exists and is not a folder")
    if fresh and out.is_dir() and any(out.iterdir()):
        if not state_file.is_file():
            raise ChexcftError(f"--fresh would delete {out}, which is not a demo folder (no {STATE_FILE}); choose another --out")
        shutil.rmtree(out)
    if state_file.is_file():
        state = read_json(state_file)
        stored = state.get("settings", {})
        if stored != settings.to_dict():
            differing = sorted(k for k in settings.to_dict() if stored.get(k) != settings.to_dict()[k])
            raise ChexcftError(
                f"{out} holds a demo run with other settings ({', '.join(differing)}); "
                "pass --fresh to start over, or choose another --out"
            )
        return state
    if out.is_dir() and any(out.iterdir()):
        raise ChexcftError(f"--out {out} is not empty and holds no demo run (no {STATE_FILE}); choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    state = {"settings": settings.to_dict(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "stages": {}}
    atomic_write_json(state_file, state)
    return state


def _member_progress(total: int, description: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    bar.add_task(description, total=total)
    bar.start()
    return bar


def _advance(bar: Any) -> None:
    if bar is not None:
        bar.update(bar.task_ids[0], advance=1)


def _describe(bar: Any, description: str) -> None:
    if bar is not None:
        bar.update(bar.task_ids[0], description=description)


def _stop(bar: Any) -> None:
    if bar is not None:
        bar.stop()


def _has_cft(run_dir: Path) -> bool:
    """True when run_cft finished on this member (its head, calibration and report.json are written)."""
    from chexcft.runs import run_paths

    paths = run_paths(run_dir)
    return paths.cft_head.is_file() and paths.calibration.is_file() and (paths.root / "cft" / "report.json").is_file()


def _run_cft(member: Path, data: DemoData, settings: DemoSettings, progress: bool) -> Path:
    """run_cft with the demo's budgets; the test split is passed so cft/report.csv carries held-out gains too."""
    from chexcft.cft import CategoryWiseFineTuner
    from chexcft.cft.pipeline import run_cft

    tuner = CategoryWiseFineTuner(
        method=settings.cft_method, max_steps=settings.cft_max_steps, patience=settings.cft_patience,
        population=settings.cft_population, seed=settings.seed,
    )
    return run_cft(member, data.train_csv, data.valid_csv, data.root, data.test_csv, method=settings.cft_method,
                   tuner=tuner, n_boot=settings.bootstrap, seed=settings.seed, progress=progress)


def _predict_members(members: Sequence[Path], table: pd.DataFrame, out: Path, progress: bool) -> dict[str, Path]:
    """Image-level test predictions of every member, with and without its CFT head and calibration."""
    from chexcft.predict import predict_table, write_predictions

    written: dict[str, Path] = {}
    bar = _member_progress(2 * len(members), "predicting the test split", progress)
    try:
        for member in members:
            for stage, use_cft in (("before", False), ("after", True)):
                result = predict_table(table, [member], use_cft=use_cft, batch_size=64, progress=False)
                if result.n_failed:
                    raise ChexcftError(f"{result.n_failed} test images could not be read: {result.failures.iloc[0].tolist()}")
                path, _ = write_predictions(result, out / f"test_{member.name}_{stage}_cft.csv")
                written[f"{member.name}/{stage}"] = path
                _advance(bar)
    finally:
        _stop(bar)
    return written


def _evaluate(groundtruth: pd.DataFrame, predictions: dict[str, Path], members: Sequence[Path], stage: str,
              settings: DemoSettings) -> tuple[list[dict[str, Any]], Any]:
    """AUC rows (members + mean ensemble) of one stage on the test split, and the aligned score table."""
    from chexcft.evaluation import evaluate_table, load_predictions, score_table

    tables = {member.name: load_predictions(predictions[f"{member.name}/{stage}"]) for member in members}
    table = score_table(groundtruth, tables, ensembles=("mean",), seed=settings.seed)
    rows = evaluate_table(table, bootstrap=settings.bootstrap, seed=settings.seed)
    return rows, table


def view_command(ensemble: Path, data: DemoData) -> str:
    """The `chexcft view` command that opens the viewer on the demo's ensemble and test split."""
    return shlex.join([
        "chexcft", "view", "--model", str(ensemble), "--data", str(data.test_csv), "--root", str(data.root),
        "--groundtruth", str(data.test_csv),
    ])


def run_demo(
    out: str | Path = "runs/demo",
    fresh: bool = False,
    members: int = 3,
    image_size: int | None = None,
    epochs: int | None = None,
    quick: bool = False,
    *,
    progress: bool = True,
    echo: Echo | None = None,
    data: DemoData | None = None,
) -> DemoResult:
    """Run (or finish) the whole demo into `out` and return where everything is, with the held-out AUC rows."""
    from chexcft.data import read_table
    from chexcft.data.cache import build_cache
    from chexcft.ensemble import load_ensemble, train_ensemble
    from chexcft.evaluation import load_groundtruth
    from chexcft.submission import check_submission, read_submission, submit
    from chexcft.training import TrainConfig, is_finished

    echo = echo or _echo_default
    settings = DemoSettings.for_run(members, image_size, epochs, quick)
    data = data or DemoData.bundled()
    out = Path(out).expanduser().resolve()
    state = _reset_out(out, fresh, settings)
    seconds: dict[str, float] = {}
    reused: dict[str, bool] = {}

    # 1. the preprocessing cache of every image of the three splits (only new or changed files are read)
    started = time.perf_counter()
    tables = {split: read_table(csv, data.root) for split, csv in
              (("train", data.train_csv), ("valid", data.valid_csv), ("test", data.test_csv))}
    cache_dir = out / "cache" / f"{settings.image_size}px"
    paths = [p for frame in tables.values() for p in frame["abs_path"]]
    _stage_header(echo, 1, "prepare", f"{len(paths)} images -> {settings.image_size} px cache")
    built = build_cache(paths, cache_dir, settings.image_size, progress=progress)
    reused["prepare"] = built.n_read == 0
    echo(f"    {built.summary()}")
    seconds["prepare"] = time.perf_counter() - started

    # 2. the ensemble: one member per uncertainty policy; finished members are skipped
    started = time.perf_counter()
    ensemble_dir = out / "ensemble"
    policies = settings.member_policies()
    base = TrainConfig(
        train_csv=str(data.train_csv), valid_csv=str(data.valid_csv), out=str(ensemble_dir / "member-0"),
        root=str(data.root), arch=settings.arch, image_size=settings.image_size, epochs=settings.epochs,
        batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, device="auto",
        cache_dir=str(out / "cache"), quiet=not progress, resume=True,
        extra={"demo": "chexcft demo" + (" --quick" if quick else "")},
    )
    done_before = [is_finished(ensemble_dir / f"member-{i}") for i in range(settings.members)]
    _stage_header(echo, 2, "train", f"{settings.members} x {settings.arch}, {settings.image_size} px, "
                  f"{settings.epochs} epoch(s), policies {', '.join(policies)}"
                  + (f" ({sum(done_before)} already finished)" if any(done_before) else ""))
    train_ensemble(settings.members, ensemble_dir, base, policies)
    member_dirs = load_ensemble(ensemble_dir)
    reused["train"] = all(done_before)
    seconds["train"] = time.perf_counter() - started

    # 3. CFT on each member: BP and GA on the known train labels, selection and calibration on valid
    started = time.perf_counter()
    todo = [m for m in member_dirs if not _has_cft(m)]
    _stage_header(echo, 3, "cft", f"method {settings.cft_method} on {len(member_dirs)} member(s)"
                  + (f" ({len(member_dirs) - len(todo)} already done)" if len(todo) < len(member_dirs) else ""))
    bar = _member_progress(len(todo), "CFT", progress and bool(todo))
    try:
        for member in todo:
            _describe(bar, f"CFT {member.name}")
            _run_cft(member, data, settings, progress=False)
            _advance(bar)
    finally:
        _stop(bar)
    reused["cft"] = not todo
    seconds["cft"] = time.perf_counter() - started

    # 4. held-out evaluation on test: each member and the mean ensemble, before and after CFT
    started = time.perf_counter()
    _stage_header(echo, 4, "evaluate", f"{len(tables['test'])} held-out test images, {settings.bootstrap} bootstrap replicates")
    predictions = _predict_members(member_dirs, tables["test"], out / "predictions", progress)
    groundtruth = load_groundtruth(data.test_csv)
    before, before_table = _evaluate(groundtruth, predictions, member_dirs, "before", settings)
    after, after_table = _evaluate(groundtruth, predictions, member_dirs, "after", settings)
    evaluation = {
        "before": atomic_write_json(out / "evaluation" / "test_before_cft.json", before),
        "after": atomic_write_json(out / "evaluation" / "test_after_cft.json", after),
    }
    seconds["evaluate"] = time.perf_counter() - started

    # 5. the competition submission for the test split (the ensemble after CFT), checked like the scorer does
    started = time.perf_counter()
    submission_path = out / "submission" / "test_submission.csv"
    _stage_header(echo, 5, "submit", f"{submission_path.relative_to(out)} (views combined by max)")
    submit(data.test_csv, submission_path, [ensemble_dir], root=data.root, how="max", progress=progress)
    check_submission(read_submission(submission_path), tables["test"], name=str(submission_path))
    seconds["submit"] = time.perf_counter() - started

    # 6. the report
    started = time.perf_counter()
    _stage_header(echo, 6, "report", str(out / "report.md"))
    from chexcft.report import write_demo_report

    command = view_command(ensemble_dir, data)
    result = DemoResult(
        out=out, settings=settings, report=out / "report.md", submission=submission_path, ensemble=ensemble_dir,
        members=list(member_dirs), cache=cache_dir, evaluation=evaluation, predictions=predictions, plots={},
        before=before, after=after, view_command=command, seconds=seconds, reused=reused,
    )
    seconds["report"] = 0.0
    result.plots = write_demo_report(result, data, before_table, after_table, policies)
    seconds["report"] = time.perf_counter() - started
    state["stages"] = {name: {"seconds": round(seconds[name], 2), "reused": reused.get(name, False)} for name in seconds}
    state["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(out / STATE_FILE, state)
    return result


def mean_auc_table(result: DemoResult) -> pd.DataFrame:
    """Per model: mean held-out AUC before and after CFT (a small frame for printing)."""
    after = {row["name"]: row for row in result.after}
    rows = []
    for row in result.before:
        other = after.get(row["name"], {})
        rows.append({
            "model": row["name"],
            **{f"{task} before": row["auc"].get(task) for task in COMPETITION_TASKS},
            "mean before": row.get("mean_auc"),
            **{f"{task} after": other.get("auc", {}).get(task) for task in COMPETITION_TASKS},
            "mean after": other.get("mean_auc"),
        })
    return pd.DataFrame(rows).astype({"model": str}).replace({None: np.nan})
