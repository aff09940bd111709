"""Prediction throughput: `chexcft predict` end to end from JPEG files against the bare model forward.

Same model (an untrained DenseNet121 run directory: the weights do not change the arithmetic), same batch size,
same image size, same machine, one run:

  (a) `chexcft predict --model RUN --input CSV` as a subprocess: process start, imports, model load, JPEG
      decoding and letterboxing, forward passes, sigmoid, CSV writing. Wall time from launch to exit.
  (b) the same through the Python API in this process (`chexcft.predict.predict_table`, warm: no start-up).
  (c) the bare forward: `model(x)` on random tensors of shape (batch, 1, size, size) under inference mode.

The ratios (a)/(c) and (b)/(c) say how much of the model's own speed survives the full pipeline.

    .venv/bin/python bench/predict_throughput.py [--images 64] [--size 320] [--batch-size 16] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from chexcft.device import inference_mode, resolve_device  # noqa: E402
from chexcft.models import HeadLayout, build_model  # noqa: E402
from chexcft.provenance import cpu_model  # noqa: E402
from chexcft.runs import save_weights, write_config  # noqa: E402
from chexcft.schema import OBSERVATIONS  # noqa: E402
from tests.builders import make_chexpert_tree  # noqa: E402


def make_run(run_dir: Path, arch: str, size: int) -> torch.nn.Module:
    """A run directory (config.json + weights/best.safetensors) holding an untrained model; returns the model."""
    model = build_model(arch, HeadLayout(OBSERVATIONS), init="random", seed=0)
    save_weights(model, run_dir / "weights" / "best.safetensors")
    write_config(run_dir, {"kind": "chexcft-run", "arch": arch, "image_size": size, "observations": list(OBSERVATIONS),
                           "model": model.spec(), "note": "bench/predict_throughput.py: untrained weights"})
    return model


def time_cli(run_dir: Path, csv: Path, root: Path, out: Path, batch: int, workers: int) -> float:
    """Seconds for one `chexcft predict` subprocess, launch to exit."""
    command = [sys.executable, "-m", "chexcft", "predict", "--model", str(run_dir), "--input", str(csv),
               "--root", str(root), "--out", str(out), "--batch-size", str(batch), "--workers", str(workers),
               "--device", "cpu", "--quiet"]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - start


def time_api(run_dir: Path, csv: Path, root: Path, batch: int, workers: int) -> float:
    """Seconds for predict_table in this process (table read included)."""
    from chexcft.data import read_table
    from chexcft.predict import predict_table

    start = time.perf_counter()
    table = read_table(csv, root)
    predict_table(table, [run_dir], batch_size=batch, workers=workers, device="cpu")
    return time.perf_counter() - start


def time_forward(model: torch.nn.Module, n_images: int, batch: int, size: int) -> float:
    """Seconds for the bare forward over n_images random images in batches."""
    settings = resolve_device("cpu")
    model = model.to(settings.device).eval()
    generator = torch.Generator().manual_seed(0)
    batches = [torch.rand(min(batch, n_images - i), 1, size, size, generator=generator) for i in range(0, n_images, batch)]
    start = time.perf_counter()
    with inference_mode(settings):
        for x in batches:
            model(x)
    return time.perf_counter() - start


def ratio(value: float) -> str:
    """A throughput ratio with enough digits to be read when it is small."""
    return f"{value:.2f}x" if value >= 0.1 else f"{value:.2g}x"


def percent(value: float) -> str:
    """A share in percent with enough digits to be read when it is small."""
    return f"{100 * value:.0f}%" if value >= 0.1 else f"{100 * value:.2g}%"



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="about this many JPEG files")
    parser.add_argument("--size", type=int, default=320, help="model input size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--arch", default="densenet121", help="densenet121 or tiny")
    parser.add_argument("--workers", type=int, default=0, help="image-reading loader processes of (a) and (b)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per row (median), after one warm-up")
    parser.add_argument("--markdown", type=Path, help="also write the section (markdown) to this file")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="chexcft-bench-") as tmp:
        tmp_path = Path(tmp)
        tree = make_chexpert_tree(tmp_path / "data", n_patients=max(4, round(args.images / 2.2)), seed=0,
                                  image_shape=(390, 320))
        n = len(tree.train)
        model = make_run(tmp_path / "run", args.arch, args.size)
        print(f"{n} JPEGs (390x320 / 320x390), {args.arch} at {args.size} px, batch {args.batch_size}", flush=True)

        def median(fn) -> float:
            fn()  # warm-up (file cache, allocator, first-call overheads)
            return statistics.median(fn() for _ in range(args.repeats))

        forward = median(lambda: time_forward(model, n, args.batch_size, args.size))
        print(f"  (c) bare forward: {n / forward:.1f} img/s", flush=True)
        api = median(lambda: time_api(tmp_path / "run", tree.train_csv, tree.root, args.batch_size, args.workers))
        print(f"  (b) predict_table: {n / api:.1f} img/s", flush=True)
        cli = median(lambda: time_cli(tmp_path / "run", tree.train_csv, tree.root, tmp_path / "p.csv",
                                      args.batch_size, args.workers))
        print(f"  (a) chexcft predict: {n / cli:.1f} img/s", flush=True)

    rows = [
        ("(a) `chexcft predict` subprocess, JPEG files -> CSV", cli),
        ("(b) `predict_table` in-process, JPEG files -> table", api),
        ("(c) bare `model(x)` on random tensors", forward),
    ]
    lines = [
        f"Machine: {cpu_model()}, {os.cpu_count()} cores (shared with other jobs), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}.",
        f"{n} generated JPEGs (390x320 and 320x390), {args.arch} (untrained weights) at {args.size} px, batch "
        f"{args.batch_size}, CPU, {args.workers} loader workers; median of {args.repeats} passes after a warm-up.",
        "",
        "| path | seconds | img/s | x bare forward |",
        "|---|---:|---:|---:|",
    ]
    for name, seconds in rows:
        lines.append(f"| {name} | {seconds:.2f} | {n / seconds:,.1f} | {ratio(forward / seconds)} |")
    lines += [
        "",
        f"End to end keeps {percent(forward / cli)} of the bare forward's throughput ({percent(forward / api)} "
        "without process start-up); the rest is start-up, JPEG decoding and letterboxing, and writing the CSV.",
    ]
    section = "\n".join(lines)
    print()
    print(section)
    if args.markdown:
        args.markdown.write_text(section + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
