"""Child process of the fuzz harness: run corpus cases one after another under a memory limit.

    python -m tests.fuzz.runner CASES_JSON FIRST MEMORY_BYTES

Prints one JSON line `{"start": i}` before case i and one result line after it, flushed, so the parent can
tell which case hung or crashed the process, kill it and carry on with the next case in a fresh process.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
import traceback
from typing import Any

import numpy as np


def _reader(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _check_image(result: Any) -> str:
    pixels = getattr(result, "pixels", None)
    if not isinstance(pixels, np.ndarray) or pixels.ndim != 2 or pixels.dtype != np.float32 or pixels.size == 0:
        return f"returned {type(result).__name__} without 2-D float32 pixels"
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > 1:
        return "returned pixels outside [0, 1] or not finite"
    return ""


def _check_table(result: Any) -> str:
    import pandas as pd

    from chexcft.data import FRAME_COLUMNS

    if not isinstance(result, pd.DataFrame) or list(result.columns) != list(FRAME_COLUMNS):
        return f"returned {type(result).__name__} that is not a chexcft frame"
    return ""


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Run one case: outcome 'read', 'error' (a ChexcftError: type and message kept) or 'other' (any other)."""
    from chexcft.errors import ChexcftError

    started = time.perf_counter()
    result: dict[str, Any] = {"id": case["id"]}
    try:
        value = _reader(case["reader"])(case["path"])
        problem = _check_image(value) if case["kind"] == "image" else _check_table(value)
        if case["format"] == "dicom" and not problem:
            from chexcft.io import dicom_header

            dicom_header(case["path"])
        result.update(outcome="other" if problem else "read", message=problem)
    except ChexcftError as exc:
        result.update(outcome="error", type=type(exc).__name__, message=str(exc))
    except BaseException as exc:  # noqa: BLE001 - reporting everything else is the point
        tail = traceback.format_exception(exc)[-3:]
        result.update(outcome="other", type=type(exc).__name__, message=str(exc)[:2000], traceback="".join(tail)[-3000:])
    result["seconds"] = round(time.perf_counter() - started, 3)
    result["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return result


def main(argv: list[str]) -> int:
    """Run cases FIRST.. of CASES_JSON, printing progress lines."""
    cases_file, first, memory = argv[0], int(argv[1]), int(argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    import chexcft.data  # noqa: F401 - imported before the first case so import time is not charged to it
    import chexcft.io  # noqa: F401

    with open(cases_file, encoding="utf-8") as fh:
        cases = json.load(fh)
    for index in range(first, len(cases)):
        print(json.dumps({"start": index}), flush=True)
        outcome = run_case(cases[index])
        outcome["index"] = index
        print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
