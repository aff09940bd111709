"""The `chexcft` command: a thin typer layer over the library.

Each module in this package registers its commands on `app`; they are imported here so that
adding a command never means editing a shared file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.console import Console

from chexcft.errors import ChexcftError

app = typer.Typer(
    name="chexcft",
    help="Chest X-ray classification with Category-wise Fine-Tuning (CheXpert-style data).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Chest X-ray classification with Category-wise Fine-Tuning (CheXpert-style data)."""


def _register_commands() -> None:
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")


_register_commands()


def main() -> None:
    """Entry point: run the CLI, turning ChexcftError into a one-line message and exit code 2."""
    try:
        app()
    except ChexcftError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
