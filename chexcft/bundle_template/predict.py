"""Competition submission program written by `chexcft bundle` (see ../README.md).

    python src/predict.py INPUT_CSV OUTPUT_CSV [--root ROOT] [--device auto|cpu|cuda] [--batch-size N]

Runs offline with the chexcft modules vendored beside this file and the weights in ../models; opens no
network connection and writes nothing but OUTPUT_CSV (no __pycache__, no logs).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

sys.dont_write_bytecode = True
SRC = Path(__file__).resolve().parent
BUNDLE = SRC.parent
sys.path.insert(0, str(SRC))


class _NoNetwork(socket.socket):
    """A socket that refuses internet connections (local process pipes still work)."""

    def connect(self, address):  # type: ignore[override]
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"this bundle runs offline; refused a connection to {address!r}")
        return super().connect(address)


socket.socket = _NoNetwork  # type: ignore[misc]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Write a CheXpert competition submission for the images of INPUT_CSV.")
    parser.add_argument("input_csv", type=Path, help="CSV with a Path column")
    parser.add_argument("output_csv", type=Path, help="submission CSV to write (Study + 5 tasks)")
    parser.add_argument("--root", type=Path, default=None, help="folder the paths are relative to")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=16)
    return parser.parse_args(argv)


def _default_root(input_csv: Path) -> Path | None:
    """None (chexcft's rule: the CSV's folder) unless the paths only resolve from the current directory."""
    import csv

    try:
        with open(input_csv, newline="", encoding="utf-8") as handle:
            first = next(csv.DictReader(handle), {}).get("Path") or ""
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    first = first.replace("\\", "/")
    while first.startswith("./"):
        first = first[2:]
    top = first.split("/")[0]
    if top and not (input_csv.resolve().parent / top).exists() and (Path.cwd() / top).exists():
        return Path.cwd()
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the bundle: predict, aggregate by study, check against the scorer's rules, write OUTPUT_CSV."""
    args = _arguments(argv)
    import chexcft

    if Path(chexcft.__file__).resolve().parent != SRC / "chexcft":
        print(f"error: chexcft was imported from {chexcft.__file__}, not from this bundle", file=sys.stderr)
        return 2
    from chexcft.errors import ChexcftError
    from chexcft.submission import submit

    settings = json.loads((BUNDLE / "bundle.json").read_text(encoding="utf-8"))
    try:
        report = submit(
            args.input_csv,
            args.output_csv,
            [BUNDLE / name for name in settings["models"]],
            root=args.root if args.root is not None else _default_root(args.input_csv),
            how=settings["views"],
            frontal_only=settings["frontal_only"],
            fill_missing=settings["fill_missing"],
            prior=settings["prior"],
            tta=settings["tta"],
            which=settings["which"],
            combination=settings.get("combination"),
            device=args.device,
            batch_size=args.batch_size,
            workers=0,
            progress=False,
        )
    except ChexcftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failures = report.prediction.failures
    for path, reason in failures.itertuples(index=False):
        print(f"unreadable: {path}: {reason}", file=sys.stderr)
    for study in report.build.filled_studies:
        print(f"no readable image, wrote the training prevalence: {study}", file=sys.stderr)
    print(f"wrote {args.output_csv}: {len(report.frame)} studies", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
