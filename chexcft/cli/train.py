"""`chexcft train` and `chexcft train-ensemble`: parse options, call chexcft.training / chexcft.ensemble."""

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
LrOpt = Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: 1e-4 for bce with Adam, cosine-annealed to lr/100; 0.1 for aucm with PESG, /10 after epoch 1).")]
WdOpt = Annotated[Optional[float], typer.Option("--weight-decay", help="L2 weight decay (default: 0 for bce, 1e-5 for aucm).")]
LossOpt = Annotated[str, typer.Option("--loss", help="bce (masked cross-entropy) or aucm (masked AUC-margin loss with libauc's PESG).")]
DeltaOpt = Annotated[float, typer.Option("--delta-rel", help="Large Loss: percent of each batch's entries modified per epoch (LL-Cp: per batch).")]
MarginOpt = Annotated[float, typer.Option("--aucm-margin", help="AUC-margin loss margin.")]
EpochDecayOpt = Annotated[float, typer.Option("--epoch-decay", help="PESG epoch-level regulariser (aucm).")]
ResetHeadOpt = Annotated[bool, typer.Option("--reset-head", help="Re-initialise the head after --init (two-stage: a BCE run, then aucm).")]
OversampleOpt = Annotated[Optional[str], typer.Option("--oversample", help="Repeat rows positive for these observations, e.g. 'Cardiomegaly=2,Consolidation=2'.")]
SeedOpt = Annotated[int, typer.Option("--seed")]
BlankOpt = Annotated[str, typer.Option("--blank", help="Blank labels: negative, ignore, or Large Loss LL-R, LL-Ct, LL-Cp (negatives, largest losses rejected/corrected).")]
AugOpt = Annotated[bool, typer.Option("--augment/--no-augment", help="Batched on-device augmentation (kornia) for training.")]
CompileOpt = Annotated[bool, typer.Option("--compile", help="torch.compile the model for training (worth it on CUDA).")]
AccumulateOpt = Annotated[int, typer.Option("--accumulate", help="Gradient accumulation: micro-batches per optimiser step.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Data loader worker processes.")]
CacheOpt = Annotated[Optional[Path], typer.Option("--cache-dir", help="Preprocessing cache folder (default: <out>/../cache).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", help="No progress bars: one log line per epoch.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out.")]


def _config(**options: object):  # -> TrainConfig
    from chexcft.training import TrainConfig

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
    lr: LrOpt = None,
    weight_decay: WdOpt = None,
    seed: SeedOpt = 0,
    blank: BlankOpt = "negative",
    delta_rel: DeltaOpt = 0.2,
    loss: LossOpt = "bce",
    aucm_margin: MarginOpt = 1.0,
    epoch_decay: EpochDecayOpt = 2e-3,
    reset_head: ResetHeadOpt = False,
    oversample: OversampleOpt = None,
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
    from chexcft.training import shutdown_process_group, train

    config = _config(**{k: v for k, v in locals().items() if k not in ("train", "shutdown_process_group")})
    try:
        run_dir = train(config)
    finally:
        shutdown_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"run directory: [bold]{run_dir}[/]", highlight=False)


_ENSEMBLE_ONLY = ("members", "policies", "force_members", "train_ensemble", "shutdown_process_group", "ChexcftError")


@app.command("train-ensemble")
def train_ensemble_command(
    train_csv: CsvOpt,
    valid_csv: ValidOpt,
    out: Annotated[Path, typer.Option("--out", help="Ensemble directory (members in DIR/member-i).")],
    members: Annotated[Optional[int], typer.Option("--members", help="Number of members (seeds seed, seed+1, ...; default: one per member spec).")] = None,
    policies: Annotated[Optional[list[str]], typer.Option("--policies", help="Member specs POLICY[+BLANK][+LOSS][+name=value], comma-separated or repeated, cycled over members (e.g. U-Ones+LL-R).")] = None,
    force_members: Annotated[bool, typer.Option("--force-members", help="With --resume, keep finished members whose recorded settings differ.")] = False,
    root: RootOpt = None,
    policy: PolicyOpt = "U-Ones",
    observations: ObsOpt = None,
    arch: ArchOpt = "densenet121",
    init: InitOpt = "random",
    image_size: SizeOpt = 320,
    epochs: EpochsOpt = 3,
    batch_size: BatchOpt = 16,
    lr: LrOpt = None,
    weight_decay: WdOpt = None,
    seed: SeedOpt = 0,
    blank: BlankOpt = "negative",
    delta_rel: DeltaOpt = 0.2,
    loss: LossOpt = "bce",
    aucm_margin: MarginOpt = 1.0,
    epoch_decay: EpochDecayOpt = 2e-3,
    reset_head: ResetHeadOpt = False,
    oversample: OversampleOpt = None,
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
    from chexcft.training import shutdown_process_group

    from chexcft.errors import ChexcftError

    config = _config(**{k: v for k, v in locals().items() if k not in _ENSEMBLE_ONLY})
    policy_list = [p for entry in policies or [] for p in entry.split(",") if p.strip()] or None
    if members is None:
        if not policy_list:
            raise ChexcftError("give --members N, or member specs with --policies")
        members = len(policy_list)
    try:
        directory = train_ensemble(members, out, config, policy_list, force_members=force_members)
    finally:
        shutdown_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"ensemble directory: [bold]{directory}[/]", highlight=False)
