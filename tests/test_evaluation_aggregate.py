"""Study aggregation and reading ground truth / predictions: column matching, image level, study checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from chexcft.errors import InvalidDatasetError, SubmissionError
from chexcft.evaluation.aggregate import (
    aggregate_by_study,
    align_to_groundtruth,
    load_groundtruth,
    load_predictions,
    row_name,
)
from chexcft.schema import COMPETITION_TASKS

STUDY_A = "CheXpert-v1.0/valid/patient00001/study1"
STUDY_B = "CheXpert-v1.0/valid/patient00002/study1"


def _image_rows() -> pd.DataFrame:
    rows = [
        (f"{STUDY_A}/view1_frontal.jpg", 0.2),
        (f"{STUDY_A}/view2_lateral.jpg", 0.6),
        (f"{STUDY_B}/view1_frontal.jpg", 0.5),
    ]
    frame = pd.DataFrame({"Path": [r[0] for r in rows]})
    for i, task in enumerate(COMPETITION_TASKS):
        frame[task] = [r[1] + 0.01 * i for r in rows]
    return frame


@pytest.mark.parametrize(("how", "expected_a"), [("max", 0.6), ("mean", 0.4)])
def test_aggregate_by_study_max_and_mean(how: str, expected_a: float) -> None:
    out = aggregate_by_study(_image_rows(), how=how)
    assert list(out.columns) == ["Study", *COMPETITION_TASKS]
    assert list(out["Study"]) == [STUDY_A, STUDY_B]
    assert out.loc[0, "Atelectasis"] == pytest.approx(expected_a)
    assert out.loc[0, "Pleural Effusion"] == pytest.approx(expected_a + 0.04)
    assert out.loc[1, "Atelectasis"] == pytest.approx(0.5)


def test_aggregate_rejects_unknown_rule_and_bad_paths() -> None:
    with pytest.raises(ValueError, match="how must be"):
        aggregate_by_study(_image_rows(), how="median")
    frame = _image_rows()
    frame.loc[2, "Path"] = "view1_frontal.jpg"
    with pytest.raises(InvalidDatasetError, match="row 4, column 'Path': .*no folder"):
        aggregate_by_study(frame)
    frame.loc[2, "Path"] = np.nan
    with pytest.raises(InvalidDatasetError, match="row 4, column 'Path': empty image path"):
        aggregate_by_study(frame)


def test_load_predictions_study_level_any_column_order(tmp_path: Path) -> None:
    frame = pd.DataFrame({"Pleural Effusion": [0.1, 0.2], "Study": [STUDY_A, STUDY_B], "Edema": [0.3, 0.4],
                          "Atelectasis": [0.5, 0.6], "Consolidation": [0.7, 0.8], "Cardiomegaly": [0.9, 1.0]})
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    out = load_predictions(path)
    assert list(out.columns) == ["Study", *COMPETITION_TASKS]
    assert out["Edema"].tolist() == [0.3, 0.4]
    assert out["Cardiomegaly"].tolist() == [0.9, 1.0]


@pytest.mark.parametrize(("views", "expected_a"), [("max", 0.6), ("mean", 0.4)])
def test_load_predictions_image_level_is_aggregated(tmp_path: Path, views: str, expected_a: float) -> None:
    path = tmp_path / "images.csv"
    _image_rows().to_csv(path, index=False)
    out = load_predictions(path, views=views)
    assert list(out["Study"]) == [STUDY_A, STUDY_B]
    assert out.loc[0, "Atelectasis"] == pytest.approx(expected_a)


def test_load_predictions_names_file_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    frame = _image_rows().drop(columns=["Edema"])
    frame.to_csv(path, index=False)
    with pytest.raises(SubmissionError, match=r"bad\.csv: missing column\(s\) Edema"):
        load_predictions(path)
    frame = _image_rows()
    frame["Edema"] = frame["Edema"].astype(object)
    frame.loc[1, "Edema"] = "oops"
    frame.to_csv(path, index=False)
    with pytest.raises(SubmissionError, match=r"bad\.csv: row 3, column 'Edema'"):
        load_predictions(path)
    pd.DataFrame({"x": [1]}).to_csv(path, index=False)
    with pytest.raises(SubmissionError, match="needs a 'Study' column"):
        load_predictions(path)


def test_load_groundtruth_image_level_and_checks(tmp_path: Path) -> None:
    path = tmp_path / "valid.csv"
    frame = _image_rows()
    frame[list(COMPETITION_TASKS)] = [[1, 0, 0, 1, 0], [1, 0, 0, 1, 0], [0, 1, 1, 0, 1]]
    frame.to_csv(path, index=False)
    gt = load_groundtruth(path)
    assert list(gt["Study"]) == [STUDY_A, STUDY_B]
    assert gt.loc[0, "Edema"] == 1 and gt.loc[1, "Edema"] == 0
    frame.loc[1, "Edema"] = 0
    frame.to_csv(path, index=False)
    with pytest.raises(InvalidDatasetError, match="different labels in 1: .*patient00001/study1"):
        load_groundtruth(path)
    frame.loc[1, "Edema"] = 1
    frame.loc[2, "Cardiomegaly"] = -1
    frame.to_csv(path, index=False)
    with pytest.raises(InvalidDatasetError, match="'Cardiomegaly': label -1 is not 0 or 1"):
        load_groundtruth(path)


def _study_frame(studies: list[str], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"Study": studies})
    for task in COMPETITION_TASKS:
        frame[task] = rng.random(len(studies))
    return frame


def test_align_reorders_and_normalises_trailing_slash() -> None:
    studies = [f"CheXpert-v1.0/test/patient{i:05d}/study1" for i in range(6)]
    gt = _study_frame(studies)
    pred = _study_frame([s + "/" for s in studies[::-1]], seed=1)
    aligned = align_to_groundtruth(gt, pred, "pred")
    np.testing.assert_array_equal(aligned, pred[list(COMPETITION_TASKS)].to_numpy()[::-1])


def test_align_lists_missing_extra_and_duplicated_studies() -> None:
    studies = [f"CheXpert-v1.0/test/patient{i:05d}/study1" for i in range(12)]
    gt = _study_frame(studies)
    with pytest.raises(SubmissionError) as info:
        align_to_groundtruth(gt, _study_frame(studies[:4] + ["elsewhere/patient9/study1"]), "model_a")
    message = str(info.value)
    assert "studies missing from model_a 8: " in message and "(+3 more)" in message
    assert "patient00004/study1/" in message
    assert "not in the ground truth 1: elsewhere/patient9/study1/" in message
    with pytest.raises(SubmissionError, match=r"duplicated studies in model_b 1: .*patient00003/study1/"):
        align_to_groundtruth(gt, _study_frame(studies + [studies[3] + "/"]), "model_b")
    with pytest.raises(SubmissionError, match="duplicated studies in ground truth"):
        align_to_groundtruth(_study_frame(studies + [studies[0]]), _study_frame(studies), "model_c")


def test_row_name_is_stem_made_unique() -> None:
    taken: set[str] = set()
    first = row_name("a/model.csv", taken)
    taken.add(first)
    second = row_name("b/model.csv", taken)
    assert (first, second) == ("model", "b/model")
