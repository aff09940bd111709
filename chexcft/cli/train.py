"""`chexcft train` and `chexcft train-ensemble`: parse options, call chexcft.train / chexcft.ensemble."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from chexcft.cli import app, console

CsvOpt = Annotated[Path, typer.Option("--train-csv", help="Training CSV (CheXpert, Path-only or NIH format).")]
ValidOpt = Annotated[Path, typer.Option("--valid-csv", help="Validation CSV (labels 1/0 used for AUC).")]
RootOpt = Annotated[Optional[Path], typer.Option("--root", help="Folder containing the release folder (default: from the CSV).")]
PolicyOpt = Annotated[str, typer.Option("--policy", help="Uncertainty policy: a name, 'chexpert-paper' or 'Obs=Policy,...'.")]
ObsOpt = Annotated[Optional[str], typer.Option("--observations", help="Comma-separated observations (default: those with a positive and a negative).")]
ArchOpt = Annotated[str, typer.Option("--arch", help="densenet121 or tiny.")]
InitOpt = Annotated[str, typer.Option("--init", help="random, imagenet, xrv:<weights name> or file:<path.safetensors>.")]
SizeOpt = Annotated[int, typer.Option("--image-size", help="Square input size in pixels.")]
EpochsOpt = Annotated[int, typer.Option("--epochs")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Per-process batch size.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate (cosine-annealed to lr/100 over the run).")]
SeedOpt = Annotated[int, typer.Option("--seed")]
BlankOpt = Annotated[str, typer.Option("--blank", help="Blank labels: 'negative' or 'ignore'.")]
AugOpt = Annotated[bool, typer.Option("--augment/--no-augment", help="Batched on-device augmentation (kornia) for training.")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model for training (worth it on CUDA).")]
AccumulateOpt = Annotated[int, typer.Option("--accumulate", help="Gradient accumulation: micro-batches per optimiser step.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Data loader worker processes.")]
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Preprocessing cache folder (default: <out>/../cache).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars: one log line per epoch.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]


def _config(**options: object):  # -> TrainConfig
    from chexcft.train import TrainConfig

    observations = options.pop("observations")
    names = tuple(o.strip() for o in str(observations).split(",") if o.strip()) if observations else None
    for key in ("train_csv", "valid_csv", "root", "cache_dir", "out"):
        options[key] = str(options[key]) if options[key] is not None else None
    return TrainConfig(observations=names, **options)  # type: ignore[arg-type]


@app.command("train")
def train_command(
    train_csv: CsvOpt,
    valid_csv: ValidOpt,
    out: Annotated[Path, typer.Option("--out", help="Run directory to create (or to continue with --resume).")],
    root: RootOpt = None,
    policy: PolicyOpt = "U-Ones",
    observations: ObsOpt = None,
    arch: ArchOpt = "densenet121",
    init: InitOpt = "random",
    image_size: SizeOpt = 320,
    epochs: EpochsOpt = 3,
    batch_size: BatchOpt = 16,
    lr: LrOpt = 1e-4,
    seed: SeedOpt = 0,
    blank: BlankOpt = "negative",
    augment: AugOpt = True,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    compile: CompileOpt = False,
    accumulate: AccumulateOpt = 1,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Train one model into a run directory (config.json, weights/, metrics.csv, valid_predictions.csv)."""
    from chexcft.train import shutdown_process_group, train

    config = _config(**{k: v for k, v in locals().items() if k not in ("train", "shutdown_process_group")})
    try:
        run_dir = train(config)
    finally:
        shutdown_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"run directory: [bold]{run_dir}[/]", highlight=False)


@app.command("train-ensemble")
def train_ensemble_command(
    train_csv: CsvOpt,
    valid_csv: ValidOpt,
    members: Annotated[int, typer.Option("--members", help="Number of members (seeds seed, seed+1, ...).")],
    out: Annotated[Path, typer.Option("--out", help="Ensemble directory (members in DIR/member-i).")],
    policies: Annotated[Optional[str], typer.Option("--policies", help="Comma-separated policies, cycled over members.")] = None,
    root: RootOpt = None,
    policy: PolicyOpt = "U-Ones",
    observations: ObsOpt = None,
    arch: ArchOpt = "densenet121",
    init: InitOpt = "random",
    image_size: SizeOpt = 320,
    epochs: EpochsOpt = 3,
    batch_size: BatchOpt = 16,
    lr: LrOpt = 1e-4,
    seed: SeedOpt = 0,
    blank: BlankOpt = "negative",
    augment: AugOpt = True,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 0,
    compile: CompileOpt = False,
    accumulate: AccumulateOpt = 1,
    cache_dir: CacheOpt = None,
    quiet: QuietOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Train an ensemble of runs differing by seed (and by policy with --policies); writes DIR/ensemble.json."""
    from chexcft.ensemble import train_ensemble
    from chexcft.train import shutdown_process_group

    options = {k: v for k, v in locals().items() if k not in ("members", "policies", "train_ensemble", "shutdown_process_group")}
    config = _config(**options)
    policy_list = [p for p in policies.split(",")] if policies else None
    try:
        directory = train_ensemble(members, out, config, policy_list)
    finally:
        shutdown_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"ensemble directory: [bold]{directory}[/]", highlight=False)
