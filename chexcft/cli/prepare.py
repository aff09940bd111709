"""`chexcft prepare`: read a table's images once into the preprocessing cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from chexcft.cli import app, console

_SHOWN_FAILURES = 10


@app.command("prepare")
def prepare(
    csv: Annotated[Path, typer.Option("--csv", help="CheXpert CSV, Path-only CSV, NIH label CSV or a folder of images.")],
    out: Annotated[Path, typer.Option("--out", help="Cache folder to create or update.")],
    root: Annotated[Optional[Path], typer.Option("--root", help="Folder containing the release folder (default: from the CSV).")] = None,
    size: Annotated[int, typer.Option("--size", help="Square image size in pixels (letterboxed).")] = 320,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Reader processes (default: all cores; 0 = in-process).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    lock_timeout: Annotated[float, typer.Option("--lock-timeout", help="Seconds to wait for another build of the same folder.")] = 3600.0,
) -> None:
    """Letterbox every image of the table to SIZE x SIZE into one memory-mapped cache (only new or changed files are read)."""
    from chexcft.data import read_table
    from chexcft.data.cache import build_cache

    frame = read_table(csv, root)
    result = build_cache(list(frame["abs_path"]), out, size, workers=workers, progress=progress, lock_timeout=lock_timeout)
    if result.n_failed:
        table = Table("unreadable image", "reason", title=f"{result.n_failed} image(s) could not be read")
        for path, reason in result.failures.head(_SHOWN_FAILURES).itertuples(index=False):
            table.add_row(str(path), str(reason))
        console.print(table)
        if result.n_failed > _SHOWN_FAILURES:
            console.print(f"... and {result.n_failed - _SHOWN_FAILURES} more")
    colour = "yellow" if result.n_failed else "green"
    console.print(f"[{colour}]{result.summary()}[/]")
