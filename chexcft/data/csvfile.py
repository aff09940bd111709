"""Open a table CSV: UTF-8 checked (naming the line and column of a bad byte), parser errors with their line."""

from __future__ import annotations

import codecs
import gzip
import os
import re
import zlib
from pathlib import Path
from typing import Any

import pandas as pd

from chexcft.errors import InvalidDatasetError, shown

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)  # fmt: skip
_CHUNK = 1 << 22
_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
_OPEN_QUOTE = re.compile(r"EOF inside string starting at row (\d+)")


def _header_cells(head: bytes) -> list[str]:
    first = head.split(b"\n", 1)[0].rstrip(b"\r")
    return first.decode("utf-8", errors="replace").split(",")


def _open_bytes(path: Path) -> Any:
    """The file's bytes: decompressed for a `.gz` file (pandas reads those decompressed too)."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def check_utf8(path: Path) -> None:
    """Refuse a CSV that is not UTF-8 (a UTF-8 BOM is fine), naming the line and column of the first bad byte."""
    try:
        _check_utf8(path)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise InvalidDatasetError(f"{path}: not a readable gzip file ({shown(str(exc))})") from None


def _check_utf8(path: Path) -> None:
    with _open_bytes(path) as fh:
        head = fh.read(4)
        for bom, name in _BOMS:
            if head.startswith(bom):
                raise InvalidDatasetError(f"{path}: the file is {name} encoded (byte-order mark); save it as UTF-8")
        fh.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset, header = 0, b""
        while True:
            chunk = fh.read(_CHUNK)
            if not header:
                header = chunk[:65536]
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                _bad_byte(path, fh, offset + exc.start, header)
            if not chunk:
                return
            offset += len(chunk)


def _bad_byte(path: Path, fh: Any, position: int, header: bytes) -> None:
    fh.seek(0)
    newlines, last_newline, done = 0, -1, 0
    while done < position:
        block = fh.read(min(_CHUNK, position - done))
        newlines += block.count(b"\n")
        if b"\n" in block:
            last_newline = done + block.rfind(b"\n")
        done += len(block)
    fh.seek(last_newline + 1)
    before = fh.read(position - last_newline - 1)
    byte = fh.read(1)
    line, cell, cells = newlines + 1, before.count(b","), _header_cells(header)
    column = f", column {shown(cells[cell], 60)}" if line > 1 and cell < len(cells) else ""
    hint = "Latin-1 or Windows-1252" if byte and byte[0] >= 0xA0 else "not text, or in another encoding"
    raise InvalidDatasetError(
        f"{path}: line {line}{column}: byte 0x{byte.hex().upper()} is not UTF-8 (the file seems {hint}); "
        "save it as UTF-8"
    )


def read_csv(path: str | os.PathLike[str], **kwargs: Any) -> pd.DataFrame:
    """pandas.read_csv after check_utf8; every failure becomes an InvalidDatasetError naming the file (and line)."""
    path = Path(path)
    check_utf8(path)
    try:
        return pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise InvalidDatasetError(f"{path}: the file is empty (no header line)") from None
    except pd.errors.ParserError as exc:
        raise InvalidDatasetError(f"{path}: {_parser_reason(exc)}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidDatasetError(f"{path}: not a readable CSV ({shown(str(exc))})") from None


def _parser_reason(exc: Exception) -> str:
    text = str(exc).strip()
    fields = _FIELDS.search(text)
    if fields:
        expected, line, saw = fields.groups()
        return f"line {line}: {saw} cells, but the header has {expected} columns (a stray comma or quote?)"
    quote = _OPEN_QUOTE.search(text)
    if quote:
        return f"line {int(quote.group(1)) + 1}: a quoted cell (\") is never closed"
    return f"not a readable CSV ({shown(text)})"
