"""Ensembles: a list of run directories trained with different seeds (and optionally policies), in DIR/ensemble.json."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from chexcft.combination import COMBINATION_KEY, ENSEMBLE_FILE, load_ensemble, read_manifest
from chexcft.errors import ChexcftError, InvalidRunError
from chexcft.fileio import atomic_write_json
from chexcft.training.config import TrainConfig
from chexcft.training.loop import is_finished, train
from chexcft.training.progress import log

__all__ = ["ENSEMBLE_FILE", "load_ensemble", "member_configs", "member_dir_name", "train_ensemble"]


def member_dir_name(index: int) -> str:
    """Folder name of member `index` inside the ensemble directory."""
    return f"member-{index}"


def member_configs(
    members: int, out: str | os.PathLike[str], base_config: TrainConfig, policies: Sequence[str] | None = None
) -> list[TrainConfig]:
    """One config per member: seed = base seed + index, policy cycled from `policies` when given, out = DIR/member-i."""
    if members < 1:
        raise ChexcftError(f"--members must be at least 1, got {members}")
    policies = [p.strip() for p in policies if p.strip()] if policies else []
    out = Path(out).expanduser().resolve()
    configs = []
    for index in range(members):
        changes: dict[str, object] = {"out": str(out / member_dir_name(index)), "seed": base_config.seed + index}
        if policies:
            changes["policy"] = policies[index % len(policies)]
        configs.append(base_config.replace(**changes))
    return configs


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def train_ensemble(
    members: int, out: str | os.PathLike[str], base_config: TrainConfig, policies: Sequence[str] | None = None
) -> Path:
    """Train (or, with base_config.resume, finish) every member and write DIR/ensemble.json; returns DIR."""
    directory = Path(out).expanduser().resolve()
    configs = member_configs(members, directory, base_config, policies)
    started = directory.is_dir() and (
        (directory / ENSEMBLE_FILE).exists() or any(directory.glob("member-*"))
    )
    if started and not base_config.resume:
        raise InvalidRunError(
            f"ensemble directory {directory} already holds members: pass --resume to finish it, or choose another --out"
        )
    for index, config in enumerate(configs):
        label = f"member {index + 1}/{members} (seed {config.seed}, policy {config.policy})"
        if is_finished(config.out):
            log(f"{label}: already finished, skipped", enabled=_is_main_process())
            continue
        log(f"{label}: training into {config.out}", enabled=_is_main_process() and not config.quiet)
        train(config.replace(resume=True))
    if _is_main_process():
        manifest = {
            "members": [member_dir_name(i) for i in range(members)],
            "seeds": [c.seed for c in configs],
            "policies": [c.policy for c in configs],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        previous = read_manifest(directory).get(COMBINATION_KEY) if (directory / ENSEMBLE_FILE).is_file() else None
        if previous and previous.get("members") == manifest["members"]:
            manifest[COMBINATION_KEY] = previous  # same members: the fitted rule and calibration still apply
        atomic_write_json(directory / ENSEMBLE_FILE, manifest)
    return directory
