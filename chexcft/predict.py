"""Image-level predictions from one or more runs: streamed from the files, batched, sharded under torchrun.

One run predicts with its CFT head and its own calibration. An ensemble directory predicts with the rule
and calibration recorded in its ensemble.json (chexcft.combination: by default the mean of the members'
logits after CFT, before any calibration, then the ensemble's own calibration). Several run or ensemble
directories given together are pooled into one ad-hoc ensemble: the mean of all their runs' logits, with no
calibration (fit one with an ensemble directory and `chexcft calibrate-ensemble`). Members may have been
trained on different observation sets; the output keeps the observations that every model predicts (the
intersection), so no column silently averages fewer models, and reports the ones it dropped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from chexcft.device import DeviceSettings, inference_mode, resolve_device
from chexcft.inputs import model_input
from chexcft.errors import ChexcftError, InvalidRunError
from chexcft.fileio import atomic_write_csv
from chexcft.schema import OBSERVATIONS

TTA_MODES: tuple[str, ...] = ("none", "flip")
FAILURE_COLUMNS: tuple[str, ...] = ("Path", "reason")


class ImageFileDataset(Dataset):
    """Reads and letterboxes image files (in loader workers); an unreadable file is flagged, never raised."""

    def __init__(self, paths: Sequence[str], size: int) -> None:
        self.paths = [str(path) for path in paths]
        self.size = int(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from chexcft.preprocess import load_for_model

        try:
            pixels = load_for_model(self.paths[index], self.size)
            ok, reason = True, ""
        except (ChexcftError, OSError, ValueError, MemoryError) as exc:
            pixels = np.zeros((self.size, self.size), dtype=np.uint8)
            ok, reason = False, str(exc) or type(exc).__name__
        return {"image": torch.from_numpy(pixels)[None], "index": index, "ok": ok, "reason": reason}


@dataclass
class PredictionResult:
    """Per-image probabilities of the readable images (input order) and the unreadable ones with reasons."""

    predictions: pd.DataFrame  # Path + observations
    failures: pd.DataFrame  # Path, reason
    observations: tuple[str, ...]
    models: tuple[str, ...]
    dropped_observations: tuple[str, ...] = field(default_factory=tuple)
    rank: int = 0  # this process's rank under torchrun (only rank 0 writes files)

    @property
    def n_failed(self) -> int:
        """Number of images that could not be read."""
        return len(self.failures)


def expand_model_dirs(model_dirs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The run directories to predict with: an ensemble directory (with ensemble.json) expands to its members."""
    from chexcft.combination import is_ensemble, load_ensemble

    runs: list[Path] = []
    for entry in model_dirs:
        path = Path(entry)
        if is_ensemble(path):
            runs.extend(Path(member) for member in load_ensemble(path))
        elif path.is_dir():
            runs.append(path)
        else:
            raise InvalidRunError(f"{path}: no such run or ensemble directory")
    if not runs:
        raise InvalidRunError("no model given: pass at least one run directory")
    return runs


def resolve_models(
    model_dirs: Sequence[str | os.PathLike[str]], combination: Any = None, use_cft: bool = True
) -> tuple[list[Path], Any]:
    """(run directories, chexcft.combination.Combination or None for a single run's own calibration).

    `combination` (a Combination or its dict) overrides what the directories record (the offline bundle's).
    """
    from chexcft.combination import Combination, check_current, is_ensemble, read_combination

    run_dirs = expand_model_dirs(model_dirs)
    if combination is not None:
        if not isinstance(combination, Combination):
            combination = Combination.from_dict(combination)
        source = "the given combination"
    elif len(model_dirs) == 1 and is_ensemble(model_dirs[0]):
        combination, source = read_combination(model_dirs[0]), f"{Path(model_dirs[0]) / 'ensemble.json'}"
    elif len(run_dirs) > 1:
        combination, source = Combination(members=tuple(p.name for p in run_dirs)), "ad-hoc ensemble"
    else:
        return run_dirs, None
    if not use_cft:
        return run_dirs, combination.without_cft()
    check_current(combination, run_dirs, source)
    return run_dirs, combination


def run_observations(run: Any) -> tuple[str, ...]:
    """The observations a loaded run's predict_proba columns stand for."""
    return tuple(run.observations)


def run_image_size(run: Any) -> int:
    """The image size a loaded run was trained at (from its config)."""
    if run.image_size is None:
        raise InvalidRunError(f"{run.path}: config.json records no image_size")
    return int(run.image_size)


def shared_observations(observation_sets: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(observations every model predicts, in schema order; observations some model predicts but not all)."""
    common = set(observation_sets[0]).intersection(*map(set, observation_sets[1:]))
    union = set().union(*map(set, observation_sets))
    order = list(OBSERVATIONS) + sorted(union - set(OBSERVATIONS))
    kept = tuple(name for name in order if name in common)
    dropped = tuple(name for name in order if name in union - common)
    if not kept:
        raise InvalidRunError("the models share no observation, so they cannot be averaged")
    return kept, dropped


def _distributed_context(device: str) -> tuple[int, int, bool]:
    """(rank, world size, whether this call initialised the process group) under torchrun, else (0, 1, False)."""
    import torch.distributed as dist

    from chexcft.distributed import init_distributed, launched_by_torchrun

    if not launched_by_torchrun() or not dist.is_available():
        return 0, 1, False
    created = not dist.is_initialized()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    info = init_distributed("cuda" if use_cuda else "cpu")
    return info.rank, info.world_size, created


def _load_runs(run_dirs: Sequence[Path], which: str, use_cft: bool, settings: DeviceSettings) -> list[Any]:
    from chexcft.runs import load_run

    return [load_run(run_dir, which=which, use_cft=use_cft, settings=settings) for run_dir in run_dirs]


def _predict_shard(
    paths: Sequence[str],
    indices: np.ndarray,
    runs: Sequence[Any],
    columns: Sequence[Sequence[int]],
    n_observations: int,
    settings: DeviceSettings,
    *,
    tta: str,
    batch_size: int,
    workers: int,
    progress: bool,
) -> tuple[np.ndarray, dict[int, str]]:
    """Every model's logits (models, len(indices), n_observations) for the shard, NaN rows for unreadable images."""
    position = {int(index): row for row, index in enumerate(indices)}
    logits = np.full((len(runs), len(indices), n_observations), np.nan, dtype=np.float64)
    failures: dict[int, str] = {}
    groups: dict[int, list[int]] = {}
    for model_index, run in enumerate(runs):
        groups.setdefault(run_image_size(run), []).append(model_index)
    n_batches = -(-len(indices) // batch_size) * len(groups)
    bar = _progress_bar(progress)
    task = bar.add_task("predicting", total=n_batches) if bar is not None else None
    try:
        for size, members in groups.items():
            dataset = Subset(ImageFileDataset(paths, size), indices.tolist())
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=workers,
                pin_memory=settings.pin_memory,
            )
            for batch in loader:
                ok = batch["ok"].numpy().astype(bool)
                batch_indices = batch["index"].numpy()
                for index, good, reason in zip(batch_indices, ok, batch["reason"]):
                    if not good:
                        failures[int(index)] = str(reason)
                if ok.any():
                    images = model_input(batch["image"], settings)  # the whole pinned batch, then drop failed items
                    if not ok.all():
                        images = images[torch.from_numpy(ok).to(images.device)]
                    rows = np.array([position[int(i)] for i in batch_indices[ok]], dtype=np.int64)
                    with inference_mode(settings):
                        for model_index in members:
                            values = _model_logits(runs[model_index], images, tta)
                            logits[model_index, rows] = values[:, columns[model_index]]
                if bar is not None:
                    bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    for index in failures:
        logits[:, position[index]] = np.nan
    return logits, failures


def _model_logits(run: Any, images: torch.Tensor, tta: str) -> np.ndarray:
    """One model's logits (CFT head when loaded with it) for a batch, averaged over the horizontal flip when asked."""
    logits = np.asarray(run.predict_logits(images, batch_size=len(images)), dtype=np.float64)
    if tta == "flip":
        flipped = run.predict_logits(torch.flip(images, dims=[-1]), batch_size=len(images))
        logits = 0.5 * (logits + np.asarray(flipped, dtype=np.float64))
    return logits


def combine_probabilities(logits: np.ndarray, runs: Sequence[Any], combination: Any, observations: Sequence[str],
                          calibrated: bool = True) -> np.ndarray:
    """(n, C) probabilities from model logits (M, n, C): a single run's calibration, or the ensemble's rule."""
    if combination is not None:
        return combination.proba(logits, observations, calibrated=calibrated)
    run = runs[0]
    if calibrated and run.calibration is not None:
        return np.asarray(run.calibration.apply(logits[0], observations), dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-logits[0]))


def _progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )
    bar.start()
    return bar


def _gather_shards(
    proba: np.ndarray, failures: dict[int, str], n_paths: int, rank: int, world: int, settings: DeviceSettings
) -> tuple[np.ndarray, dict[int, str]]:
    """Every rank's strided shard merged on every rank (tensors and JSON bytes: nothing is pickled)."""
    import json

    import torch.distributed as dist

    device = settings.device if dist.get_backend() == "nccl" else torch.device("cpu")
    longest = -(-n_paths // world)
    padded = torch.full((longest, proba.shape[1]), float("nan"), dtype=torch.float64, device=device)
    padded[: len(proba)] = torch.from_numpy(proba).to(device)
    shards = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(shards, padded)
    merged = np.full((n_paths, proba.shape[1]), np.nan)
    for shard_rank, shard in enumerate(shards):
        shard_indices = np.arange(shard_rank, n_paths, world)
        merged[shard_indices] = shard[: len(shard_indices)].cpu().numpy()

    encoded = torch.tensor(list(json.dumps(failures).encode("utf-8")), dtype=torch.uint8, device=device)
    size = torch.tensor([encoded.numel()], dtype=torch.int64, device=device)
    sizes = [torch.empty_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    widest = int(max(int(s.item()) for s in sizes))
    buffer = torch.zeros(widest, dtype=torch.uint8, device=device)
    buffer[: encoded.numel()] = encoded
    buffers = [torch.empty_like(buffer) for _ in range(world)]
    dist.all_gather(buffers, buffer)
    merged_failures: dict[int, str] = {}
    for shard_size, shard_bytes in zip(sizes, buffers):
        text = bytes(shard_bytes[: int(shard_size.item())].cpu().tolist()).decode("utf-8")
        merged_failures.update({int(index): reason for index, reason in json.loads(text).items()})
    return merged, merged_failures


def _member_logits(
    paths: Sequence[str], run_dirs: Sequence[Path], *, tta: str, batch_size: int, device: str, workers: int,
    which: str, use_cft: bool, progress: bool,
) -> tuple[np.ndarray, dict[int, str], list[Any], tuple[str, ...], tuple[str, ...], int]:
    """(logits (M, n, C) for every path, failures, loaded runs, observations, dropped observations, rank)."""
    if tta not in TTA_MODES:
        raise ChexcftError(f"unknown test-time augmentation {tta!r}; use one of {', '.join(TTA_MODES)}")
    if batch_size < 1:
        raise ChexcftError(f"batch size must be at least 1, got {batch_size}")
    rank, world, created = _distributed_context(device)
    try:
        local_rank = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None
        settings = resolve_device(device, local_rank=local_rank)
        runs = _load_runs(run_dirs, which, use_cft, settings)
        observations, dropped = shared_observations([run_observations(run) for run in runs])
        columns = [[run_observations(run).index(name) for name in observations] for run in runs]
        indices = np.arange(rank, len(paths), world, dtype=np.int64)
        logits, failures = _predict_shard(
            paths, indices, runs, columns, len(observations), settings,
            tta=tta, batch_size=batch_size, workers=workers, progress=progress and rank == 0,
        )
        if world > 1:
            m, c = logits.shape[0], logits.shape[2]
            flat = logits.transpose(1, 0, 2).reshape(len(indices), m * c)
            flat, failures = _gather_shards(flat, failures, len(paths), rank, world, settings)
            logits = flat.reshape(len(paths), m, c).transpose(1, 0, 2)
    finally:
        if created:
            import torch.distributed as dist

            dist.destroy_process_group()
    return logits, failures, runs, observations, dropped, rank


def predict_paths(
    paths: Sequence[str],
    model_dirs: Sequence[str | os.PathLike[str]],
    *,
    labels: Sequence[str] | None = None,
    tta: str = "none",
    batch_size: int = 32,
    device: str = "auto",
    workers: int = 0,
    which: str = "best",
    use_cft: bool = True,
    calibrated: bool = True,
    combination: Any = None,
    progress: bool = False,
) -> PredictionResult:
    """Predict every image file in `paths` with the models (`labels` = the Path written per row).

    One run: its CFT head and calibration. An ensemble directory: its recorded rule and calibration
    (`combination` overrides it). `calibrated=False` leaves out every calibration (member's or ensemble's).
    Under torchrun (WORLD_SIZE > 1) each rank predicts a strided shard and every rank returns the merged result.
    """
    paths = [str(path) for path in paths]
    labels = [str(label) for label in labels] if labels is not None else paths
    if len(labels) != len(paths):
        raise ChexcftError(f"{len(labels)} labels for {len(paths)} paths")
    run_dirs, plan = resolve_models(model_dirs, combination, use_cft)
    logits, failures, runs, observations, dropped, rank = _member_logits(
        paths, run_dirs, tta=tta, batch_size=batch_size, device=device, workers=workers, which=which,
        use_cft=use_cft, progress=progress,
    )
    proba = combine_probabilities(logits, runs, plan, observations, calibrated=calibrated)
    readable = np.array([index not in failures for index in range(len(paths))], dtype=bool)
    frame = pd.DataFrame(proba[readable], columns=list(observations))
    frame.insert(0, "Path", np.asarray(labels, dtype=object)[readable])
    failed = sorted(failures)
    failure_frame = pd.DataFrame(
        {"Path": [labels[i] for i in failed], "reason": [failures[i] for i in failed]}, columns=list(FAILURE_COLUMNS)
    )
    return PredictionResult(
        predictions=frame,
        failures=failure_frame,
        observations=observations,
        models=tuple(str(path) for path in run_dirs),
        dropped_observations=dropped,
        rank=rank,
    )


def predict_member_logits(
    frame: pd.DataFrame, run_dirs: Sequence[str | os.PathLike[str]], *, which: str = "best", use_cft: bool = True,
    device: str = "auto", batch_size: int = 32, tta: str = "none", workers: int = 0, progress: bool = False,
) -> tuple[np.ndarray, tuple[str, ...], list[str]]:
    """Each run's logits (M, n, C) (CFT head when present, never calibrated) for a read_table frame's images.

    Returns (logits, observations, Paths of unreadable images); unreadable rows are NaN.
    """
    path_column = "abs_path" if "abs_path" in frame.columns else "Path"
    paths = frame[path_column].astype(str).tolist()
    logits, failures, _, observations, _, _ = _member_logits(
        paths, [Path(d) for d in run_dirs], tta=tta, batch_size=batch_size, device=device, workers=workers,
        which=which, use_cft=use_cft, progress=progress,
    )
    names = frame["Path"].astype(str).tolist()
    return logits, observations, [names[i] for i in sorted(failures)]


def predict_table(
    frame: pd.DataFrame, model_dirs: Sequence[str | os.PathLike[str]], **options: Any
) -> PredictionResult:
    """Predict the images of a table from chexcft.data.read_table (reads `abs_path`, writes `Path`)."""
    path_column = "abs_path" if "abs_path" in frame.columns else "Path"
    return predict_paths(frame[path_column].tolist(), model_dirs, labels=frame["Path"].astype(str).tolist(), **options)


def failures_path(out_path: str | os.PathLike[str]) -> Path:
    """Where the failures of `predictions.csv` go: `predictions.failures.csv` beside it."""
    out_path = Path(out_path)
    stem = out_path.name[: -len(out_path.suffix)] if out_path.suffix else out_path.name
    return out_path.with_name(f"{stem}.failures.csv")


def write_predictions(result: PredictionResult, out_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the predictions and the failures list (header only when none failed) atomically."""
    # The failures list first, so a new predictions file always has its own list beside it; an older predictions
    # file goes before the list is replaced, so it never sits beside a newer list (a kill leaves no predictions).
    Path(out_path).unlink(missing_ok=True)
    failures = atomic_write_csv(failures_path(out_path), result.failures, index=False)
    written = atomic_write_csv(out_path, result.predictions, index=False, float_format="%.8g")
    return written, failures
