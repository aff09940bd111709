"""Run `python -m chexcft ...` and SIGKILL it at a chosen point: the test-side replacement of in-code kill hooks.

    python -m tests.kill AT_STEPS|AT_WRITES|COUNT N -- chexcft arguments...

- `steps N`: kill right after the N-th optimiser step (torch's global optimizer step hook), mid-epoch;
- `writes N`: kill just before the N-th filesystem change the process makes (an audit hook on open-for-write,
  rename/replace, remove, mkdir, rmdir, rmtree, truncate), so the kill lands between any two writes;
- `count 0`: run normally and print the number of such writes to stderr as `KILL-COUNT writes=N`.
Processes the command spawns (reader pools) are not counted; they do not write.

`run_forked` does the same in a fork of the calling (test) process, for tests that kill one command many times.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass

_WRITE_EVENTS = frozenset({"os.rename", "os.remove", "os.mkdir", "os.rmdir", "shutil.rmtree", "os.truncate",
                           "shutil.copyfile", "os.chmod"})


def _is_write(event: str, args: tuple) -> bool:
    if event in _WRITE_EVENTS:
        return True
    if event == "open" and len(args) >= 3:
        mode, flags = args[1], args[2]
        if isinstance(mode, str):
            return any(c in mode for c in "wax+")
        return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
    return False


def _install(mode: str, number: int, count: list[int]) -> None:
    """Install the step or write hook that SIGKILLs this process at `number` (counting into count[0])."""
    if mode == "steps":

        def after_step(optimizer, _args, _kwargs) -> None:
            count[0] += 1
            if count[0] == number:
                os.kill(os.getpid(), signal.SIGKILL)

        from torch.optim.optimizer import register_optimizer_step_post_hook

        register_optimizer_step_post_hook(after_step)
    elif mode in ("writes", "count"):
        pid = os.getpid()

        def audit(event: str, event_args: tuple) -> None:
            if os.getpid() == pid and _is_write(event, event_args):
                count[0] += 1
                if mode == "writes" and count[0] == number:
                    os.kill(pid, signal.SIGKILL)

        sys.addaudithook(audit)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def main(argv: list[str]) -> None:
    """Install the hook, then run chexcft's CLI with the remaining arguments."""
    mode, number = argv[0], int(argv[1])
    args = argv[3:] if argv[2:3] == ["--"] else argv[2:]
    count = [0]
    _install(mode, number, count)
    sys.argv = ["chexcft", *args]
    from chexcft.cli import main as chexcft_main

    try:
        chexcft_main()
    finally:
        if mode == "count":
            print(f"KILL-COUNT writes={count[0]}", file=sys.stderr, flush=True)


@dataclass
class Forked:
    """How a forked command ended: its exit code (-9 when SIGKILLed), writes counted, its console output."""

    returncode: int
    writes: int
    output: str


def run_forked(args: list[str], mode: str, number: int) -> Forked:
    """`python -m tests.kill MODE NUMBER -- ARGS` in a fork of this process: the same kill, no interpreter start-up.

    The calling process must already have imported what the command needs and run it once (in-process), so the
    fork's writes are the command's own (no first-use caches); its console output goes to a temporary file.
    """
    with tempfile.TemporaryFile("w+") as console, tempfile.TemporaryFile("w+") as counted:
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the caller (pytest)
            code = 70
            try:
                os.dup2(console.fileno(), 1), os.dup2(console.fileno(), 2)
                sys.stdout = sys.stderr = open(1, "w", closefd=False)  # not the caller's (pytest's) captures
                count = [0]
                _install(mode, number, count)
                sys.argv = ["chexcft", *args]
                from chexcft.cli import main as chexcft_main

                try:
                    chexcft_main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                counted.write(str(count[0]))
                counted.flush()
            except BaseException:  # noqa: BLE001 - report and leave the child, whatever happened
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        console.seek(0), counted.seek(0)
        text = counted.read()
        return Forked(returncode, int(text) if text else -1, console.read())


if __name__ == "__main__":
    main(sys.argv[1:])
