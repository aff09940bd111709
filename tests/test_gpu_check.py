"""bench/gpu_check.py in its CPU quick mode: every step (prepare, train, torchrun, features, CFT, predict, submit) runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_quick_mode_runs_every_step_on_cpu(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--device", "cpu", "--quick", "--keep", str(tmp_path / "work")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line[:1].isalpha() and len(line.split()) > 1}
    for step in ("prepare", "train", "torchrun", "features", "cft", "predict", "submit"):
        assert rows.get(step) == "ok", result.stdout
    assert "7/7 steps passed" in result.stdout
    assert (tmp_path / "work" / "submission.csv").is_file()
    assert (tmp_path / "work" / "run-torchrun" / "config.json").is_file()
