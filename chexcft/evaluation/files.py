"""Ground-truth and prediction files -> aligned tables for any finding set, join key and dataset vocabulary.

This is what `chexcft evaluate` runs: read the files, pick the join column, match findings by name (with
`prob_` prefixes and the NIH <-> CheXpert mapping, chexcft.evaluation.findings), apply the label rules, and hand
chexcft.evaluation.report a ground truth and prediction tables keyed alike. External validation is this same
path: a model trained on one dataset, scored against another's labels, with what one side lacks reported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from chexcft.evaluation.aggregate import apply_label_rules, load_keyed, read_csv, resolve_key
from chexcft.evaluation.findings import FindingMatch, finding_columns, match_findings

PathLike = str | os.PathLike[str]


@dataclass
class EvaluationInputs:
    """A ground truth [key, tasks] (1, 0, NaN), prediction tables [key, tasks] by name, the key and the match."""

    groundtruth: pd.DataFrame
    predictions: dict[str, pd.DataFrame]
    key: str
    match: FindingMatch


def _numeric_columns(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Columns holding numbers (blanks allowed), and those among them without a single value."""
    numeric, empty = [], []
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        text = frame[column].astype("string").str.strip()
        written = frame[column].notna() & (text != "").fillna(False)
        if (values.isna() & written).any():
            continue
        numeric.append(column)
        if not written.any():
            empty.append(column)
    return numeric, empty


def load_evaluation(
    groundtruth: PathLike, predictions: Mapping[str, PathLike], *, key: str | None = None,
    tasks: str | Sequence[str] | None = None, views: str = "max", unlabelled: str = "error",
    uncertain: str = "error",
) -> EvaluationInputs:
    """Read a ground truth and named prediction files, match their findings, and key them alike.

    key: the join column (None: Study for Study/Path files, else NIH's Image Index); tasks: see match_findings;
    views: how a study's image predictions combine (key Study); unlabelled / uncertain: what blank and -1 ground-
    truth cells mean (error, ignore, negative, positive; see chexcft.evaluation.aggregate.apply_label_rules).
    """
    truth_frame = read_csv(groundtruth, "ground-truth")
    key = resolve_key(key, list(truth_frame.columns), groundtruth)
    frames = {name: read_csv(path, "prediction") for name, path in predictions.items()}
    truth_columns, empty = _numeric_columns(truth_frame, finding_columns(list(truth_frame.columns), key))
    pred_columns = {name: _numeric_columns(frame, finding_columns(list(frame.columns), key))[0]
                    for name, frame in frames.items()}
    match = match_findings(truth_columns, pred_columns, tasks, unlabelled=empty)
    truth = load_keyed(groundtruth, match.groundtruth, key=key, kind="ground-truth", frame=truth_frame)
    truth = apply_label_rules(truth, match.tasks, groundtruth, unlabelled=unlabelled, uncertain=uncertain, key=key)
    tables = {name: load_keyed(predictions[name], match.predictions[name], key=key, views=views, frame=frame)
              for name, frame in frames.items()}
    return EvaluationInputs(truth, tables, key, match)

