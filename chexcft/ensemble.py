"""Ensembles: run directories that differ by seed and by member spec (policy, blank scheme, loss), in DIR/ensemble.json.

A member spec is "POLICY[+BLANK][+LOSS][+name=value...]", e.g. "U-Ones", "U-Ones+LL-R", "U-Zeros+aucm+lr=0.1",
"U-Ones+aucm+init=file:RUN/weights/best.safetensors+reset-head". BLANK is negative, ignore, LL-R, LL-Ct or LL-Cp;
LOSS is bce or aucm; name=value sets lr, weight-decay, delta-rel, margin, epoch-decay, epochs or init, and
reset-head re-initialises the head. Parts left out come from the base settings; a member whose loss differs
from the base's gets that loss's default lr and weight decay unless the spec sets them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from chexcft.combination import COMBINATION_KEY, ENSEMBLE_FILE, load_ensemble, read_manifest
from chexcft.errors import ChexcftError, InvalidRunError
from chexcft.fileio import atomic_write_json, read_json
from chexcft.training.config import BLANK_MODES, LOSSES, TrainConfig, settings_mismatch
from chexcft.training.loop import CONFIG_FILE, is_finished, normalized, train
from chexcft.training.progress import log

__all__ = ["ENSEMBLE_FILE", "load_ensemble", "member_configs", "member_dir_name", "parse_member_spec", "train_ensemble"]
# name=value parts of a member spec: (TrainConfig field, type)
_SPEC_SETTINGS: dict[str, tuple[str, type]] = {
    "lr": ("lr", float),
    "weight-decay": ("weight_decay", float),
    "delta-rel": ("delta_rel", float),
    "margin": ("aucm_margin", float),
    "epoch-decay": ("epoch_decay", float),
    "epochs": ("epochs", int),
    "init": ("init", str),
}
# Settings a member spec can change, recorded per member in ensemble.json.
MEMBER_KEYS: tuple[str, ...] = ("seed", "policy", "blank", "loss", "delta_rel", "lr", "weight_decay", "init", "reset_head")


def member_dir_name(index: int) -> str:
    """Folder name of member `index` inside the ensemble directory."""
    return f"member-{index}"


def parse_member_spec(spec: str) -> dict[str, Any]:
    """The TrainConfig changes of one member spec (see the module docstring); raises ChexcftError naming the bad part."""
    blanks = {b.lower(): b for b in BLANK_MODES}
    losses = {name.lower(): name for name in LOSSES}
    changes: dict[str, Any] = {}
    parts = [part.strip() for part in spec.split("+")]
    if not spec.strip() or any(not part for part in parts):
        raise ChexcftError(f"member spec {spec!r}: empty part; expected POLICY[+BLANK][+LOSS][+name=value]")
    for part in parts:
        key = part.lower()
        if key in blanks:
            _set_once(changes, "blank", blanks[key], spec)
        elif key in losses:
            _set_once(changes, "loss", losses[key], spec)
        elif key == "reset-head":
            _set_once(changes, "reset_head", True, spec)
        elif "=" in part and part.split("=", 1)[0].strip().lower() in _SPEC_SETTINGS:
            name, value = (p.strip() for p in part.split("=", 1))
            field, kind = _SPEC_SETTINGS[name.lower()]
            try:
                _set_once(changes, field, kind(value), spec)
            except ValueError:
                raise ChexcftError(f"member spec {spec!r}: {name}={value!r} is not a {kind.__name__}") from None
        else:
            _set_once(changes, "policy", part, spec)
    return changes


def _set_once(changes: dict[str, Any], key: str, value: Any, spec: str) -> None:
    if key in changes:
        raise ChexcftError(f"member spec {spec!r} gives {key} twice ({changes[key]!r} and {value!r})")
    changes[key] = value


def member_configs(
    members: int, out: str | os.PathLike[str], base_config: TrainConfig, policies: Sequence[str] | None = None
) -> list[TrainConfig]:
    """One config per member: seed = base seed + index, member spec cycled from `policies`, out = DIR/member-i."""
    if members < 1:
        raise ChexcftError(f"--members must be at least 1, got {members}")
    specs = [p.strip() for p in policies if p.strip()] if policies else []
    parsed = [parse_member_spec(spec) for spec in specs]
    out = Path(out).expanduser().resolve()
    configs = []
    for index in range(members):
        changes: dict[str, Any] = {"out": str(out / member_dir_name(index)), "seed": base_config.seed + index}
        if parsed:
            spec_changes = parsed[index % len(parsed)]
            if spec_changes.get("loss", base_config.loss) != base_config.loss:
                changes.update(lr=None, weight_decay=None)  # that loss's defaults, unless the spec sets them
            changes.update(spec_changes)
        configs.append(base_config.replace(**changes))
    return configs


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _check_finished_member(config: TrainConfig, index: int, force: bool) -> None:
    """A finished member must have been trained with the requested settings (or --force-members keeps it as is)."""
    stored = read_json(Path(config.out) / CONFIG_FILE).get("settings", {})
    differing = settings_mismatch(stored, normalized(config))
    if not differing:
        return
    details = ", ".join(f"{key}: recorded {stored.get(key)!r}, requested {getattr(normalized(config), key)!r}" for key in differing)
    if not force:
        raise InvalidRunError(
            f"{config.out}: finished member {index} was trained with different settings ({details}); "
            "pass --force-members to keep it as it is, or choose another --out"
        )
    log(f"[yellow]member {index}: keeping the finished member despite different settings ({details})[/]",
        enabled=_is_main_process())


def train_ensemble(
    members: int,
    out: str | os.PathLike[str],
    base_config: TrainConfig,
    policies: Sequence[str] | None = None,
    force_members: bool = False,
) -> Path:
    """Train (or, with base_config.resume, finish) every member and write DIR/ensemble.json; returns DIR."""
    directory = Path(out).expanduser().resolve()
    configs = member_configs(members, directory, base_config, policies)
    for config in configs:
        config.validate()
    started = directory.is_dir() and (
        (directory / ENSEMBLE_FILE).exists() or any(directory.glob("member-*"))
    )
    if started and not base_config.resume:
        raise InvalidRunError(
            f"ensemble directory {directory} already holds members: pass --resume to finish it, or choose another --out"
        )
    for index, config in enumerate(configs):
        label = f"member {index + 1}/{members} (seed {config.seed}, policy {config.policy}, blank {config.blank}, loss {config.loss})"
        if is_finished(config.out):
            _check_finished_member(config, index, force_members)
            log(f"{label}: already finished, skipped", enabled=_is_main_process())
            continue
        log(f"{label}: training into {config.out}", enabled=_is_main_process() and not config.quiet)
        train(config.replace(resume=True))
    if _is_main_process():
        recorded = [read_json(Path(c.out) / CONFIG_FILE).get("settings", {}) for c in configs]
        specs = [p.strip() for p in policies if p.strip()] if policies else []
        manifest = {
            "members": [member_dir_name(i) for i in range(members)],
            "specs": [specs[i % len(specs)] if specs else None for i in range(members)],
            "seeds": [s.get("seed") for s in recorded],
            "policies": [s.get("policy") for s in recorded],
            "blanks": [s.get("blank", "negative") for s in recorded],
            "losses": [s.get("loss", "bce") for s in recorded],
            "member_settings": [{k: s.get(k) for k in MEMBER_KEYS} for s in recorded],
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        previous = read_manifest(directory).get(COMBINATION_KEY) if (directory / ENSEMBLE_FILE).is_file() else None
        if previous and previous.get("members") == manifest["members"]:
            manifest[COMBINATION_KEY] = previous  # same members: the fitted rule and calibration still apply
        atomic_write_json(directory / ENSEMBLE_FILE, manifest)
    return directory
