"""bench/cft_known_answer.py runs end to end on a small problem and reports every method's share of the gap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import real_chexpert_label_rows

BENCH = Path(__file__).resolve().parent.parent / "bench" / "cft_known_answer.py"


@pytest.mark.slow
@pytest.mark.skipif(real_chexpert_label_rows() is None, reason="torchxrayvision's chexpert_train.csv.gz is not installed")
def test_known_answer_bench_runs_small_and_writes_its_section(tmp_path: Path) -> None:
    out = tmp_path / "section.md"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "4000", "--dim", "64", "--valid-rows", "800", "--test-rows", "2000",
         "--authors-cap", "0.5", "--min-gap", "0.0", "--ga-seeds", "1", "--markdown", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    for method in ("bp", "ga", "both", "authors"):
        assert f"- `{method}`: closes " in text
    assert "oracle" in text and "share_both" in text
    assert "- `ga` over estimator seeds 0, 1 (same data): " in text
