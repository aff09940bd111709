"""Evaluation of study-level predictions: AUC, bootstrap and DeLong intervals, radiologist points, ensembles."""

from chexcft.evaluation.aggregate import aggregate_by_study, align_to_groundtruth, load_groundtruth, load_predictions
from chexcft.evaluation.report import ScoreTable, evaluate, evaluate_table, render_table, score_table

__all__ = [
    "ScoreTable",
    "aggregate_by_study",
    "align_to_groundtruth",
    "evaluate",
    "evaluate_table",
    "load_groundtruth",
    "load_predictions",
    "render_table",
    "score_table",
]
