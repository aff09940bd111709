"""Run fuzz cases in child processes with a per-case time limit and a memory limit, and judge each outcome.

Verdicts: 'read' (an image or a table), 'clear error' (chexcft's own error type naming the file, and for a CSV
problem in a row the line and the column, short enough to read), or a failure: 'exception' (any other
exception or a bad result), 'unclear error', 'hang', 'crash' (the process died) or 'memory'.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.fuzz.corpus import Case

CASE_SECONDS = 10.0  # generous for a loaded shared machine: a case takes milliseconds
MEMORY_BYTES = 3 * 2**30  # address space of one child (numpy, pandas, pydicom and PIL loaded)
MAX_MESSAGE = 600  # characters of an error message besides the file's own path
REPO = Path(__file__).resolve().parents[2]
FAILURES = ("exception", "unclear error", "hang", "crash", "memory")
_LINE = re.compile(r"\bline \d+")
# Problems of the whole file or its header line, which have no data row to point at.
_WHOLE_FILE = ("unrecognised CSV", "missing column", "missing the required", "missing observation", "unknown column",
               "has observation column", "encoded (byte-order mark)", "the file is empty", "not an NIH label file")


def _child(cases_file: Path, first: int, memory: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fuzz.runner", str(cases_file), str(first), str(memory)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=REPO, env=env, text=True,
    )


def _run_shard(cases: list[Case], case_seconds: float = CASE_SECONDS, memory: int = MEMORY_BYTES) -> list[dict[str, Any]]:
    """Run cases in one child at a time; a hang or crash costs that case and restarts the child after it."""
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="chexcft-fuzz-") as scratch:
        cases_file = Path(scratch) / "cases.json"
        cases_file.write_text(json.dumps([asdict(c) for c in cases]))
        first = 0
        while first < len(cases):
            process = _child(cases_file, first, memory)
            assert process.stdout is not None
            selector = selectors.DefaultSelector()
            selector.register(process.stdout, selectors.EVENT_READ)
            current, deadline = None, time.monotonic() + 120  # the first deadline covers the imports
            while True:
                ready = selector.select(timeout=max(0.0, deadline - time.monotonic()))
                if not ready:
                    process.kill()
                    process.wait()
                    index = current if current is not None else first
                    results[index] = {"outcome": "hang", "message": f"no result within {case_seconds:g} s"}
                    first = index + 1
                    break
                line = process.stdout.readline()
                if not line:
                    code = process.wait()
                    if current is not None and current not in results:
                        results[current] = {"outcome": "crash", "message": f"the process died (status {code})"}
                        first = current + 1
                    else:
                        first = len(cases) if code == 0 else first + 1
                    break
                message = json.loads(line)
                if "start" in message:
                    current, deadline = message["start"], time.monotonic() + case_seconds
                else:
                    results[message["index"]] = message
            selector.close()
            process.stdout.close()
    return [dict(results.get(i, {"outcome": "crash", "message": "never ran"}), case=asdict(c)) for i, c in enumerate(cases)]


def verdict(result: dict[str, Any]) -> str:
    """Judge one result (see the module docstring)."""
    case, outcome = result["case"], result["outcome"]
    if outcome in ("read", "hang", "crash"):
        return outcome
    message = str(result.get("message", ""))
    if outcome == "other":
        return "memory" if result.get("type") == "MemoryError" else "exception"
    if "not enough memory" in message or "MemoryError" in message:
        return "memory"
    path = case["path"]
    if path not in message or len(message.replace(path, "")) > MAX_MESSAGE:
        return "unclear error"
    if case["kind"] == "table":
        located = _LINE.search(message) and ("column" in message or "cells, but the header" in message
                                             or "quoted cell" in message or "line 1:" in message)
        if not located and not any(phrase in message for phrase in _WHOLE_FILE):
            return "unclear error"
    return "clear error"


def run_cases(
    cases: list[Case], workers: int = 1, case_seconds: float = CASE_SECONDS, memory: int = MEMORY_BYTES
) -> list[dict[str, Any]]:
    """Run every case (in `workers` parallel children) and add each result's verdict."""
    shards = [cases[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parts = list(pool.map(lambda shard: _run_shard(shard, case_seconds, memory), shards))
    results = [r for part in parts for r in part]
    for result in results:
        result["verdict"] = verdict(result)
    return sorted(results, key=lambda r: r["case"]["id"])


def summary(results: list[dict[str, Any]]) -> str:
    """Counts per format and verdict, then every failure with its message."""
    counts = Counter((r["case"]["format"], r["verdict"]) for r in results)
    formats = sorted({r["case"]["format"] for r in results})
    verdicts = ["read", "clear error", *FAILURES]
    lines = ["format    " + "".join(f"{v:>14}" for v in verdicts) + f"{'total':>8}"]
    for fmt in formats:
        row = [counts[(fmt, v)] for v in verdicts]
        lines.append(f"{fmt:<10}" + "".join(f"{n:>14}" for n in row) + f"{sum(row):>8}")
    total = [sum(counts[(f, v)] for f in formats) for v in verdicts]
    lines.append(f"{'all':<10}" + "".join(f"{n:>14}" for n in total) + f"{sum(total):>8}")
    for r in results:
        if r["verdict"] in FAILURES:
            text = str(r.get("message", ""))
            lines.append(f"{r['verdict']}: {r['case']['id']} ({r['case']['seed']}, {r['case']['mutation']}): "
                         f"{r.get('type', '')} {text[:300]}")
    return "\n".join(lines)
