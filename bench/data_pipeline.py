"""Data pipeline benchmark: images/s for torchxrayvision's CheX_Dataset, plain PIL decoding and chexcft's cache.

All three read the same generated CheXpert-layout tree (8-bit JPEGs of about 320 x 390, portrait and
landscape, as in CheXpert-v1.0-small) on the same machine in one run:

  (a) torchxrayvision `CheX_Dataset` with its usual transforms (XRayCenterCrop + XRayResizer(size)),
  (b) decoding the JPEGs with PIL (nothing else: the floor for any pipeline that reads JPEGs every epoch),
  (c) chexcft's cache (`build_cache` once, then `CachedXrayDataset` + MONAI training augmentation through
      `make_loader`), plus the same without augmentation and with the MONAI augmentation backend.

Each goes through a torch DataLoader, first with 0 workers (the main process; torch limited to 1 thread, so
one core) and then with one worker per core. The cache build itself is timed too (one-off cost).

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

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from chexcft.augment import eval_transform, training_transform  # noqa: E402
from chexcft.data.cache import ImageCache, build_cache, default_workers  # noqa: E402
from chexcft.data.dataset import CachedXrayDataset, make_loader  # noqa: E402
from chexcft.device import resolve_device  # noqa: E402
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


def time_loaders(makers: list[Callable[[int], DataLoader]], workers: int, repeats: int) -> list[float]:
    """Median images/s of each loader over `repeats` full passes, passes interleaved so load drifts hit all alike."""
    loaders = [make(workers) for make in makers]
    for loader in loaders:  # warm-up: page cache, worker start-up
        for _ in loader:
            pass
    rates: list[list[float]] = [[] for _ in loaders]
    for _ in range(repeats):
        for k, loader in enumerate(loaders):
            start = time.perf_counter()
            n = sum(_count(batch) for batch in loader)
            rates[k].append(n / (time.perf_counter() - start))
    del loaders
    return [statistics.median(r) for r in rates]


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
    cv2.setNumThreads(1)

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

        def chexcft_loader(augment: str | None) -> Callable[[int], DataLoader]:
            def make(workers: int) -> DataLoader:
                transform = training_transform(seed=0, image_size=args.size, backend=augment) if augment else eval_transform()
                dataset = CachedXrayDataset(cache, slots, targets, transform=transform)
                return make_loader(dataset, BATCH, True, settings, workers, seed=0)

            return make

        def plain(dataset: Dataset, collate=None) -> Callable[[int], DataLoader]:
            def make(workers: int) -> DataLoader:
                return DataLoader(
                    dataset, batch_size=BATCH, shuffle=True, num_workers=workers, collate_fn=collate,
                    persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
                )

            return make

        rows = [
            ("(a) torchxrayvision CheX_Dataset (crop + resize)", plain(xrv)),
            ("(b) PIL JPEG decode only", plain(pil, _as_list)),
            ("(c) chexcft cache + training augmentation (default, fast backend)", chexcft_loader("fast")),
            ("(c') chexcft cache, no augmentation", chexcft_loader(None)),
            ("(c'') chexcft cache + augmentation, MONAI backend", chexcft_loader("monai")),
        ]
        makers = [make for _, make in rows]
        ones = time_loaders(makers, 0, args.repeats)
        print("  1 core: " + ", ".join(f"{r:.0f}" for r in ones) + " img/s", flush=True)
        manys = time_loaders(makers, args.workers, args.repeats)
        print(f"  {args.workers} workers: " + ", ".join(f"{r:.0f}" for r in manys) + " img/s", flush=True)
        results = [(name, one, many) for (name, _), one, many in zip(rows, ones, manys, strict=True)]

    base_one, base_many = results[0][1], results[0][2]
    info = machine()
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores available, torch {info['torch']}, Python {info['python']}; "
        f"load average {os.getloadavg()[0]:.1f} at the end of the run (other jobs share the cores).",
        f"{n} generated CheXpert-layout JPEGs (mean {jpeg_kb:.1f} KB, 390x320 and 320x390), output {args.size} px, "
        f"batch {BATCH}, shuffled; median of {args.repeats} passes after a warm-up pass.",
        "",
        f"| pipeline | img/s, 1 core (0 workers) | x (a) | img/s, {args.workers} workers | x (a) | img/s per worker |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, one, many in results:
        lines.append(
            f"| {name} | {one:,.0f} | {one / base_one:.1f}x | {many:,.0f} | {many / base_many:.1f}x | {many / args.workers:,.0f} |"
        )
    lines += [
        "",
        f"Cache build (one-off, JPEG decode + letterbox + write): {build_rate_1:,.0f} img/s in-process, "
        f"{build_rate_k:,.0f} img/s with {args.workers} reader processes (includes their start-up).",
    ]
    table = "\n".join(lines)
    print()
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    target = results[2][1] / base_one
    print(f"\n(c) / (a) per core: {target:.1f}x (target >= 5x): {'met' if target >= 5 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
