"""`chexcft features`: export a run's frozen features, labels, known mask and binary head for CFT."""

from __future__ import annotations

from pathlib import Path

import typer

from chexcft.cli import app, console


@app.command("features")
def features_command(
    run: Path = typer.Option(..., "--run", help="Run directory (config.json + weights/)."),
    csv: Path = typer.Option(..., "--csv", help="CheXpert-style CSV (or any table `read_table` accepts)."),
    root: Path | None = typer.Option(None, "--root", help="Folder the CSV's paths are relative to (default: inferred)."),
    out: Path = typer.Option(..., "--out", help="Output .safetensors file."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Preprocessing cache (default: the run's cache, else <run parent>/cache/<size>px)."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    which: str = typer.Option("best", "--which", help="Weights: best or last."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    workers: int | None = typer.Option(None, "--workers", help="Processes for building the cache."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Write penultimate features (no augmentation) + labels + known mask + head weight/bias to one file."""
    from chexcft.data import read_table
    from chexcft.data.cache import ensure_cache
    from chexcft.device import resolve_device
    from chexcft.errors import InvalidRunError
    from chexcft.features import export_features, load_features
    from chexcft.runs import read_config

    config = read_config(run)
    size = config.get("image_size") or (config.get("settings") or {}).get("image_size")
    if not size:
        raise InvalidRunError(f"{run / 'config.json'}: records no image_size")
    size = int(size)
    if cache_dir is None:
        cache_dir = Path(config["cache_dir"]) if config.get("cache_dir") else run.resolve().parent / "cache" / f"{size}px"
    table = read_table(csv, root)
    cache = ensure_cache(table, cache_dir, size, workers=workers, progress=not quiet)
    settings = resolve_device(device)
    path = export_features(run, table, cache, out, which=which, batch_size=batch_size, settings=settings)
    exported = load_features(path)
    console.print(
        f"{len(exported.paths)} image(s) x {exported.features.shape[1]} features, "
        f"{len(exported.observations)} observation(s) -> {path}"
    )
    if exported.skipped:
        console.print(
            f"[yellow]{len(exported.skipped)} image(s) skipped (unreadable or not cached)[/], e.g. {exported.skipped[0]}"
        )
