"""Training data: tables, observation choice, targets and the cache."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from chexcft.errors import ChexcftError, InvalidDatasetError
from chexcft.schema import OBSERVATIONS


@dataclass
class SplitData:
    """One split after the cache lookup: the rows kept, their cache slots and raw labels (n, 14)."""

    frame: pd.DataFrame
    slots: np.ndarray
    raw: np.ndarray
    dropped: int


def read_split(csv_path: str | Path, root: str | None) -> pd.DataFrame:
    """Read a CheXpert-style table (any format chexcft.data.read_table accepts)."""
    from chexcft.data import read_table

    frame = read_table(csv_path, root)
    if len(frame) == 0:
        raise InvalidDatasetError(f"{csv_path}: the table has a header but no data rows, so there is nothing to train on")
    return frame.reset_index(drop=True)


def default_observations(raw: np.ndarray) -> tuple[str, ...]:
    """Observations (CSV order) with at least one known positive (1) and one known negative (0) in the training table."""
    chosen = [obs for col, obs in enumerate(OBSERVATIONS) if (raw[:, col] == 1).any() and (raw[:, col] == 0).any()]
    if not chosen:
        raise InvalidDatasetError("the training table has no observation with both a known positive and a known negative")
    return tuple(chosen)


def check_observations(names: Sequence[str]) -> tuple[str, ...]:
    """Validate user-chosen observations; return them in CSV order."""
    unknown = [n for n in names if n not in OBSERVATIONS]
    if unknown:
        raise ChexcftError(f"unknown observation(s) {', '.join(map(repr, unknown))}; expected among {', '.join(OBSERVATIONS)}")
    if not names:
        raise ChexcftError("--observations is empty")
    return tuple(obs for obs in OBSERVATIONS if obs in set(names))


def open_cache(train: pd.DataFrame, valid: pd.DataFrame, cache_dir: Path, size: int, workers: int | None, progress: bool) -> Any:
    """Build (or reuse) the preprocessing cache for every image of both splits and open it."""
    from chexcft.data.cache import ensure_cache

    both = pd.concat([train, valid], ignore_index=True).drop_duplicates("abs_path").reset_index(drop=True)
    return ensure_cache(both, cache_dir, size, workers=workers, progress=progress)


def attach_slots(frame: pd.DataFrame, cache: Any, name: str) -> SplitData:
    """Look the split's images up in the cache; rows whose image failed to read are dropped (and counted)."""
    from chexcft.data import label_matrix

    slots = np.asarray(cache.rows_for(list(frame["abs_path"])), dtype=np.int64)
    ok = slots >= 0
    if not ok.any():
        raise InvalidDatasetError(f"{name}: none of the {len(frame)} images could be read (see the cache's failures.csv)")
    kept = frame.loc[ok].reset_index(drop=True)
    return SplitData(kept, slots[ok], label_matrix(kept).astype(np.float32), int((~ok).sum()))


def columns_of(observations: Sequence[str]) -> list[int]:
    """Column indices of observations in the 14-column label matrix."""
    return [OBSERVATIONS.index(obs) for obs in observations]
