"""Study-level tables: image rows -> studies, and reading ground-truth / prediction files by column name."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from chexcft.errors import InvalidDatasetError, SubmissionError
from chexcft.keys import normalise_path, scorer_study_key, study_key
from chexcft.schema import COMPETITION_TASKS, OBSERVATIONS, STUDY_COLUMN

PATH_COLUMN = "Path"
NIH_KEY = "Image Index"
AGGREGATIONS: tuple[str, ...] = ("max", "mean")
UNLABELLED_RULES: tuple[str, ...] = ("error", "ignore", "negative")
UNCERTAIN_RULES: tuple[str, ...] = ("error", "ignore", "positive", "negative")
_SHOWN = 5


def _listing(items: Sequence[str]) -> str:
    shown = ", ".join(str(item) for item in list(items)[:_SHOWN])
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return f"{len(items)}: {shown}{more}"


def _study_keys(paths: pd.Series) -> list[str]:
    keys = []
    for row, path in enumerate(paths):
        if not isinstance(path, str) or not path.strip():
            raise InvalidDatasetError(f"row {row + 2}, column {PATH_COLUMN!r}: empty image path")
        try:
            keys.append(study_key(path))
        except ValueError as exc:
            raise InvalidDatasetError(f"row {row + 2}, column {PATH_COLUMN!r}: {exc}") from None
    return keys


def aggregate_by_study(
    frame: pd.DataFrame, how: str = "max", columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """Combine image rows (a `Path` column + value columns) into one row per study by max or mean."""
    if how not in AGGREGATIONS:
        raise ValueError(f"how must be one of {AGGREGATIONS}, got {how!r}")
    if PATH_COLUMN not in frame.columns:
        raise InvalidDatasetError(f"image-level table has no {PATH_COLUMN!r} column (columns: {list(frame.columns)})")
    if columns is None:
        columns = [c for c in frame.columns if c in OBSERVATIONS]
    studies = _study_keys(frame[PATH_COLUMN])
    values = frame[list(columns)].apply(pd.to_numeric, errors="coerce")
    grouped = values.groupby(pd.Series(studies, index=frame.index, name=STUDY_COLUMN), sort=False)
    out = grouped.max() if how == "max" else grouped.mean()
    return out.reset_index()[[STUDY_COLUMN, *columns]]


def read_csv(path: str | os.PathLike[str], kind: str) -> pd.DataFrame:
    """Read a ground-truth or prediction CSV with stripped column names; SubmissionError names the file."""
    return _read_csv(path, kind)


def _read_csv(path: str | os.PathLike[str], kind: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path}: cannot read the {kind} CSV ({exc})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _task_values(frame: pd.DataFrame, path: str | os.PathLike[str], tasks: Sequence[str]) -> pd.DataFrame:
    missing = [t for t in tasks if t not in frame.columns]
    if missing:
        raise SubmissionError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(frame.columns)})")
    values = frame[list(tasks)].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raw = frame[tasks[col]].iloc[row]
        raise SubmissionError(
            f"{path}: row {row + 2}, column {tasks[col]!r}: value {raw!r} is not a finite number "
            f"({int(bad.sum())} such cell(s))"
        )
    return values


def _study_table(
    path: str | os.PathLike[str], tasks: Sequence[str], views: str, kind: str
) -> tuple[pd.DataFrame, bool]:
    frame = _read_csv(path, kind)
    if STUDY_COLUMN in frame.columns:
        studies = frame[STUDY_COLUMN].astype(str)
        values = _task_values(frame, path, tasks)
        return pd.concat([studies, values], axis=1), False
    if PATH_COLUMN in frame.columns:
        values = _task_values(frame, path, tasks)
        images = pd.concat([frame[PATH_COLUMN], values], axis=1)
        try:
            return aggregate_by_study(images, how=views, columns=list(tasks)), True
        except (ValueError, InvalidDatasetError) as exc:
            raise SubmissionError(f"{path}: {exc}") from None
    raise SubmissionError(
        f"{path}: needs a {STUDY_COLUMN!r} column (study level) or a {PATH_COLUMN!r} column (image level)"
    )


def load_predictions(
    path: str | os.PathLike[str], views: str = "max", tasks: Sequence[str] = COMPETITION_TASKS
) -> pd.DataFrame:
    """Read a prediction CSV (study level `Study`, or image level `Path`, aggregated by `views`) -> [Study, tasks]."""
    table, _ = _study_table(path, tasks, views, "prediction")
    return table


def load_groundtruth(path: str | os.PathLike[str], tasks: Sequence[str] = COMPETITION_TASKS) -> pd.DataFrame:
    """Read a ground-truth CSV (study level, or image level with one label set per study) -> [Study, tasks] of 0/1."""
    frame = _read_csv(path, "ground-truth")
    if STUDY_COLUMN not in frame.columns and PATH_COLUMN in frame.columns:
        values = _task_values(frame, path, tasks)
        studies = pd.Series(_study_keys(frame[PATH_COLUMN]), name=STUDY_COLUMN)
        spread = values.groupby(studies.to_numpy(), sort=False).nunique().max(axis=1)
        conflicting = list(spread.index[spread > 1])
        if conflicting:
            raise InvalidDatasetError(f"{path}: images of one study carry different labels in {_listing(conflicting)}")
    table, _ = _study_table(path, tasks, "max", "ground-truth")
    labels = table[list(tasks)].to_numpy()
    not_binary = ~np.isin(labels, (0.0, 1.0))
    if not_binary.any():
        row, col = np.argwhere(not_binary)[0]
        raise InvalidDatasetError(
            f"{path}: study {table[STUDY_COLUMN].iloc[row]!r}, column {tasks[col]!r}: "
            f"label {float(labels[row, col]):g} is not 0 or 1 (ground truth must be binary)"
        )
    return table


def _duplicates(keys: pd.Series) -> list[str]:
    return sorted(set(keys[keys.duplicated()]))


def align_to_groundtruth(
    groundtruth: pd.DataFrame, predictions: pd.DataFrame, name: str, tasks: Sequence[str] = COMPETITION_TASKS,
    key: str = STUDY_COLUMN,
) -> np.ndarray:
    """Predictions (n, T) in the ground truth's row order; SubmissionError lists duplicated/missing/extra keys."""
    normalise = key_normaliser(key)
    gt_keys = groundtruth[key].astype(str).map(normalise)
    pred_keys = predictions[key].astype(str).map(normalise)
    what = "studies" if key == STUDY_COLUMN else f"{key} values"
    problems = []
    for label, keys in (("ground truth", gt_keys), (name, pred_keys)):
        dup = _duplicates(keys)
        if dup:
            problems.append(f"duplicated {what} in {label} {_listing(dup)}")
    missing = sorted(set(gt_keys) - set(pred_keys))
    extra = sorted(set(pred_keys) - set(gt_keys))
    if missing:
        problems.append(f"{what} missing from {name} {_listing(missing)}")
    if extra:
        problems.append(f"{what} in {name} but not in the ground truth {_listing(extra)}")
    if problems:
        raise SubmissionError(f"{name}: " + "; ".join(problems))
    indexed = predictions.set_axis(pred_keys.to_numpy(), axis=0)
    return indexed.loc[gt_keys.to_numpy(), list(tasks)].to_numpy(dtype=np.float64)


def row_name(path: str | os.PathLike[str], taken: set[str]) -> str:
    """A row's name: the file stem, made unique with its parent folder (then a counter) when already taken."""
    path = Path(path)
    for candidate in (path.stem, f"{path.parent.name}/{path.stem}"):
        if candidate not in taken:
            return candidate
    counter = 2
    while f"{path.stem}-{counter}" in taken:
        counter += 1
    return f"{path.stem}-{counter}"


def resolve_key(key: str | None, columns: Sequence[str], path: str | os.PathLike[str]) -> str:
    """The join column: `key` when given, else Study (a Study or Path column: studies) or NIH's Image Index."""
    if key is not None:
        if key == STUDY_COLUMN and (STUDY_COLUMN in columns or PATH_COLUMN in columns):
            return key
        if key not in columns:
            raise SubmissionError(f"{path}: no key column {key!r} (columns: {', '.join(columns)})")
        return key
    if STUDY_COLUMN in columns or PATH_COLUMN in columns:
        return STUDY_COLUMN
    if NIH_KEY in columns:
        return NIH_KEY
    raise SubmissionError(
        f"{path}: needs a {STUDY_COLUMN!r} column (study level), a {PATH_COLUMN!r} column (image level) or "
        f"--key naming the column to join on (columns: {', '.join(columns)})"
    )


def key_normaliser(key: str) -> Callable[[str], str]:
    """How keys are compared: studies as the scorer does (one trailing slash), paths with forward slashes."""
    if key == STUDY_COLUMN:
        return scorer_study_key
    if key == PATH_COLUMN:
        return normalise_path
    return lambda value: str(value).strip()


def _key_values(frame: pd.DataFrame, key: str, path: str | os.PathLike[str]) -> pd.Series:
    if key in frame.columns:
        values = frame[key]
    elif key == NIH_KEY and PATH_COLUMN in frame.columns:  # chexcft predict on an NIH file: .../<Image Index>
        values = frame[PATH_COLUMN].astype("string").str.replace("\\", "/", regex=False).str.rpartition("/")[2]
    else:
        raise SubmissionError(f"{path}: no key column {key!r} (columns: {', '.join(frame.columns)})")
    empty = values.isna() | (values.astype(str).str.strip() == "")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise SubmissionError(f"{path}: row {row + 2}, column {key!r}: empty key")
    return values.astype(str).rename(key)


def _combined(frame: pd.DataFrame, path: str | os.PathLike[str], sources: Mapping[str, Sequence[str]],
              finite: bool) -> pd.DataFrame:
    columns = list(dict.fromkeys(c for cols in sources.values() for c in cols))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SubmissionError(f"{path}: missing column(s) {', '.join(missing)} (columns: {', '.join(frame.columns)})")
    values = frame[columns].apply(pd.to_numeric, errors="coerce")
    if finite:
        values = _task_values(frame, path, columns)
    else:
        text = frame[columns].astype("string").apply(lambda c: c.str.strip())
        bad = values.isna().to_numpy() & ~(frame[columns].isna() | (text == "")).to_numpy()
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise InvalidDatasetError(
                f"{path}: row {row + 2}, column {columns[col]!r}: label {frame[columns[col]].iloc[row]!r} is not a number"
            )
    out = pd.DataFrame({task: values[list(cols)].max(axis=1, skipna=True) for task, cols in sources.items()},
                       index=frame.index)
    return out


def apply_label_rules(table: pd.DataFrame, tasks: Sequence[str], path: str | os.PathLike[str], *,
                      unlabelled: str = "error", uncertain: str = "error", key: str = STUDY_COLUMN) -> pd.DataFrame:
    """Ground truth labels -> 1, 0 or NaN (not used): blanks and -1 handled by the rules, anything else an error."""
    if unlabelled not in UNLABELLED_RULES:
        raise ValueError(f"unlabelled must be one of {UNLABELLED_RULES}, got {unlabelled!r}")
    if uncertain not in UNCERTAIN_RULES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_RULES}, got {uncertain!r}")
    labels = table[list(tasks)].to_numpy(dtype=np.float64, copy=True)
    blank, unsure = np.isnan(labels), labels == -1.0
    for mask, rule, what, option in ((blank, unlabelled, "blank (no label)", "--unlabelled"),
                                     (unsure, uncertain, "uncertain (-1)", "--uncertain")):
        if not mask.any():
            continue
        if rule == "error":
            row, col = np.argwhere(mask)[0]
            raise InvalidDatasetError(
                f"{path}: {key} {table[key].iloc[row]!r}, column {tasks[col]!r}: label is {what}; ground truth must be "
                f"0 or 1, or choose {option} ({'/'.join(UNLABELLED_RULES if option == '--unlabelled' else UNCERTAIN_RULES)})"
                f" ({int(mask.sum())} such cell(s))"
            )
        labels[mask] = {"ignore": np.nan, "negative": 0.0, "positive": 1.0}[rule]
    not_binary = ~(np.isin(labels, (0.0, 1.0)) | np.isnan(labels))
    if not_binary.any():
        row, col = np.argwhere(not_binary)[0]
        raise InvalidDatasetError(
            f"{path}: {key} {table[key].iloc[row]!r}, column {tasks[col]!r}: "
            f"label {float(labels[row, col]):g} is not 0 or 1 (ground truth must be binary)"
        )
    out = table.copy()
    out[list(tasks)] = labels
    return out


def load_keyed(
    path: str | os.PathLike[str], sources: Mapping[str, Sequence[str]], *, key: str = STUDY_COLUMN,
    views: str = "max", kind: str = "prediction", frame: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """A file's rows as [key, tasks]: each task the max of its source columns; image rows -> studies for key Study.

    Predictions must be finite numbers; ground-truth values may be blank (NaN) or -1, for apply_label_rules.
    """
    frame = _read_csv(path, kind) if frame is None else frame
    tasks = list(sources)
    truth = kind == "ground-truth"
    if key == STUDY_COLUMN and STUDY_COLUMN not in frame.columns and PATH_COLUMN in frame.columns:
        values = _combined(frame, path, sources, finite=not truth)
        images = pd.concat([frame[PATH_COLUMN], values], axis=1)
        if truth:
            studies = pd.Series(_study_keys(frame[PATH_COLUMN]), name=STUDY_COLUMN)
            spread = values.groupby(studies.to_numpy(), sort=False).nunique(dropna=False).max(axis=1)
            conflicting = list(spread.index[spread > 1])
            if conflicting:
                raise InvalidDatasetError(
                    f"{path}: images of one study carry different labels in {_listing(conflicting)} "
                    f"(for image-level labels use --key {PATH_COLUMN})"
                )
        try:
            return aggregate_by_study(images, how="max" if truth else views, columns=tasks)
        except (ValueError, InvalidDatasetError) as exc:
            raise SubmissionError(f"{path}: {exc}") from None
    keys = _key_values(frame, key, path)
    values = _combined(frame, path, sources, finite=not truth)
    return pd.concat([keys.reset_index(drop=True), values.reset_index(drop=True)], axis=1)[[key, *tasks]]
