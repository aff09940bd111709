"""`chexcft view`: start the Streamlit viewer (app/viewer.py) on 127.0.0.1 for runs and a table of images."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from chexcft.cli import app, console
from chexcft.errors import ChexcftError
from chexcft.viewer.upload import MAX_UPLOAD_MB

_MODEL_HELP = "Run directory (repeatable); an ensemble directory (ensemble.json) expands to its members."


def viewer_script() -> Path:
    """app/viewer.py of the checkout this package is installed from (editable install); ChexcftError if absent."""
    import chexcft

    script = Path(chexcft.__file__).resolve().parent.parent / "app" / "viewer.py"
    if not script.is_file():
        raise ChexcftError(
            f"the viewer script was not found at {script}: `chexcft view` needs a source checkout installed with "
            "`pip install -e .` (app/viewer.py lives beside the chexcft package)"
        )
    return script


def streamlit_command(script: Path, viewer_argv: list[str], host: str = "127.0.0.1", port: int = 8501) -> list[str]:
    """The `python -m streamlit run ...` command line for the viewer (headless, no usage statistics)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--server.maxUploadSize", str(MAX_UPLOAD_MB),
        "--client.toolbarMode", "minimal",
        "--", *viewer_argv,
    ]


@app.command("view")
def view_command(
    model: list[Path] = typer.Option(..., "--model", "-m", help=_MODEL_HELP),
    data: Path = typer.Option(..., "--data", help="CheXpert CSV, CSV with only Path, NIH CSV or image folder."),
    root: Path | None = typer.Option(None, "--root", help="Folder the CSV paths are relative to (default: inferred)."),
    groundtruth: Path | None = typer.Option(
        None, "--groundtruth", help="Labels CSV (image or study level) for the performance page."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
    port: int = typer.Option(8501, "--port"),
    which: str = typer.Option("best", "--which", help="Weights of each run: best or last."),
    device: str = typer.Option("cpu", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_size: int = typer.Option(32, "--batch-size"),
) -> None:
    """Open the viewer: studies, calibrated predictions, Grad-CAM, AUCs, upload and export (Streamlit)."""
    from chexcft.predict import expand_model_dirs
    from chexcft.viewer.options import ViewerOptions, parse_viewer_args

    script = viewer_script()
    expand_model_dirs(model)  # fail here, with the reason, rather than in the browser
    if not data.exists():
        raise ChexcftError(f"--data {data}: no such file or folder")
    if groundtruth is not None and not groundtruth.is_file():
        raise ChexcftError(f"--groundtruth {groundtruth}: no such file")
    options = ViewerOptions(
        models=tuple(str(m.resolve()) for m in model),
        data=str(data.resolve()),
        root=str(root.resolve()) if root is not None else None,
        groundtruth=str(groundtruth.resolve()) if groundtruth is not None else None,
        which=which,
        device=device,
        batch_size=batch_size,
    )
    parse_viewer_args(options.to_argv())  # the app parses the same argv: check it now
    command = streamlit_command(script, options.to_argv(), host, port)
    console.print(f"viewer on http://{host}:{port} (Ctrl+C to stop)", highlight=False)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)
