"""Uncertainty policies: turn a raw CheXpert label matrix (1/0/-1/blank) into training targets and loss masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from chexcft.errors import ChexcftError, InvalidDatasetError

POLICIES: tuple[str, ...] = (
    "U-Ignore",
    "U-Zeros",
    "U-Ones",
    "U-MultiClass",
    "U-SelfTrained",
    "LSR-Ones",
    "LSR-Zeros",
)
PRESETS: tuple[str, ...] = ("chexpert-paper",)
# Observations a per-observation spec does not name get this policy (the CheXpert paper's "elsewhere").
DEFAULT_POLICY = "U-Ones"
BLANK_MODES: tuple[str, ...] = ("negative", "ignore")
LSR_ONES_RANGE: tuple[float, float] = (0.55, 0.85)
LSR_ZEROS_RANGE: tuple[float, float] = (0.0, 0.3)
IGNORE_INDEX = -100
CLASS_NEGATIVE, CLASS_POSITIVE, CLASS_UNCERTAIN = 0, 1, 2

_CHEXPERT_PAPER: dict[str, str] = {
    "Atelectasis": "U-Ones",
    "Edema": "U-Ones",
    "Cardiomegaly": "U-MultiClass",
    "Pleural Effusion": "U-MultiClass",
    "Consolidation": "U-SelfTrained",
}


@dataclass(frozen=True)
class Targets:
    """Training targets for one label matrix under per-observation policies."""

    targets: np.ndarray  # float32 (n, C): binary targets (soft for LSR and self-training)
    mask: np.ndarray  # float32 (n, C): per-entry loss weight; 0 for U-MultiClass columns
    known: np.ndarray  # bool (n, C): explicit 1 or 0 in the raw labels, whatever the policy
    multiclass: tuple[str, ...]  # observations with a 3-way head, in observation order
    class_targets: np.ndarray  # int64 (n, len(multiclass)): 0 neg, 1 pos, 2 unc, -100 ignore
    observations: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()  # policy per observation, same order


def _canonical_policy(name: str) -> str:
    lookup = {p.lower(): p for p in POLICIES}
    try:
        return lookup[name.strip().lower()]
    except KeyError:
        raise ChexcftError(
            f"unknown uncertainty policy {name.strip()!r}; expected one of {', '.join(POLICIES)} "
            f"or the preset {', '.join(PRESETS)}"
        ) from None


def parse_policy(spec: str, observations: Sequence[str]) -> dict[str, str]:
    """Parse a policy spec (a policy name, "chexpert-paper", or "Obs=Policy,...", "*=Policy") into {obs: policy}."""
    observations = tuple(observations)
    by_lower = {obs.lower(): obs for obs in observations}
    result = {obs: DEFAULT_POLICY for obs in observations}
    items = [item.strip() for item in (spec or "").split(",") if item.strip()]
    if not items:
        raise ChexcftError("empty uncertainty policy spec; give a policy name, a preset or Obs=Policy pairs")
    for item in items:
        if "=" not in item:
            if item.lower() == "chexpert-paper":
                result = {obs: _CHEXPERT_PAPER.get(obs, DEFAULT_POLICY) for obs in observations}
            else:
                policy = _canonical_policy(item)
                result = {obs: policy for obs in observations}
            continue
        name, policy_name = (part.strip() for part in item.split("=", 1))
        policy = _canonical_policy(policy_name)
        if name == "*":
            result = {obs: policy for obs in observations}
        elif name.lower() in by_lower:
            result[by_lower[name.lower()]] = policy
        else:
            raise ChexcftError(
                f"policy spec names unknown observation {name!r}; expected one of {', '.join(observations)}"
            )
    return result


def policies_for(policies: Mapping[str, str] | str | Sequence[str], observations: Sequence[str]) -> tuple[str, ...]:
    """Return the policy of each observation, in order, from a mapping, a spec string or a per-observation list."""
    observations = tuple(observations)
    if isinstance(policies, str):
        mapping = parse_policy(policies, observations)
    elif isinstance(policies, Mapping):
        missing = [obs for obs in observations if obs not in policies]
        if missing:
            raise ChexcftError(f"no uncertainty policy given for {', '.join(missing)}")
        mapping = {obs: _canonical_policy(policies[obs]) for obs in observations}
    else:
        listed = tuple(policies)
        if len(listed) != len(observations):
            raise ChexcftError(f"{len(listed)} policies given for {len(observations)} observations")
        mapping = {obs: _canonical_policy(p) for obs, p in zip(observations, listed)}
    return tuple(mapping[obs] for obs in observations)


def multiclass_observations(policies: Mapping[str, str], observations: Sequence[str]) -> tuple[str, ...]:
    """Observations whose policy is U-MultiClass (they need a 3-way head), in observation order."""
    return tuple(obs for obs, p in zip(observations, policies_for(policies, observations)) if p == "U-MultiClass")


def needs_self_training(policies: Mapping[str, str], observations: Sequence[str]) -> bool:
    """True when some observation uses U-SelfTrained (train a U-Ignore model first, then relabel)."""
    return "U-SelfTrained" in policies_for(policies, observations)


def _check_raw(raw: np.ndarray, observations: Sequence[str]) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(observations):
        raise InvalidDatasetError(f"label matrix has shape {raw.shape}; expected (n, {len(observations)})")
    finite = raw[~np.isnan(raw)]
    valid = (finite == 1) | (finite == 0) | (finite == -1) | ((finite > 0) & (finite < 1))
    if not valid.all():
        rows, cols = np.nonzero(~np.isnan(raw) & ~np.isin(raw, (1.0, 0.0, -1.0)) & ~((raw > 0) & (raw < 1)))
        raise InvalidDatasetError(
            f"label matrix row {rows[0]}, column {observations[cols[0]]!r}: value {raw[rows[0], cols[0]]!r} "
            "is not 1, 0, -1, blank or a pseudo-label in (0, 1)"
        )
    return raw


def make_targets(
    raw: np.ndarray,
    observations: Sequence[str],
    policies: Mapping[str, str] | str | Sequence[str],
    blank: str = "negative",
    seed: int = 0,
    *,
    known_raw: np.ndarray | None = None,
) -> Targets:
    """Apply per-observation uncertainty policies to a raw (n, C) label matrix (1/0/-1/NaN, pseudo-labels in (0,1))."""
    observations = tuple(observations)
    raw = _check_raw(raw, observations)
    if blank not in BLANK_MODES:
        raise ChexcftError(f"unknown blank mode {blank!r}; expected one of {', '.join(BLANK_MODES)}")
    per_obs = policies_for(policies, observations)
    n, n_obs = raw.shape
    targets = np.zeros((n, n_obs), dtype=np.float32)
    mask = np.zeros((n, n_obs), dtype=np.float32)
    # One draw per entry, so an observation's LSR values don't depend on the other columns' policies.
    draws = np.random.default_rng(seed).random((n, n_obs))
    multiclass = tuple(obs for obs, p in zip(observations, per_obs) if p == "U-MultiClass")
    class_targets = np.full((n, len(multiclass)), IGNORE_INDEX, dtype=np.int64)

    for col, policy in enumerate(per_obs):
        values = raw[:, col]
        pos, neg, unc, blanks = values == 1, values == 0, values == -1, np.isnan(values)
        soft = ~blanks & (values > 0) & (values < 1)
        targets[pos, col] = 1.0
        mask[pos | neg, col] = 1.0
        if blank == "negative":
            mask[blanks, col] = 1.0
        targets[soft, col] = values[soft]
        mask[soft, col] = 1.0
        if policy == "U-Zeros":
            mask[unc, col] = 1.0
        elif policy == "U-Ones":
            targets[unc, col] = 1.0
            mask[unc, col] = 1.0
        elif policy in ("LSR-Ones", "LSR-Zeros"):
            low, high = LSR_ONES_RANGE if policy == "LSR-Ones" else LSR_ZEROS_RANGE
            targets[unc, col] = low + (high - low) * draws[unc, col]
            mask[unc, col] = 1.0
        elif policy == "U-MultiClass":
            if soft.any():
                row = int(np.nonzero(soft)[0][0])
                raise InvalidDatasetError(
                    f"label matrix row {row}, column {observations[col]!r}: pseudo-label {values[row]!r} "
                    "under U-MultiClass (only 1, 0, -1 and blank are allowed)"
                )
            k = multiclass.index(observations[col])
            class_targets[pos, k] = CLASS_POSITIVE
            class_targets[neg, k] = CLASS_NEGATIVE
            class_targets[unc, k] = CLASS_UNCERTAIN
            if blank == "negative":
                class_targets[blanks, k] = CLASS_NEGATIVE
            mask[:, col] = 0.0
        # U-Ignore and U-SelfTrained (first stage) leave uncertain entries masked out.

    source = raw if known_raw is None else _check_raw(known_raw, observations)
    known = (source == 1) | (source == 0)
    return Targets(targets, mask, known, multiclass, class_targets, observations, per_obs)


def relabel_uncertain(
    raw: np.ndarray,
    probabilities: np.ndarray,
    hard: bool = False,
    *,
    columns: Sequence[bool] | np.ndarray | None = None,
) -> np.ndarray:
    """Replace uncertain (-1) entries by a model's probabilities (soft) or their rounding (hard), for U-SelfTrained.

    `columns` (bool per observation) limits the relabelling to those observations. A hard
    relabelling writes 1/0, so take `known` from the original matrix (make_targets(known_raw=...)).
    """
    raw = np.asarray(raw, dtype=np.float32)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.shape != raw.shape:
        raise ChexcftError(f"probabilities have shape {probabilities.shape}; the label matrix has {raw.shape}")
    if np.isnan(probabilities).any() or (probabilities < 0).any() or (probabilities > 1).any():
        raise ChexcftError("probabilities for relabelling must lie in [0, 1]")
    relabel = raw == -1
    if columns is not None:
        columns = np.asarray(columns, dtype=bool)
        if columns.shape != (raw.shape[1],):
            raise ChexcftError(f"columns has shape {columns.shape}; expected ({raw.shape[1]},)")
        relabel &= columns[None, :]
    out = raw.copy()
    if hard:
        out[relabel] = (probabilities[relabel] >= 0.5).astype(np.float32)
    else:
        # Keep soft labels strictly inside (0, 1) so they never read as explicit 1/0 labels.
        out[relabel] = np.clip(probabilities[relabel], 1e-6, 1 - 1e-6)
    return out
