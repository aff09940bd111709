"""`chexcft version`: the package and its key dependencies' versions."""

from __future__ import annotations

from rich.table import Table

from chexcft.cli import app, console
from chexcft.provenance import package_versions


@app.command()
def version() -> None:
    """Print chexcft's version and the versions of the libraries it runs on."""
    table = Table("package", "version")
    for name, value in package_versions().items():
        table.add_row(name, value or "not installed")
    console.print(table)
