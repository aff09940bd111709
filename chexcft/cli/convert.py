"""`chexcft convert`: other datasets as CheXpert-format train/valid/test CSVs (Path relative to the data root)."""

from __future__ import annotations

from pathlib import Path

import typer

from chexcft.cli import app, console

convert_app = typer.Typer(help="Write another dataset as CheXpert-format train.csv, valid.csv and test.csv.",
                          no_args_is_help=True)
app.add_typer(convert_app, name="convert")

_VIEWS_HELP = ("Views to keep: all (default: views neither frontal nor lateral, or missing, are kept as 'unknown'), "
               "frontal, lateral, AP, PA or unknown.")


def _summary(summary: dict, root: Path) -> None:
    views = ", ".join(f"{view} {count}" for view, count in sorted(summary["views"].items()))
    console.print(f"{summary['images']} images ({views}); kept {summary['kept']}")
    if summary["unassigned"]:
        console.print(f"[yellow]{summary['unassigned']} image(s) have no split and were not written[/]")
    for name, (path, rows) in summary["written"].items():
        console.print(f"wrote {path} ({rows} images)", soft_wrap=True)
    console.print(f"Paths are relative to {root}: pass --root {root} to the other commands.", soft_wrap=True)


@convert_app.command("mimic")
def convert_mimic_command(
    root: Path = typer.Argument(..., exists=True, file_okay=False, help="MIMIC-CXR-JPG folder (metadata CSVs, files/)."),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Folder for train.csv, valid.csv, test.csv."),
    labeler: str = typer.Option("chexpert", "--labels", help="Label file: chexpert or negbio."),
    views: str = typer.Option("all", "--views", help=_VIEWS_HELP),
) -> None:
    """MIMIC-CXR-JPG -> CheXpert-format CSVs, split by mimic-cxr-2.0.0-split.csv."""
    from chexcft.data.convert import convert_mimic

    _summary(convert_mimic(root, out, labeler=labeler, views=views), root)
