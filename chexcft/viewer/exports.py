"""The export buttons' files: the competition submission for the loaded data and the per-image predictions."""

from __future__ import annotations

import pandas as pd

from chexcft.schema import COMPETITION_TASKS


def submission_frame(predictions: pd.DataFrame, table: pd.DataFrame, how: str = "max") -> pd.DataFrame:
    """One row per study of `table` (Study + 5 tasks), checked against the official scorer's rules."""
    from chexcft.submission import build_submission, check_submission

    frame = build_submission(predictions, table, how=how).frame
    check_submission(frame, table, name="the viewer's submission")
    return frame


def frame_csv(frame: pd.DataFrame) -> bytes:
    """A table as CSV bytes (UTF-8, no index, 8 significant digits), as the CLI writes its files."""
    return frame.to_csv(index=False, float_format="%.8g").encode("utf-8")


def submission_csv(predictions: pd.DataFrame, table: pd.DataFrame, how: str = "max") -> bytes:
    """The competition submission CSV (Study + 5 tasks) as bytes; SubmissionError when it would be rejected."""
    return frame_csv(submission_frame(predictions, table, how))


def predictions_csv(predictions: pd.DataFrame) -> bytes:
    """Per-image predictions (Path + observations, the `chexcft predict` layout) as bytes."""
    return frame_csv(predictions)


def has_competition_tasks(observations: tuple[str, ...]) -> bool:
    """True when the models predict all five competition tasks (needed for a submission)."""
    return all(task in observations for task in COMPETITION_TASKS)
