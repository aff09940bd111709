"""GPU self-check: every accelerator path of chexcft in one command, each step beside its bare compute limit.

On a machine with CUDA (default `--device auto`), on the bundled demo data (725 train / 139 valid / 136 test
images):

  1. prepare   build the preprocessing cache of all three splits at 320 px (`--quick`: 96 rows of each at 32 px);
  2. train     1 epoch of DenseNet121, AMP (bf16 where supported, else fp16 + GradScaler) and channels_last;
  3. torchrun  the same run under `torchrun --standalone` with one process per visible GPU (NCCL);
  4. features  export the trained run's penultimate features of the validation images;
  5. cft       Category-wise Fine-Tuning of the run (`chexcft.cft.pipeline.run_cft`) on the device of the features;
  6. predict   `predict_table` on the test images (JPEG/PNG files -> probabilities);
  7. submit    the competition CSV of the test studies.

Each step prints its wall time, images/s beside a bare loop of the same shape on random tensors (forward +
backward + Adam for training, forward only for inference), the peak GPU memory, whether its numbers are finite and
whether its outputs are complete. Exit status 0 only when every step ran and passed those checks. Budget: under
5 minutes on one data-centre GPU.

    python bench/gpu_check.py                          # the maintainer's one command on a GPU machine
    python bench/gpu_check.py --device cpu --quick     # tiny model, 32 px: the CPU smoke test run by `make test`
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

CHILD_FLAG = "--torchrun-child"


@dataclass
class Step:
    """One step's outcome."""

    name: str
    ok: bool = False
    seconds: float = 0.0
    images_per_s: float | None = None
    bare_per_s: float | None = None
    peak_mb: float | None = None
    finite: bool | None = None
    complete: bool | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def peak_reset(device: torch.device) -> None:
    """Start a step's GPU memory peak."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    """The GPU memory peak since `peak_reset`, in MB (None off CUDA)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def bare_rate(settings: Any, arch: str, n_outputs: int, batch: int, size: int, *, train: bool, steps: int) -> float:
    """images/s of a bare loop on random tensors of the step's shape, on the step's device and precision."""
    from chexcft.models import HeadLayout, build_model
    from chexcft.schema import OBSERVATIONS

    model = settings.place_model(build_model(arch, HeadLayout(tuple(OBSERVATIONS[:n_outputs])), seed=0))
    x = settings.layout(torch.rand(batch, 1, size, size, device=settings.device))
    y = torch.randint(0, 2, (batch, n_outputs), device=settings.device).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = settings.grad_scaler()

    def once() -> None:
        if train:
            model.train()
            with settings.autocast():
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            model.eval()
            with torch.inference_mode(), settings.autocast():
                model(x)

    for _ in range(3):
        once()
    sync(settings.device)
    start = time.perf_counter()
    for _ in range(steps):
        once()
    sync(settings.device)
    return steps * batch / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    """Wait for the device (CUDA timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def all_finite(values: Any) -> bool:
    """True when every number is finite."""
    array = np.asarray(values, dtype=np.float64)
    return bool(np.isfinite(array).all())


def run_complete(run_dir: Path, epochs: int) -> tuple[bool, bool, str]:
    """(complete, finite, note) of a training run directory."""
    from chexcft.runs import load_weights
    from chexcft.training import checkpoint as ckpt

    needed = ["config.json", "metrics.csv", "valid_predictions.csv", "weights/best.safetensors", "weights/last.safetensors"]
    missing = [name for name in needed if not (run_dir / name).is_file()]
    pointer = ckpt.latest_pointer(run_dir) or {}
    if not pointer.get("finished"):
        missing.append("finished checkpoint")
    if missing:
        return False, False, "missing: " + ", ".join(missing)
    metrics = pd.read_csv(run_dir / "metrics.csv")
    weights = load_weights(run_dir / "weights" / "last.safetensors")
    finite = all_finite(metrics["train_loss"]) and all(bool(torch.isfinite(w.float()).all()) for w in weights.values())
    predictions = pd.read_csv(run_dir / "valid_predictions.csv").select_dtypes("number")
    finite = finite and all_finite(predictions.to_numpy())
    return len(metrics) == epochs, finite, f"train loss {metrics['train_loss'].iloc[-1]:.4f}"


def timed(step: Step, device: torch.device, body: Callable[[Step], None]) -> Step:
    """Run one step, recording its time and GPU memory peak; any exception fails the step (and is shown)."""
    peak_reset(device)
    start = time.perf_counter()
    try:
        body(step)
        step.ok = bool(step.finite is not False and step.complete is not False)
    except Exception as error:  # noqa: BLE001 - the check reports every failure and goes on
        step.ok, step.note = False, f"{type(error).__name__}: {error}"[:300]
    step.seconds = time.perf_counter() - start
    if step.peak_mb is None:
        step.peak_mb = peak_mb(device)
    print(line(step), flush=True)
    return step


def line(step: Step) -> str:
    """One printed row."""
    rate = f"{step.images_per_s:9.1f}" if step.images_per_s is not None else f"{'-':>9}"
    bare = f"{step.bare_per_s:9.1f}" if step.bare_per_s is not None else f"{'-':>9}"
    ratio = f"{step.images_per_s / step.bare_per_s:5.2f}x" if step.images_per_s and step.bare_per_s else f"{'-':>6}"
    peak = f"{step.peak_mb:8.0f}" if step.peak_mb is not None else f"{'-':>8}"
    flag = lambda v: "-" if v is None else ("yes" if v else "NO")  # noqa: E731
    return (f"{step.name:<9} {'ok' if step.ok else 'FAIL':<4} {step.seconds:7.1f} {rate} {bare} {ratio} {peak} "
            f"{flag(step.finite):>6} {flag(step.complete):>8}  {step.note}")


HEADER = (f"{'step':<9} {'':<4} {'seconds':>7} {'img/s':>9} {'bare/s':>9} {'ratio':>6} {'peak MB':>8} "
          f"{'finite':>6} {'complete':>8}  note")


def torchrun_child(config_json: str) -> int:
    """Inside torchrun: train the run described by the JSON file, then write this rank's GPU memory peak beside it."""
    from chexcft.training import TrainConfig, shutdown_process_group, train

    spec = json.loads(Path(config_json).read_text())
    config = TrainConfig(**spec)
    try:
        train(config)
    finally:
        shutdown_process_group()
    rank = int(os.environ.get("RANK", "0"))
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() and config.device != "cpu" else None
    Path(config_json).with_name(f"peak-rank{rank}.json").write_text(json.dumps({"peak_mb": peak}))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD_FLAG]:
        return torchrun_child(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny model at 32 px and short CFT: a smoke test")
    parser.add_argument("--size", type=int, help="image size (default 320; 32 with --quick)")
    parser.add_argument("--arch", help="densenet121 (default) or tiny (default with --quick)")
    parser.add_argument("--batch", type=int, default=16, help="per-process batch size")
    parser.add_argument("--workers", type=int, default=None, help="loader workers (default: 4 on CUDA, 0 on CPU)")
    parser.add_argument("--nproc", type=int, help="torchrun processes (default: every visible GPU; 1 on CPU)")
    parser.add_argument("--limit", type=int, help="use only the first N rows of each demo split (default: all; 96 with --quick)")
    parser.add_argument("--keep", type=Path, help="keep the work folder here instead of a temporary one")
    args = parser.parse_args(argv)

    from chexcft.data import read_table
    from chexcft.data.cache import ensure_cache
    from chexcft.demo.data import demo_csv, demo_root
    from chexcft.device import resolve_device
    from chexcft.schema import COMPETITION_TASKS
    from chexcft.training import TrainConfig, train

    settings = resolve_device(args.device)
    device = settings.device
    size = args.size or (32 if args.quick else 320)
    arch = args.arch or ("tiny" if args.quick else "densenet121")
    workers = args.workers if args.workers is not None else (4 if settings.is_cuda else 0)
    nproc = args.nproc or (torch.cuda.device_count() if settings.is_cuda else 1)
    name = torch.cuda.get_device_name(device) if settings.is_cuda else "CPU"
    print(f"chexcft GPU check: {device} ({name}), {nproc} torchrun process(es), torch {torch.__version__}, "
          f"{arch} at {size} px, batch {args.batch}, AMP {settings.amp_dtype}, channels_last {settings.channels_last}, "
          f"{workers} loader workers; load average {os.getloadavg()[0]:.1f}", flush=True)
    print(HEADER, flush=True)
    start_all, cpu_all = time.perf_counter(), time.process_time()

    root = demo_root()
    work = args.keep or Path(tempfile.mkdtemp(prefix="chexcft-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    limit = args.limit or (96 if args.quick else None)
    csvs = {split: demo_csv(split) for split in ("train", "valid", "test")}
    if limit:
        for split, source in list(csvs.items()):
            csvs[split] = work / f"{split}.csv"
            pd.read_csv(source).head(limit).to_csv(csvs[split], index=False)
    steps: list[Step] = []
    train_frame = read_table(csvs["train"], root)
    valid_frame = read_table(csvs["valid"], root)
    test_frame = read_table(csvs["test"], root)
    cache_dir = work / "cache" / f"{size}px"
    run_dir, ddp_dir = work / "run", work / "run-torchrun"
    config = TrainConfig(
        train_csv=str(csvs["train"]), valid_csv=str(csvs["valid"]), root=str(root), out=str(run_dir),
        cache_dir=str(work / "cache"), arch=arch, image_size=size, epochs=1, batch_size=args.batch,
        device=str(device), workers=workers, quiet=True,
        # the submission needs the 5 competition tasks; a --limit subset may lack a known positive of one
        observations=tuple(COMPETITION_TASKS) if limit else None,
    )  # fmt: skip
    n_outputs = 0

    def prepare(step: Step) -> None:
        frames = pd.concat([train_frame, valid_frame, test_frame], ignore_index=True)
        cache = ensure_cache(frames, cache_dir, size, workers=0 if args.quick else None, progress=False)
        n = len(frames)
        step.images_per_s = n / max(time.perf_counter() - t0, 1e-9)
        step.complete = cache.n_slots > 0 and bool((cache.rows_for(list(frames["abs_path"])) >= 0).all())
        step.finite = None
        step.note = f"{n} images -> {cache_dir}"

    def train_step(step: Step) -> None:
        nonlocal n_outputs
        train(config)
        complete, finite, note = run_complete(run_dir, 1)
        run_config = json.loads((run_dir / "config.json").read_text())
        n_outputs = len(run_config["observations"])
        step.images_per_s = float(pd.read_csv(run_dir / "metrics.csv")["images_per_s"].iloc[0])
        step.peak_mb = peak_mb(device)
        step.bare_per_s = bare_rate(settings, arch, n_outputs, args.batch, size, train=True, steps=20 if settings.is_cuda else 3)
        step.complete, step.finite = complete, finite
        step.note = f"{note}; AMP {run_config.get('amp_dtype')}, channels_last {run_config.get('channels_last')}; 1 epoch incl. warm-up"

    def torchrun_step(step: Step) -> None:
        torchrun = Path(sys.executable).with_name("torchrun")
        spec = config.replace(out=str(ddp_dir), device="cuda" if settings.is_cuda else "cpu").to_dict()
        spec_file = work / "torchrun-config.json"
        spec_file.write_text(json.dumps(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        command = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}", str(Path(__file__).resolve()),
                   CHILD_FLAG, str(spec_file)]
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=work, timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"torchrun exited {result.returncode}: {result.stderr.strip()[-600:]}")
        complete, finite, note = run_complete(ddp_dir, 1)
        run_config = json.loads((ddp_dir / "config.json").read_text())
        peaks = [json.loads(p.read_text())["peak_mb"] for p in sorted(work.glob("peak-rank*.json"))]
        step.peak_mb = max(peaks) if peaks and None not in peaks else None
        step.images_per_s = float(pd.read_csv(ddp_dir / "metrics.csv")["images_per_s"].iloc[0])
        single = steps[1].bare_per_s or bare_rate(settings, arch, n_outputs, args.batch, size, train=True, steps=3)
        step.bare_per_s = single * nproc
        step.complete = complete and run_config["world_size"] == nproc and len(peaks) == nproc
        step.finite = finite
        step.note = f"{note}; world size {run_config['world_size']}; bare = {nproc} x one process"

    def features_step(step: Step) -> None:
        from chexcft.data.cache import ImageCache
        from chexcft.features import export_features, load_features

        out = work / "valid-features.safetensors"
        begin = time.perf_counter()
        export_features(run_dir, valid_frame, ImageCache.open(cache_dir), out, batch_size=64, settings=settings)
        elapsed = time.perf_counter() - begin
        exported = load_features(out)
        step.images_per_s = len(exported.paths) / elapsed
        step.bare_per_s = bare_rate(settings, arch, n_outputs, 64, size, train=False, steps=10 if settings.is_cuda else 2)
        step.finite = all_finite(exported.features)
        step.complete = len(exported.paths) == len(valid_frame) and not exported.skipped
        step.note = f"{exported.features.shape[0]} x {exported.features.shape[1]} features (incl. model load)"

    def cft_step(step: Step) -> None:
        from chexcft.cft.finetuner import CategoryWiseFineTuner
        from chexcft.cft.pipeline import run_cft

        method = "bp" if args.quick else "both"
        tuner = CategoryWiseFineTuner(method=method, max_steps=100 if args.quick else 2000,
                                      patience=20 if args.quick else 200, population=20, seed=0)
        cft_dir = run_cft(run_dir, csvs["train"], csvs["valid"], root, csvs["test"], method=method, tuner=tuner,
                          n_boot=100 if args.quick else 1000, settings=settings)
        report = json.loads((cft_dir / "report.json").read_text())
        needed = ["head.safetensors", "calibration.json", "report.json", "report.csv"]
        missing = [n for n in needed if not (cft_dir / n).is_file()]
        from safetensors.torch import load_file

        head = load_file(str(cft_dir / "head.safetensors")) if not missing else {}
        step.complete = not missing
        step.finite = all(bool(torch.isfinite(t.float()).all()) for t in head.values()) if head else False
        block = report["test"] if report.get("held_out") else report["validation"]
        step.note = (f"method {method} on {device}; mean test AUC {block.get('mean_auc_before')} -> "
                     f"{block.get('mean_auc_after')}" + (f"; missing {missing}" if missing else ""))

    def predict_step(step: Step) -> None:
        from chexcft.predict import predict_table

        begin = time.perf_counter()
        result = predict_table(test_frame, [run_dir], device=str(device), batch_size=64, workers=workers, progress=False)
        elapsed = time.perf_counter() - begin
        step.images_per_s = len(test_frame) / elapsed
        step.bare_per_s = bare_rate(settings, arch, n_outputs, 64, size, train=False, steps=10 if settings.is_cuda else 2)
        probabilities = result.predictions[list(result.observations)].to_numpy()
        step.finite = all_finite(probabilities)
        step.complete = result.n_failed == 0 and len(probabilities) == len(test_frame)
        step.note = f"{len(test_frame)} image files decoded + letterboxed + predicted (with the CFT head)"

    def submit_step(step: Step) -> None:
        from chexcft.submission import submit

        out = work / "submission.csv"
        report = submit(csvs["test"], out, [run_dir], root=root, device=str(device), batch_size=64, workers=workers,
                        progress=False)
        frame = pd.read_csv(out)
        studies = test_frame["study"].nunique()  # chexcft.keys: CheXpert, NIH and MIMIC layouts alike
        step.images_per_s = len(test_frame) / max(time.perf_counter() - t0, 1e-9)
        step.finite = all_finite(frame.select_dtypes("number").to_numpy())
        step.complete = report.out_path is not None and len(frame) == studies
        step.note = f"{len(frame)} studies -> {out.name}"

    for label, body in (("prepare", prepare), ("train", train_step), ("torchrun", torchrun_step),
                        ("features", features_step), ("cft", cft_step), ("predict", predict_step),
                        ("submit", submit_step)):
        t0 = time.perf_counter()
        steps.append(timed(Step(label), device, body))

    failed = [s.name for s in steps if not s.ok]
    wall, cpu = time.perf_counter() - start_all, time.process_time() - cpu_all
    print(f"\n{len(steps) - len(failed)}/{len(steps)} steps passed in {wall:.0f} s wall ({cpu:.0f} CPU s in this "
          f"process; load average {os.getloadavg()[0]:.1f})" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
