"""Builders for test data: CheXpert-layout trees with real label rows and small generated images."""

from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chexcft.schema import CSV_HEADER, OBSERVATIONS

RELEASE = "CheXpert-v1.0-small"


@functools.lru_cache(maxsize=1)
def real_chexpert_label_rows() -> pd.DataFrame | None:
    """The real CheXpert train.csv rows shipped inside the torchxrayvision wheel (None if absent)."""
    try:
        import importlib.resources as resources

        ref = resources.files("torchxrayvision") / "data" / "chexpert_train.csv.gz"
        with ref.open("rb") as raw, gzip.open(raw, "rt") as fh:
            return pd.read_csv(fh)
    except (ImportError, FileNotFoundError, OSError):
        return None


def label_rows(n: int, seed: int) -> pd.DataFrame:
    """n label rows in CheXpert CSV format: sampled real rows when available, else generated ones."""
    rng = np.random.default_rng(seed)
    real = real_chexpert_label_rows()
    if real is not None:
        picked = real.iloc[rng.choice(len(real), size=n, replace=False)].reset_index(drop=True)
        return picked[list(CSV_HEADER)].copy()
    codes = np.array([1.0, 0.0, -1.0, np.nan])
    labels = rng.choice(codes, size=(n, len(OBSERVATIONS)), p=[0.2, 0.15, 0.1, 0.55])
    frame = pd.DataFrame(labels, columns=list(OBSERVATIONS))
    frame.insert(0, "AP/PA", "AP")
    frame.insert(0, "Frontal/Lateral", "Frontal")
    frame.insert(0, "Age", rng.integers(20, 90, size=n))
    frame.insert(0, "Sex", rng.choice(["Male", "Female"], size=n))
    frame.insert(0, "Path", "")
    return frame


def synthetic_xray(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 image with smooth structure (not noise) so that resizing and JPEG behave realistically."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(xx / (width / 3.0) + rng.uniform(0, 6)) * np.cos(yy / (height / 2.5))
    base += 0.05 * rng.standard_normal((height, width)).astype(np.float32)
    return np.clip(base * 255, 0, 255).astype(np.uint8)


@dataclass
class ChexpertTree:
    """Where a generated CheXpert-layout tree lives."""

    root: Path  # the folder that contains CheXpert-v1.0-small/
    release_dir: Path
    train_csv: Path
    valid_csv: Path
    train: pd.DataFrame
    valid: pd.DataFrame


def make_chexpert_tree(
    tmp_path: Path,
    n_patients: int = 6,
    seed: int = 0,
    *,
    with_laterals: bool = True,
    image_shape: tuple[int, int] = (72, 60),
) -> ChexpertTree:
    """Write train/ and valid/ with 1-2 studies per patient and 1-2 views per study, plus both CSVs."""
    rng = np.random.default_rng(seed)
    release_dir = tmp_path / RELEASE
    frames: dict[str, pd.DataFrame] = {}
    patient_counter = 0
    for split, n_split_patients in (("train", n_patients), ("valid", max(2, n_patients // 2))):
        paths: list[str] = []
        views: list[tuple[str, str]] = []
        for _ in range(n_split_patients):
            patient_counter += 1
            for study in range(1, int(rng.integers(1, 3)) + 1):
                n_views = int(rng.integers(1, 3)) if with_laterals else 1
                for view in range(1, n_views + 1):
                    kind = "frontal" if view == 1 else "lateral"
                    paths.append(f"{RELEASE}/{split}/patient{patient_counter:05d}/study{study}/view{view}_{kind}.jpg")
                    views.append(("Frontal", str(rng.choice(["AP", "PA"]))) if kind == "frontal" else ("Lateral", ""))
        frame = label_rows(len(paths), seed=seed + (0 if split == "train" else 1))
        frame["Path"] = paths
        frame["Frontal/Lateral"] = [v[0] for v in views]
        frame["AP/PA"] = [v[1] if v[1] else np.nan for v in views]
        if split == "valid":
            frame[list(OBSERVATIONS)] = frame[list(OBSERVATIONS)].fillna(0.0).replace(-1.0, 1.0)
        for index, rel in enumerate(paths):
            target = tmp_path / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            h, w = image_shape if index % 2 == 0 else image_shape[::-1]
            Image.fromarray(synthetic_xray(h, w, seed=seed * 1000 + index)).save(target, quality=90)
        frames[split] = frame
    release_dir.mkdir(parents=True, exist_ok=True)
    train_csv = release_dir / "train.csv"
    valid_csv = release_dir / "valid.csv"
    frames["train"].to_csv(train_csv, index=False)
    frames["valid"].to_csv(valid_csv, index=False)
    return ChexpertTree(tmp_path, release_dir, train_csv, valid_csv, frames["train"], frames["valid"])
