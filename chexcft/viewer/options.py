"""The viewer's options: one parser for `chexcft view` and `streamlit run app/viewer.py -- <options>`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from chexcft.errors import ChexcftError

WHICH_CHOICES: tuple[str, ...] = ("best", "last")


@dataclass(frozen=True)
class ViewerOptions:
    """What the viewer shows: models, the data to browse, optional ground truth."""

    models: tuple[str, ...]
    data: str
    root: str | None = None
    groundtruth: str | None = None
    which: str = "best"
    device: str = "cpu"
    batch_size: int = 32

    def to_argv(self) -> list[str]:
        """The command-line form that parse_viewer_args reads back into an equal ViewerOptions."""
        argv: list[str] = []
        for model in self.models:
            argv += ["--model", model]
        argv += ["--data", self.data]
        if self.root is not None:
            argv += ["--root", self.root]
        if self.groundtruth is not None:
            argv += ["--groundtruth", self.groundtruth]
        argv += ["--which", self.which, "--device", self.device, "--batch-size", str(self.batch_size)]
        return argv


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ChexcftError(f"viewer options: {message} (usage: {self.format_usage().strip()})")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the viewer's options (raises ChexcftError instead of exiting)."""
    parser = _Parser(prog="app/viewer.py", add_help=False, allow_abbrev=False)
    parser.add_argument("--model", "-m", action="append", required=True, help="Run or ensemble directory (repeatable).")
    parser.add_argument("--data", required=True, help="CheXpert CSV, CSV with only Path, NIH CSV or image folder.")
    parser.add_argument("--root", default=None, help="Folder the CSV's paths are relative to.")
    parser.add_argument("--groundtruth", default=None, help="CSV with labels for the performance page.")
    parser.add_argument("--which", default="best", choices=WHICH_CHOICES, help="Weights of each run.")
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N.")
    parser.add_argument("--batch-size", type=int, default=32)
    return parser


def parse_viewer_args(argv: Sequence[str]) -> ViewerOptions:
    """Parse the viewer's options (what follows `--` on the streamlit command line)."""
    args = build_parser().parse_args(list(argv))
    if args.batch_size < 1:
        raise ChexcftError(f"viewer options: --batch-size must be at least 1, got {args.batch_size}")
    return ViewerOptions(
        models=tuple(args.model),
        data=args.data,
        root=args.root,
        groundtruth=args.groundtruth,
        which=args.which,
        device=args.device,
        batch_size=args.batch_size,
    )
