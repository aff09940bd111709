"""Readers that misbehave on purpose, to show the fuzz harness catches each kind of failure."""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from chexcft.errors import UnreadableImageError


def hangs(path: str) -> None:
    """Never returns (a C-level sleep is not interrupted by Python signal handlers either)."""
    time.sleep(3600)


def crashes(path: str) -> None:
    """Kills its own process, as a segfault in a decoder would."""
    os.kill(os.getpid(), signal.SIGSEGV)


def raises_value_error(path: str) -> None:
    """A foreign exception type."""
    raise ValueError("bad")


def allocates(path: str) -> None:
    """Asks for far more memory than the limit."""
    np.ones(2**33, dtype=np.uint8)


def vague(path: str) -> None:
    """chexcft's own type, but not naming the file."""
    raise UnreadableImageError("cannot read it")
