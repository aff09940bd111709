"""app/viewer.py headless through streamlit.testing.v1.AppTest, given its options the way `chexcft view` does
(sys.argv after `--`)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.builders import synthetic_xray
from tests.viewer_builders import ViewerInputs, make_viewer_inputs

APP = Path(__file__).resolve().parent.parent / "app" / "viewer.py"
TIMEOUT = 120


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> ViewerInputs:
    return make_viewer_inputs(tmp_path_factory.mktemp("viewer-app"))


@pytest.fixture(scope="module")
def expected(inputs: ViewerInputs) -> pd.DataFrame:
    """What `chexcft predict` gives for every image (the ensemble's calibrated probabilities), by Path."""
    from chexcft.data import read_table
    from chexcft.predict import predict_table

    result = predict_table(read_table(inputs.data_csv, inputs.tree.root), [inputs.ensemble_dir])
    return result.predictions.set_index("Path")


def start(monkeypatch: pytest.MonkeyPatch, argv: list[str]):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setattr(sys, "argv", [str(APP), *argv])
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    return at.run()


def no_problems(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def metric(at, label_start: str):
    found = [m for m in at.metric if m.label.startswith(label_start)]
    assert found, [m.label for m in at.metric]
    return found[0]


def test_every_page_renders_without_exception(monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs) -> None:
    at = start(monkeypatch, inputs.argv())
    no_problems(at)
    assert at.header[0].value == "Studies"
    assert len(at.image) == 1
    for page in ("Performance", "Upload", "Export", "Studies"):
        at.sidebar.radio(key="page").set_value(page).run()
        no_problems(at)
        assert at.header[0].value.startswith(page)
    at.sidebar.radio(key="page").set_value("Performance").run()
    labels = [column for frame in at.dataframe for column in frame.value.columns]
    assert "calibrated AUC" in labels and "raw model AUC" in labels and "member-0 95% CI" in labels
    assert len(at.image) == 2  # the ROC figure and the reliability diagrams
    assert any("valid_after" in frame.value.columns for frame in at.dataframe)  # the CFT reports


def test_selecting_a_study_view_and_finding_updates_the_panel(
    monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs, expected: pd.DataFrame
) -> None:
    at = start(monkeypatch, inputs.argv())
    study = inputs.tree.dicom_study
    at.selectbox(key="study").set_value(study).run()
    no_problems(at)
    frontal = f"{study}/view1_frontal.dcm"
    assert any(frontal in c.value for c in at.caption)
    shown = metric(at, "Atelectasis (calibrated)")
    assert shown.value == f"{expected.loc[frontal, 'Atelectasis']:.3f}"

    at.sidebar.selectbox(key="finding").set_value("Pleural Effusion").run()
    no_problems(at)
    assert metric(at, "Pleural Effusion (calibrated)").value == f"{expected.loc[frontal, 'Pleural Effusion']:.3f}"

    at.radio(key="view").set_value("view2_lateral.jpg").run()
    no_problems(at)
    lateral = f"{study}/view2_lateral.jpg"
    assert metric(at, "Pleural Effusion (calibrated)").value == f"{expected.loc[lateral, 'Pleural Effusion']:.3f}"

    at.sidebar.slider(key="threshold").set_value(0.0).run()
    assert metric(at, "Decision").value == "positive"
    at.sidebar.slider(key="threshold").set_value(1.0).run()
    assert metric(at, "Decision").value == "negative"


def test_dicom_header_hides_phi_until_toggled_and_window_follows_the_sliders(
    monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs
) -> None:
    at = start(monkeypatch, inputs.argv())
    at.selectbox(key="study").set_value(inputs.tree.dicom_study).run()

    def header_keywords() -> list[str]:
        return [k for frame in at.dataframe if "keyword" in frame.value.columns for k in frame.value["keyword"]]

    assert "Modality" in header_keywords() and "PatientID" not in header_keywords()
    at.toggle(key="study-phi").set_value(True).run()
    no_problems(at)
    assert "PatientID" in header_keywords()

    at.checkbox(key="study-custom").check().run()
    at.slider(key="study-center").set_value(1000.0).run()
    at.slider(key="study-width").set_value(500.0).run()
    no_problems(at)
    assert "window (1000.0, 500.0)" in at.image[0].proto.imgs[0].caption
    at.slider(key="study-zoom").set_value(2.0).run()
    no_problems(at)
    assert "zoom 2x" in at.image[0].proto.imgs[0].caption


def test_sorting_by_disagreement_lists_the_worst_study_first(
    monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs
) -> None:
    at = start(monkeypatch, inputs.argv())
    at.selectbox(key="sort").set_value("disagreement with label").run()
    no_problems(at)
    listed = at.dataframe[0].value
    assert listed["disagreement"].dropna().is_monotonic_decreasing
    options = at.selectbox(key="study").options  # the study picker lists them in the same order
    assert [option.split("  (")[0] for option in options] == listed["Study"].tolist()
    at.text_input(key="search").input("patient90003").run()
    assert at.dataframe[0].value["Study"].tolist() == [inputs.tree.lateral_only_study]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(synthetic_xray(48, 40, seed=5)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_upload_shows_the_reader_error_and_a_good_one_is_predicted(
    monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs
) -> None:
    at = start(monkeypatch, inputs.argv())
    at.sidebar.radio(key="page").set_value("Upload").run()
    at.file_uploader(key="upload").set_value(("scan.png", b"%PDF-1.4 not an X-ray", "image/png")).run()
    assert not at.exception
    assert len(at.error) == 1 and "scan.png" in at.error[0].value and "PDF" in at.error[0].value

    at.file_uploader(key="upload").set_value(("chest", _png(), "application/octet-stream")).run()
    no_problems(at)
    value = float(metric(at, "Atelectasis (calibrated)").value)
    assert 0.0 <= value <= 1.0
    assert len(at.image) == 1


def test_export_buttons_carry_a_valid_submission_and_the_predictions(
    monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs, expected: pd.DataFrame
) -> None:
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    from chexcft.data import read_table
    from chexcft.submission import check_submission

    stores: list[MemoryMediaFileStorage] = []

    class RecordingStorage(MemoryMediaFileStorage):
        def __init__(self, endpoint: str) -> None:
            super().__init__(endpoint)
            stores.append(self)

    monkeypatch.setattr(app_test, "MemoryMediaFileStorage", RecordingStorage)
    at = start(monkeypatch, inputs.argv())
    at.sidebar.radio(key="page").set_value("Export").run()
    no_problems(at)

    def content(key: str) -> bytes:
        url = at.download_button(key=key).proto.url
        return stores[-1].get_file(url.rpartition("/")[2]).content

    submission = pd.read_csv(io.BytesIO(content("download-submission")), dtype={"Study": str})
    table = read_table(inputs.data_csv, inputs.tree.root)
    check_submission(submission, table)
    predictions = pd.read_csv(io.BytesIO(content("download-predictions"))).set_index("Path")
    assert inputs.tree.broken_image not in predictions.index
    np.testing.assert_allclose(predictions.to_numpy(), expected.loc[predictions.index, predictions.columns].to_numpy(),
                               atol=1e-6)
    assert at.warning and "could not be read" in at.warning[0].value


def test_a_single_run_without_groundtruth_still_shows_every_page(
    monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs
) -> None:
    folder = inputs.tree.root / "CheXpert-v1.0-small" / "valid"
    at = start(monkeypatch, ["--model", str(inputs.run_dirs[0]), "--data", str(folder)])
    no_problems(at)
    for page in ("Performance", "Export"):
        at.sidebar.radio(key="page").set_value(page).run()
        no_problems(at)
    at.sidebar.radio(key="page").set_value("Performance").run()
    assert any("--groundtruth" in i.value for i in at.info)


def test_bad_options_show_an_error_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs, tmp_path: Path
) -> None:
    at = start(monkeypatch, ["--model", str(tmp_path / "missing-run"), "--data", str(inputs.data_csv)])
    assert not at.exception
    assert "missing-run" in at.error[0].value
    at = start(monkeypatch, ["--data", str(inputs.data_csv)])
    assert not at.exception
    assert "--model" in at.error[0].value


def test_threshold_control_offers_operating_points_and_saved_thresholds(
    monkeypatch: pytest.MonkeyPatch, inputs: ViewerInputs, expected: pd.DataFrame
) -> None:
    import json

    from chexcft.viewer import performance

    saved = inputs.ensemble_dir / "thresholds.json"
    saved.write_text(json.dumps({"rule": "youden", "thresholds": {"Atelectasis": 1.5}}))  # above every probability
    try:
        at = start(monkeypatch, inputs.argv())
        choices = at.sidebar.selectbox(key="threshold-rule").options
        assert choices == ["manual", performance.SAVED, "youden", "sensitivity=0.9", "specificity=0.9", "ppv=0.8"]
        at.sidebar.selectbox(key="threshold-rule").set_value(performance.SAVED).run()
        no_problems(at)
        assert metric(at, "Decision").value == "negative"
        at.sidebar.selectbox(key="threshold-rule").set_value("sensitivity=0.9").run()
        no_problems(at)
        assert any("sensitivity=0.9, chosen on these images' labels" in c.value for c in at.sidebar.caption)
    finally:
        saved.unlink()
    at = start(monkeypatch, inputs.argv())
    assert performance.SAVED not in at.sidebar.selectbox(key="threshold-rule").options
    at.sidebar.radio(key="page").set_value("Performance").run()
    no_problems(at)
    tables = [frame.value for frame in at.dataframe if "calibrated 95% CI" in frame.value.columns]
    few = tables[0][tables[0]["positives"] < 10]
    assert len(few) and (few["calibrated 95% CI"] == "unreliable").all()  # small fixture: few positives
