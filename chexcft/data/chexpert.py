"""Read and validate CheXpert CSVs (train.csv / valid.csv layout) and resolve their image paths safely."""

from __future__ import annotations

import difflib
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd

from chexcft.data.csvfile import read_csv
from chexcft.data.frame import add_derived_columns
from chexcft.errors import InvalidDatasetError, shown, shown_list
from chexcft.schema import CSV_HEADER, LABEL_CODES, OBSERVATIONS

_ABSOLUTE = r"^(?:/|[A-Za-z]:|~)"
_PARENT = r"(?:^|/)\.\.(?:/|$)"


def read_chexpert_csv(csv_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read a CheXpert CSV: validated header and labels (1, 0, -1, NaN), plus abs_path, study, patient and view."""
    return _read(Path(csv_path), root, labels_required=True)


def read_path_csv(csv_path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read a CSV with a Path column (metadata optional, no observation columns): labels are all NaN."""
    return _read(Path(csv_path), root, labels_required=False)


def missing_files(frame: pd.DataFrame) -> list[str]:
    """The abs_path values of a frame whose file does not exist (or is not a regular file)."""
    return [path for path in frame["abs_path"] if not os.path.isfile(path)]


def resolve_base(csv_path: Path, root: str | os.PathLike[str] | None, first_component: str) -> Path:
    """The folder Paths are relative to: root itself, or its parent when root IS the release folder."""
    root_dir = Path(root) if root is not None else csv_path.parent
    root_dir = Path(os.path.abspath(root_dir))
    if first_component and os.path.isdir(root_dir / first_component):  # False, not OSError, for absurd names
        return root_dir
    if first_component and root_dir.name == first_component:
        return root_dir.parent
    return root_dir


def _read(csv_path: Path, root: str | os.PathLike[str] | None, *, labels_required: bool) -> pd.DataFrame:
    if not csv_path.is_file():
        raise InvalidDatasetError(f"{csv_path}: CSV file not found")
    # Only an empty cell is blank: text such as "NaN" or "NA" in a label column is reported as invalid.
    frame = read_csv(csv_path, keep_default_na=False, na_values=[""], low_memory=False)
    _check_header(frame, csv_path, labels_required=labels_required)
    if labels_required:
        _check_labels(frame, csv_path)
    frame["Path"] = _clean_paths(frame["Path"], csv_path)
    abs_paths = safe_abs_paths(frame["Path"], csv_path, root)
    return add_derived_columns(frame, abs_paths, str(csv_path))


def _check_header(frame: pd.DataFrame, csv_path: Path, *, labels_required: bool) -> None:
    columns = [str(c) for c in frame.columns]
    if "Path" not in columns:
        raise InvalidDatasetError(f"{csv_path}: missing the required column 'Path' (header: {shown_list(columns)})")
    unknown = [c for c in columns if c not in CSV_HEADER]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, CSV_HEADER, n=1, cutoff=0.75) if len(name) < 200 else []
            hints.append(shown(name, 60) + (f" (did you mean {close[0]!r}?)" if close else ""))
        more = f" and {len(hints) - 10} more" if len(hints) > 10 else ""
        raise InvalidDatasetError(
            f"{csv_path}: unknown column(s) {', '.join(hints[:10])}{more}; expected CheXpert columns {', '.join(CSV_HEADER)}"
        )
    missing = [c for c in OBSERVATIONS if c not in columns]
    if labels_required and missing:
        raise InvalidDatasetError(f"{csv_path}: missing observation column(s) {', '.join(repr(c) for c in missing)}")
    if not labels_required and len(missing) != len(OBSERVATIONS):
        present = [c for c in OBSERVATIONS if c in columns]
        raise InvalidDatasetError(
            f"{csv_path}: has observation column(s) {', '.join(present)} but lacks {', '.join(missing)}"
        )


def _check_labels(frame: pd.DataFrame, csv_path: Path) -> None:
    for column in OBSERVATIONS:
        values = frame[column]
        numeric = pd.to_numeric(values, errors="coerce").astype(np.float64)
        bad = ~(numeric.isin(LABEL_CODES) | values.isna())
        if bad.any():
            rows = np.flatnonzero(bad.to_numpy())
            first = int(rows[0])
            more = f" ({len(rows) - 1} more bad value(s) in this column)" if len(rows) > 1 else ""
            # Error path only: re-read the column as text so the message shows the cell as written in the file.
            text = pd.read_csv(csv_path, usecols=[column], dtype=str, keep_default_na=False)[column]
            raise InvalidDatasetError(
                f"{csv_path}: line {first + 2} (data row {first + 1}; the header is line 1), column {column!r}: "
                f"label {shown(text.iloc[first])} is not 1, 0, -1 or blank{more}"
            )
        frame[column] = numeric


def _clean_paths(paths: pd.Series, csv_path: Path) -> pd.Series:
    text = paths.astype("string").str.replace("\\", "/", regex=False)
    _refuse(text.isna() | (text.str.strip() == ""), text, csv_path, "Path is empty")
    absolute = text.str.contains(_ABSOLUTE, regex=True)
    _refuse(absolute, text, csv_path, "Path is absolute; it must be relative to the data root")
    _refuse(text.str.contains(_PARENT, regex=True), text, csv_path, "Path contains '..' and would leave the data root")
    _refuse(text.str.contains("\x00", regex=False), text, csv_path, "Path contains a NUL character")
    return text.str.replace(r"^(?:\./)+", "", regex=True).str.replace(r"/(?:\./)+", "/", regex=True)


def _refuse(bad: pd.Series, paths: pd.Series, csv_path: Path, reason: str) -> None:
    bad = bad.fillna(False).to_numpy(bool)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InvalidDatasetError(
            f"{csv_path}: line {row + 2} (data row {row + 1}), column 'Path': {shown(paths.iloc[row])}: {reason}"
            + (f" ({int(bad.sum()) - 1} more such row(s))" if bad.sum() > 1 else "")
        )


def safe_abs_paths(paths: pd.Series, csv_path: Path, root: str | os.PathLike[str] | None) -> np.ndarray:
    """Absolute paths for relative, '..'-free Paths; refuse any that a symlink leads outside its top folder."""
    paths = paths.astype("string")
    first = paths.str.replace(r"/.*$", "", regex=True)
    top = first.mode().iloc[0] if len(first) else ""
    base = resolve_base(csv_path, root, top)
    abs_paths = (str(base) + "/" + paths).astype(object).to_numpy()
    # The release folder may itself be a link to another disk; nothing below it may leave it. Rows under any
    # other top folder must stay inside the base folder itself.
    for folder in pd.unique(first.astype(object)):
        selected = np.flatnonzero((first == folder).to_numpy())
        chosen = paths.iloc[selected]
        if folder == top:
            rest = chosen.str.replace(r"^[^/]*/?", "", regex=True)
            _check_symlinks(rest, chosen, base / folder, os.path.realpath(base / folder), csv_path, selected)
        else:
            _check_symlinks(chosen, chosen, base, os.path.realpath(base), csv_path, selected)
    return abs_paths


def _check_symlinks(
    rest: pd.Series, paths: pd.Series, top: Path, anchor: str, csv_path: Path, rows: np.ndarray
) -> None:
    """Walk the prefixes of `rest` (paths below `top`) level by level, one lstat per distinct existing prefix."""
    if not os.path.isdir(top):
        return
    rest = rest.astype(object)
    level = list(pd.unique(rest))
    prefixes = [level]
    while True:
        level = [p for p in pd.unique(np.array([p.rpartition("/")[0] for p in level], dtype=object)) if p]
        if not level:
            break
        prefixes.append(level)
    missing: set[str] = set()
    prefix_of_top = f"{top}/"
    lstat, is_symlink = os.lstat, stat.S_ISLNK
    for level_prefixes in reversed(prefixes):  # shallowest first, so missing folders prune their children
        for prefix in level_prefixes:
            if not prefix:
                continue
            if missing and prefix.rpartition("/")[0] in missing:
                missing.add(prefix)
                continue
            full = prefix_of_top + prefix
            try:
                is_link = is_symlink(lstat(full).st_mode)
            except OSError:
                missing.add(prefix)
                continue
            if is_link:
                target = os.path.realpath(full)
                if os.path.commonpath([target, anchor]) != anchor:
                    hit = (rest == prefix) | rest.astype("string").str.startswith(prefix + "/").fillna(False)
                    first = int(np.flatnonzero(hit.to_numpy(bool))[0])
                    row = int(rows[first])
                    raise InvalidDatasetError(
                        f"{csv_path}: line {row + 2} (data row {row + 1}), column 'Path': {shown(paths.iloc[first])} "
                        f"goes through the symbolic link {full} -> {target}, which leaves the data root {anchor}"
                    )
