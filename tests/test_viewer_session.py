"""The viewer's library side: loading runs and tables, every member's predictions, the study browser, exports,
uploads, image helpers and the performance page's numbers (chexcft.viewer.*)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from chexcft.errors import ChexcftError, InvalidRunError, SubmissionError, UnreadableImageError
from chexcft.schema import COMPETITION_TASKS, OBSERVATIONS
from chexcft.viewer import browser, exports, images, performance, session, upload
from tests.builders import synthetic_xray
from tests.viewer_builders import ViewerInputs, make_viewer_inputs


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> ViewerInputs:
    return make_viewer_inputs(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def loaded(inputs: ViewerInputs):
    models = session.load_runs([inputs.ensemble_dir])
    table = session.load_table(inputs.data_csv, inputs.tree.root)
    predictions = session.predict_table_members(models, table, batch_size=8)
    return models, table, predictions


def test_an_ensemble_directory_loads_its_members_with_cft(inputs: ViewerInputs, loaded) -> None:
    models, _, _ = loaded
    assert models.names == ("member-0", "member-1")
    assert all(run.has_cft and run.calibration is not None for run in models.runs)
    assert models.observations == OBSERVATIONS
    with pytest.raises(InvalidRunError, match="no-such-run"):
        session.load_runs([inputs.ensemble_dir.parent / "no-such-run"])


def test_member_names_stay_unique_when_folder_names_repeat() -> None:
    assert session.member_names([Path("a/run"), Path("b/run"), Path("c/other")]) == ("a/run", "b/run", "other")


def test_ensemble_value_equals_chexcft_predict_and_raw_equals_the_trained_head(inputs: ViewerInputs, loaded) -> None:
    from chexcft.predict import predict_table
    from chexcft.preprocess import load_for_model

    models, table, predictions = loaded
    expected = predict_table(table, [inputs.ensemble_dir])
    mine = predictions.frame("calibrated")
    assert mine["Path"].tolist() == expected.predictions["Path"].tolist()
    np.testing.assert_allclose(mine[list(OBSERVATIONS)].to_numpy(), expected.predictions[list(OBSERVATIONS)].to_numpy(),
                               atol=1e-6)
    # the one unreadable image is listed with the reader's reason, its row is NaN
    assert predictions.failures["Path"].tolist() == [inputs.tree.broken_image]
    broken = table.index[table["Path"] == inputs.tree.broken_image][0]
    assert np.isnan(predictions.calibrated[:, broken]).all()
    # raw = the run's trained head without CFT or calibration; uncalibrated = CFT logits through a sigmoid
    row = 0
    image = torch.from_numpy(load_for_model(table.loc[row, "abs_path"], 32)).float()[None, None] / 255.0
    for member, run in enumerate(models.runs):
        np.testing.assert_allclose(predictions.raw[member, row], run.raw_proba(image)[0], atol=1e-6)
        logits = run.predict_logits(image)[0]
        np.testing.assert_allclose(predictions.uncalibrated[member, row], 1 / (1 + np.exp(-logits)), atol=1e-6)
        assert not np.allclose(predictions.raw[member, row], predictions.calibrated[member, row])


def test_prediction_rows_show_calibrated_raw_members_and_the_decision(loaded) -> None:
    _, _, predictions = loaded
    rows = session.prediction_rows(predictions, 0, threshold=0.5)
    assert rows.columns.tolist() == ["Finding", "Calibrated", "Raw model", "Decision", "member-0", "member-1"]
    # the ensemble has no fitted combination: the sigmoid of the members' mean logit (not the mean of their probabilities)
    expected = 1.0 / (1.0 + np.exp(-predictions.logits[:, 0].mean(axis=0)))
    np.testing.assert_allclose(rows["Calibrated"], expected)
    np.testing.assert_allclose(rows[["member-0", "member-1"]].to_numpy().T, predictions.calibrated[:, 0])
    assert ((rows["Calibrated"] >= 0.5) == (rows["Decision"] == "positive")).all()
    strict = session.prediction_rows(predictions, 0, threshold=1.0)
    assert set(strict["Decision"]) == {"negative"}


def test_single_image_predictions_equal_the_table_path(loaded) -> None:
    from chexcft.io import read_xray

    models, table, predictions = loaded
    single = session.predict_pixels_members(models, read_xray(table.loc[0, "abs_path"]).pixels)
    np.testing.assert_allclose(single.calibrated[:, 0], predictions.calibrated[:, 0], atol=1e-6)


def test_labels_come_from_the_groundtruth_image_or_study_level(inputs: ViewerInputs, tmp_path: Path, loaded) -> None:
    _, table, _ = loaded
    image_level = session.load_labels(table, inputs.groundtruth_csv, inputs.tree.root)
    truth = pd.read_csv(inputs.groundtruth_csv)
    np.testing.assert_array_equal(image_level["Edema"].to_numpy(), truth["Edema"].to_numpy())
    studies = table.drop_duplicates("Study")
    study_csv = tmp_path / "study_truth.csv"
    pd.DataFrame({"Study": studies["Study"] + "/", "Edema": np.arange(len(studies)) % 2}).to_csv(study_csv, index=False)
    study_level = session.load_labels(table, study_csv)
    first = table.index[table["Study"] == studies["Study"].iloc[1]]
    assert (study_level.loc[first, "Edema"] == 1).all()
    assert study_level["Cardiomegaly"].isna().all()
    folder = session.load_table(inputs.tree.root / "CheXpert-v1.0-small" / "valid")
    assert session.load_labels(folder) is None


def test_study_index_filters_and_sorts(loaded) -> None:
    models, table, predictions = loaded
    finding = "Edema"
    labels = table[list(OBSERVATIONS)]
    index = browser.study_index(table, predictions.mean(), OBSERVATIONS.index(finding), labels, finding)
    assert len(index) == table["Study"].nunique()
    # probability is the max over a study's readable views
    for _, row in index.iterrows():
        expected = np.nanmax(predictions.mean()[row["rows"], OBSERVATIONS.index(finding)])
        assert row["probability"] == pytest.approx(expected)
    by_probability = browser.select_studies(index, sort="probability")
    assert by_probability["probability"].is_monotonic_decreasing
    by_disagreement = browser.select_studies(index, sort="disagreement", descending=True)
    assert by_disagreement["disagreement"].dropna().is_monotonic_decreasing
    positives = browser.select_studies(index, label="positive")
    assert len(positives) and (positives["label"] == 1.0).all()
    hits = browser.select_studies(index, search="PATIENT90001")
    assert hits["Study"].str.contains("patient90001").all() and len(hits) == 1
    patient = index["Patient"].iloc[0]
    assert set(browser.select_studies(index, patient=patient)["Patient"]) == {patient}
    with pytest.raises(ValueError):
        browser.select_studies(index, sort="colour")


def test_label_summary_names_positive_and_uncertain_findings() -> None:
    row = pd.Series({"Edema": 1.0, "Atelectasis": -1.0, "Cardiomegaly": 0.0, "Fracture": np.nan})
    observations = ("Edema", "Atelectasis", "Cardiomegaly", "Fracture")
    expected = "Edema positive, Atelectasis uncertain, the other 1 negative, 1 unlabelled"
    assert browser.label_summary(row, observations) == expected
    assert browser.label_summary(pd.Series({"Edema": 0.0}), ("Edema",)) == "1 negative"


def test_study_label_prefers_positive_then_uncertain() -> None:
    assert browser.study_label(pd.Series([0.0, 1.0, np.nan])) == 1.0
    assert browser.study_label(pd.Series([0.0, -1.0])) == -1.0
    assert np.isnan(browser.study_label(pd.Series([np.nan])))


def test_submission_export_passes_the_scorer_checks(loaded) -> None:
    from chexcft.submission import check_submission

    _, table, predictions = loaded
    data = exports.submission_csv(predictions.frame(), table)
    frame = pd.read_csv(io.BytesIO(data), dtype={"Study": str})
    check_submission(frame, table)
    assert list(frame.columns) == ["Study", *COMPETITION_TASKS]
    assert len(frame) == table["Study"].nunique()
    per_image = pd.read_csv(io.BytesIO(exports.predictions_csv(predictions.frame())))
    assert len(per_image) == len(table) - 1 and list(per_image.columns) == ["Path", *OBSERVATIONS]
    with pytest.raises(SubmissionError):
        exports.submission_csv(predictions.frame().iloc[:2], table)


def _png_bytes(height: int = 40, width: int = 36) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_xray(height, width, seed=3)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_reads_by_content_and_refuses_bad_files_with_the_reader_message() -> None:
    good = _png_bytes()
    xray = upload.read_upload("no-extension", good)
    assert xray.pixels.shape == (40, 36) and xray.meta["format"] == "png"
    assert upload.upload_header("x.png", good) is None
    with pytest.raises(UnreadableImageError, match=r"bad\.png: not an image"):
        upload.read_upload("bad.png", b"this is plain text, not an X-ray")
    with pytest.raises(UnreadableImageError, match=r"big\.dcm: .*over the upload limit"):
        upload.read_upload("big.dcm", good, max_bytes=100)
    with pytest.raises(UnreadableImageError, match="truncated"):
        upload.read_upload("cut.png", good[: len(good) // 2])
    import pickle

    with pytest.raises(UnreadableImageError, match="model.pkl"):
        upload.read_upload("model.pkl", pickle.dumps({"a": 1}))


def test_upload_header_hides_phi_unless_asked(inputs: ViewerInputs) -> None:
    path = inputs.tree.root / inputs.tree.dicom_study / "view1_frontal.dcm"
    data = path.read_bytes()
    hidden = upload.upload_header("frontal.dcm", data)
    shown = upload.upload_header("frontal.dcm", data, include_phi=True)
    assert "PatientID" not in hidden and shown["PatientID"] == "anonymous"
    assert hidden["Modality"] == "DX"


def test_window_range_zoom_and_overlay() -> None:
    rescale = {"RescaleSlope": "2", "RescaleIntercept": "-10"}
    limits = images.window_range({"bits": 12, "window": None, "voi": "none"}, rescale)
    assert (limits.low, limits.high, limits.from_file) == (-10.0, 8180.0, False)
    from_file = images.window_range({"bits": 12, "window": (500.0, 200.0), "voi": "LINEAR"})
    assert (from_file.center, from_file.width, from_file.from_file) == (500.0, 200.0, True)
    picture = np.arange(100 * 80, dtype=np.uint8).reshape(100, 80)
    crop = images.zoom(picture, 2.0, 1.0, 0.0)
    assert crop.shape == (50, 40) and crop[0, -1] == picture[0, -1]
    assert images.zoom(picture, 1.0).shape == picture.shape
    grey = np.zeros((10, 12), dtype=np.float32)
    heat = np.zeros_like(grey)
    heat[0, 0] = 1.0
    blended = images.overlay(grey, heat, 1.0)
    assert blended.shape == (10, 12, 3) and blended[0, 0].sum() > 0 and (images.overlay(grey, heat, 0.0) == 0).all()
    assert images.display_size(picture, 200).shape == (200, 160)


def test_performance_numbers_come_from_the_evaluation_package(loaded) -> None:
    from chexcft.evaluation import evaluate

    models, table, predictions = loaded
    labels = table[list(OBSERVATIONS)]
    readable = np.isfinite(predictions.mean()).all(axis=1)
    findings = performance.evaluable_findings(labels[readable], predictions.observations)
    assert set(COMPETITION_TASKS) <= set(findings)
    truth = performance.study_groundtruth(predictions.paths, labels, COMPETITION_TASKS)
    partial = labels.copy()
    partial.iloc[:3] = np.nan  # a ground truth that covers only some images
    covered = performance.labelled_rows(predictions.mean(), partial)
    assert not covered[:3].any() and (covered[3:] == readable[3:]).all()
    assert set(COMPETITION_TASKS) <= set(performance.evaluable_findings(partial[covered], predictions.observations))
    tables = {"calibrated": performance.study_predictions(predictions.frame(), COMPETITION_TASKS)}
    rows = performance.auc_rows(truth, tables, COMPETITION_TASKS, bootstrap=50)
    direct = evaluate(truth, tables, ensembles=(), bootstrap=50)
    assert rows[0]["auc"] == direct[0]["auc"]
    table_view = performance.auc_table(rows)
    assert table_view["finding"].tolist() == list(COMPETITION_TASKS)
    assert {"calibrated AUC", "calibrated 95% CI"} <= set(table_view.columns)
    png = performance.roc_png(truth, tables)
    assert png.startswith(b"\x89PNG")
    curve = performance.reliability(np.array([0, 0, 1, 1, np.nan]), np.array([0.1, 0.2, 0.8, 0.9, 0.5]), bins=5)
    assert curve["n"] == 4 and curve["ece"] == pytest.approx(0.15)
    reliability = performance.reliability_table(labels, predictions.mean("uncalibrated"), predictions.mean(),
                                                predictions.observations, ["Edema"])
    assert reliability.loc[0, "images"] == readable.sum()
    figure = performance.reliability_figure(labels, predictions.mean("uncalibrated"), predictions.mean(),
                                            predictions.observations, ["Edema", "Cardiomegaly"])
    assert len(figure.axes) == 2


def test_cft_reports_are_read_per_run(inputs: ViewerInputs, tmp_path: Path) -> None:
    reports = performance.cft_reports([*inputs.run_dirs, tmp_path], ["member-0", "member-1", "plain"])
    assert reports["plain"] is None
    assert reports["member-0"]["observation"].tolist() == list(OBSERVATIONS)
    assert performance.before_after_columns(reports["member-0"]) == [("valid_before", "valid_after")]
    both = pd.DataFrame({"valid_before": [0.5], "valid_after": [0.6],
                         "test_auc_before": [0.5], "test_auc_after": [0.7]})
    assert performance.before_after_columns(both)[0] == ("test_auc_before", "test_auc_after")
    (tmp_path / "cft").mkdir()
    (tmp_path / "cft" / "report.csv").write_bytes(b"")
    with pytest.raises(ChexcftError, match="report.csv"):
        performance.cft_reports([tmp_path], ["broken"])
