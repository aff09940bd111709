"""README.md: every command matches the real CLI, and the real-data recipe runs (on the demo data, small settings)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from chexcft.cli import app
from chexcft.demo.data import demo_root

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The README's real-data settings -> the smallest ones that exercise the same commands on the demo data.
SMALL = [
    ("/data/chexpert", str(demo_root())),
    ("CheXpert-v1.0-small", "CheXpert-v1.0-demo"),
    ("--image-size 320", "--image-size 32"),
    ("--size 320", "--size 32"),
    ("320px", "32px"),
    ("--init imagenet", "--init random --arch tiny"),
    ("--epochs 3", "--epochs 1"),
    ("--members 5", "--members 2"),
    ("--device cuda", "--device cpu"),
    ("--workers 8", "--workers 0"),
    ("--method both", "--method both --max-steps 30 --patience 10 --population 8"),
    ("--bootstrap 1000", "--bootstrap 100"),
    ("--nproc_per_node=4", "--nproc_per_node=2"),
    ('{"fit": 0.95, "select": 0.05}', '{"fit": 0.7, "select": 0.3}'),
]


def blocks(language: str) -> list[str]:
    """The README's fenced code blocks of one language, in order."""
    return [body for lang, body in BLOCK.findall(README.read_text(encoding="utf-8")) if lang == language]


def commands(block: str) -> list[list[str]]:
    """Shell commands of a block (continuations joined, comments dropped), split on ;, && and newlines."""
    text = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        for part in re.split(r";|&&|\bdo\b|\bdone\b", line):
            tokens = shlex.split(part, comments=True)
            if tokens:
                out.append(tokens)
    return out


def chexcft_invocations() -> list[list[str]]:
    """Every `chexcft ...` (and `torchrun ... -m chexcft ...`) in the README's bash blocks, from the subcommand on."""
    found = []
    for block in blocks("bash"):
        for tokens in commands(block):
            if tokens[0] == "chexcft":
                found.append(tokens[1:])
            elif tokens[0] == "torchrun" and "-m" in tokens:
                index = tokens.index("-m")
                assert tokens[index + 1] == "chexcft"
                found.append(tokens[index + 2:])
    return found


def small(text: str) -> str:
    """The README text with the demo data and the smallest settings swapped in."""
    for old, new in SMALL:
        text = text.replace(old, new)
    return text


def test_every_readme_command_matches_the_cli() -> None:
    group = typer.main.get_command(app)
    invocations = chexcft_invocations()
    used = {tokens[0] for tokens in invocations}
    assert {"prepare", "train-ensemble", "cft", "submit", "bundle", "evaluate", "view", "predict"} <= used
    for tokens in invocations:
        command = group.commands.get(tokens[0])  # type: ignore[attr-defined]
        assert command is not None, f"README runs `chexcft {tokens[0]}`, which does not exist"
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        given = {token for token in tokens[1:] if token.startswith("-")}
        assert given <= known, f"`chexcft {tokens[0]}`: unknown option(s) {sorted(given - known)}"
        required = [param.opts[0] for param in command.params
                    if param.required and param.param_type_name == "option"]
        for option in required:
            aliases = next(p for p in command.params if p.opts[0] == option)
            assert given & set(aliases.opts), f"`chexcft {tokens[0]}` in the README lacks {option}"


def test_readme_make_targets_exist() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for block in blocks("bash"):
        for tokens in commands(block):
            if tokens[0] == "make":
                assert re.search(rf"^{tokens[1]}:", makefile, re.MULTILINE), f"no make target {tokens[1]!r}"


def test_readme_weights_table_names_the_files_the_errors_name() -> None:
    from chexcft.models.weights import imagenet_weights_file, xrv_weights_file

    readme = README.read_text(encoding="utf-8")
    assert imagenet_weights_file()[0].name in readme
    assert xrv_weights_file("densenet121-res224-chex")[0].name in readme
    assert "CHEXCFT_XRV_CACHE" in readme


@pytest.mark.slow
def test_readme_recipe_runs_on_the_demo_data(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    python_blocks, bash_blocks = blocks("python"), blocks("bash")
    split = next(b for b in python_blocks if "split_by_patient" in b)
    subprocess.run([sys.executable, "-c", small(split)], cwd=tmp_path, env=env, check=True, timeout=300)
    assert (tmp_path / "splits" / "fit.csv").is_file() and (tmp_path / "splits" / "select.csv").is_file()

    recipe = next(b for b in bash_blocks if "chexcft prepare" in b)
    script = small(recipe).replace("python runs/bundle", f"{shlex.quote(sys.executable)} runs/bundle")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for path in ("runs/chexpert/ensemble.json", "runs/chexpert/member-1/cft/report.csv", "runs/valid_submission.csv",
                 "runs/valid_eval.json", "runs/valid_roc.png", "runs/bundle/src/predict.py",
                 "runs/bundle_submission.csv"):
        assert (tmp_path / path).is_file(), path
    import pandas as pd

    ours = pd.read_csv(tmp_path / "runs" / "valid_submission.csv")
    bundled = pd.read_csv(tmp_path / "runs" / "bundle_submission.csv")
    pd.testing.assert_frame_equal(ours, bundled, atol=1e-5)


@pytest.mark.slow
def test_readme_torchrun_commands_run_on_cpu(tmp_path: Path) -> None:
    if not (Path(sys.executable).parent / "torchrun").exists():
        pytest.skip("torchrun is not installed beside this Python")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    split = next(b for b in blocks("python") if "split_by_patient" in b)
    subprocess.run([sys.executable, "-c", small(split)], cwd=tmp_path, env=env, check=True, timeout=300)
    block = next(b for b in blocks("bash") if b.lstrip().startswith("torchrun"))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", small(block)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert (tmp_path / "runs" / "chexpert-ddp" / "ensemble.json").is_file()
    assert (tmp_path / "runs" / "valid_submission_ddp.csv").is_file()
