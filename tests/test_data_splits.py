"""Patient-level splits: disjoint patients, near the asked fractions, reproducible with a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from chexcft.data import split_by_patient
from chexcft.errors import ChexcftError

FRACTIONS = {"train": 0.7, "valid": 0.15, "test": 0.15}


def _frame(n_patients: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, size=n_patients)
    patients = np.repeat([f"patient{i:05d}" for i in range(n_patients)], sizes)
    return pd.DataFrame({"patient": patients, "Path": [f"p/{i}.png" for i in range(len(patients))]})


def test_no_patient_in_two_splits_and_every_row_once() -> None:
    frame = _frame()
    splits = split_by_patient(frame, FRACTIONS, seed=3)
    assert list(splits) == list(FRACTIONS)
    sets = {name: set(part["patient"]) for name, part in splits.items()}
    assert not (sets["train"] & sets["valid"]) and not (sets["train"] & sets["test"]) and not (sets["valid"] & sets["test"])
    assert sorted(np.concatenate([p.index.to_numpy() for p in splits.values()]).tolist()) == list(range(len(frame)))
    for name, fraction in FRACTIONS.items():
        assert abs(len(splits[name]) / len(frame) - fraction) < 0.03


def test_deterministic_with_seed_and_different_across_seeds() -> None:
    frame = _frame()
    first = split_by_patient(frame, FRACTIONS, seed=5)
    again = split_by_patient(frame, FRACTIONS, seed=5)
    other = split_by_patient(frame, FRACTIONS, seed=6)
    assert all(first[n].index.equals(again[n].index) for n in FRACTIONS)
    assert not first["valid"].index.equals(other["valid"].index)


@pytest.mark.parametrize("fractions", [{}, {"a": 0.5, "b": 0.4}, {"a": 1.2, "b": -0.2}, {"a": float("nan")}])
def test_bad_fractions(fractions: dict[str, float]) -> None:
    with pytest.raises(ChexcftError):
        split_by_patient(_frame(10), fractions, seed=0)
