"""Radiologist operating points on or below the ROC curve, on ROC curves worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexcft.evaluation.radiologists import count_below, interpolated_tpr, scorer_projection
from chexcft.schema import RADIOLOGIST_POINTS

# Negatives 0.1 0.2 0.3 0.6, positives 0.4 0.5 0.7 0.8. By hand, the ROC corners are
# (0, 0) -> (0, .5) -> (.25, .5) -> (.25, 1) -> (1, 1): tpr is 0.5 for fpr in [0, .25) and 1 after.
Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
S = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.5, 0.7, 0.8])


@pytest.mark.parametrize("rule", ["scorer", "interpolated"])
def test_counts_on_hand_checked_curve(rule: str) -> None:
    assert count_below(Y, S, [(0.9, 0.5)], rule) == 1  # fpr .1: curve at .5, point on the curve counts
    assert count_below(Y, S, [(0.9, 0.6)], rule) == 0  # fpr .1: .6 is above .5
    assert count_below(Y, S, [(0.7, 0.9)], rule) == 1  # fpr .3: curve at 1.0
    assert count_below(Y, S, [(0.8, 0.99)], rule) == 0  # fpr .2: curve still at .5
    assert count_below(Y, S, [(0.9, 0.5), (0.9, 0.6), (0.7, 0.9)], rule) == 2


def test_tied_scores_diagonal_step_separates_the_rules() -> None:
    # Negatives 0.1, 0.5; positives 0.5, 0.9. ROC: (0,0) -> (0,.5) -> (.5,1) -> (1,1), the middle step a
    # diagonal from the tie. At fpr .25 the straight line gives .75; the scorer's projection
    # .5 + (1 - .5) * (.25 - 0) = .625 (it does not divide by the step's width .5).
    y = np.array([0, 0, 1, 1])
    s = np.array([0.1, 0.5, 0.5, 0.9])
    fpr = np.array([0.0, 0.0, 0.5, 1.0])
    tpr = np.array([0.0, 0.5, 1.0, 1.0])
    assert scorer_projection(fpr, tpr, 0.25) == pytest.approx(0.625)
    assert interpolated_tpr(fpr, tpr, 0.25) == pytest.approx(0.75)
    assert count_below(y, s, [(0.75, 0.7)], "scorer") == 0
    assert count_below(y, s, [(0.75, 0.7)], "interpolated") == 1


def test_vertical_step_and_edges() -> None:
    fpr = np.array([0.0, 0.0, 0.25, 0.25, 1.0])
    tpr = np.array([0.0, 0.5, 0.5, 1.0, 1.0])
    assert interpolated_tpr(fpr, tpr, 0.25) == 1.0  # top of the vertical step
    assert scorer_projection(fpr, tpr, 0.25) == 0.5  # the scorer stops at the first segment touching x
    assert interpolated_tpr(fpr, tpr, 0.0) == 0.5
    assert interpolated_tpr(fpr, tpr, 1.0) == 1.0


def test_undefined_curve_and_bad_rule() -> None:
    assert count_below(np.zeros(4), np.arange(4.0), [(0.5, 0.5)]) is None
    with pytest.raises(ValueError, match="rule must be"):
        count_below(Y, S, [(0.5, 0.5)], rule="nearest")


def test_schema_points_are_the_benchmark_radiologists_reads(shared_dir: Path | None) -> None:
    bench = None if shared_dir is None else shared_dir / "benchmarks" / "chexpert-test"
    if bench is None or not (bench / "radiologists" / "bc4.csv").is_file():
        pytest.skip("../shared/benchmarks/chexpert-test is absent: the radiologists' reads are not redistributed")
    truth = pd.read_csv(bench / "groundtruth.csv").set_index("Study")
    for i, reader in enumerate(("bc4", "bc6", "bc8")):
        reads = pd.read_csv(bench / "radiologists" / f"{reader}.csv").set_index("Study").loc[truth.index]
        for task, points in RADIOLOGIST_POINTS.items():
            y, r = truth[task].to_numpy(), reads[task].to_numpy()
            specificity = ((r == 0) & (y == 0)).sum() / (y == 0).sum()
            sensitivity = ((r == 1) & (y == 1)).sum() / (y == 1).sum()
            assert (round(specificity, 4), round(sensitivity, 4)) == points[i]
