"""Patient-level splits: no patient's images in two splits, reproducible with a seed."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from chexcft.errors import ChexcftError


def split_by_patient(frame: pd.DataFrame, fractions: dict[str, float], seed: int = 0) -> dict[str, pd.DataFrame]:
    """Split rows by patient so each split gets about its fraction of the images (original index and order kept)."""
    if not fractions:
        raise ChexcftError("split_by_patient needs at least one split fraction")
    if any(not math.isfinite(f) or f < 0 for f in fractions.values()):
        raise ChexcftError(f"split fractions must be finite and >= 0, got {fractions}")
    total = sum(fractions.values())
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ChexcftError(f"split fractions must sum to 1, got {total:g} ({fractions})")
    names = list(fractions)
    sizes = frame.groupby("patient", sort=True).size()
    order = np.random.default_rng(seed).permutation(len(sizes))
    remaining = np.array([fractions[n] * len(frame) for n in names], dtype=np.float64)
    assignment: dict[str, str] = {}
    # Shuffled patients go, one by one, to the split with the most room left that the patient fits in.
    for position in order:
        patient, size = sizes.index[position], int(sizes.iloc[position])
        fits = remaining >= size
        candidates = np.where(fits, remaining, -np.inf) if fits.any() else remaining
        chosen = int(np.argmax(candidates))
        assignment[patient] = names[chosen]
        remaining[chosen] -= size
    split_of_row = frame["patient"].map(assignment)
    return {name: frame[(split_of_row == name).to_numpy()] for name in names}
