"""The study browser's data: one row per study with its views, predicted probability, label and disagreement."""

from __future__ import annotations

import numpy as np
import pandas as pd

SORTS: tuple[str, ...] = ("probability", "disagreement", "study")
LABEL_FILTERS: tuple[str, ...] = ("any", "positive", "negative", "uncertain", "unlabelled")
_LABEL_NAMES = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}


def label_name(value: float) -> str:
    """positive / negative / uncertain / unlabelled for a 1/0/-1/NaN label."""
    return _LABEL_NAMES.get(float(value), "unlabelled") if np.isfinite(value) else "unlabelled"


def label_summary(labels: pd.Series, observations: tuple[str, ...]) -> str:
    """One image's labels in a line: positive and uncertain findings named, the rest summarised."""
    named = {name: label_name(labels.get(name, np.nan)) for name in observations}
    parts = [f"{name} {kind}" for name, kind in named.items() if kind in ("positive", "uncertain")]
    negatives = sum(kind == "negative" for kind in named.values())
    unlabelled = sum(kind == "unlabelled" for kind in named.values())
    if negatives:
        parts.append(f"{'the other ' if parts else ''}{negatives} negative")
    if unlabelled:
        parts.append(f"{unlabelled} unlabelled")
    return ", ".join(parts) if parts else "none"


def study_label(values: pd.Series) -> float:
    """A study's label from its images' labels: positive beats uncertain beats negative; NaN when none."""
    known = values.dropna()
    if not len(known):
        return float("nan")
    for code in (1.0, -1.0, 0.0):
        if (known == code).any():
            return code
    return float("nan")


def study_index(
    table: pd.DataFrame, probabilities: np.ndarray, finding_column: int, labels: pd.DataFrame | None, finding: str
) -> pd.DataFrame:
    """One row per study (first-seen order): patient, views, probability (max over views), label, disagreement.

    `probabilities` is (images, observations) aligned to `table`; `finding_column` picks the finding's column.
    Disagreement = |probability - label| for studies labelled positive or negative, else NaN.
    """
    frame = pd.DataFrame({
        "Patient": table["Patient"].to_numpy(),
        "Study": table["Study"].to_numpy(),
        "row": np.arange(len(table)),
        "probability": probabilities[:, finding_column],
        "label": labels[finding].to_numpy(dtype=np.float64) if labels is not None else np.nan,
    })
    grouped = frame.groupby("Study", sort=False)
    index = pd.DataFrame({
        "Patient": grouped["Patient"].first(),
        "views": grouped["row"].size(),
        "rows": grouped["row"].agg(list),
        "probability": grouped["probability"].max(),
        "label": grouped["label"].agg(study_label),
    }).reset_index()
    known = index["label"].isin((0.0, 1.0))
    index["disagreement"] = np.where(known, (index["probability"] - index["label"]).abs(), np.nan)
    index["label name"] = index["label"].map(label_name)
    return index[["Patient", "Study", "views", "probability", "label", "label name", "disagreement", "rows"]]


def select_studies(
    index: pd.DataFrame,
    *,
    search: str = "",
    patient: str | None = None,
    label: str = "any",
    sort: str = "probability",
    descending: bool = True,
) -> pd.DataFrame:
    """Filter the study index by a search text (in patient or study), patient, and label; then sort it."""
    if label not in LABEL_FILTERS:
        raise ValueError(f"label filter must be one of {LABEL_FILTERS}, got {label!r}")
    if sort not in SORTS:
        raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
    keep = np.ones(len(index), dtype=bool)
    text = search.strip().lower()
    if text:
        keep &= (index["Study"].str.lower().str.contains(text, regex=False)
                 | index["Patient"].str.lower().str.contains(text, regex=False)).to_numpy()
    if patient:
        keep &= (index["Patient"] == patient).to_numpy()
    if label != "any":
        keep &= (index["label name"] == label).to_numpy()
    selected = index[keep]
    key = {"probability": "probability", "disagreement": "disagreement", "study": "Study"}[sort]
    return selected.sort_values(key, ascending=not descending, na_position="last", kind="stable").reset_index(drop=True)


def study_title(row: pd.Series) -> str:
    """The browser's label for a study: the study key, the probability and the label."""
    probability = "unreadable" if not np.isfinite(row["probability"]) else f"p={row['probability']:.2f}"
    return f"{row['Study']}  ({probability}, {row['label name']})"


def view_name(path: str) -> str:
    """A view's short name: the image file name."""
    return str(path).replace("\\", "/").rpartition("/")[2]
