"""The one place that names CheXpert observations, competition tasks, label codes and CSV columns."""

from __future__ import annotations

OBSERVATIONS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# Alphabetical order, as in the official submission format.
COMPETITION_TASKS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
)

METADATA_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
CSV_HEADER: tuple[str, ...] = METADATA_COLUMNS + OBSERVATIONS

POSITIVE = 1.0
NEGATIVE = 0.0
UNCERTAIN = -1.0
# A blank cell ("not mentioned") is held as NaN in every label matrix.
LABEL_CODES: tuple[float, ...] = (POSITIVE, NEGATIVE, UNCERTAIN)

STUDY_COLUMN = "Study"
SUBMISSION_COLUMNS: tuple[str, ...] = (STUDY_COLUMN,) + COMPETITION_TASKS

# (specificity, sensitivity) of the three benchmark radiologists, as published in the official scorer.
RADIOLOGIST_POINTS: dict[str, tuple[tuple[float, float], ...]] = {
    "Atelectasis": ((0.7867, 0.8039), (0.8242, 0.7124), (0.6859, 0.9216)),
    "Cardiomegaly": ((0.9542, 0.4768), (0.7679, 0.8543), (0.8940, 0.7020)),
    "Consolidation": ((0.8896, 0.6552), (0.9108, 0.4828), (0.9660, 0.4483)),
    "Edema": ((0.9147, 0.6282), (0.8128, 0.7949), (0.9265, 0.5769)),
    "Pleural Effusion": ((0.9470, 0.8173), (0.8258, 0.8269), (0.8636, 0.8942)),
}

VIEW_FRONTAL_AP = "AP"
VIEW_FRONTAL_PA = "PA"
VIEW_FRONTAL_OTHER = "frontal"
VIEW_LATERAL = "lateral"
VIEW_UNKNOWN = "unknown"
FRONTAL_VIEWS: tuple[str, ...] = (VIEW_FRONTAL_AP, VIEW_FRONTAL_PA, VIEW_FRONTAL_OTHER)


def observation_index(name: str) -> int:
    """Return the column index of an observation, raising KeyError with the valid names."""
    try:
        return OBSERVATIONS.index(name)
    except ValueError:
        raise KeyError(f"unknown observation {name!r}; expected one of {', '.join(OBSERVATIONS)}") from None
