"""The trainer's settings: one dataclass, validated, serialisable to config.json."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chexcft.errors import ChexcftError

LL_SCHEMES: tuple[str, ...] = ("LL-R", "LL-Ct", "LL-Cp")  # Large Loss Matters (chexcft.training.large_loss)
BLANK_MODES: tuple[str, ...] = ("negative", "ignore", *LL_SCHEMES)
LOSSES: tuple[str, ...] = ("bce", "aucm")
# Optimiser defaults per loss when --lr / --weight-decay are not given: Adam for BCE, PESG (LibAUC's CheXpert
# example) for the AUC-margin loss.
DEFAULT_LR: dict[str, float] = {"bce": 1e-4, "aucm": 0.1}
DEFAULT_WEIGHT_DECAY: dict[str, float] = {"bce": 0.0, "aucm": 1e-5}
# Settings that may differ between an interrupted run and its --resume (augmentation is seeded per step on the
# device, so --workers does not change any draw; --compile changes only the kernels).
RESUME_FREE_KEYS: frozenset[str] = frozenset({"resume", "quiet", "workers", "device", "cache_dir", "compile"})


@dataclass(kw_only=True)
class TrainConfig:
    """Every setting of one training run (keywords only; the CLI options map one to one onto these fields)."""

    train_csv: str
    valid_csv: str
    out: str
    root: str | None = None
    policy: str = "U-Ones"
    observations: tuple[str, ...] | None = None  # None: every observation with a known positive and negative
    arch: str = "densenet121"
    init: str = "random"
    image_size: int = 320
    epochs: int = 3
    batch_size: int = 16
    lr: float | None = None  # None: DEFAULT_LR[loss]
    weight_decay: float | None = None  # None: DEFAULT_WEIGHT_DECAY[loss]
    seed: int = 0
    blank: str = "negative"  # negative, ignore, or a Large Loss scheme (blanks trained as 0, then LL-modified)
    delta_rel: float = 0.2  # LL: percent of the batch's entries modified per epoch (LL-Cp: per batch, fixed)
    loss: str = "bce"
    aucm_margin: float = 1.0
    epoch_decay: float = 2e-3  # PESG's epoch-level regulariser (aucm only)
    reset_head: bool = False  # re-initialise the head after --init (two-stage recipe: BCE run, then aucm)
    oversample: str | None = None  # "Obs=factor,...": rows positive for Obs appear factor times per epoch
    augment: bool = True
    device: str = "auto"
    mixed_precision: bool = True
    workers: int = 0
    compile: bool = False  # torch.compile the training model
    accumulate: int = 1  # micro-batches per optimiser step (effective batch: batch_size x accumulate x processes)
    cache_dir: str | None = None  # None: <parent of out>/cache, shared by sibling runs
    quiet: bool = False
    resume: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes recorded in config.json

    def validate(self) -> TrainConfig:
        """Raise ChexcftError naming the first bad setting; return self when all are valid."""
        from chexcft.models import ARCHITECTURES

        if self.arch not in ARCHITECTURES:
            raise ChexcftError(f"unknown --arch {self.arch!r}; expected one of {', '.join(ARCHITECTURES)}")
        if self.blank not in BLANK_MODES:
            raise ChexcftError(f"unknown --blank {self.blank!r}; expected one of {', '.join(BLANK_MODES)}")
        if self.loss not in LOSSES:
            raise ChexcftError(f"unknown --loss {self.loss!r}; expected one of {', '.join(LOSSES)}")
        if self.blank in LL_SCHEMES:
            if not 0 < self.delta_rel <= 100:
                raise ChexcftError(f"--delta-rel is a percentage in (0, 100], got {self.delta_rel}")
            if self.loss != "bce":
                raise ChexcftError(f"--blank {self.blank} modifies BCE losses; it cannot be combined with --loss {self.loss}")
        if self.loss == "aucm":
            if not self.aucm_margin > 0:
                raise ChexcftError(f"--aucm-margin must be positive, got {self.aucm_margin}")
            if self.epoch_decay < 0:
                raise ChexcftError(f"--epoch-decay must be >= 0, got {self.epoch_decay}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ChexcftError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        if self.oversample:
            from chexcft.training.oversample import parse_oversample

            parse_oversample(self.oversample)
        for name in ("image_size", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ChexcftError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.image_size < 8:
            raise ChexcftError(f"--image-size must be at least 8, got {self.image_size}")
        if self.lr is not None and not self.lr > 0:
            raise ChexcftError(f"--lr must be positive, got {self.lr}")
        if int(self.accumulate) < 1:
            raise ChexcftError(f"--accumulate must be at least 1, got {self.accumulate}")
        if self.workers < 0:
            raise ChexcftError(f"--workers must be >= 0, got {self.workers}")
        for name in ("train_csv", "valid_csv"):
            if not Path(getattr(self, name)).is_file():
                raise ChexcftError(f"--{name.replace('_', '-')} {getattr(self, name)}: file not found")
        return self

    @property
    def run_dir(self) -> Path:
        """The run directory as an absolute path."""
        return Path(self.out).expanduser().resolve()

    @property
    def resolved_cache_dir(self) -> Path:
        """Where the preprocessing cache lives (one sub-folder per image size)."""
        base = Path(self.cache_dir).expanduser() if self.cache_dir else self.run_dir.parent / "cache"
        return (base / f"{self.image_size}px").resolve()

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values."""
        data = dataclasses.asdict(self)
        if data["observations"] is not None:
            data["observations"] = list(data["observations"])
        return data

    def resolved(self) -> TrainConfig:
        """A copy with the per-loss defaults of lr and weight_decay filled in (what config.json records)."""
        return self.replace(
            lr=DEFAULT_LR.get(self.loss, DEFAULT_LR["bce"]) if self.lr is None else self.lr,
            weight_decay=DEFAULT_WEIGHT_DECAY.get(self.loss, 0.0) if self.weight_decay is None else self.weight_decay,
        )

    @property
    def large_loss(self) -> str | None:
        """The Large Loss scheme (LL-R, LL-Ct, LL-Cp), or None."""
        return self.blank if self.blank in LL_SCHEMES else None

    @property
    def label_blank(self) -> str:
        """How chexcft.labels.make_targets treats blanks: a Large Loss scheme trains them as negatives first."""
        return "negative" if self.blank in LL_SCHEMES else self.blank

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)


def settings_mismatch(stored: dict[str, Any], current: TrainConfig) -> list[str]:
    """Names of settings that differ between a stored config.json 'settings' block and `current`."""
    now = current.resolved().to_dict()
    return sorted(
        key for key, value in now.items() if key not in RESUME_FREE_KEYS and key in stored and stored[key] != value
    )
