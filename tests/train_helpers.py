"""Small training data sets for the trainer and ensemble tests: a slice of the bundled demo data, else generated."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tests.builders import make_chexpert_tree

IMAGE_SIZE = 32
REPO = Path(__file__).resolve().parent.parent


@dataclass
class TinyData:
    """CSV paths, root and a pre-built cache folder for tiny training runs."""

    train_csv: Path
    valid_csv: Path
    root: Path
    cache_dir: Path

    def args(self) -> list[str]:
        """CLI options shared by every tiny run."""
        return [
            "--train-csv", str(self.train_csv), "--valid-csv", str(self.valid_csv), "--root", str(self.root),
            "--cache-dir", str(self.cache_dir), "--arch", "tiny", "--image-size", str(IMAGE_SIZE),
            "--batch-size", "8", "--device", "cpu", "--quiet",
        ]  # fmt: skip


def make_tiny_data(folder: Path, n_train: int = 48, n_valid: int = 24) -> TinyData:
    """Slices of data/demo's train/valid CSVs (or a generated CheXpert tree) plus a built 32 px cache."""
    from chexcft.data.cache import ensure_cache
    from chexcft.data import read_table

    folder.mkdir(parents=True, exist_ok=True)
    try:
        from chexcft.demo.data import demo_csv, demo_root

        train_src, valid_src, root = demo_csv("train"), demo_csv("valid"), demo_root()
        available = train_src.is_file() and valid_src.is_file()
    except (ImportError, OSError):
        available = False
    if available:
        train_csv, valid_csv = folder / "train.csv", folder / "valid.csv"
        pd.read_csv(train_src).head(n_train).to_csv(train_csv, index=False)
        pd.read_csv(valid_src).head(n_valid).to_csv(valid_csv, index=False)
    else:
        tree = make_chexpert_tree(folder / "tree", n_patients=16, seed=0, with_laterals=False)
        train_csv, valid_csv, root = tree.train_csv, tree.valid_csv, tree.root
    cache_dir = folder / "cache"
    frames = [read_table(train_csv, root), read_table(valid_csv, root)]
    both = pd.concat(frames, ignore_index=True).drop_duplicates("abs_path").reset_index(drop=True)
    ensure_cache(both, cache_dir / f"{IMAGE_SIZE}px", IMAGE_SIZE, workers=0, progress=False)
    return TinyData(train_csv, valid_csv, Path(root), cache_dir)


def start_cli(
    args: list[str], env_extra: dict[str, str] | None = None, launcher: list[str] | None = None,
    kill: tuple[str, int] | None = None,
) -> subprocess.Popen:
    """Start `python -m chexcft ARGS` (or LAUNCHER -m chexcft ARGS) in a fresh single-threaded process.

    kill=("steps", N) or ("writes", N) runs it under tests/kill.py, which SIGKILLs it at that point.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(env_extra or {})
    module = ["-m", "tests.kill", kill[0], str(kill[1]), "--"] if kill else ["-m", "chexcft"]
    command = (launcher or [sys.executable]) + [*module, *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    """Wait for a process started by start_cli and collect its output."""
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_cli(
    args: list[str], env_extra: dict[str, str] | None = None, launcher: list[str] | None = None,
    kill: tuple[str, int] | None = None,
) -> subprocess.CompletedProcess:
    """Run `python -m chexcft ARGS` to completion (or to its kill) in a fresh single-threaded process."""
    return finish(start_cli(args, env_extra, launcher, kill))


def tiny_config(tiny: TinyData, out: Path, **changes: object):  # -> TrainConfig
    """A one-epoch tiny-model CPU run on `tiny`, with some settings changed."""
    from chexcft.training import TrainConfig

    base = TrainConfig(
        train_csv=str(tiny.train_csv), valid_csv=str(tiny.valid_csv), root=str(tiny.root), out=str(out),
        cache_dir=str(tiny.cache_dir), arch="tiny", image_size=IMAGE_SIZE, epochs=1, batch_size=8,
        device="cpu", quiet=True,
    )  # fmt: skip
    return base.replace(**changes)
