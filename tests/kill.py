"""Run `python -m chexcft ...` and SIGKILL it at a chosen point: the test-side replacement of in-code kill hooks.

    python -m tests.kill AT_STEPS|AT_WRITES|COUNT N -- chexcft arguments...

- `steps N`: kill right after the N-th optimiser step (torch's global optimizer step hook), mid-epoch;
- `writes N`: kill just before the N-th filesystem change the process makes (an audit hook on open-for-write,
  rename/replace, remove, mkdir, rmdir, rmtree, truncate), so the kill lands between any two writes;
- `count 0`: run normally and print the number of such writes to stderr as `KILL-COUNT writes=N`.
Processes the command spawns (reader pools) are not counted; they do not write.
"""

from __future__ import annotations

import os
import signal
import sys

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


def main(argv: list[str]) -> None:
    """Install the hook, then run chexcft's CLI with the remaining arguments."""
    mode, number = argv[0], int(argv[1])
    args = argv[3:] if argv[2:3] == ["--"] else argv[2:]
    count = [0]

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
    sys.argv = ["chexcft", *args]
    from chexcft.cli import main as chexcft_main

    try:
        chexcft_main()
    finally:
        if mode == "count":
            print(f"KILL-COUNT writes={count[0]}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
