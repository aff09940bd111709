"""Shared fixtures: where the optional ../shared data is, and small generated data sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
DEMO_DATA_DIR = REPO_ROOT / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path | None:
    """../shared beside the checkout when present (developer machines and CI), else None."""
    return SHARED_DIR if SHARED_DIR.is_dir() else None


@pytest.fixture(scope="session")
def demo_data_dir() -> Path:
    """The bundled demo data folder."""
    return DEMO_DATA_DIR


@pytest.fixture()
def chexpert_tree(tmp_path: Path):
    """A small CheXpert-layout tree (real label rows, generated JPEGs) under tmp_path."""
    from tests.builders import make_chexpert_tree

    return make_chexpert_tree(tmp_path, n_patients=6, seed=0)
