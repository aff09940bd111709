"""Training progress: a rich progress bar with loss and images/s, or plain log lines with --quiet."""

from __future__ import annotations

import time
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

_console = Console(stderr=True)


class EpochProgress:
    """Shows one epoch's steps on the main process; silent elsewhere and under quiet."""

    def __init__(self, total_steps: int, epoch: int, epochs: int, *, show: bool) -> None:
        self.show = show
        self.start = time.perf_counter()
        self.images = 0
        self._progress: Progress | None = None
        if show:
            self._progress = Progress(
                TextColumn(f"epoch {epoch}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TextColumn("{task.fields[rate]:.1f} img/s"),
                TimeElapsedColumn(),
                console=_console,
                transient=True,
            )
            self._task = self._progress.add_task("train", total=total_steps, loss=float("nan"), rate=0.0)
            self._progress.start()

    def step(self, loss: float | torch.Tensor, images: int) -> None:
        """Record one step of `images` images (all processes together); a tensor loss is read only when shown."""
        self.images += images
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=float(loss), rate=self.rate)

    @property
    def rate(self) -> float:
        """Images per second since the epoch started."""
        return self.images / max(time.perf_counter() - self.start, 1e-9)

    def close(self) -> None:
        """Remove the bar."""
        if self._progress is not None:
            self._progress.stop()


def log(message: str, *, enabled: bool = True, **_: Any) -> None:
    """One log line on stderr (main process only: pass enabled=info.is_main)."""
    if enabled:
        _console.print(message, highlight=False)
