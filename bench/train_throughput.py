"""Training throughput: chexcft's training loop from the cache against a bare forward/backward loop.

Both train the same model (DenseNet121 by default, random init) with the same batch size, image size and
Adam optimiser, in one process with the same torch threads:

  (a) chexcft: `chexcft.training.train` on `--steps` batches of the bundled demo data (uint8 batches from the
      preprocessing cache, batched kornia augmentation on the training device on, masked BCE, cosine schedule,
      progress accounting); run
      for 2 epochs and the second epoch's images/s from metrics.csv is reported (the first is warm-up);
  (b) bare: random tensors of the same shape already in memory, `--warmup` steps, then `--steps` timed
      steps of forward + BCE + backward + Adam step: the compute limit. It is measured twice, just before
      and just after (a), and the ratio uses their mean, which evens out drifts in load on a shared machine.

    .venv/bin/python bench/train_throughput.py [--size 64] [--batch 16] [--steps 8] [--results bench/RESULTS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from chexcft.models import HeadLayout, build_model  # noqa: E402
from chexcft.provenance import cpu_model  # noqa: E402
from chexcft.training import TrainConfig, train  # noqa: E402

TARGET = 0.9


def machine() -> dict[str, str]:
    """CPU model, usable cores, torch version."""
    model = cpu_model()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    return {"cpu": model, "cores": str(cores), "torch": torch.__version__, "python": platform.python_version()}


def tiny_tables(folder: Path, n_train: int, n_valid: int) -> tuple[Path, Path, Path]:
    """Train/valid CSV slices of the bundled demo data (or a generated tree when it is absent) and their root."""
    try:
        from chexcft.demo.data import demo_csv, demo_root

        train_src, valid_src, root = demo_csv("train"), demo_csv("valid"), demo_root()
        if len(pd.read_csv(train_src)) < n_train:
            raise OSError("demo data too small")
    except (ImportError, OSError):
        from tests.builders import make_chexpert_tree

        tree = make_chexpert_tree(folder / "tree", n_patients=max(8, n_train), seed=0, with_laterals=False)
        train_src, valid_src, root = tree.train_csv, tree.valid_csv, tree.root
    train_csv, valid_csv = folder / "train.csv", folder / "valid.csv"
    pd.read_csv(train_src).head(n_train).to_csv(train_csv, index=False)
    pd.read_csv(valid_src).head(n_valid).to_csv(valid_csv, index=False)
    return train_csv, valid_csv, Path(root)


def chexcft_rate(args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    """(images/s of epoch 2, images/s of epoch 1) of chexcft's own training loop."""
    folder.mkdir(parents=True, exist_ok=True)
    train_csv, valid_csv, root = tiny_tables(folder, args.steps * args.batch, args.batch)
    config = TrainConfig(
        train_csv=str(train_csv), valid_csv=str(valid_csv), root=str(root), out=str(folder / "run"),
        cache_dir=str(folder / "cache"), arch=args.arch, image_size=args.size, epochs=2, batch_size=args.batch,
        device="cpu", workers=args.workers, quiet=True, augment=not args.no_augment,
    )  # fmt: skip
    run = train(config)
    metrics = pd.read_csv(run / "metrics.csv")
    return float(metrics["images_per_s"].iloc[1]), float(metrics["images_per_s"].iloc[0])


def bare_rate(args: argparse.Namespace, observations: tuple[str, ...]) -> float:
    """images/s of a bare forward/backward/Adam loop on random in-memory tensors."""
    model = build_model(args.arch, HeadLayout(observations), seed=0)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(args.batch, 1, args.size, args.size)
    y = torch.randint(0, 2, (args.batch, len(observations))).float()

    def step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return args.steps * args.batch / (time.perf_counter() - start)


def results_section(args: argparse.Namespace, ours: float, ours_first: float, bare: float, bracket: tuple[float, float]) -> str:
    """The markdown section appended to RESULTS.md."""
    info = machine()
    ratio = ours / bare
    return "\n".join(
        [
            "## Training throughput",
            "",
            f"`bench/train_throughput.py --size {args.size} --batch {args.batch} --steps {args.steps}` "
            f"({args.arch}, random init, CPU, torch {info['torch']}, {torch.get_num_threads()} threads, "
            f"{args.workers} loader workers, augmentation {'off' if args.no_augment else 'on'}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; one run on a shared machine: load average "
            f"{args.load[0]:.1f} before and {args.load[1]:.1f} after, {args.cpu_seconds:.0f} CPU s for {args.wall_seconds:.0f} s wall).",
            "",
            "| loop | images/s |",
            "|---|---|",
            f"| chexcft `train` (uint8 cache batches + on-device augmentation + masked loss + schedule), epoch 2 | {ours:.2f} |",
            f"| chexcft `train`, epoch 1 (warm-up, for reference) | {ours_first:.2f} |",
            f"| bare forward/backward/Adam on random tensors (mean of before {bracket[0]:.2f} and after {bracket[1]:.2f}) | {bare:.2f} |",
            f"| ratio chexcft / bare (target >= {TARGET}) | {ratio:.3f} |",
            "",
        ]
    )


def append_results(path: Path, section: str) -> None:
    """Append a section to RESULTS.md, creating it with the machine description when absent."""
    if not path.exists():
        info = machine()
        header = (
            "# Benchmark results\n\n"
            f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, Python {info['python']}.\n\n"
        )
        path.write_text(header, encoding="utf-8")
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\n" + section)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="densenet121")
    parser.add_argument("--size", type=int, default=64, help="image size in pixels")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="timed steps (and steps per chexcft epoch)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of the bare loop")
    parser.add_argument("--workers", type=int, default=0, help="chexcft loader workers")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--results", type=Path, help="append a 'Training throughput' section to this markdown file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="chexcft-train-bench-") as tmp:
        train_csv, _, _ = tiny_tables(Path(tmp), args.steps * args.batch, args.batch)
        from chexcft.schema import OBSERVATIONS

        raw = pd.read_csv(train_csv)
        observations = tuple(o for o in OBSERVATIONS if (raw[o] == 1).any() and (raw[o] == 0).any())
        load_before, start, start_cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
        bare_before = bare_rate(args, observations)
        ours, ours_first = chexcft_rate(args, Path(tmp) / "chexcft")
        bare_after = bare_rate(args, observations)
        args.load = (load_before, os.getloadavg()[0])
        args.cpu_seconds, args.wall_seconds = time.process_time() - start_cpu, time.perf_counter() - start
    bare = (bare_before + bare_after) / 2
    print(f"chexcft train loop : {ours:8.2f} images/s (epoch 1: {ours_first:.2f})")
    print(f"bare fwd/bwd loop  : {bare:8.2f} images/s (before {bare_before:.2f}, after {bare_after:.2f})")
    print(f"ratio              : {ours / bare:8.3f} (target >= {TARGET})")
    print(f"machine load       : {args.load[0]:.1f} before, {args.load[1]:.1f} after; "
          f"{args.cpu_seconds:.0f} CPU s in {args.wall_seconds:.0f} s wall")
    if args.results:
        append_results(args.results, results_section(args, ours, ours_first, bare, (bare_before, bare_after)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
