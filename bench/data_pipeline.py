"""Data pipeline benchmark: images/s per loader core to a training-ready batch, chexcft against torchxrayvision.

All rows read the same generated CheXpert-layout tree (8-bit JPEGs of about 320 x 390, portrait and landscape,
as in CheXpert-v1.0-small) on the same machine in one run, batch 16, shuffled:

  (a) torchxrayvision `CheX_Dataset` with its usual transforms (XRayCenterCrop + XRayResizer(size)): the baseline;
  (b) decoding the JPEGs with PIL (nothing else: the floor for any pipeline that reads JPEGs every epoch);
  (c) chexcft's loader: `CachedXrayDataset` + `make_loader`, whole uint8 batches sliced from the cache's memory
      map by a batch sampler (one read per batch; `build_cache` once beforehand);
  (d) chexcft's batched training augmentation alone (`chexcft.augmentation.Augmentation`, kornia) on the
      training device, here the CPU: uint8 batches already in memory -> float [0, 1] -> augmented;
  (e) (c) then (d) in one loop in one process: a training-ready augmented float batch, all on one core.

(a)-(c) and (e) go through a torch DataLoader, first with 0 workers (the main process; torch limited to 1 thread,
so one core) and then (a)-(c) with one worker per core. CPU seconds (this process) and the load average are
printed with each timing: the machine may be shared. The cache build itself is timed too (one-off cost).

    .venv/bin/python bench/data_pipeline.py [--images 300] [--size 320] [--repeats 3] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from chexcft.augmentation import Augmentation  # noqa: E402
from chexcft.data.cache import ImageCache, build_cache, default_workers  # noqa: E402
from chexcft.data.dataset import CachedXrayDataset, make_loader  # noqa: E402
from chexcft.device import resolve_device  # noqa: E402
from chexcft.inputs import model_input  # noqa: E402
from chexcft.provenance import cpu_model  # noqa: E402
from tests.builders import make_chexpert_tree  # noqa: E402

BATCH = 16


class PilDecode(Dataset):
    """Decode each JPEG with PIL to a uint8 array; nothing else."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        with Image.open(self.paths[i]) as image:
            return np.asarray(image.convert("L"))


def _as_list(batch: list) -> list:
    return batch


def xrv_dataset(release_dir: Path, train_csv: Path, size: int) -> Dataset:
    """torchxrayvision's CheXpert dataset on our tree, every view, every image, its usual crop + resize."""
    import torchvision
    import torchxrayvision as xrv

    transform = torchvision.transforms.Compose([xrv.datasets.XRayCenterCrop(), xrv.datasets.XRayResizer(size)])
    return xrv.datasets.CheX_Dataset(
        imgpath=str(release_dir), csvpath=str(train_csv), views=["*"], transform=transform, unique_patients=False
    )


def _count(batch: object) -> int:
    if isinstance(batch, dict):
        return len(batch["img"] if "img" in batch else batch["image"])
    return len(batch)  # type: ignore[arg-type]


Pass = Callable[[], int]


def time_passes(passes: list[Pass], repeats: int) -> list[tuple[float, float]]:
    """(median images/s, median CPU s of this process per 1000 images) of each pass; passes interleaved over repeats."""
    for run in passes:  # warm-up: page cache, worker start-up
        run()
    rates: list[list[float]] = [[] for _ in passes]
    cpu: list[list[float]] = [[] for _ in passes]
    for _ in range(repeats):
        for k, run in enumerate(passes):
            start, start_cpu = time.perf_counter(), time.process_time()
            n = run()
            rates[k].append(n / (time.perf_counter() - start))
            cpu[k].append(1000 * (time.process_time() - start_cpu) / n)
    return [(statistics.median(r), statistics.median(c)) for r, c in zip(rates, cpu, strict=True)]


def loader_pass(loader: DataLoader) -> Pass:
    """One full pass over a loader, counting images."""
    return lambda: sum(_count(batch) for batch in loader)


def machine() -> dict[str, str]:
    """CPU model, cores, torch version: the header of bench/RESULTS.md."""
    model = cpu_model()
    return {
        "cpu": model,
        "cores": str(default_workers()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "os": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="about this many training images")
    parser.add_argument("--size", type=int, default=320, help="output size of (a) and (c)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers(), help="loader workers for the multi-core rows")
    parser.add_argument("--markdown", type=Path, help="also write the table (markdown) to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core for the 0-worker rows; loader workers use one thread each anyway

    with tempfile.TemporaryDirectory(prefix="chexcft-bench-") as tmp:
        # make_chexpert_tree gives ~2.2 training images per patient
        tree = make_chexpert_tree(Path(tmp), n_patients=max(4, round(args.images / 2.2)), seed=0, image_shape=(390, 320))
        paths = [str(tree.root / p) for p in tree.train["Path"]]
        n = len(paths)
        jpeg_kb = statistics.mean(os.path.getsize(p) for p in paths) / 1024
        print(f"{n} JPEGs, mean {jpeg_kb:.1f} KB, 390x320 / 320x390; output {args.size} px; batch {BATCH}", flush=True)

        start = time.perf_counter()
        build = build_cache(paths, Path(tmp) / "cache", args.size, workers=0, progress=False)
        build_rate_1 = n / (time.perf_counter() - start)
        start = time.perf_counter()
        build_cache(paths, Path(tmp) / "cache-mp", args.size, workers=args.workers, progress=False)
        build_rate_k = n / (time.perf_counter() - start)
        assert build.n_failed == 0, build.failures
        cache = ImageCache.open(Path(tmp) / "cache")
        slots = cache.rows_for(paths)
        settings = resolve_device("cpu")
        targets = np.zeros((n, 14), dtype=np.float32)

        xrv = xrv_dataset(tree.release_dir, tree.train_csv, args.size)
        assert len(xrv) == n, f"CheX_Dataset sees {len(xrv)} of {n} images"
        pil = PilDecode(paths)
        dataset = CachedXrayDataset(cache, slots, targets)
        augmentation = Augmentation()

        def plain(data: Dataset, workers: int, collate=None) -> DataLoader:
            return DataLoader(
                data, batch_size=BATCH, shuffle=True, num_workers=workers, collate_fn=collate,
                persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
            )

        def ours(workers: int) -> DataLoader:
            return make_loader(dataset, BATCH, True, settings, workers, seed=0)

        in_memory = [batch["image"] for batch in ours(0)]

        def augment_only() -> int:
            for step, pixels in enumerate(in_memory):
                model_input(pixels, settings, augmentation, seed=step)
            return n

        end_to_end_loader = ours(0)

        def end_to_end() -> int:
            count = 0
            for step, batch in enumerate(end_to_end_loader):
                count += len(model_input(batch["image"], settings, augmentation, seed=step))
            return count

        names = [
            "(a) torchxrayvision CheX_Dataset (crop + resize)",
            "(b) PIL JPEG decode only",
            "(c) chexcft loader: uint8 batches from the cache",
            "(d) chexcft batched augmentation alone (kornia, on the CPU)",
            "(e) chexcft training-ready batch: (c) + (d) in one process",
        ]
        ones = time_passes(
            [loader_pass(plain(xrv, 0)), loader_pass(plain(pil, 0, _as_list)), loader_pass(ours(0)), augment_only, end_to_end],
            args.repeats,
        )
        load_one = os.getloadavg()[0]
        print("  1 core: " + ", ".join(f"{r:.0f}" for r, _ in ones) + f" img/s (load {load_one:.1f})", flush=True)
        manys = time_passes(
            [loader_pass(plain(xrv, args.workers)), loader_pass(plain(pil, args.workers, _as_list)), loader_pass(ours(args.workers))],
            args.repeats,
        )
        load_many = os.getloadavg()[0]
        print(f"  {args.workers} workers: " + ", ".join(f"{r:.0f}" for r, _ in manys) + f" img/s (load {load_many:.1f})", flush=True)

    base_one, base_many = ones[0][0], manys[0][0]
    info = machine()
    loc = pipeline_lines()
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores available, torch {info['torch']}, Python {info['python']}; "
        f"load average {load_one:.1f} after the 1-core rows and {load_many:.1f} after the worker rows "
        "(other jobs may share the cores).",
        f"{n} generated CheXpert-layout JPEGs (mean {jpeg_kb:.1f} KB, 390x320 and 320x390), output {args.size} px, "
        f"batch {BATCH}, shuffled; median of {args.repeats} passes after a warm-up pass. CPU ms per image: this "
        "process only (the worker rows' work is in the workers).",
        "",
        f"| pipeline | img/s, 1 core (0 workers) | CPU ms / img | x (a) | img/s, {args.workers} workers | x (a) | img/s per worker |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for k, name in enumerate(names):
        one, cpu = ones[k]
        many = f"{manys[k][0]:,.0f} | {manys[k][0] / base_many:.1f}x | {manys[k][0] / args.workers:,.0f}" if k < len(manys) else "- | - | -"
        lines.append(f"| {name} | {one:,.0f} | {cpu:.2f} | {one / base_one:.1f}x | {many} |")
    lines += [
        "",
        f"Cache build (one-off, JPEG decode + letterbox + write): {build_rate_1:,.0f} img/s in-process, "
        f"{build_rate_k:,.0f} img/s with {args.workers} reader processes (includes their start-up).",
        "",
        f"Code: the loader and the on-device input path are {loc} lines (chexcft/data/dataset.py, "
        "chexcft/inputs.py, chexcft/augmentation.py); they replace the hand-written OpenCV/NumPy augmentation "
        "(chexcft/augment.py, 308 lines, deleted) and the per-epoch reseeding wrapper.",
    ]
    table = "\n".join(lines)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    loader_x, ready_x = ones[2][0] / base_one, ones[4][0] / base_one
    print(f"\n(c) loader / (a) per core: {loader_x:.1f}x (target >= 10x): {'met' if loader_x >= 10 else 'NOT met'}")
    print(f"(e) training-ready augmented batch / (a) per core: {ready_x:.1f}x; augmentation alone: {ones[3][0]:,.0f} img/s")
    return 0


def pipeline_lines() -> int:
    """Lines of the modules that load a batch and turn it into (augmented) model input."""
    files = [REPO / "chexcft" / "data" / "dataset.py", REPO / "chexcft" / "inputs.py", REPO / "chexcft" / "augmentation.py"]
    return sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)


if __name__ == "__main__":
    raise SystemExit(main())
