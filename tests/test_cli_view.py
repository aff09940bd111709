"""`chexcft view`: the option round trip shared with the app, the streamlit command line, and early errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.cli.view import streamlit_command, viewer_script
from chexcft.errors import ChexcftError, InvalidRunError
from chexcft.viewer.options import ViewerOptions, parse_viewer_args


def test_options_round_trip_through_the_app_parser() -> None:
    options = ViewerOptions(models=("a", "b"), data="d.csv", root="r", groundtruth="g.csv", which="last", batch_size=4)
    assert parse_viewer_args(options.to_argv()) == options
    minimal = parse_viewer_args(["--model", "run", "--data", "folder"])
    assert minimal == ViewerOptions(models=("run",), data="folder")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "x.csv"], "--model"),
        (["--model", "run"], "--data"),
        (["--model", "run", "--data", "x", "--which", "worst"], "worst"),
        (["--model", "run", "--data", "x", "--batch-size", "0"], "batch-size"),
        (["--model", "run", "--data", "x", "--colour", "red"], "--colour"),
    ],
)
def test_bad_options_raise_a_chexcft_error(argv: list[str], message: str) -> None:
    with pytest.raises(ChexcftError, match=message):
        parse_viewer_args(argv)


def test_streamlit_command_binds_localhost_headless_without_statistics() -> None:
    script = viewer_script()
    assert script.name == "viewer.py" and script.parent.name == "app" and script.is_file()
    command = streamlit_command(script, ["--model", "run", "--data", "x"])
    assert command[1:4] == ["-m", "streamlit", "run"] and command[4] == str(script)
    flags = dict(zip(command[5:-5:2], command[6:-5:2]))
    assert flags["--server.address"] == "127.0.0.1"
    assert flags["--server.headless"] == "true"
    assert flags["--browser.gatherUsageStats"] == "false"
    assert command[-5:] == ["--", "--model", "run", "--data", "x"]


def test_missing_app_script_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import chexcft

    monkeypatch.setattr(chexcft, "__file__", str(tmp_path / "site-packages" / "chexcft" / "__init__.py"))
    with pytest.raises(ChexcftError, match="app/viewer.py|viewer script was not found"):
        viewer_script()


def test_view_fails_before_starting_streamlit_on_a_missing_run_or_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["view", "--model", str(tmp_path / "nope"), "--data", str(tmp_path)])
    assert isinstance(result.exception, InvalidRunError) and "nope" in str(result.exception)
    (tmp_path / "run").mkdir()
    result = CliRunner().invoke(app, ["view", "--model", str(tmp_path / "run"), "--data", str(tmp_path / "none.csv")])
    assert isinstance(result.exception, ChexcftError) and "none.csv" in str(result.exception)
