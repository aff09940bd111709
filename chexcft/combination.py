"""How an ensemble directory's members are combined into one score per finding, and that score's calibration.

An ensemble directory holds `ensemble.json`: its `members` (run directories) and, once fitted, its
`combination`:

    {"rule": "mean-logit" | "mean-prob" | "rank", "observations": [...],
     "calibration": {"method": "platt", "observations": [...], "a": [...], "b": [...]} | null,
     "reference": {observation: [[sorted validation logits of member 0], ...]} | null   (rank only),
     "members": [...], "heads": [sha256 of each member's cft/head.safetensors, or null],
     "fitted_on": {"csv": ..., "sha256": ..., "images": n, "created": ...}}

Every rule starts from each member's logits after CFT and *before* its own calibration, so recalibrating a
member never changes the ensemble's ranking:

- `mean-logit` (default): the mean of the members' logits.
- `mean-prob`: the logit of the mean of the members' uncalibrated probabilities (sigmoid of their logits).
- `rank`: the logit of the mean of the members' percentiles, each read off the member's logits on the
  validation split (a fixed reference, so an image's score does not depend on the batch it is predicted in).

The ensemble's own per-finding Platt calibration is then fitted on the validation split, on that score. An
ensemble without a fitted combination predicts sigmoid(mean logit). Members' own calibrations are used only
when a member is predicted alone. This module needs no training code (the offline bundle vendors it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from chexcft.calibration import PlattCalibration
from chexcft.errors import ChexcftError, InvalidRunError
from chexcft.fileio import atomic_write_json, file_sha256, read_json_object

ENSEMBLE_FILE = "ensemble.json"
CONFIG_FILE = "config.json"
COMBINATION_KEY = "combination"
RULES: tuple[str, ...] = ("mean-logit", "mean-prob", "rank")
DEFAULT_RULE = "mean-logit"
_EPS = 1e-7
PathLike = str | os.PathLike[str]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def check_rule(rule: str) -> str:
    """The rule if known, else a ChexcftError listing the choices."""
    if rule not in RULES:
        raise ChexcftError(f"unknown ensemble rule {rule!r}; choose one of {', '.join(RULES)}")
    return rule


def percentile(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Strictly increasing map of values to (0, 1): mid-rank percentile among sorted `reference`, exponential tails."""
    ref = np.asarray(reference, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if ref.size == 0:
        return _sigmoid(x)
    values, counts = np.unique(ref, return_counts=True)
    positions = (np.cumsum(counts) - 0.5 * counts) / ref.size
    scale = float(np.std(ref)) or 1.0
    inside = np.interp(x, values, positions)
    low = positions[0] * np.exp(np.minimum(x - values[0], 0.0) / scale)
    high = 1.0 - (1.0 - positions[-1]) * np.exp(-np.maximum(x - values[-1], 0.0) / scale)
    return np.where(x < values[0], low, np.where(x > values[-1], high, inside))


def combine_logits(logits: np.ndarray, rule: str, references: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """One finding's ensemble score (logit scale) from member logits (M, n); `references` (per member) for rank."""
    logits = np.asarray(logits, dtype=np.float64)
    check_rule(rule)
    if rule == "mean-logit":
        return logits.mean(axis=0)
    if rule == "mean-prob":
        return _logit(_sigmoid(logits).mean(axis=0))
    if references is None:
        raise ChexcftError("the rank rule needs each member's validation logits as a reference")
    return _logit(np.mean([percentile(row, ref) for row, ref in zip(logits, references)], axis=0))


@dataclass(frozen=True)
class Combination:
    """An ensemble's rule, its per-finding calibration and what it was fitted on (see the module docstring)."""

    rule: str = DEFAULT_RULE
    observations: tuple[str, ...] = ()
    calibration: PlattCalibration | None = None
    reference: dict[str, list[np.ndarray]] = field(default_factory=dict)
    members: tuple[str, ...] = ()
    heads: tuple[str | None, ...] = ()
    fitted_on: dict[str, Any] = field(default_factory=dict)

    def scores(self, logits: np.ndarray, observations: Sequence[str]) -> np.ndarray:
        """(n, C) ensemble scores on the logit scale from member logits (M, n, C) in `observations` order.

        A finding without a rank reference (not fitted) falls back to the mean logit.
        """
        logits = np.asarray(logits, dtype=np.float64)
        out = np.empty(logits.shape[1:], dtype=np.float64)
        for c, name in enumerate(observations):
            rule = self.rule
            if rule == "rank" and name not in self.reference:
                rule = "mean-logit"
            out[:, c] = combine_logits(logits[:, :, c], rule, self.reference.get(name))
        return out

    def proba(self, logits: np.ndarray, observations: Sequence[str], calibrated: bool = True) -> np.ndarray:
        """(n, C) ensemble probabilities: the calibration (by finding name) of `scores`, or their sigmoid."""
        scores = self.scores(logits, observations)
        if not calibrated or self.calibration is None:
            return _sigmoid(scores)
        out = scores.copy()
        known = list(self.calibration.observations)
        for c, name in enumerate(observations):
            if name in known:
                k = known.index(name)
                out[:, c] = self.calibration.a[k] * scores[:, c] + self.calibration.b[k]
        return _sigmoid(out)

    def without_cft(self) -> Combination:
        """The rule for the members' trained heads: no calibration or rank reference (fitted on CFT logits)."""
        return Combination("mean-logit" if self.rule == "rank" else self.rule, self.observations, members=self.members)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored under `combination` in ensemble.json (and in a bundle's bundle.json)."""
        return {
            "rule": self.rule,
            "observations": list(self.observations),
            "calibration": self.calibration.to_dict() if self.calibration is not None else None,
            "reference": {name: [np.asarray(r, dtype=np.float64).tolist() for r in refs]
                          for name, refs in self.reference.items()} or None,
            "members": list(self.members),
            "heads": list(self.heads),
            "fitted_on": dict(self.fitted_on),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "combination") -> Combination:
        """Parse the JSON form (InvalidRunError naming `source` when malformed)."""
        try:
            rule = str(data["rule"])
            if rule not in RULES:
                raise ValueError(f"rule {rule!r} is not one of {', '.join(RULES)}")
            calibration = data.get("calibration")
            reference = {str(k): [np.asarray(r, dtype=np.float64) for r in v]
                         for k, v in (data.get("reference") or {}).items()}
            return cls(
                rule=rule,
                observations=tuple(str(o) for o in data.get("observations", ())),
                calibration=PlattCalibration.from_dict(calibration, source) if calibration else None,
                reference=reference,
                members=tuple(str(m) for m in data.get("members", ())),
                heads=tuple(None if h is None else str(h) for h in data.get("heads", ())),
                fitted_on=dict(data.get("fitted_on") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidRunError(f"{source}: invalid ensemble combination ({exc})") from None


def fit_combination(logits: np.ndarray, labels: np.ndarray, observations: Sequence[str], rule: str = DEFAULT_RULE,
                    **provenance: Any) -> Combination:
    """Fit a rule's rank reference and the ensemble's Platt calibration on validation logits (M, n, C), labels (n, C).

    `labels` are 1/0 with NaN (or -1) for unknown; `provenance` fills members, heads and fitted_on.
    """
    check_rule(rule)
    logits = np.asarray(logits, dtype=np.float64)
    observations = tuple(observations)
    if logits.ndim != 3 or logits.shape[2] != len(observations):
        raise ChexcftError(f"member logits must be (members, images, {len(observations)}), got {logits.shape}")
    finite = np.isfinite(logits).all(axis=(0, 2))
    logits, labels = logits[:, finite], np.asarray(labels, dtype=np.float64)[finite]
    reference = {name: [np.sort(logits[m, :, c]) for m in range(logits.shape[0])]
                 for c, name in enumerate(observations)} if rule == "rank" else {}
    combination = Combination(rule, observations, reference=reference)
    scores = combination.scores(logits, observations)
    calibration = PlattCalibration().fit(scores, np.where(np.isin(labels, (0.0, 1.0)), labels, np.nan), observations)
    return Combination(rule, observations, calibration, reference, tuple(provenance.get("members", ())),
                       tuple(provenance.get("heads", ())), dict(provenance.get("fitted_on", {})))


def head_digest(run_dir: PathLike) -> str | None:
    """sha256 of a run's cft/head.safetensors (None without CFT): what the combination was fitted on."""
    head = Path(run_dir) / "cft" / "head.safetensors"
    return file_sha256(head) if head.is_file() else None


def check_current(combination: Combination, run_dirs: Sequence[PathLike], source: str) -> None:
    """InvalidRunError when the members' CFT heads changed since the combination was fitted (it would be stale)."""
    if not combination.heads:
        return
    if len(combination.heads) != len(run_dirs):
        raise InvalidRunError(f"{source}: the combination was fitted for {len(combination.heads)} members, "
                              f"the ensemble has {len(run_dirs)}; re-fit it with `chexcft calibrate-ensemble`")
    changed = [Path(d).name for d, h in zip(run_dirs, combination.heads) if head_digest(d) != h]
    if changed:
        raise InvalidRunError(f"{source}: the CFT heads of {', '.join(changed)} changed after the ensemble's "
                              "calibration was fitted; re-fit it with `chexcft calibrate-ensemble`")


def is_ensemble(directory: PathLike) -> bool:
    """Whether a folder is an ensemble directory (holds ensemble.json)."""
    return (Path(directory) / ENSEMBLE_FILE).is_file()


def read_manifest(directory: PathLike) -> dict[str, Any]:
    """DIR/ensemble.json as a dict (InvalidRunError naming it when missing or unreadable)."""
    manifest = Path(directory).expanduser().resolve() / ENSEMBLE_FILE
    missing = f"{manifest.parent}: no {ENSEMBLE_FILE} (not an ensemble, or its training has not finished)"
    return read_json_object(manifest, missing, "ensemble manifest")


def load_ensemble(directory: PathLike) -> list[Path]:
    """The member run directories of an ensemble (absolute), checked to exist and hold a config.json."""
    directory = Path(directory).expanduser().resolve()
    manifest = directory / ENSEMBLE_FILE
    try:
        members = read_manifest(directory)["members"]
    except (KeyError, TypeError) as exc:
        raise InvalidRunError(f"{manifest}: unreadable ensemble manifest ({exc})") from None
    paths = []
    for name in members:
        path = (directory / name).resolve()
        if not (path / CONFIG_FILE).is_file():
            raise InvalidRunError(f"{manifest}: member {name!r} has no {CONFIG_FILE} at {path}")
        paths.append(path)
    if not paths:
        raise InvalidRunError(f"{manifest}: the ensemble lists no members")
    return paths


def read_combination(directory: PathLike) -> Combination:
    """The ensemble's recorded combination, or the default (mean logit, no calibration) when none was fitted."""
    data = read_manifest(directory).get(COMBINATION_KEY)
    if not data:
        return Combination(members=tuple(Path(m).name for m in load_ensemble(directory)))
    return Combination.from_dict(data, str(Path(directory) / ENSEMBLE_FILE))


def write_combination(directory: PathLike, combination: Combination) -> Path:
    """Record the combination in DIR/ensemble.json (other keys kept), atomically."""
    manifest = read_manifest(directory)
    manifest[COMBINATION_KEY] = combination.to_dict()
    return atomic_write_json(Path(directory).expanduser().resolve() / ENSEMBLE_FILE, manifest)


def calibrate_ensemble(directory: PathLike, valid_csv: PathLike, root: PathLike | None = None,
                       rule: str | None = None, *, which: str = "best", device: str = "auto", batch_size: int = 32,
                       progress: bool = False) -> Combination:
    """Set (or keep) the ensemble's rule and re-fit its calibration on a validation CSV; records it in ensemble.json."""
    from chexcft.data import read_table
    from chexcft.predict import predict_member_logits

    directory = Path(directory).expanduser().resolve()
    rule = check_rule(rule or read_combination(directory).rule)
    members = load_ensemble(directory)
    table = read_table(valid_csv, root)
    logits, observations, failed = predict_member_logits(table, members, which=which, device=device,
                                                         batch_size=batch_size, progress=progress)
    if failed:
        raise ChexcftError(f"{valid_csv}: {len(failed)} validation image(s) could not be read, e.g. {failed[0]}")
    labels = table[list(observations)].to_numpy(dtype=np.float64)
    combination = fit_combination(
        logits, labels, observations, rule, members=[m.name for m in members], heads=[head_digest(m) for m in members],
        fitted_on={"csv": str(Path(valid_csv).resolve()), "sha256": file_sha256(valid_csv), "images": len(table),
                   "created": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    )
    write_combination(directory, combination)
    return combination
