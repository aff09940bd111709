"""Oversampling of rare positives (DeepAUC's and jfhealthcare's CheXpert loaders): `--oversample "Obs=2,..."`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from chexcft.errors import ChexcftError
from chexcft.schema import OBSERVATIONS


def parse_oversample(spec: str | None) -> dict[str, int]:
    """Parse "Cardiomegaly=2,Consolidation=2" into {observation: integer factor >= 1} (observation names checked)."""
    by_lower = {obs.lower(): obs for obs in OBSERVATIONS}
    factors: dict[str, int] = {}
    for item in (spec or "").split(","):
        if not item.strip():
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or name.lower() not in by_lower:
            raise ChexcftError(f"--oversample item {item.strip()!r}: expected Observation=factor with an observation "
                               f"among {', '.join(OBSERVATIONS)}")
        try:
            factor = int(value)
        except ValueError:
            raise ChexcftError(f"--oversample item {item.strip()!r}: the factor must be a whole number") from None
        if factor < 1:
            raise ChexcftError(f"--oversample item {item.strip()!r}: the factor must be at least 1")
        factors[by_lower[name.lower()]] = factor
    return factors


def oversample_repeats(targets: np.ndarray, mask: np.ndarray, observations: Sequence[str], spec: str | None) -> np.ndarray:
    """How often each training row appears per epoch: the largest factor among the observations it is a positive for.

    A positive is a training target of 1 that the loss counts (after the uncertainty policy, as in DeepAUC's loader,
    which upsamples after mapping -1). Rows positive for none of the named observations appear once.
    """
    factors = parse_oversample(spec)
    repeats = np.ones(len(targets), dtype=np.int64)
    for obs, factor in factors.items():
        if obs not in observations:
            raise ChexcftError(f"--oversample names {obs!r}, which is not among the trained observations "
                               f"({', '.join(observations)})")
        col = list(observations).index(obs)
        positive = (targets[:, col] == 1) & (mask[:, col] > 0)
        repeats[positive] = np.maximum(repeats[positive], factor)
    return repeats
