"""Run every bench/*.py script and rewrite bench/RESULTS.md: the machine, then each script's markdown section.

A script hands over its section through a file: `--markdown FILE` (the convention), or `--write FILE` (a script
or `--results FILE` (scripts that append a section to a results file; a "# ..." title is dropped). A script with neither gets its
standard output quoted. Ratios are written by the scripts themselves, beside the figures they compare.

    .venv/bin/python bench/run_all.py                      # every script, default settings (`make bench`)
    .venv/bin/python bench/run_all.py --only predict_throughput --args "predict_throughput=--images 64"
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
SELF = Path(__file__).name
UNMATCHED = "?"


def scripts(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts (every bench/*.py but this one), sorted, optionally only the named ones."""
    found = sorted(p for p in BENCH.glob("*.py") if p.name != SELF and not p.name.startswith("_"))
    if only:
        wanted = {name.removesuffix(".py") for name in only}
        unknown = wanted - {p.stem for p in found}
        if unknown:
            raise SystemExit(f"no such benchmark script: {', '.join(sorted(unknown))}")
        found = [p for p in found if p.stem in wanted]
    return found


def machine() -> list[str]:
    """Markdown lines describing the machine: CPU model, cores, memory, torch and Python versions."""
    import torch

    sys.path.insert(0, str(REPO))
    from chexcft.provenance import cpu_model

    cpu = cpu_model()
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f", {int(line.split()[1]) / 1024**2:.0f} GiB memory"
                break
    except (OSError, ValueError):
        pass
    load = ""
    if hasattr(os, "getloadavg"):
        load = f" Load average when the run started: {os.getloadavg()[0]:.1f} (other jobs share the cores)."
    gpu = f"; GPU: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "; no GPU"
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores{memory}{gpu}",
        f"- torch {torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}, "
        f"{platform.platform()}",
        f"- Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.{load}",
    ]


def default_args(stem: str) -> list[str]:
    """Arguments a script gets when --args names none: gpu_check runs its CPU smoke mode on a machine without CUDA."""
    if stem == "gpu_check":
        import torch

        return [] if torch.cuda.is_available() else ["--device", "cpu", "--quick"]
    return []


def handover_option(script: Path) -> str | None:
    """How a script writes its markdown section: '--markdown', '--write'/'--results' (append), or None (quote stdout)."""
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=REPO)
    for option in ("--markdown", "--write", "--results"):
        if option in result.stdout:
            return option
    return None


def strip_title(text: str) -> str:
    """A section without a leading '# ...' document title (sections are '##' under RESULTS.md's own title)."""
    lines = text.strip("\n").splitlines()
    while lines and (lines[0].startswith("# ") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines)


def run_script(script: Path, extra: list[str], timeout: float) -> tuple[str, float, int]:
    """Run one script; return (its markdown section, seconds, exit code)."""
    option = handover_option(script)
    with tempfile.TemporaryDirectory(prefix="chexcft-bench-md-") as tmp:
        target = Path(tmp) / "section.md"
        command = [sys.executable, str(script), *extra] + ([option, str(target)] if option else [])
        print(f"$ {shlex.join(command)}", flush=True)
        start = time.perf_counter()
        try:
            result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=timeout)
            code, stdout, stderr = result.returncode, result.stdout, result.stderr
        except subprocess.TimeoutExpired as exc:
            code, stdout, stderr = -1, exc.stdout or "", f"timed out after {timeout:.0f} s"
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
        seconds = time.perf_counter() - start
        sys.stdout.write(stdout)
        if code != 0:
            tail = "\n".join(str(stderr).strip().splitlines()[-15:])
            return f"**Failed** (exit {code}):\n\n```\n{tail}\n```", seconds, code
        if option and target.is_file():
            return demote_headings(strip_title(target.read_text(encoding="utf-8"))), seconds, code
        return f"```\n{stdout.strip()}\n```", seconds, code


def title_of(script: Path) -> str:
    """A section title: the first line of the script's docstring, else its name."""
    import ast

    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    first = doc.strip().splitlines()[0].rstrip(".") if doc.strip() else script.stem
    return f"{script.stem}: {first}"


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _section_owner(heading: str, names: dict[str, str]) -> str | None:
    """The script a '## ...' heading belongs to: the heading, snake_cased, starts with one of the script's names.

    `names` maps a name (the script's stem, or the title its docstring starts with) to the script's stem.
    """
    key = _key(heading)
    owners = [(name, stem) for name, stem in names.items() if name and key.startswith(name)]
    return max(owners, key=lambda item: len(item[0]))[1] if owners else None


def script_names() -> dict[str, str]:
    """Every name a script's sections may be titled by: its stem and its docstring's title (before ':')."""
    import ast

    names: dict[str, str] = {}
    for script in scripts():
        names[_key(script.stem)] = script.stem
        doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
        title = doc.strip().splitlines()[0].split(":", 1)[0] if doc.strip() else ""
        if title and ":" in doc.strip().splitlines()[0]:
            names.setdefault(_key(title), script.stem)
    return names


def existing_sections(path: Path) -> dict[str, str]:
    """The sections of an existing results file by owning script (kept verbatim for scripts not re-run).

    Sections written by run_all ('## <script>: ...') and sections a script appended itself ('## CFT speed ...')
    are both recognised; sections no script name matches are kept under UNMATCHED + their title.
    """
    if not path.is_file():
        return {}
    names = script_names()
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            current = None if title == "Machine" else _section_owner(title, names) or f"{UNMATCHED}{title}"
            if current:
                sections.setdefault(current, [])
        if current:
            sections[current].append(line)
    return {name: "\n".join(body).rstrip() for name, body in sections.items()}


def demote_headings(text: str) -> str:
    """A script's own '#'/'##' headings one level below run_all's '## <script>' heading."""
    return "\n".join("#" + line if re.match(r"^#{2,5} ", line) else line for line in text.splitlines())


def parse_extra(values: list[str]) -> dict[str, list[str]]:
    """--args 'name=--flag value' pairs -> {name: [--flag, value]}."""
    extra: dict[str, list[str]] = {}
    for value in values:
        name, _, rest = value.partition("=")
        extra[name.removesuffix(".py")] = shlex.split(rest)
    return extra


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only these scripts (names without .py)")
    parser.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                        help="extra arguments for one script, e.g. 'cft_speed=--rows 30000' (repeatable)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per script")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file to rewrite")
    args = parser.parse_args(argv)
    extra = parse_extra(args.args)

    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`bench/run_all.py`), which runs every `bench/*.py` script and replaces this file. "
        "Each section is the script's own output; ratios compare figures measured side by side in the same run.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
    ]
    previous = existing_sections(args.out)
    chosen = {p.stem for p in scripts(args.only)}
    failed = []
    for script in scripts():
        if script.stem not in chosen:
            lines += [previous.get(script.stem, f"## {title_of(script)}\n\nNot run yet: `make bench`."), ""]
            continue
        script_args = extra.get(script.stem, default_args(script.stem))
        section, seconds, code = run_script(script, script_args, args.timeout)
        command = " ".join(["`.venv/bin/python", f"bench/{script.name}", *script_args]) + "`"
        if code != 0:
            failed.append(script.name)
            if script.stem in previous:  # keep the last good figures, and say this run failed
                lines += [previous[script.stem], "", f"The latest run ({command}) failed; the figures above are "
                          f"from the previous run.", "", section, ""]
                continue
        finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        lines += [f"## {title_of(script)}", "", f"Command: {command} ({seconds:.0f} s, finished {finished})", "",
                  section, ""]
    for name, section in previous.items():
        if name.startswith(UNMATCHED):  # a section some script appended under a title run_all cannot attribute
            lines += [section, ""]
    text = "\n".join(lines).rstrip() + "\n"
    sys.path.insert(0, str(REPO))
    from chexcft.fileio import atomic_write_text

    atomic_write_text(args.out, text)
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
