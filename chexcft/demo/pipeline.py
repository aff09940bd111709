"""The end-to-end demo on the bundled data: cache -> ensemble -> CFT -> external evaluation -> cross-fit -> submission
-> report.

Members train on data/demo (NIH1000: train, best epoch on valid). CFT re-fits each member's head rows on the
known train labels (significance gate on valid), and the ensemble's rule and calibration are fitted on valid
(chexcft.combination). Held-out numbers are on data/nih617, an external set of 617 other patients: every member
and the ensemble before and after CFT, on all findings that both sides have. The cross-fit stage
(chexcft.cft.crossfit) measures CFT's own gain with an interval over every real image the backbone never trained
on (NIH1000 test + nih617), each image scored by a CFT head fitted without its patient.

Every stage calls the library. Re-running reuses what is finished (the cache, trained members, CFT heads, the
cross-fit) unless `fresh=True`; evaluation, submission and report are recomputed every time (seconds).

Layout of OUT (default runs/demo):
    demo.json                      the settings (a re-run with other settings needs --fresh) and stage timings
    cache/<size>px/                the preprocessing cache (NIH1000 and nih617 images)
    ensemble/ensemble.json         the ensemble (members, rule, its calibration); members in ensemble/member-i
    predictions/                   nih617 predictions of the ensemble (chexcft predict's layout)
    evaluation/                    nih617 AUC rows (JSON) before and after CFT; cross-fit rows
    submission/test_submission.csv competition-format submission for NIH1000 test (scorer-checked)
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
from chexcft.schema import COMPETITION_TASKS, OBSERVATIONS

STATE_FILE = "demo.json"
STAGES: tuple[str, ...] = ("prepare", "train", "cft", "evaluate", "cross-fit", "submit", "report")
# Member specs, passed to train_ensemble unchanged (a policy, or what chexcft.ensemble.member_configs parses).
DEFAULT_MEMBERS: tuple[str, ...] = ("U-Ones", "U-Zeros", "U-Ignore", "U-Zeros+LL-R")
QUICK_CFT: dict[str, Any] = {"max_steps": 40, "patience": 10, "population": 8}
# The demo's CFT settings: the estimator's own defaults (convergence-aware, with a per-category time budget).
DEMO_CFT: dict[str, Any] = {}
Echo = Callable[[str], None]


@dataclass(frozen=True)
class DemoSettings:
    """Every setting of a demo run (stored in OUT/demo.json; a re-run must match them or pass fresh=True)."""

    members: int = len(DEFAULT_MEMBERS)
    policies: tuple[str, ...] = DEFAULT_MEMBERS
    arch: str = "densenet121"
    image_size: int = 64
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    cft_method: str = "both"
    cft_params: tuple[tuple[str, Any], ...] = tuple(DEMO_CFT.items())  # CategoryWiseFineTuner settings
    ensemble_rule: str = "mean-logit"
    cross_fit: int = 3
    bootstrap: int = 1000
    quick: bool = False

    @classmethod
    def for_run(cls, members: int | None = None, image_size: int | None = None, epochs: int | None = None,
                quick: bool = False, policies: Sequence[str] | None = None, rule: str | None = None) -> DemoSettings:
        """The full demo's settings, or --quick's (tiny architecture, 1 epoch, small CFT and bootstrap budgets)."""
        from chexcft.combination import check_rule

        if quick:
            base = cls(arch="tiny", image_size=32, epochs=1, batch_size=64, cft_params=tuple(QUICK_CFT.items()),
                       cross_fit=2, bootstrap=100, quick=True)
        else:
            base = cls()
        changes: dict[str, Any] = {}
        if policies:
            changes["policies"] = tuple(str(p) for p in policies)
        changes["members"] = int(members) if members is not None else len(changes.get("policies", base.policies))
        if image_size is not None:
            changes["image_size"] = int(image_size)
        if epochs is not None:
            changes["epochs"] = int(epochs)
        if rule is not None:
            changes["ensemble_rule"] = check_rule(rule)
        settings = dataclasses.replace(base, **changes)
        if settings.members < 1:
            raise ChexcftError(f"--members must be at least 1, got {settings.members}")
        return settings

    def member_policies(self) -> list[str]:
        """The member spec of each member (cycled)."""
        return [self.policies[i % len(self.policies)] for i in range(self.members)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        data = dataclasses.asdict(self)
        data["policies"] = list(self.policies)
        data["cft_params"] = dict(self.cft_params)
        return data


@dataclass(frozen=True)
class DemoData:
    """The bundled data: NIH1000's root and split CSVs, and the external set's root and CSV."""

    root: Path
    train_csv: Path
    valid_csv: Path
    test_csv: Path
    external_root: Path
    external_csv: Path

    @classmethod
    def bundled(cls) -> DemoData:
        """data/demo and data/nih617 of this checkout."""
        from chexcft.demo.data import demo_csv, demo_root, external_csv, external_root

        return cls(demo_root(), demo_csv("train"), demo_csv("valid"), demo_csv("test"), external_root(), external_csv())


@dataclass
class Evaluation:
    """Held-out AUC rows (chexcft.evaluation rows) before and after CFT, and the aligned score tables."""

    tasks: tuple[str, ...]
    before: list[dict[str, Any]]
    after: list[dict[str, Any]]
    before_table: Any
    after_table: Any
    coverage: pd.DataFrame  # per finding: predicted by the members? labelled in the external set? evaluated?


@dataclass
class DemoResult:
    """Where everything the demo wrote is, the held-out rows, the cross-fit and stage timings."""

    out: Path
    settings: DemoSettings
    data: DemoData
    report: Path
    submission: Path
    ensemble: Path
    members: list[Path]
    cache: Path
    evaluation: dict[str, Path]
    predictions: dict[str, Path]
    plots: dict[str, Path]
    external: Evaluation
    crossfit: dict[str, Any]
    combination: Any
    view_command: str
    seconds: dict[str, float] = field(default_factory=dict)
    reused: dict[str, bool] = field(default_factory=dict)

    @property
    def before(self) -> list[dict[str, Any]]:
        """External AUC rows before CFT (members, then the ensemble)."""
        return self.external.before

    @property
    def after(self) -> list[dict[str, Any]]:
        """External AUC rows after CFT."""
        return self.external.after

    @property
    def total_seconds(self) -> float:
        """Wall time of all stages."""
        return float(sum(self.seconds.values()))


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


def _advance(bar: Any, description: str | None = None) -> None:
    if bar is not None:
        bar.update(bar.task_ids[0], advance=1, **({"description": description} if description else {}))


def _stop(bar: Any) -> None:
    if bar is not None:
        bar.stop()


def _has_cft(run_dir: Path) -> bool:
    """True when run_cft finished on this member (its head, calibration and report.json are written)."""
    from chexcft.runs import run_paths

    paths = run_paths(run_dir)
    return paths.cft_head.is_file() and paths.calibration.is_file() and (paths.root / "cft" / "report.json").is_file()


def _tuner(settings: DemoSettings) -> Any:
    from chexcft.cft import CategoryWiseFineTuner

    return CategoryWiseFineTuner(method=settings.cft_method, seed=settings.seed, **dict(settings.cft_params))


def _run_cft(member: Path, data: DemoData, settings: DemoSettings) -> Path:
    """run_cft: known train labels, gate on valid; nih617 is the held-out split of cft/report.csv."""
    from chexcft.cft.pipeline import run_cft

    # root None: each CSV's root is inferred from its location (NIH1000's and nih617's differ)
    return run_cft(member, data.train_csv, data.valid_csv, None, data.external_csv, method=settings.cft_method,
                   tuner=_tuner(settings), n_boot=settings.bootstrap, seed=settings.seed)


def _logits(member: Path, csv: Path, root: Path, head: str) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    """A member's logits (n, C) on a CSV's images from its cached features: the trained head or the CFT head."""
    from chexcft.cft.pipeline import split_features
    from chexcft.runs import load_weights, run_paths

    split = split_features(member, csv, None)  # root inferred, as run_cft's exports (one feature file per CSV)
    if head == "cft":
        tensors = load_weights(run_paths(member).cft_head)
        weight, bias = tensors["weight"].numpy(), tensors["bias"].numpy()
    else:
        weight, bias = split.weight, split.bias
    return split.features.astype(np.float64) @ weight.T.astype(np.float64) + bias, split.observations, split.paths


def _member_logits(members: Sequence[Path], csv: Path, root: Path, head: str) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
    parts = [_logits(m, csv, root, head) for m in members]
    if any(p[2] != parts[0][2] for p in parts):
        raise ChexcftError(f"{csv}: the members' feature exports list different images")
    return np.stack([p[0] for p in parts]), parts[0][1], parts[0][2]


def external_tasks(observations: Sequence[str], truth: pd.DataFrame) -> tuple[tuple[str, ...], pd.DataFrame]:
    """The findings evaluated on the external set (predicted, labelled, both classes present) and a coverage table."""
    from chexcft.data.nih import NIH_TO_CHEXPERT

    rows = []
    for name in OBSERVATIONS:
        values = truth[name] if name in truth.columns else pd.Series(dtype=float)
        n_pos, n_neg = int((values == 1).sum()), int((values == 0).sum())
        predicted, labelled = name in observations, bool(n_pos + n_neg)
        reason = ("" if predicted and labelled and n_pos and n_neg else
                  "no NIH finding maps to it: the external set has no label" if not labelled else
                  "the members do not predict it" if not predicted else "one class absent")
        rows.append({"finding": name, "NIH source": ", ".join(k for k, v in NIH_TO_CHEXPERT.items() if v == name) or "-",
                     "predicted": predicted, "positives": n_pos, "negatives": n_neg,
                     "evaluated": not reason, "note": reason})
    for nih, mapped in NIH_TO_CHEXPERT.items():
        if mapped is None:
            rows.append({"finding": f"({nih})", "NIH source": nih, "predicted": False, "positives": None,
                         "negatives": None, "evaluated": False,
                         "note": "NIH finding with no CheXpert counterpart: the members cannot predict it"})
    coverage = pd.DataFrame(rows)
    return tuple(coverage.loc[coverage["evaluated"], "finding"]), coverage


def _score_rows(truth: pd.DataFrame, scores: dict[str, np.ndarray], observations: Sequence[str],
                tasks: tuple[str, ...], settings: DemoSettings) -> tuple[list[dict[str, Any]], Any]:
    """chexcft.evaluation rows for every named (n, C) score set against the external truth (one image per study)."""
    from chexcft.evaluation import evaluate_table, score_table
    from chexcft.keys import study_key

    columns = [list(observations).index(t) for t in tasks]
    frames = {}
    for name, values in scores.items():
        frame = pd.DataFrame(values[:, columns], columns=list(tasks))
        frame.insert(0, "Study", truth["Path"].astype(str).map(study_key).to_numpy())
        frames[name] = frame
    groundtruth = pd.concat([frames[next(iter(frames))][["Study"]], truth[list(tasks)].reset_index(drop=True)], axis=1)
    table = score_table(groundtruth, frames, ensembles=(), tasks=tasks, seed=settings.seed)
    rows = evaluate_table(table, bootstrap=settings.bootstrap, seed=settings.seed)
    for row in rows:
        _flag_reliability(row)
    return rows, table


def _flag_reliability(row: dict[str, Any]) -> None:
    """Mark findings with < MIN_CLASS_COUNT positives or negatives unreliable and drop their interval."""
    from chexcft.evaluation.metrics import is_reliable

    negatives = {task: row["n_studies"] - n for task, n in row["positives"].items()}
    row["reliable"] = {task: is_reliable(row["positives"][task], negatives[task]) for task in row["positives"]}
    for task, ok in row["reliable"].items():
        if not ok:
            row["ci"][task] = [None, None]
            row["delong_ci"][task] = [None, None]
    # the radiologists' points are CheXpert's, not NIH's: counting them against NIH images would mean nothing
    row["radiologists_below"] = {task: None for task in row["radiologists_below"]}


def _external_evaluation(members: Sequence[Path], combination: Any, data: DemoData, settings: DemoSettings,
                         out: Path) -> Evaluation:
    """Members and the ensemble (its rule) before and after CFT on nih617, every finding both sides have."""
    from chexcft.combination import fit_combination
    from chexcft.data import read_table

    truth = read_table(data.external_csv, data.external_root).reset_index(drop=True)
    before, observations, paths = _member_logits(members, data.external_csv, data.external_root, "trained")
    after, _, _ = _member_logits(members, data.external_csv, data.external_root, "cft")
    if list(paths) != truth["Path"].astype(str).tolist():
        raise ChexcftError(f"{data.external_csv}: feature rows do not follow the CSV (unreadable images?)")
    tasks, coverage = external_tasks(observations, truth)
    valid_before, _, _ = _member_logits(members, data.valid_csv, data.root, "trained")
    valid_truth = read_table(data.valid_csv, data.root)[list(observations)].to_numpy(dtype=np.float64)
    # before CFT the same rule is fitted on the trained heads' validation logits
    rule_before = fit_combination(valid_before, valid_truth, observations, combination.rule)
    sets = {}
    for stage, logits, rule in (("before", before, rule_before), ("after", after, combination)):
        scores = {member.name: 1.0 / (1.0 + np.exp(-logits[m])) for m, member in enumerate(members)}
        scores["ensemble"] = rule.proba(logits, observations)
        sets[stage] = _score_rows(truth, scores, observations, tasks, settings)
    atomic_write_json(out / "evaluation" / "external_before_cft.json", sets["before"][0])
    atomic_write_json(out / "evaluation" / "external_after_cft.json", sets["after"][0])
    return Evaluation(tasks, sets["before"][0], sets["after"][0], sets["before"][1], sets["after"][1], coverage)


def partial_labels(truth: np.ndarray, observations: Sequence[str], seed: int = 0) -> np.ndarray:
    """CFT's fitting labels for the cross-fit: the demo's partial-label protocol on the true labels, 1/0 known only."""
    from chexcft.cft.pipeline import cft_labels
    from chexcft.demo.data import hide_labels

    frame = pd.DataFrame(np.nan, index=range(truth.shape[0]), columns=list(OBSERVATIONS))
    for c, name in enumerate(observations):
        if name in frame.columns:
            frame[name] = truth[:, c]
    hidden = hide_labels(frame, seed)
    return cft_labels(hidden[list(observations)].to_numpy(dtype=np.float64))


def _cross_fit(members: Sequence[Path], combination: Any, data: DemoData, settings: DemoSettings, out: Path,
               progress: bool) -> tuple[dict[str, Any], bool]:
    """Cross-fitted CFT per member over NIH1000 test + nih617, and the ensemble's cross-fitted gain (its rule)."""
    from chexcft.cft.crossfit import cluster_weights, cross_fit_run
    from chexcft.combination import fit_combination
    from chexcft.data import read_table
    from chexcft.evaluation.metrics import is_reliable, roc_auc, weighted_auc

    target = out / "evaluation" / "crossfit.json"
    if target.is_file():
        stored = read_json(target)
        if stored.get("members") == [m.name for m in members] and all((m / "cft" / "crossfit.csv").is_file() for m in members):
            return stored, True
    pool = [(data.test_csv, None), (data.external_csv, None)]
    bar = _member_progress(len(members), "cross-fit", progress)
    results = []
    try:
        for member in members:
            results.append(cross_fit_run(
                member, pool, data.valid_csv, None, k=settings.cross_fit, seed=settings.seed,
                n_boot=settings.bootstrap, fit_labels=lambda y, o: partial_labels(y, o, settings.seed),
                tuner_params={"method": settings.cft_method, **dict(settings.cft_params)},
            ))
            _advance(bar)
    finally:
        _stop(bar)
    first = results[0]
    observations = tuple(first.table["observation"])
    valid_truth = read_table(data.valid_csv, data.root)[list(observations)].to_numpy(dtype=np.float64)
    valid_before, _, _ = _member_logits(members, data.valid_csv, data.root, "trained")
    rule_before = fit_combination(valid_before, valid_truth, observations, combination.rule)
    # the folds' heads differ from the pipeline's CFT head, so the rank reference is re-read from their own logits
    oof_after = np.stack([r.after for r in results])
    rule_after = fit_combination(oof_after, np.full(oof_after.shape[1:], np.nan), observations, combination.rule)
    ens_before = rule_before.scores(np.stack([r.before for r in results]), observations)
    ens_after = rule_after.scores(oof_after, observations)
    weights = cluster_weights(first.groups, settings.bootstrap, settings.seed)
    ensemble_rows = []
    for c, name in enumerate(observations):
        y = first.truth[:, c]
        known = np.isin(y, (0.0, 1.0))
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        row: dict[str, Any] = {"observation": name, "n_pos": n_pos, "n_neg": n_neg,
                               "reliable": is_reliable(n_pos, n_neg)}
        if n_pos and n_neg:
            row["auc_before"] = roc_auc(y[known], ens_before[known, c])
            row["auc_after"] = roc_auc(y[known], ens_after[known, c])
            row["gain"] = row["auc_after"] - row["auc_before"]
            if row["reliable"]:
                w = weights[:, known]
                gains = weighted_auc(y[known], ens_after[known, c], w) - weighted_auc(y[known], ens_before[known, c], w)
                finite = gains[np.isfinite(gains)]
                row["gain_ci"] = [float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))]
        ensemble_rows.append(row)
    summary = {
        "members": [m.name for m in members],
        "settings": first.settings,
        "per_member": {m.name: r.table.replace({np.nan: None}).to_dict(orient="records") for m, r in zip(members, results)},
        "ensemble": ensemble_rows,
        "ensemble_rule": combination.rule,
    }
    from chexcft.cft.pipeline import _finite

    atomic_write_json(target, _finite(summary))
    return read_json(target), False


def view_command(ensemble: Path, data: DemoData) -> str:
    """The `chexcft view` command that opens the viewer on the demo's ensemble and the external set."""
    return shlex.join([
        "chexcft", "view", "--model", str(ensemble), "--data", str(data.external_csv), "--root",
        str(data.external_root), "--groundtruth", str(data.external_csv),
    ])


def run_demo(
    out: str | Path = "runs/demo",
    fresh: bool = False,
    members: int | None = None,
    image_size: int | None = None,
    epochs: int | None = None,
    quick: bool = False,
    *,
    policies: Sequence[str] | None = None,
    rule: str | None = None,
    progress: bool = True,
    echo: Echo | None = None,
    data: DemoData | None = None,
) -> DemoResult:
    """Run (or finish) the whole demo into `out` and return where everything is, with the held-out rows."""
    from chexcft.combination import calibrate_ensemble, read_combination
    from chexcft.data import read_table
    from chexcft.data.cache import build_cache
    from chexcft.ensemble import load_ensemble, train_ensemble
    from chexcft.predict import predict_table, write_predictions
    from chexcft.submission import check_submission, read_submission, submit
    from chexcft.training import TrainConfig, is_finished

    echo = echo or _echo_default
    settings = DemoSettings.for_run(members, image_size, epochs, quick, policies, rule)
    data = data or DemoData.bundled()
    out = Path(out).expanduser().resolve()
    state = _reset_out(out, fresh, settings)
    seconds: dict[str, float] = {}
    reused: dict[str, bool] = {}

    # 1. the preprocessing cache of every image (NIH1000's three splits and nih617; only new or changed files are read)
    started = time.perf_counter()
    tables = {split: read_table(csv, root) for split, csv, root in
              (("train", data.train_csv, data.root), ("valid", data.valid_csv, data.root),
               ("test", data.test_csv, data.root), ("external", data.external_csv, data.external_root))}
    cache_dir = out / "cache" / f"{settings.image_size}px"
    paths = [p for frame in tables.values() for p in frame["abs_path"]]
    _stage_header(echo, 1, "prepare", f"{len(paths)} images (NIH1000 + nih617) -> {settings.image_size} px cache")
    built = build_cache(paths, cache_dir, settings.image_size, progress=progress)
    reused["prepare"] = built.n_read == 0
    echo(f"    {built.summary()}")
    seconds["prepare"] = time.perf_counter() - started

    # 2. the ensemble: one member per member spec (cycled); finished members are skipped
    started = time.perf_counter()
    ensemble_dir = out / "ensemble"
    specs = settings.member_policies()
    base = TrainConfig(
        train_csv=str(data.train_csv), valid_csv=str(data.valid_csv), out=str(ensemble_dir / "member-0"),
        root=str(data.root), arch=settings.arch, image_size=settings.image_size, epochs=settings.epochs,
        batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, device="auto",
        cache_dir=str(out / "cache"), quiet=not progress, resume=True,
        extra={"demo": "chexcft demo" + (" --quick" if quick else "")},
    )
    done_before = [is_finished(ensemble_dir / f"member-{i}") for i in range(settings.members)]
    _stage_header(echo, 2, "train", f"{settings.members} x {settings.arch}, {settings.image_size} px, "
                  f"{settings.epochs} epoch(s), members {', '.join(specs)}"
                  + (f" ({sum(done_before)} already finished)" if any(done_before) else ""))
    train_ensemble(settings.members, ensemble_dir, base, list(specs))
    member_dirs = load_ensemble(ensemble_dir)
    reused["train"] = all(done_before)
    seconds["train"] = time.perf_counter() - started

    # 3. CFT on each member (known train labels, gate on valid), then the ensemble's rule and calibration on valid
    started = time.perf_counter()
    todo = [m for m in member_dirs if not _has_cft(m)]
    _stage_header(echo, 3, "cft", f"method {settings.cft_method} on {len(member_dirs)} member(s)"
                  + (f" ({len(member_dirs) - len(todo)} already done)" if len(todo) < len(member_dirs) else "")
                  + f"; ensemble rule {settings.ensemble_rule}, calibrated on valid")
    bar = _member_progress(len(todo), "CFT", progress and bool(todo))
    try:
        for member in todo:
            _run_cft(member, data, settings)
            _advance(bar)
    finally:
        _stop(bar)
    combination = read_combination(ensemble_dir)
    if todo or combination.rule != settings.ensemble_rule or combination.calibration is None:
        combination = calibrate_ensemble(ensemble_dir, data.valid_csv, data.root, settings.ensemble_rule)
    reused["cft"] = not todo
    seconds["cft"] = time.perf_counter() - started

    # 4. external held-out evaluation on nih617: members and the ensemble before and after CFT, all shared findings
    started = time.perf_counter()
    _stage_header(echo, 4, "evaluate", f"{len(tables['external'])} external images (nih617), "
                  f"{settings.bootstrap} bootstrap replicates")
    external = _external_evaluation(member_dirs, combination, data, settings, out)
    predicted = predict_table(tables["external"], [ensemble_dir], batch_size=64, progress=False)
    if predicted.n_failed:
        raise ChexcftError(f"{predicted.n_failed} external images could not be read: {predicted.failures.iloc[0].tolist()}")
    path, _ = write_predictions(predicted, out / "predictions" / "external_ensemble.csv")
    _check_same_numbers(predicted.predictions, external, path)
    evaluation = {"before": out / "evaluation" / "external_before_cft.json",
                  "after": out / "evaluation" / "external_after_cft.json"}
    seconds["evaluate"] = time.perf_counter() - started

    # 5. cross-fitted CFT over every image the backbone never trained on (NIH1000 test + nih617)
    started = time.perf_counter()
    _stage_header(echo, 5, "cross-fit", f"{settings.cross_fit} patient folds over NIH1000 test + nih617 "
                  f"({len(tables['test']) + len(tables['external'])} images), per member")
    crossfit, reused["cross-fit"] = _cross_fit(member_dirs, combination, data, settings, out, progress)
    evaluation["crossfit"] = out / "evaluation" / "crossfit.json"
    seconds["cross-fit"] = time.perf_counter() - started

    # 6. the competition submission for NIH1000 test (the ensemble after CFT), checked like the scorer does
    started = time.perf_counter()
    submission_path = out / "submission" / "test_submission.csv"
    _stage_header(echo, 6, "submit", f"{submission_path.relative_to(out)} (NIH1000 test, views combined by max)")
    submit(data.test_csv, submission_path, [ensemble_dir], root=data.root, how="max", progress=progress)
    check_submission(read_submission(submission_path), tables["test"], name=str(submission_path))
    seconds["submit"] = time.perf_counter() - started

    # 7. the report
    started = time.perf_counter()
    _stage_header(echo, 7, "report", str(out / "report.md"))
    from chexcft.demo.report import write_demo_report

    result = DemoResult(
        out=out, settings=settings, data=data, report=out / "report.md", submission=submission_path,
        ensemble=ensemble_dir, members=list(member_dirs), cache=cache_dir, evaluation=evaluation,
        predictions={"external ensemble": path}, plots={}, external=external, crossfit=crossfit,
        combination=combination, view_command=view_command(ensemble_dir, data), seconds=seconds, reused=reused,
    )
    seconds["report"] = 0.0
    result.plots = write_demo_report(result)
    seconds["report"] = time.perf_counter() - started
    state["stages"] = {name: {"seconds": round(seconds[name], 2), "reused": reused.get(name, False)} for name in seconds}
    state["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    atomic_write_json(out / STATE_FILE, state)
    return result


def _check_same_numbers(predictions: pd.DataFrame, external: Evaluation, path: Path) -> None:
    """`chexcft predict` on the ensemble directory must give the numbers the evaluation scored (one rule)."""
    scored = external.after_table.scores["ensemble"]
    mine = predictions[list(external.tasks)].to_numpy(dtype=np.float64)
    if mine.shape != scored.shape or not np.allclose(mine, scored, atol=1e-4):
        worst = float(np.nanmax(np.abs(mine - scored))) if mine.shape == scored.shape else float("nan")
        raise ChexcftError(f"{path}: predict's ensemble probabilities differ from the evaluated ones (max {worst:.2g})")


def mean_auc_table(result: DemoResult, tasks: Sequence[str] = COMPETITION_TASKS) -> pd.DataFrame:
    """Per model: mean external AUC over `tasks` before and after CFT (a small frame for printing)."""
    after = {row["name"]: row for row in result.after}
    rows = []
    for row in result.before:
        other = after.get(row["name"], {})
        mean_before = np.nanmean([row["auc"].get(t) if row["auc"].get(t) is not None else np.nan for t in tasks])
        mean_after = np.nanmean([other.get("auc", {}).get(t) if other.get("auc", {}).get(t) is not None else np.nan
                                 for t in tasks])
        rows.append({"model": row["name"], "mean before": mean_before, "mean after": mean_after,
                     "change": mean_after - mean_before})
    return pd.DataFrame(rows)
