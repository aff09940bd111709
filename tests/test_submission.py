"""chexcft.submission: the competition CSV, the scorer's checks, and `chexcft submit` end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.data import read_table
from chexcft.errors import SubmissionError
from chexcft.keys import study_key
from chexcft.predict import predict_table
from chexcft.schema import COMPETITION_TASKS, SUBMISSION_COLUMNS
from chexcft.submission import (
    build_submission,
    check_submission,
    input_studies,
    read_submission,
    submission_problems,
    submit,
    write_submission,
)
from tests.prediction_builders import (
    add_unreadable_study,
    make_prediction_tree,
    make_tiny_run,
    official_score,
    study_groundtruth,
)

STUDY_A = "CheXpert-v1.0/valid/patient64541/study1"
STUDY_B = "CheXpert-v1.0/valid/patient64542/study1"
STUDY_C = "CheXpert-v1.0/valid/patient64543/study2"


def _input() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Path": [f"{STUDY_A}/view1_frontal.jpg", f"{STUDY_A}/view2_lateral.jpg", f"{STUDY_B}/view1_frontal.jpg",
                     f"{STUDY_C}/view1_lateral.jpg"],
            "view": ["PA", "lateral", "AP", "lateral"],
        }
    )


def _predictions(values: list[list[float]]) -> pd.DataFrame:
    frame = pd.DataFrame(values, columns=list(COMPETITION_TASKS))
    frame.insert(0, "Path", _input()["Path"].iloc[: len(values)].to_numpy())
    return frame


def _good() -> pd.DataFrame:
    return pd.DataFrame(
        [[STUDY_A, 0.1, 0.2, 0.3, 0.4, 0.5], [STUDY_B, 0.0, 1.0, 0.5, 0.5, 0.5], [STUDY_C, 0.9, 0.8, 0.7, 0.6, 0.5]],
        columns=list(SUBMISSION_COLUMNS),
    )


def test_check_accepts_a_valid_submission_and_a_study_level_input() -> None:
    check_submission(_good(), _input())
    check_submission(_good(), _good()[["Study"]])
    assert submission_problems(_good(), _input()) == []


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda f: f.iloc[:2], "missing"),
        (lambda f: pd.concat([f, f.iloc[[0]]]), "duplicated"),
        (lambda f: f.assign(Study=f["Study"] + "/"), "missing"),  # scorer appends '/': 'x//' never joins
        (lambda f: f.assign(Edema=[0.1, 1.2, 0.3]), "outside [0, 1]"),
        (lambda f: f.assign(Edema=[0.1, np.nan, 0.3]), "NaN"),
        (lambda f: f.assign(Edema=[0.1, -0.01, 0.3]), "outside [0, 1]"),
        (lambda f: f.assign(Edema=["0.1", "high", "0.3"]), "not a number"),
        (lambda f: f.drop(columns=["Edema"]), "missing 'Edema'"),
        (lambda f: f.assign(Pneumonia=0.5), "unexpected 'Pneumonia'"),
        (lambda f: f[["Study", "Cardiomegaly", "Atelectasis", "Consolidation", "Edema", "Pleural Effusion"]], "order"),
        (lambda f: f.assign(Study=[STUDY_A, STUDY_B, "CheXpert-v1.0/valid/patient1/study9"]), "not in the input"),
    ],
)
def test_check_rejects_what_the_scorer_rejects(breakage, message: str) -> None:
    broken = breakage(_good())
    with pytest.raises(SubmissionError, match="rejected by the scorer") as caught:
        check_submission(broken, _input(), name="out.csv")
    assert message in str(caught.value)
    assert "out.csv" in str(caught.value)


def test_build_max_versus_mean_and_input_order() -> None:
    values = [[0.2] * 5, [0.6] * 5, [0.3] * 5, [0.9] * 5]
    highest = build_submission(_predictions(values), _input(), how="max").frame
    average = build_submission(_predictions(values), _input(), how="mean").frame
    assert list(highest.columns) == list(SUBMISSION_COLUMNS)
    assert highest["Study"].tolist() == [STUDY_A, STUDY_B, STUDY_C]
    np.testing.assert_allclose(highest[list(COMPETITION_TASKS)].to_numpy()[:, 0], [0.6, 0.3, 0.9])
    np.testing.assert_allclose(average[list(COMPETITION_TASKS)].to_numpy()[:, 0], [0.4, 0.3, 0.9])
    check_submission(highest, _input())


def test_frontal_only_uses_frontals_and_falls_back_to_laterals() -> None:
    values = [[0.2] * 5, [0.6] * 5, [0.3] * 5, [0.9] * 5]
    build = build_submission(_predictions(values), _input(), how="max", frontal_only=True)
    np.testing.assert_allclose(build.frame["Atelectasis"].to_numpy(), [0.2, 0.3, 0.9])
    assert build.lateral_fallback_studies == [STUDY_C]


def test_frontal_only_falls_back_when_the_frontal_is_unreadable() -> None:
    predictions = _predictions([[0.2] * 5, [0.6] * 5, [0.3] * 5, [0.9] * 5]).drop(index=0)  # A's frontal failed
    build = build_submission(predictions, _input(), frontal_only=True)
    assert build.frame["Atelectasis"].iloc[0] == pytest.approx(0.6)
    assert build.lateral_fallback_studies == [STUDY_A, STUDY_C]


def test_a_study_without_readable_images_fails_unless_filled_with_the_prior() -> None:
    predictions = _predictions([[0.2] * 5, [0.6] * 5, [0.3] * 5])  # C's only image unreadable
    with pytest.raises(SubmissionError, match="patient64543/study2.*--fill-missing prior"):
        build_submission(predictions, _input())
    prior = dict(zip(COMPETITION_TASKS, [0.1, 0.2, 0.05, 0.3, 0.4]))
    build = build_submission(predictions, _input(), prior=prior)
    assert build.filled_studies == [STUDY_C]
    assert build.frame.iloc[2, 1:].tolist() == pytest.approx([0.1, 0.2, 0.05, 0.3, 0.4])
    check_submission(build.frame, _input())


def test_predictions_missing_a_task_are_refused() -> None:
    predictions = _predictions([[0.2] * 5] * 4).drop(columns=["Edema"])
    with pytest.raises(SubmissionError, match="Edema"):
        build_submission(predictions, _input())


def test_write_checks_first_and_writes_atomically(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "submission.csv"
    with pytest.raises(SubmissionError):
        write_submission(_good().iloc[:2], out, _input())
    assert not out.exists()
    write_submission(_good(), out, _input())
    back = read_submission(out)
    check_submission(back, _input())
    assert back["Study"].tolist() == _good()["Study"].tolist()
    assert sorted(p.name for p in out.parent.iterdir()) == ["submission.csv"]


# ---- end to end: `chexcft submit` on a CheXpert-layout tree with a DICOM study and an unreadable image ----


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("submit")
    tree = make_prediction_tree(base / "data", seed=1)
    run = make_tiny_run(base / "run", train_csv=tree.train_csv, root=tree.root, image_size=32, seed=3, cft=True)
    images = predict_table(read_table(tree.input_csv, tree.root), [run], device="cpu").predictions.set_index("Path")
    return tree, run, images


def test_cli_submit_writes_one_row_per_study_that_the_scorer_accepts(setup, tmp_path: Path) -> None:
    tree, run, _ = setup
    out = tmp_path / "submission.csv"
    result = CliRunner().invoke(app, ["submit", "--model", str(run), str(tree.input_csv), str(out), "--root",
                                      str(tree.root), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert tree.broken_image in result.output and "passes the scorer's checks" in result.output
    frame = read_submission(out)
    assert list(frame.columns) == list(SUBMISSION_COLUMNS)
    expected_studies = list(dict.fromkeys(study_key(p) for p in tree.frame["Path"]))
    assert frame["Study"].tolist() == expected_studies
    assert {tree.dicom_study, tree.broken_study, tree.lateral_only_study} <= set(frame["Study"])
    values = frame[list(COMPETITION_TASKS)].to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    scores = official_score(out, study_groundtruth(tree.frame))
    assert set(scores) == set(COMPETITION_TASKS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]  # atomic: no temporary left


def test_views_max_versus_mean(setup, tmp_path: Path) -> None:
    tree, run, images = setup
    highest = submit(tree.input_csv, tmp_path / "max.csv", [run], root=tree.root, how="max", device="cpu").frame
    average = submit(tree.input_csv, tmp_path / "mean.csv", [run], root=tree.root, how="mean", device="cpu").frame
    studies = tree.frame["Path"].map(study_key)
    for study, paths in tree.frame.groupby(studies, sort=False)["Path"]:
        readable = images.loc[[p for p in paths if p in images.index], list(COMPETITION_TASKS)]
        row = highest["Study"] == study
        tasks = list(COMPETITION_TASKS)
        np.testing.assert_allclose(highest.loc[row, tasks].to_numpy()[0], readable.max().to_numpy(), atol=1e-6)
        np.testing.assert_allclose(average.loc[row, tasks].to_numpy()[0], readable.mean().to_numpy(), atol=1e-6)
    multi = [s for s, n in studies.value_counts().items() if n > 1 and s != tree.broken_study]
    assert multi, "the tree must have multi-view studies"
    differs = highest.set_index("Study").loc[multi] - average.set_index("Study").loc[multi]
    assert (differs.to_numpy() > 1e-6).any()


def test_frontal_only_keeps_frontals_and_falls_back_to_laterals(setup, tmp_path: Path) -> None:
    tree, run, images = setup
    out = tmp_path / "frontal.csv"
    result = CliRunner().invoke(app, ["submit", "-m", str(run), str(tree.input_csv), str(out), "--root", str(tree.root),
                                      "--frontal-only", "--views", "mean", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "no readable frontal view" in result.output and tree.lateral_only_study in result.output
    frame = read_submission(out).set_index("Study")
    dicom_frontal = images.loc[f"{tree.dicom_study}/view1_frontal.dcm", list(COMPETITION_TASKS)].to_numpy(dtype=float)
    np.testing.assert_allclose(frame.loc[tree.dicom_study].to_numpy(dtype=float), dicom_frontal, atol=1e-6)
    broken_lateral = images.loc[f"{tree.broken_study}/view2_lateral.jpg", list(COMPETITION_TASKS)].to_numpy(dtype=float)
    np.testing.assert_allclose(frame.loc[tree.broken_study].to_numpy(dtype=float), broken_lateral, atol=1e-6)
    report = submit(tree.input_csv, tmp_path / "again.csv", [run], root=tree.root, frontal_only=True, device="cpu")
    assert set(report.build.lateral_fallback_studies) == {tree.lateral_only_study, tree.broken_study}


def test_a_fully_unreadable_study_fails_unless_fill_missing_prior(setup, tmp_path: Path) -> None:
    tree, run, _ = setup
    csv, study = add_unreadable_study(tree)
    out = tmp_path / "filled.csv"
    with pytest.raises(SubmissionError, match=study):
        submit(csv, out, [run], root=tree.root, device="cpu")
    assert not out.exists()
    result = CliRunner().invoke(app, ["submit", "-m", str(run), str(csv), str(out), "--root", str(tree.root),
                                      "--fill-missing", "prior", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "training prevalence" in result.output and study in result.output
    frame = read_submission(out).set_index("Study")
    train = pd.read_csv(tree.train_csv)
    prevalence = (train[list(COMPETITION_TASKS)] == 1.0).mean().to_numpy()
    np.testing.assert_allclose(frame.loc[study].to_numpy(dtype=float), prevalence, atol=1e-7)
    check_submission(frame.reset_index(), read_table(csv, tree.root))
    assert study in input_studies(read_table(csv, tree.root))


def test_the_scorer_reimplementation_rejects_broken_submissions(setup, tmp_path: Path) -> None:
    tree, run, _ = setup
    good = tmp_path / "good.csv"
    submit(tree.input_csv, good, [run], root=tree.root, device="cpu")
    gt = study_groundtruth(tree.frame)
    official_score(good, gt)
    frame = pd.read_csv(good)
    for name, broken in {
        "missing": frame.iloc[1:],
        "duplicated": pd.concat([frame, frame.iloc[[0]]]),
        "trailing slash": frame.assign(Study=frame["Study"] + "/"),
        "out of range": frame.assign(Edema=frame["Edema"] + 1.0),
    }.items():
        path = tmp_path / f"{name}.csv"
        broken.to_csv(path, index=False)
        with pytest.raises(AssertionError):
            official_score(path, gt)
        with pytest.raises(SubmissionError):
            check_submission(read_submission(path), gt)
