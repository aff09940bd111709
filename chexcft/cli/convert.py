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


def _first_names(names: list[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _summary(summary: dict, root: Path) -> None:
    views = ", ".join(f"{view} {count}" for view, count in sorted(summary["views"].items()))
    console.print(f"{summary['images']} images ({views}); kept {summary['kept']}")
    missing = summary.get("missing") or []
    if missing:
        action = {"drop": "not written", "keep": "written all the same"}[summary["missing_rule"]]
        console.print(f"[yellow]{len(missing)} listed image(s) are not on disk ({action}): "
                      f"{_first_names(missing)}[/]", soft_wrap=True)
    repeated = summary.get("repeated") or []
    if repeated:
        console.print(f"[yellow]{len(repeated)} listed image(s) are in more than one folder, with the same bytes; "
                      f"the first in sorted order is used: {_first_names(repeated)}[/]", soft_wrap=True)
    if summary.get("split_source"):
        console.print(f"splits: {summary['split_source']}", soft_wrap=True)
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


@convert_app.command("nih")
def convert_nih_command(
    root: Path = typer.Argument(..., exists=True, file_okay=False,
                                help="NIH ChestX-ray14 folder (Data_Entry_2017*.csv, images*/, split lists)."),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Folder for train.csv, valid.csv, test.csv."),
    views: str = typer.Option("all", "--views", help=_VIEWS_HELP),
    valid_fraction: float = typer.Option(0.1, "--valid-fraction", help="Share of train_val (or of all images "
                                         "without the split lists) drawn by patient for valid.csv."),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Share drawn by patient for test.csv when "
                                        "there are no split lists (else test_list.txt is the test split)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the patient-level splits."),
    missing: str = typer.Option("drop", "--missing", help="Images listed but not on disk (always reported): drop, "
                                "keep (Path images/<name>) or error."),
) -> None:
    """NIH ChestX-ray14 -> CheXpert-format CSVs: test_list.txt is test, valid is carved from train_val by patient."""
    from chexcft.data.convert import convert_nih

    _summary(convert_nih(root, out, views=views, valid_fraction=valid_fraction, test_fraction=test_fraction,
                         seed=seed, missing=missing), root)
