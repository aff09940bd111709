"""Load what the viewer shows into plain data: runs, the image table, labels, and every member's predictions.

For each image and observation the viewer shows three probabilities per model (ensemble member):
`calibrated` = what `chexcft predict` writes (CFT head and Platt calibration when the run has them),
`uncalibrated` = sigmoid of the same (CFT) logits before calibration, and `raw` = the trained head alone
(no CFT, no calibration). The ensemble value follows the ensemble's recorded rule and calibration
(chexcft.combination, as `chexcft predict` does): `calibrated` is the ensemble's calibrated probability,
`uncalibrated` the sigmoid of its combined score, `raw` the trained heads combined by the same rule.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy.special import expit
from torch.utils.data import DataLoader

from chexcft.errors import ChexcftError
from chexcft.keys import patient_key, study_key
from chexcft.preprocess import letterbox
from chexcft.schema import OBSERVATIONS

KINDS: tuple[str, ...] = ("calibrated", "uncalibrated", "raw")
_OUTPUTS: tuple[str, ...] = (*KINDS, "logits", "raw_logits")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class ModelSet:
    """The loaded runs behind the viewer (ensemble directories expanded) and their display names."""

    runs: tuple[Any, ...]  # chexcft.runs.LoadedRun
    names: tuple[str, ...]
    observations: tuple[str, ...]  # predicted by every run, schema order
    dropped: tuple[str, ...]  # predicted by some runs only (left out)
    combination: Any = None  # chexcft.combination.Combination; None for a single run (its own calibration)

    @property
    def run_dirs(self) -> tuple[Path, ...]:
        """Each member's run directory."""
        return tuple(Path(run.path) for run in self.runs)


def member_names(run_dirs: Sequence[Path]) -> tuple[str, ...]:
    """Short unique names for run directories: the folder name, with its parent when names repeat."""
    names = [Path(d).name for d in run_dirs]
    out = []
    for d, name in zip(run_dirs, names):
        out.append(f"{Path(d).parent.name}/{name}" if names.count(name) > 1 else name)
    return tuple(out)


def load_runs(model_dirs: Sequence[str | os.PathLike[str]], which: str = "best", device: str = "cpu") -> ModelSet:
    """Load every run (an ensemble directory expands to its members) with its CFT head and calibration."""
    from chexcft.device import resolve_device
    from chexcft.predict import resolve_models, shared_observations
    from chexcft.runs import load_run

    run_dirs, combination = resolve_models(model_dirs)
    settings = resolve_device(device)
    runs = tuple(load_run(run_dir, which=which, use_cft=True, settings=settings) for run_dir in run_dirs)
    observations, dropped = shared_observations([run.observations for run in runs])
    return ModelSet(runs=runs, names=member_names(run_dirs), observations=observations, dropped=dropped,
                    combination=combination)


def load_table(data: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """The image table to browse (chexcft.data.read_table) with `Study` and `Patient` keys from `Path`."""
    from chexcft.data import read_table

    table = read_table(data, root).reset_index(drop=True)
    if not len(table):
        raise ChexcftError(f"{data}: no images to show")
    paths = table["Path"].astype(str)
    table["Study"] = paths.map(study_key)
    table["Patient"] = paths.map(patient_key)
    return table


def load_labels(table: pd.DataFrame, groundtruth: str | os.PathLike[str] | None = None,
                root: str | os.PathLike[str] | None = None) -> pd.DataFrame | None:
    """Image-level labels (1/0/-1/NaN) aligned to `table`'s rows: from the ground truth, else the table's own.

    The ground truth is an image-level CSV (CheXpert layout, joined on Path) or a study-level CSV (Study + findings,
    as the official scorer's). None when there are no labels at all (e.g. an image folder and no ground truth).
    """
    if groundtruth is not None:
        labels = _groundtruth_labels(table, groundtruth, root)
    else:
        labels = table.reindex(columns=list(OBSERVATIONS)).reset_index(drop=True)
    labels = labels.apply(pd.to_numeric, errors="coerce")
    return None if labels.isna().all().all() else labels


def _groundtruth_labels(table: pd.DataFrame, groundtruth: str | os.PathLike[str],
                        root: str | os.PathLike[str] | None) -> pd.DataFrame:
    from chexcft.data import read_table
    from chexcft.errors import InvalidDatasetError
    from chexcft.keys import normalise_path
    from chexcft.schema import STUDY_COLUMN

    try:
        columns = [str(c).strip() for c in pd.read_csv(groundtruth, nrows=0).columns]
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidDatasetError(f"{groundtruth}: cannot read the ground-truth CSV ({exc})") from None
    if "Path" not in columns and STUDY_COLUMN in columns:
        truth = pd.read_csv(groundtruth, dtype={STUDY_COLUMN: str})
        truth.columns = columns
        truth = truth.assign(Study=truth[STUDY_COLUMN].map(normalise_path)).drop_duplicates(STUDY_COLUMN)
        keys = table["Study"].astype(str).map(normalise_path)
        return truth.set_index(STUDY_COLUMN).reindex(keys).reindex(columns=list(OBSERVATIONS)).reset_index(drop=True)
    truth = read_table(groundtruth, root)
    truth = truth.assign(Path=truth["Path"].astype(str)).drop_duplicates("Path").set_index("Path")
    return truth.reindex(table["Path"].astype(str))[list(OBSERVATIONS)].reset_index(drop=True)


@dataclass
class MemberPredictions:
    """Probabilities (members, images, observations) of each kind, NaN rows for unreadable images."""

    paths: list[str]  # the table's Path per row
    observations: tuple[str, ...]
    members: tuple[str, ...]
    calibrated: np.ndarray
    uncalibrated: np.ndarray
    raw: np.ndarray
    failures: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["Path", "reason"]))
    logits: np.ndarray | None = None  # (members, images, observations) after CFT, before calibration
    raw_logits: np.ndarray | None = None  # the trained heads' logits
    combination: Any = None  # the ensemble's chexcft.combination.Combination (None: a single run)

    def values(self, kind: str = "calibrated") -> np.ndarray:
        """(members, images, observations) array of one kind."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return getattr(self, kind)

    def mean(self, kind: str = "calibrated") -> np.ndarray:
        """(images, observations) ensemble value: by the ensemble's rule and calibration (see the module docstring)."""
        if self.combination is None or self.logits is None:
            return self.values(kind).mean(axis=0)
        if kind == "raw":
            return self.combination.without_cft().proba(self.raw_logits, self.observations, calibrated=False)
        return self.combination.proba(self.logits, self.observations, calibrated=kind == "calibrated")

    def frame(self, kind: str = "calibrated", member: int | None = None) -> pd.DataFrame:
        """Path + observations for the readable images (the `chexcft predict` CSV layout)."""
        values = self.mean(kind) if member is None else self.values(kind)[member]
        frame = pd.DataFrame(values, columns=list(self.observations))
        frame.insert(0, "Path", self.paths)
        return frame[np.isfinite(values).all(axis=1)].reset_index(drop=True)


def member_outputs(run: Any, images: torch.Tensor) -> dict[str, np.ndarray]:
    """One run's (N, C) probabilities of each kind for images (N, 1, S, S), uint8 or float in [0, 1] (one backbone pass)."""
    from chexcft.device import inference_mode, resolve_device
    from chexcft.inputs import model_input

    settings = run.settings or resolve_device("cpu")
    model = run.model.eval()
    with inference_mode(settings):
        features = model.features(model_input(images, settings))
        logits = model.binary_logits_from_features(features, use_override=True).float().cpu().numpy()
        raw_logits = model.binary_logits_from_features(features, use_override=False).float().cpu().numpy()
    calibrated = (run.calibration.apply(logits, run.observations) if run.calibration is not None
                  else expit(logits.astype(np.float64)))
    return {
        "calibrated": np.asarray(calibrated, dtype=np.float64),
        "uncalibrated": expit(logits.astype(np.float64)),
        "raw": expit(raw_logits.astype(np.float64)),
        "logits": logits.astype(np.float64),
        "raw_logits": raw_logits.astype(np.float64),
    }


def _columns(models: ModelSet) -> list[list[int]]:
    return [[list(run.observations).index(name) for name in models.observations] for run in models.runs]


def _size_groups(models: ModelSet) -> dict[int, list[int]]:
    from chexcft.predict import run_image_size

    groups: dict[int, list[int]] = {}
    for index, run in enumerate(models.runs):
        groups.setdefault(run_image_size(run), []).append(index)
    return groups


def predict_table_members(
    models: ModelSet, table: pd.DataFrame, *, batch_size: int = 32, progress: Progress | None = None
) -> MemberPredictions:
    """Every member's probabilities for every image of `table` (read from `abs_path`); unreadable images listed."""
    from chexcft.predict import ImageFileDataset

    paths = table["abs_path" if "abs_path" in table.columns else "Path"].astype(str).tolist()
    n, c, m = len(paths), len(models.observations), len(models.runs)
    out = {kind: np.full((m, n, c), np.nan) for kind in _OUTPUTS}
    columns = _columns(models)
    failures: dict[int, str] = {}
    groups = _size_groups(models)
    total = -(-n // batch_size) * len(groups)
    done = 0
    for size, members in groups.items():
        loader = DataLoader(ImageFileDataset(paths, size), batch_size=batch_size, shuffle=False, num_workers=0)
        for batch in loader:
            ok = batch["ok"].numpy().astype(bool)
            rows = batch["index"].numpy()
            for row, reason in zip(rows[~ok], np.asarray(batch["reason"])[~ok]):
                failures[int(row)] = str(reason)
            if ok.any():
                images = batch["image"][torch.from_numpy(ok)]
                for member in members:
                    for kind, values in member_outputs(models.runs[member], images).items():
                        out[kind][member, rows[ok]] = values[:, columns[member]]
            done += 1
            if progress is not None:
                progress(done, total)
    labels = table["Path"].astype(str).tolist()
    failed = sorted(failures)
    failure_frame = pd.DataFrame({"Path": [labels[i] for i in failed], "reason": [failures[i] for i in failed]},
                                 columns=["Path", "reason"])
    return MemberPredictions(labels, models.observations, models.names, out["calibrated"], out["uncalibrated"],
                             out["raw"], failure_frame, out["logits"], out["raw_logits"], models.combination)


def predict_pixels_members(models: ModelSet, pixels: np.ndarray, name: str = "upload") -> MemberPredictions:
    """Every member's probabilities for one decoded image (float32 (h, w) in [0, 1], e.g. an upload)."""
    m, c = len(models.runs), len(models.observations)
    out = {kind: np.full((m, 1, c), np.nan) for kind in _OUTPUTS}
    columns = _columns(models)
    for size, members in _size_groups(models).items():
        images = torch.from_numpy(letterbox(pixels, size))[None, None]
        for member in members:
            for kind, values in member_outputs(models.runs[member], images).items():
                out[kind][member] = values[:, columns[member]]
    return MemberPredictions([name], models.observations, models.names, out["calibrated"], out["uncalibrated"],
                             out["raw"], logits=out["logits"], raw_logits=out["raw_logits"],
                             combination=models.combination)


def prediction_rows(predictions: MemberPredictions, row: int, threshold: float | Mapping[str, float]) -> pd.DataFrame:
    """One image's table: per observation the calibrated and raw ensemble values, the decision, each member's value.

    `threshold`: one for every finding, or per finding (findings without one are decided at 0.5).
    """
    frame = pd.DataFrame({"Finding": list(predictions.observations)})
    frame["Calibrated"] = predictions.mean("calibrated")[row]
    frame["Raw model"] = predictions.mean("raw")[row]
    cut = ([threshold.get(name, 0.5) for name in predictions.observations] if isinstance(threshold, Mapping)
           else threshold)
    decision = np.where(frame["Calibrated"] >= np.asarray(cut, dtype=np.float64), "positive", "negative")
    frame["Decision"] = np.where(np.isfinite(frame["Calibrated"]), decision, "unreadable")
    if len(predictions.members) > 1:
        for index, name in enumerate(predictions.members):
            frame[f"{name}"] = predictions.calibrated[index, row]
    return frame
