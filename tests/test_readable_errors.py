"""Readable errors: offending values are cut to ~200 characters; a header-only CSV fails training clearly and
gives predict and submit nothing to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.data import read_table
from chexcft.errors import InvalidDatasetError, shown
from chexcft.schema import CSV_HEADER

ROW = "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Male,50,Frontal,AP" + ",1.0" * 14


@pytest.mark.parametrize("where", ["header", "label", "path"])
def test_a_million_character_cell_is_quoted_briefly(tmp_path: Path, where: str) -> None:
    huge = "A" * 10**6
    header, row = list(CSV_HEADER), ROW.split(",")
    if where == "header":
        header[3] = huge
    elif where == "label":
        row[8] = huge
    else:
        row[0] = huge
    csv = tmp_path / "huge.csv"
    csv.write_text(",".join(header) + "\n" + ",".join(row) + "\n")
    with pytest.raises(InvalidDatasetError) as caught:
        read_table(csv)
    message = str(caught.value)
    assert str(csv) in message and len(message) < 600 and "1,000,000 characters" in message
    if where != "header":
        assert "line 2" in message and "column" in message


def test_shown_cuts_long_values_and_names_blanks() -> None:
    assert shown("abc") == "'abc'" and shown(float("nan")) == "a blank cell"
    assert shown("x" * 500).startswith("'" + "x" * 200 + "'...") and "(500 characters)" in shown("x" * 500)


@pytest.fixture()
def header_only(tmp_path: Path) -> Path:
    csv = tmp_path / "empty.csv"
    csv.write_text(",".join(CSV_HEADER) + "\n")
    return csv


def test_training_on_a_header_only_csv_fails_clearly(header_only: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [
        "train", "--train-csv", str(header_only), "--valid-csv", str(header_only), "--out", str(tmp_path / "run"),
        "--arch", "tiny", "--image-size", "32", "--device", "cpu", "--quiet",
    ])  # fmt: skip
    assert isinstance(result.exception, InvalidDatasetError), result.output
    assert str(header_only) in str(result.exception) and "no data rows" in str(result.exception)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize("command", ["predict", "submit"])
def test_predicting_a_header_only_csv_has_nothing_to_do(header_only: Path, tmp_path: Path, command: str) -> None:
    out = tmp_path / "out.csv"
    model = tmp_path / "no-such-run"  # never opened: there is nothing to predict
    args = ["predict", "-m", str(model), "-i", str(header_only), "-o", str(out)] if command == "predict" else \
        ["submit", str(header_only), str(out), "-m", str(model)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and result.exception is None, result.output
    assert "nothing to" in " ".join(result.output.split()) and not out.exists()
