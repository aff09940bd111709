"""The competition submission: image predictions -> one row per study, checked against the scorer's rules.

The official scorer appends a trailing "/" to the `Study` of both the submission and the ground truth,
inner-joins them on it and requires the joined row count to equal both files' row counts. So every study of
the input must appear exactly once, spelled as the image path without its file name (chexcft.keys.study_key).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from chexcft.errors import SubmissionError
from chexcft.fileio import atomic_write_csv
from chexcft.keys import study_key
from chexcft.schema import COMPETITION_TASKS, FRONTAL_VIEWS, STUDY_COLUMN, SUBMISSION_COLUMNS

if TYPE_CHECKING:
    from chexcft.predict import PredictionResult

AGGREGATIONS: tuple[str, ...] = ("max", "mean")
_MAX_LISTED = 10


@dataclass
class SubmissionBuild:
    """A submission frame and what had to be improvised to build it."""

    frame: pd.DataFrame
    filled_studies: list[str] = field(default_factory=list)  # every image unreadable: prior written
    lateral_fallback_studies: list[str] = field(default_factory=list)  # --frontal-only found no readable frontal


def _listed(items: list[str]) -> str:
    shown = ", ".join(repr(item) for item in items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def input_studies(input_frame: pd.DataFrame) -> list[str]:
    """The studies of an input table (a `Study` column, else the study keys of `Path`), first-seen order."""
    if STUDY_COLUMN in input_frame.columns:
        studies = input_frame[STUDY_COLUMN].astype(str)
    elif "Path" in input_frame.columns:
        studies = input_frame["Path"].astype(str).map(study_key)
    else:
        raise SubmissionError(f"the input table has neither a {STUDY_COLUMN!r} nor a 'Path' column")
    return list(dict.fromkeys(studies))


def submission_problems(frame: pd.DataFrame, input_frame: pd.DataFrame) -> list[str]:
    """Every way `frame` would fail the official scorer against the studies of `input_frame` (empty = accepted)."""
    problems: list[str] = []
    columns = [str(column) for column in frame.columns]
    if columns != list(SUBMISSION_COLUMNS):
        missing = [c for c in SUBMISSION_COLUMNS if c not in columns]
        extra = [c for c in columns if c not in SUBMISSION_COLUMNS]
        detail = []
        if missing:
            detail.append(f"missing {_listed(missing)}")
        if extra:
            detail.append(f"unexpected {_listed(extra)}")
        if not detail:
            detail.append(f"order is {columns}")
        problems.append(f"columns must be exactly {','.join(SUBMISSION_COLUMNS)}: " + "; ".join(detail))
    if STUDY_COLUMN not in columns:
        return problems

    raw = frame[STUDY_COLUMN]
    bad_rows = [int(i) for i, value in enumerate(raw) if not isinstance(value, str) or not value.strip()]
    if bad_rows:
        problems.append(f"{STUDY_COLUMN} is empty or not text in rows {_listed([str(r) for r in bad_rows])}")
    # The scorer appends "/" literally, so a study already ending in "/" would become "...//" and never join.
    keys = raw.astype(str) + "/"
    duplicated = sorted(set(raw.astype(str)[keys.duplicated(keep=False)]))
    if duplicated:
        problems.append(f"duplicated studies: {_listed(duplicated)}")

    expected = [study + "/" for study in input_studies(input_frame)]
    expected_set, given_set = set(expected), set(keys)
    missing_studies = [key[:-1] for key in expected if key not in given_set]
    extra_studies = [key[:-1] for key in dict.fromkeys(keys) if key not in expected_set]
    if missing_studies:
        problems.append(f"{len(missing_studies)} studies of the input are missing: {_listed(missing_studies)}")
    if extra_studies:
        problems.append(f"{len(extra_studies)} studies are not in the input: {_listed(extra_studies)}")
    joined = int(keys.isin(expected_set).sum())
    if not problems and not (joined == len(frame) == len(expected)):
        problems.append(f"joined {joined} rows, submission has {len(frame)}, input has {len(expected)} studies")

    for task in COMPETITION_TASKS:
        if task not in columns:
            continue
        values = pd.to_numeric(frame[task], errors="coerce")
        not_numeric = frame[task].notna() & values.isna()
        if not_numeric.any():
            rows = [str(r) for r in np.flatnonzero(not_numeric.to_numpy())]
            problems.append(f"{task!r} is not a number in rows {_listed(rows)}")
        missing_values = frame[task].isna()
        if missing_values.any():
            studies = raw[missing_values].astype(str).tolist()
            problems.append(f"{task!r} is missing (NaN) for {_listed(studies)}")
        out_of_range = values.notna() & ((values < 0.0) | (values > 1.0) | ~np.isfinite(values))
        if out_of_range.any():
            studies = raw[out_of_range].astype(str).tolist()
            problems.append(f"{task!r} is outside [0, 1] for {_listed(studies)}")
    return problems


def check_submission(frame: pd.DataFrame, input_frame: pd.DataFrame, *, name: str = "submission") -> None:
    """Raise SubmissionError (naming `name` and every problem) unless the scorer would accept `frame`."""
    problems = submission_problems(frame, input_frame)
    if problems:
        raise SubmissionError(f"{name} would be rejected by the scorer: " + "; ".join(problems))


def read_submission(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a submission CSV as the scorer does (Study as text)."""
    try:
        return pd.read_csv(path, dtype={STUDY_COLUMN: str})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise SubmissionError(f"{path}: cannot read the submission CSV ({exc})") from exc


def _study_images(
    predictions: pd.DataFrame, input_frame: pd.DataFrame, frontal_only: bool
) -> tuple[pd.DataFrame, list[str]]:
    """The readable image predictions to aggregate, with their study, and the studies that fell back to laterals."""
    inputs = input_frame[["Path"]].copy()
    inputs["Path"] = inputs["Path"].astype(str)
    if frontal_only:
        if "view" not in input_frame.columns:
            raise SubmissionError(
                "--frontal-only needs a 'view' column in the input table (chexcft.data.read_table adds it)"
            )
        inputs["view"] = input_frame["view"].astype(str).to_numpy()
    rows = predictions[["Path", *COMPETITION_TASKS]].copy()
    rows["Path"] = rows["Path"].astype(str)
    rows = rows.dropna(subset=list(COMPETITION_TASKS), how="any")
    rows = inputs.drop_duplicates("Path").merge(rows, on="Path", how="inner")
    rows[STUDY_COLUMN] = rows["Path"].map(study_key)
    fallback: list[str] = []
    if frontal_only and len(rows):
        frontal = rows["view"].isin(FRONTAL_VIEWS)
        has_frontal = frontal.groupby(rows[STUDY_COLUMN]).transform("any")
        fallback = list(dict.fromkeys(rows.loc[~has_frontal, STUDY_COLUMN]))
        rows = rows[frontal | ~has_frontal]
    return rows, fallback


def build_submission(
    predictions: pd.DataFrame,
    input_frame: pd.DataFrame,
    *,
    how: str = "max",
    frontal_only: bool = False,
    prior: Mapping[str, float] | None = None,
) -> SubmissionBuild:
    """Aggregate image predictions (Path + tasks) to one row per study of `input_frame`, in its order.

    Images missing from `predictions` (unreadable) are skipped. A study with no readable image fails with
    SubmissionError naming it, unless `prior` (task -> probability) is given, which is then written for it.
    With `frontal_only`, a study without a readable frontal image is aggregated over its other views.
    """
    from chexcft.evaluation.aggregate import aggregate_by_study

    if how not in AGGREGATIONS:
        raise SubmissionError(f"unknown view aggregation {how!r}; use one of {', '.join(AGGREGATIONS)}")
    missing_tasks = [task for task in COMPETITION_TASKS if task not in predictions.columns]
    if missing_tasks:
        raise SubmissionError(
            f"the predictions have no column for {_listed(missing_tasks)}; the models must predict all 5 tasks"
        )
    rows, fallback = _study_images(predictions, input_frame, frontal_only)
    studies = input_studies(input_frame)
    if len(rows):
        aggregated = aggregate_by_study(rows[["Path", *COMPETITION_TASKS]], how=how).set_index(STUDY_COLUMN)
    else:
        aggregated = pd.DataFrame(columns=list(COMPETITION_TASKS), index=pd.Index([], name=STUDY_COLUMN))
    frame = aggregated.reindex(studies)[list(COMPETITION_TASKS)].astype(float)
    empty = frame.index[frame.isna().any(axis=1)].tolist()
    if empty and prior is None:
        raise SubmissionError(
            f"every image of {len(empty)} studies is unreadable, so the scorer would reject the submission: "
            f"{_listed(empty)} (use --fill-missing prior to write the training prevalence for them)"
        )
    if empty:
        lacking = [task for task in COMPETITION_TASKS if task not in prior]
        if lacking:
            raise SubmissionError(f"the prior has no value for {_listed(lacking)}")
        frame.loc[empty, list(COMPETITION_TASKS)] = [float(prior[task]) for task in COMPETITION_TASKS]
    frame = frame.clip(0.0, 1.0).reset_index().rename(columns={"index": STUDY_COLUMN})
    frame.columns = list(SUBMISSION_COLUMNS)
    return SubmissionBuild(frame=frame, filled_studies=empty, lateral_fallback_studies=fallback)


def write_submission(
    frame: pd.DataFrame, out_path: str | os.PathLike[str], input_frame: pd.DataFrame
) -> Path:
    """Check `frame` against the scorer's rules, then write it atomically; return the path."""
    check_submission(frame, input_frame, name=str(out_path))
    return atomic_write_csv(out_path, frame, index=False, float_format="%.8g")


def unreadable_studies(predictions: pd.DataFrame, input_frame: pd.DataFrame) -> list[str]:
    """Studies of the input with no readable image among `predictions` (they need --fill-missing)."""
    readable = predictions.dropna(subset=[t for t in COMPETITION_TASKS if t in predictions.columns], how="any")
    covered = set(readable["Path"].astype(str).map(study_key))
    return [study for study in input_studies(input_frame) if study not in covered]


@dataclass
class SubmitReport:
    """What `submit` did: the submission, the image predictions behind it, and where the prior came from."""

    build: SubmissionBuild
    prediction: PredictionResult
    out_path: Path | None
    prior_source: str | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """The submission frame."""
        return self.build.frame


def submit(
    input_csv: str | os.PathLike[str],
    out_csv: str | os.PathLike[str],
    model_dirs: Sequence[str | os.PathLike[str]],
    *,
    root: str | os.PathLike[str] | None = None,
    how: str = "max",
    frontal_only: bool = False,
    fill_missing: str | None = None,
    prior: Mapping[str, float] | None = None,
    **predict_options: Any,
) -> SubmitReport:
    """Predict the images of `input_csv`, aggregate them to its studies, check and write the competition CSV.

    `fill_missing="prior"` writes the training prevalence (`prior`, else computed from the runs) for studies
    whose images are all unreadable. Under torchrun only rank 0 writes.
    """
    from chexcft.data import read_table
    from chexcft.predict import predict_table

    if fill_missing not in (None, "prior"):
        raise SubmissionError(f"unknown --fill-missing {fill_missing!r}; the only choice is 'prior'")
    table = read_table(input_csv, root)
    result = predict_table(table, model_dirs, **predict_options)
    source = None
    if fill_missing == "prior" and unreadable_studies(result.predictions, table):
        if prior is None:
            from chexcft.predict import expand_model_dirs

            prior, source = training_prior(expand_model_dirs(model_dirs))
        else:
            source = "the prior given"
    build = build_submission(
        result.predictions, table, how=how, frontal_only=frontal_only, prior=prior if fill_missing else None
    )
    written = write_submission(build.frame, out_csv, table) if result.rank == 0 else None
    return SubmitReport(build=build, prediction=result, out_path=written, prior_source=source)


def training_prior(run_dirs: Sequence[str | os.PathLike[str]]) -> tuple[dict[str, float], str]:
    """Training prevalence per task (images labelled 1 / all training images), mean over the runs; and its source.

    Read from each run's recorded training CSV (config.json `train_csv`, `root`), which must still have the
    recorded sha256.
    """
    from chexcft.data import read_table
    from chexcft.fileio import file_sha256
    from chexcft.runs import read_config

    priors: list[np.ndarray] = []
    sources: list[str] = []
    for run_dir in run_dirs:
        config = read_config(run_dir)
        train_csv = config.get("train_csv") or (config.get("settings") or {}).get("train_csv")
        if not train_csv or not Path(train_csv).is_file():
            raise SubmissionError(
                f"{run_dir}: --fill-missing prior needs the training CSV recorded in config.json "
                f"({train_csv or 'none recorded'}), which is not available"
            )
        recorded = config.get("train_csv_sha256")
        if recorded and recorded != file_sha256(train_csv):
            raise SubmissionError(
                f"{train_csv} changed since {run_dir} was trained (sha256 differs); cannot use its prevalence"
            )
        root = config.get("root") or (config.get("settings") or {}).get("root")
        labels = read_table(train_csv, root)[list(COMPETITION_TASKS)].to_numpy(dtype=np.float64)
        if not len(labels):
            raise SubmissionError(f"{train_csv}: no training rows to compute a prevalence from")
        priors.append((labels == 1.0).mean(axis=0))
        sources.append(str(train_csv))
    prior = np.mean(priors, axis=0)
    source = "prevalence of positive labels in " + ", ".join(dict.fromkeys(sources))
    return {task: float(value) for task, value in zip(COMPETITION_TASKS, prior)}, source
