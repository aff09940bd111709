"""train(config): one run from CSVs to a complete run directory (single process or DDP under torchrun)."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from chexcft.device import DeviceSettings, resolve_device, seed_everything
from chexcft.errors import ChexcftError, InvalidRunError
from chexcft.fileio import atomic_write_csv, atomic_write_json, file_sha256, read_json
from chexcft.provenance import environment_info
from chexcft.runs import CONFIG_FILE, METRICS_FILE, PREDICTIONS_FILE
from chexcft.training import checkpoint as ckpt
from chexcft.training import data as tdata
from chexcft.training.config import TrainConfig, settings_mismatch
from chexcft.distributed import DistInfo, barrier, init_distributed, local_rank_from_env
from chexcft.training.distributed import EpochSampler, unwrap
from chexcft.training.large_loss import LargeLoss, unobserved_entries, write_epoch_log
from chexcft.training.optim import COSINE, Objective, make_objective
from chexcft.training.oversample import oversample_repeats
from chexcft.training.progress import EpochProgress, log
from chexcft.training.selftrain import SELFTRAIN_DIR, self_train_relabel
from chexcft.training.validation import auc_per_observation, is_better, predict_probabilities, selection_score
SCHEDULE = COSINE
AUGMENTATION = (
    "chexcft.augmentation.Augmentation on the training device (kornia: random affine, gamma contrast, Gaussian noise), "
    "seeded per micro-batch from (seed, epoch, step, rank)"
)


@dataclass
class Prepared:
    """Everything a run needs before its first step."""

    train: tdata.SplitData
    valid: tdata.SplitData
    cache: Any
    observations: tuple[str, ...]
    policies: dict[str, str]
    targets: Any  # chexcft.labels.Targets
    unobserved: np.ndarray  # bool (n, C): blanks that the binary loss counts (Large Loss works on these)


def train(config: TrainConfig) -> Path:
    """Train one model as configured and return its complete run directory."""
    config = normalized(config).validate()
    settings = resolve_device(config.device, mixed_precision=config.mixed_precision, local_rank=local_rank_from_env())
    info = init_distributed(settings.device.type)
    run_dir = config.run_dir
    pointer = _check_run_dir(config, run_dir)
    barrier(info)
    if pointer is not None and pointer.get("finished"):
        log(f"{run_dir}: run already finished ({pointer['epoch']} epochs); nothing to do", enabled=info.is_main)
        return run_dir
    prepared = _prepare(config, info, settings)
    _train_run(config, info, settings, prepared)
    barrier(info)
    return run_dir


def is_finished(run_dir: str | Path) -> bool:
    """True when a run directory holds a finished run (its last checkpoint is marked finished)."""
    pointer = ckpt.latest_pointer(Path(run_dir))
    return bool(pointer and pointer.get("finished"))


def normalized(config: TrainConfig) -> TrainConfig:
    """The config as a run records it: absolute paths and per-loss defaults filled in (what --resume compares)."""
    return _absolute(config).resolved()


def _absolute(config: TrainConfig) -> TrainConfig:
    """Paths made absolute so that config.json and --resume do not depend on the working directory."""
    resolve = lambda p: str(Path(p).expanduser().resolve()) if p else p  # noqa: E731
    return config.replace(
        train_csv=resolve(config.train_csv),
        valid_csv=resolve(config.valid_csv),
        root=resolve(config.root),
        out=resolve(config.out),
        cache_dir=resolve(config.cache_dir),
    )


def _check_run_dir(config: TrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """Refuse to overwrite a run; with --resume check the stored settings match. Returns the checkpoint pointer."""
    non_empty = run_dir.is_dir() and any(run_dir.iterdir())
    if non_empty and not config.resume:
        raise InvalidRunError(
            f"run directory {run_dir} is not empty: pass --resume to continue that run, or choose another --out"
        )
    if run_dir.exists() and not run_dir.is_dir():
        raise InvalidRunError(f"--out {run_dir} exists and is not a folder")
    config_file = run_dir / CONFIG_FILE
    if config.resume and config_file.is_file():
        stored = read_json(config_file)
        differing = settings_mismatch(stored.get("settings", {}), config)
        if differing:
            raise InvalidRunError(
                f"{config_file}: --resume with different settings ({', '.join(differing)}); "
                "rerun the original command with --resume, or choose another --out"
            )
        sha = stored.get("train_csv_sha256")
        if sha and sha != file_sha256(config.train_csv):
            raise InvalidRunError(f"{config.train_csv} changed since {run_dir} started (sha256 differs); cannot resume")
    return ckpt.latest_pointer(run_dir) if config.resume else None


def _prepare(config: TrainConfig, info: DistInfo, settings: DeviceSettings) -> Prepared:
    """Read both tables, build the cache (rank 0 first), pick observations and policies, make the targets."""
    from chexcft.labels import make_targets, needs_self_training, parse_policy

    train_frame = tdata.read_split(config.train_csv, config.root)
    valid_frame = tdata.read_split(config.valid_csv, config.root)
    show = info.is_main and not config.quiet
    cache_dir = config.resolved_cache_dir
    if info.is_main:
        tdata.open_cache(train_frame, valid_frame, cache_dir, config.image_size, None, show)
    barrier(info)
    cache = tdata.open_cache(train_frame, valid_frame, cache_dir, config.image_size, None, False)
    train_split = tdata.attach_slots(train_frame, cache, config.train_csv)
    valid = tdata.attach_slots(valid_frame, cache, config.valid_csv)
    for name, split in (("training", train_split), ("validation", valid)):
        if split.dropped:
            log(f"[yellow]{split.dropped} {name} images could not be read and are left out[/]", enabled=info.is_main)
    if config.observations:
        observations = tdata.check_observations(config.observations)
    else:
        observations = tdata.default_observations(train_split.raw)
    policies = parse_policy(config.policy, observations)
    raw = train_split.raw[:, tdata.columns_of(observations)]
    if needs_self_training(policies, observations):
        relabelled = self_train_relabel(config, info, settings, cache, train_split, observations, policies, raw, train)
        targets = make_targets(relabelled, observations, policies, config.label_blank, config.seed, known_raw=raw)
    else:
        targets = make_targets(raw, observations, policies, config.label_blank, config.seed)
    _check_loss_targets(config, targets)
    return Prepared(train_split, valid, cache, observations, policies, targets, unobserved_entries(raw, targets.mask))


def _check_loss_targets(config: TrainConfig, targets: Any) -> None:
    """The AUC-margin loss needs hard 0/1 targets on binary columns; say which policy stands in the way."""
    if config.loss != "aucm":
        return
    if targets.multiclass:
        raise ChexcftError(f"--loss aucm trains binary scores; U-MultiClass observations ({', '.join(targets.multiclass)}) "
                           "need another policy")
    soft = (targets.mask > 0) & (targets.targets != 0) & (targets.targets != 1)
    if soft.any():
        col = int(np.nonzero(soft.any(axis=0))[0][0])
        raise ChexcftError(f"--loss aucm needs 0/1 targets; {targets.observations[col]!r} has soft targets under "
                           f"policy {targets.policies[col]} (use U-Ones, U-Zeros or U-Ignore)")


def _config_record(config: TrainConfig, prepared: Prepared, model: Any, info: DistInfo, settings: DeviceSettings,
                   steps_per_epoch: int, objective: Objective, large_loss: LargeLoss | None,
                   epoch_items: int) -> dict[str, Any]:
    """config.json: every setting, the model spec, data hashes, environment."""
    from chexcft.training.oversample import parse_oversample

    multiclass = list(prepared.targets.multiclass)
    described = objective.describe()
    described["scheduler"]["steps_per_epoch"] = steps_per_epoch
    return {
        "format_version": 1,
        "kind": "chexcft-run",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": config.to_dict(),
        "arch": config.arch,
        "init": config.init,
        "image_size": config.image_size,
        "observations": list(prepared.observations),
        "multiclass": multiclass,
        "policies": dict(prepared.policies),
        "blank": config.blank,
        "large_loss": large_loss.describe() if large_loss is not None else None,
        "loss_name": config.loss,
        "oversample": {"factors": parse_oversample(config.oversample), "items_per_epoch": epoch_items,
                       "rule": "a row appears max(factor of the observations it is a positive for) times per epoch"}
        if config.oversample else None,
        "model": unwrap(model).spec(),
        "train_csv": config.train_csv,
        "valid_csv": config.valid_csv,
        "root": config.root,
        "train_csv_sha256": file_sha256(config.train_csv),
        "valid_csv_sha256": file_sha256(config.valid_csv),
        "n_train": len(prepared.train.frame),
        "n_valid": len(prepared.valid.frame),
        "n_train_unreadable": prepared.train.dropped,
        "n_valid_unreadable": prepared.valid.dropped,
        "cache_dir": str(config.resolved_cache_dir),
        **described,
        "augmentation": AUGMENTATION if config.augment else "none",
        "accumulate": int(config.accumulate),
        "effective_batch_size": int(config.batch_size) * int(config.accumulate) * info.world_size,
        "selection": "best epoch by mean validation AUC over the competition tasks present (else over all observations)",
        "selftrain": SELFTRAIN_DIR if any(p == "U-SelfTrained" for p in prepared.policies.values()) else None,
        "world_size": info.world_size,
        "device": str(settings.device),
        "mixed_precision": settings.amp_dtype is not None,
        "amp_dtype": str(settings.amp_dtype).removeprefix("torch.") if settings.amp_dtype is not None else None,
        "channels_last": settings.channels_last,
        "compile": bool(config.compile),
        "environment": environment_info(),
    }


def _train_run(config: TrainConfig, info: DistInfo, settings: DeviceSettings, prepared: Prepared) -> None:
    from chexcft.augmentation import Augmentation, step_seed
    from chexcft.data.dataset import CachedXrayDataset, make_loader
    from chexcft.inputs import model_input
    from chexcft.models import HeadLayout, build_model
    from chexcft.models.build import reset_head

    run_dir = config.run_dir
    targets = prepared.targets
    layout = HeadLayout(prepared.observations, targets.multiclass)
    seed_everything(config.seed)
    model = build_model(config.arch, layout, init=config.init, seed=config.seed)
    if config.reset_head:
        reset_head(model, config.seed)
    model = settings.place_model(model)

    augmentation = Augmentation().to(settings.device) if config.augment else None
    train_set = CachedXrayDataset(prepared.cache, prepared.train.slots, targets.targets, targets.mask)
    repeats = oversample_repeats(targets.targets, targets.mask, prepared.observations, config.oversample) if config.oversample else None
    sampler = EpochSampler(len(train_set), info, config.seed, config.batch_size, repeats)
    loader = make_loader(train_set, config.batch_size, False, settings, config.workers, sampler=sampler, seed=config.seed)
    class_targets = settings.to(torch.from_numpy(targets.class_targets)) if targets.multiclass else None
    steps_per_epoch = len(loader)  # micro-batches; the optimiser steps once per `accumulate` of them
    if steps_per_epoch == 0:
        raise ChexcftError(f"{config.train_csv}: too few readable images for one batch per process")
    accumulate = min(int(config.accumulate), steps_per_epoch)
    updates_per_epoch = -(-steps_per_epoch // accumulate)

    objective = make_objective(config, model, updates_per_epoch, len(prepared.observations), settings.device)
    optimizer, scheduler = objective.optimizer, objective.scheduler
    large_loss = LargeLoss(config.blank, config.delta_rel, prepared.unobserved) if config.large_loss else None
    scaler = settings.grad_scaler()
    state = ckpt.TrainState(epoch=0)
    if config.resume and ckpt.latest_pointer(run_dir) is not None:
        state = ckpt.load_checkpoint(run_dir, model, optimizer, scheduler, scaler)
        objective.load_state_tensors(state.extra)
        if large_loss is not None:
            large_loss.load_state_tensors(state.extra)
        log(f"resuming {run_dir} after epoch {state.epoch}", enabled=info.is_main)

    if info.is_main and not (run_dir / CONFIG_FILE).is_file():
        record = _config_record(config, prepared, model, info, settings, updates_per_epoch, objective, large_loss, len(sampler.pool))
        atomic_write_json(run_dir / CONFIG_FILE, record)
    rows = _previous_rows(run_dir, state.epoch)

    ddp_model: torch.nn.Module = model
    if info.distributed:
        device_ids = [settings.device.index] if settings.is_cuda else None
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    train_model = settings.compile(ddp_model, config.compile)

    valid_set = CachedXrayDataset(prepared.cache, prepared.valid.slots)
    valid_loader = make_loader(valid_set, config.batch_size, False, settings, 0, seed=config.seed) if info.is_main else None
    valid_labels = prepared.valid.raw[:, tdata.columns_of(prepared.observations)]

    for epoch in range(state.epoch, config.epochs):
        sampler.set_epoch(epoch)
        objective.start_epoch(epoch)
        if large_loss is not None:
            large_loss.start_epoch(epoch)
        ddp_model.train()
        progress = EpochProgress(steps_per_epoch, epoch + 1, config.epochs, show=info.is_main and not config.quiet)
        loss_sum, n_steps = torch.zeros((), dtype=torch.float64, device=settings.device), 0
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(settings.prefetch(loader)):
            seed = step_seed(config.seed, epoch, step, info.rank)
            images = model_input(batch["image"], settings, augmentation, seed)
            class_batch = class_targets[batch["index"]] if class_targets is not None else None
            group_start = step - step % accumulate
            group_size = min(accumulate, steps_per_epoch - group_start)
            update = step + 1 == group_start + group_size
            with _gradient_sync(ddp_model, update):
                with settings.autocast():
                    raw_out = train_model(images)
                entry_loss = large_loss.entry_loss(batch["index"], step) if large_loss is not None else None
                loss = objective.loss(raw_out, layout, settings.to(batch["target"]), settings.to(batch["mask"]),
                                      class_batch, entry_loss)
                scaler.scale(loss / group_size if group_size > 1 else loss).backward()
            if update:
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            value = loss.detach()  # stays on the device: no host sync per step unless the bar shows it
            loss_sum += value
            n_steps += 1
            progress.step(value, len(images) * info.world_size)
        train_loss = float(loss_sum) / max(n_steps, 1)  # waits for the device: the rate below is then honest
        progress.close()
        rate = progress.rate
        if large_loss is not None:
            modified = large_loss.end_epoch(info)
            if info.is_main:
                paths = prepared.train.frame["Path"].to_numpy()
                write_epoch_log(run_dir, epoch + 1, modified, paths, prepared.observations, config.blank)
        if info.is_main:
            assert valid_loader is not None
            probs = predict_probabilities(model, valid_loader, settings, len(valid_set))
            aucs = auc_per_observation(valid_labels, probs, prepared.observations)
            task_mean, all_mean = selection_score(aucs)
            score = task_mean if math.isfinite(task_mean) else all_mean
            improved = is_better(score, state.best_score)
            if improved:
                state.best_score, state.best_epoch = score, epoch + 1
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "lr": scheduler.get_last_lr()[0],
                "images_per_s": rate,
                "mean_auc": task_mean,
                "mean_auc_all": all_mean,
                **{f"auc_{obs}": value for obs, value in aucs.items()},
                "best": improved,
            }
            rows.append(row)
            _write_epoch_outputs(run_dir, model, prepared, probs, rows, improved)
            state.epoch = epoch + 1
            state.finished = state.epoch == config.epochs
            state.extra = {**objective.state_tensors(), **(large_loss.state_tensors() if large_loss is not None else {})}
            ckpt.save_checkpoint(run_dir, model, optimizer, scheduler, scaler, state)
            log(
                f"epoch {epoch + 1}/{config.epochs}  loss {row['train_loss']:.4f}  mean AUC {task_mean:.4f}  "
                f"{rate:.1f} img/s" + ("  (best)" if improved else ""),
                enabled=True,
            )
        else:
            state.epoch = epoch + 1
        barrier(info)


def _gradient_sync(model: torch.nn.Module, update: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP all-reduces gradients only on the micro-batch that ends an accumulation group."""
    if update or not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def _previous_rows(run_dir: Path, epochs_done: int) -> list[dict[str, Any]]:
    """metrics.csv rows of the epochs already checkpointed (a resumed run drops the epoch that was in progress)."""
    path = run_dir / METRICS_FILE
    if epochs_done == 0 or not path.is_file():
        return []
    frame = pd.read_csv(path)
    return frame[frame["epoch"] <= epochs_done].to_dict("records")


def _write_epoch_outputs(
    run_dir: Path, model: Any, prepared: Prepared, probs: np.ndarray, rows: list[dict[str, Any]], improved: bool
) -> None:
    """Weights (last, and best when improved), valid_predictions.csv of the best epoch, metrics.csv; all atomic."""
    from chexcft.runs import save_weights

    weights = run_dir / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    save_weights(model, weights / "last.safetensors")
    if improved:
        save_weights(model, weights / "best.safetensors")
        frame = pd.DataFrame(probs, columns=list(prepared.observations))
        frame.insert(0, "Study", prepared.valid.frame["study"].to_numpy())
        frame.insert(0, "Path", prepared.valid.frame["Path"].to_numpy())
        atomic_write_csv(run_dir / PREDICTIONS_FILE, frame)
    atomic_write_csv(run_dir / METRICS_FILE, pd.DataFrame(rows))

