"""`chexcft evaluate` beyond the five: any finding set, join keys, prob_ prefixes, NIH <-> CheXpert, reliability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.errors import ChexcftError, InvalidDatasetError, SubmissionError
from chexcft.evaluation.bootstrap import bootstrap_aucs, stratified_weights
from chexcft.evaluation.files import load_evaluation
from chexcft.evaluation.findings import canonical, match_findings
from chexcft.evaluation.metrics import MIN_CLASS_COUNT, is_reliable
from chexcft.evaluation.report import evaluate_table, score_table

NIH = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
       "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]


def _nih_files(tmp_path: Path, n: int = 300, seed: int = 0) -> tuple[Path, Path, pd.DataFrame]:
    """An NIH-style per-image ground truth (Image Index, 0/1 columns) and prob_<Finding> predictions, shuffled."""
    rng = np.random.default_rng(seed)
    names = [f"{i:08d}_000.png" for i in range(n)]
    gt = pd.DataFrame({"Image Index": names, "Patient ID": np.arange(n), "View Position": "PA"})
    for finding in NIH:
        gt[finding] = (rng.random(n) < 0.2).astype(int)
    pred = pd.DataFrame({"Image Index": names})
    for finding in NIH:
        pred[f"prob_{finding}"] = 1 / (1 + np.exp(-(gt[finding] * 1.5 + rng.normal(size=n))))
    gt_path, pred_path = tmp_path / "gt.csv", tmp_path / "pred.csv"
    gt.to_csv(gt_path, index=False)
    pred.sample(frac=1.0, random_state=1).to_csv(pred_path, index=False)
    return gt_path, pred_path, gt.merge(pred, on="Image Index")


def test_canonical_names() -> None:
    assert canonical("prob_Pleural_Thickening") == canonical("pleural thickening") == "pleural thickening"
    assert canonical(" PROB_Effusion ") == "effusion"


def test_nih_vocabulary_all_findings_by_image_key(tmp_path: Path) -> None:
    gt_path, pred_path, joined = _nih_files(tmp_path)
    inputs = load_evaluation(gt_path, {"m": pred_path}, tasks="all")
    assert inputs.key == "Image Index"
    assert inputs.match.tasks == tuple(NIH)
    table = score_table(inputs.groundtruth, inputs.predictions, ensembles=(), tasks=inputs.match.tasks,
                        key=inputs.key, match=inputs.match)
    row = evaluate_table(table, bootstrap=50)[0]
    for finding in NIH:
        assert row["auc"][finding] == pytest.approx(roc_auc_score(joined[finding], joined[f"prob_{finding}"]), abs=1e-6)
        assert row["radiologists_below"][finding] is None  # the benchmark radiologists read CheXpert studies
    # "Pleural Effusion" and the competition set resolve to NIH's own column through the one mapping table.
    five = load_evaluation(gt_path, {"m": pred_path}, tasks="competition")
    assert five.match.tasks == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion")


def test_chexpert_model_on_nih_labels_maps_and_reports_what_one_side_lacks(tmp_path: Path) -> None:
    gt_path, _, joined = _nih_files(tmp_path)
    rng = np.random.default_rng(3)
    chexpert = pd.DataFrame({"Path": [f"patient{i:05d}/study1/{name}" for i, name in enumerate(joined["Image Index"])]})
    for column in ["Atelectasis", "Pleural Effusion", "Lung Lesion", "Support Devices", "No Finding"]:
        chexpert[column] = rng.random(len(chexpert))
    pred_path = tmp_path / "chexcft.csv"
    chexpert.to_csv(pred_path, index=False)
    inputs = load_evaluation(gt_path, {"model": pred_path}, key="Image Index", tasks="all")
    assert inputs.match.tasks == ("Lung Lesion", "Atelectasis", "Pleural Effusion")  # CheXpert order
    assert inputs.match.groundtruth["Lung Lesion"] == ["Mass", "Nodule"]
    truth = inputs.groundtruth.set_index("Image Index").loc[joined["Image Index"]]
    np.testing.assert_array_equal(truth["Lung Lesion"], np.maximum(joined["Mass"], joined["Nodule"]))
    np.testing.assert_array_equal(truth["Pleural Effusion"], joined["Effusion"])
    lacking = inputs.match.lacking("model")
    assert lacking["not_in_groundtruth"] == ["Support Devices", "No Finding"]
    assert set(lacking["no_counterpart"]) == {"Emphysema", "Fibrosis", "Hernia"}
    assert "Cardiomegaly" in lacking["not_predicted"]
    with pytest.raises(ChexcftError, match="'Support Devices': the ground truth has no such column"):
        load_evaluation(gt_path, {"model": pred_path}, key="Image Index", tasks="Atelectasis,Support Devices")
    with pytest.raises(ChexcftError, match="'Edema': not predicted by model"):
        load_evaluation(gt_path, {"model": pred_path}, key="Image Index", tasks="Edema")


def test_bad_key_and_duplicated_rows_are_named(tmp_path: Path) -> None:
    gt_path, pred_path, _ = _nih_files(tmp_path, n=40)
    with pytest.raises(SubmissionError, match="no key column 'Study ID'"):
        load_evaluation(gt_path, {"m": pred_path}, key="Study ID")
    pred = pd.read_csv(pred_path)
    pd.concat([pred, pred.iloc[[5]]]).to_csv(pred_path, index=False)
    inputs = load_evaluation(gt_path, {"m": pred_path}, tasks="all")
    with pytest.raises(SubmissionError, match=r"duplicated Image Index values in m 1: " + pred["Image Index"][5]):
        score_table(inputs.groundtruth, inputs.predictions, ensembles=(), tasks=inputs.match.tasks, key=inputs.key)
    pred.iloc[1:].assign(**{"Image Index": lambda f: f["Image Index"].where(f.index != 3, "extra.png")}).to_csv(
        pred_path, index=False)
    inputs = load_evaluation(gt_path, {"m": pred_path}, tasks="all")
    with pytest.raises(SubmissionError) as info:
        score_table(inputs.groundtruth, inputs.predictions, ensembles=(), tasks=inputs.match.tasks, key=inputs.key)
    assert "Image Index values missing from m 2:" in str(info.value)
    assert "not in the ground truth 1: extra.png" in str(info.value)


def test_blank_and_uncertain_labels_follow_the_chosen_rule(tmp_path: Path) -> None:
    gt_path, pred_path, _ = _nih_files(tmp_path, n=60)
    gt = pd.read_csv(gt_path).astype({"Edema": float})
    gt.loc[[2, 4], "Edema"] = np.nan
    gt.loc[7, "Edema"] = -1
    gt["Hernia"] = np.nan  # a column without a single label: not labelled, never evaluated
    gt.to_csv(gt_path, index=False)
    with pytest.raises(InvalidDatasetError, match="'Edema': label is blank .*--unlabelled"):
        load_evaluation(gt_path, {"m": pred_path}, tasks="all")
    inputs = load_evaluation(gt_path, {"m": pred_path}, tasks="all", unlabelled="ignore", uncertain="ignore")
    assert "Hernia" not in inputs.match.tasks and inputs.match.unlabelled == ["Hernia"]
    table = score_table(inputs.groundtruth, inputs.predictions, ensembles=(), tasks=inputs.match.tasks,
                        key=inputs.key)
    row = evaluate_table(table, bootstrap=0)[0]
    joined = inputs.groundtruth.merge(inputs.predictions["m"], on="Image Index", suffixes=("", "_p")).dropna()
    assert row["positives"]["Edema"] + row["negatives"]["Edema"] == 57
    assert row["auc"]["Edema"] == pytest.approx(roc_auc_score(joined["Edema"], joined["Edema_p"]), abs=1e-6)


def test_few_positives_are_flagged_unreliable_without_an_interval() -> None:
    assert MIN_CLASS_COUNT == 10
    assert is_reliable(10, 10) and not is_reliable(9, 500) and not is_reliable(500, 3)
    assert is_reliable(3, 3, minimum=3)
    rng = np.random.default_rng(0)
    n = 200
    y = np.zeros((n, 2))
    y[:50, 0] = 1
    y[:2, 1] = 1  # two positives: a bootstrap cannot make an interval of that
    studies = [f"p/patient{i}/study1" for i in range(n)]
    gt = pd.DataFrame(y, columns=["A", "B"]).assign(Study=studies)
    pred = pd.DataFrame(rng.random((n, 2)) + y, columns=["A", "B"]).assign(Study=studies)
    row = evaluate_table(score_table(gt, {"m": pred}, ensembles=(), tasks=("A", "B")), bootstrap=100)[0]
    assert row["reliable"] == {"A": True, "B": False}
    assert row["ci"]["B"] == [None, None] and row["delong_ci"]["B"] == [None, None]
    assert row["ci"]["A"][0] is not None
    assert "only 2 positives" in row["unreliable"]["B"]


def test_vectorised_bootstrap_equals_a_per_replicate_sklearn_loop() -> None:
    rng = np.random.default_rng(5)
    n, tasks = 400, 4
    y = (rng.random((n, tasks)) < [0.1, 0.3, 0.5, 0.8]).astype(float)
    scores = np.round(rng.random((n, tasks)) + 0.7 * y, 2)  # rounded: many ties
    weights = stratified_weights(y, 200, seed=11)
    fast = bootstrap_aucs(y, scores, weights)
    loop = np.empty_like(fast)
    for b in range(weights.shape[0]):
        index = np.repeat(np.arange(n), weights[b])
        for t in range(tasks):
            loop[b, t] = roc_auc_score(y[index, t], scores[index, t])
    np.testing.assert_allclose(fast, loop, rtol=0, atol=1e-12)
    # Stratified: every replicate keeps every task's positive count.
    np.testing.assert_array_equal(weights @ y, np.tile(y.sum(axis=0), (200, 1)))


def test_match_findings_refuses_an_empty_intersection() -> None:
    with pytest.raises(ChexcftError, match="no finding is both labelled"):
        match_findings(["Edema"], {"m": ["Fracture"]}, "all")


def _nih_benchmark(shared_dir: Path | None) -> Path:
    folder = None if shared_dir is None else shared_dir / "benchmarks" / "nih-test"
    if folder is None or not (folder / "chexnet_predictions.csv").is_file():
        pytest.skip("../shared/benchmarks/nih-test is absent: the CheXNet reproduction files are not redistributed")
    return folder


def test_cli_reproduces_the_published_chexnet_table(shared_dir: Path | None, tmp_path: Path) -> None:
    folder = _nih_benchmark(shared_dir)
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(app, [
        "evaluate", "--groundtruth", str(folder / "groundtruth.csv"), "--predictions",
        str(folder / "chexnet_predictions.csv"), "--tasks", "all", "--bootstrap", "200", "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())[0]
    published = pd.read_csv(folder / "chexnet_aucs.csv")
    assert row["key"] == "Image Index" and row["n_studies"] == 22433
    assert list(row["auc"]) == list(published["label"])
    for label, auc in zip(published["label"], published["auc"]):
        assert round(row["auc"][label], 4) == round(float(auc), 4), label
        low, high = row["ci"][label]
        assert low < row["auc"][label] < high
    assert all(row["reliable"].values())


@pytest.mark.parametrize(("studies", "expected"), [
    # CheXpert studies joined by study: the benchmark exists for the competition tasks only.
    ([f"CheXpert-v1.0/valid/patient{i:05d}/study1" for i in range(60)], {"Atelectasis", "Pleural Effusion"}),
    # NIH images (one study each, chexcft.keys): the radiologists never read them, so no points at all.
    ([f"images_001/images/{i:08d}_000" for i in range(60)], set()),
    # MIMIC-CXR studies: another hospital's reports, never read by CheXpert's radiologists.
    ([f"files/p10/p{10000000 + i}/s{50000000 + i}" for i in range(60)], set()),
])
def test_roc_figure_draws_radiologists_only_where_the_benchmark_exists(studies: list[str], expected: set[str],
                                                                       tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    from chexcft.evaluation.plots import plot_roc, roc_figure
    from chexcft.evaluation.report import ScoreTable

    tasks = ("Atelectasis", "Lung Lesion", "Pleural Effusion", "No Finding", "Pleural Other", "Lung Opacity")
    rng = np.random.default_rng(0)
    labels = (rng.random((len(studies), len(tasks))) < 0.3).astype(float)
    table = ScoreTable(studies, tasks, labels, {"m": labels + rng.normal(size=labels.shape)}, {"m": "model"})
    figure = roc_figure(table)
    marked = {ax.get_title() for ax in figure.axes if "radiologists" in ax.get_legend_handles_labels()[1]}
    assert marked == expected
    assert sum(ax.get_visible() for ax in figure.axes) == len(tasks)  # six panels wrap onto two rows of five
    plt.close(figure)
    row = evaluate_table(table, bootstrap=0)[0]
    assert {t for t, below in row["radiologists_below"].items() if below is not None} == expected
    assert plot_roc(table, tmp_path / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
