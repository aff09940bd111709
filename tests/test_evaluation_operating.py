"""Operating points: thresholds chosen on one split with a known answer, rates and intervals on another, saved."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from chexcft.cli import app
from chexcft.errors import ChexcftError
from chexcft.evaluation.bootstrap import stratified_weights
from chexcft.evaluation.operating import (
    add_decisions,
    choose_threshold,
    load_thresholds,
    operating_point,
    parse_rule,
)


def _known_case() -> tuple[np.ndarray, np.ndarray]:
    """50 positives scored 0.51..1.00 and 60 negatives scored 0.01..0.60 (overlap 0.51..0.60)."""
    positives = np.arange(51, 101) / 100
    negatives = np.arange(1, 61) / 100
    return np.r_[np.ones(50), np.zeros(60)], np.r_[positives, negatives]


@pytest.mark.parametrize(("rule", "threshold", "sensitivity", "specificity", "ppv"), [
    ("youden", 0.51, 1.0, 50 / 60, 50 / 60),  # J = 1 + 50/60 - 1 is the largest
    ("sensitivity=0.9", 0.56, 0.9, 55 / 60, 45 / 50),  # highest threshold keeping 45 of 50 positives
    ("specificity=0.9", 0.55, 46 / 50, 0.9, 46 / 52),  # lowest threshold with at most 6 of 60 negatives above
    ("ppv=0.8", 0.49, 1.0, 48 / 60, 50 / 62),  # 50/62 = 0.806 >= 0.8, while 0.48 gives 50/63 = 0.794
])
def test_thresholds_have_the_known_answer(rule: str, threshold: float, sensitivity: float, specificity: float,
                                          ppv: float) -> None:
    y, s = _known_case()
    chosen = choose_threshold(y, s, parse_rule(rule))
    assert chosen == pytest.approx(threshold)
    # Held out: the same scores in another order, plus one not-labelled row that must be ignored.
    order = np.random.default_rng(0).permutation(y.size)
    held_y, held_s = np.r_[y[order], np.nan], np.r_[s[order], 0.99]
    point = operating_point(parse_rule(rule), y, s, held_y, held_s, stratified_weights(held_y, 300, seed=1))
    assert point["sensitivity"] == pytest.approx(sensitivity, abs=1e-6)
    assert point["specificity"] == pytest.approx(specificity, abs=1e-6)
    assert point["ppv"] == pytest.approx(ppv, abs=1e-6)
    assert point["chosen_on"]["sensitivity"] == pytest.approx(sensitivity, abs=1e-6)
    for metric in ("sensitivity", "specificity", "ppv", "npv"):
        low, high = point[f"{metric}_ci"]
        assert low <= point[metric] <= high


def test_unreachable_targets_and_bad_rules() -> None:
    y, s = _known_case()
    point = operating_point(parse_rule("ppv=1.0"), y, s, y, s)
    assert point["threshold"] == pytest.approx(0.61)  # above every negative: PPV 1 is reachable
    y_bad = np.r_[np.ones(5), np.zeros(5)]
    s_bad = np.r_[np.zeros(5), np.ones(5)]  # inverted scores: the best PPV is 0.5 at the lowest threshold
    assert choose_threshold(y_bad, s_bad, parse_rule("ppv=0.8")) is None
    assert "no threshold reaches ppv=0.8" in operating_point(parse_rule("ppv=0.8"), y_bad, s_bad, y, s)["note"]
    for text in ("youden=1", "sensitivity", "sensitivity=1.5", "f1", "ppv=abc"):
        with pytest.raises(ChexcftError, match="--operating-point"):
            parse_rule(text)


def test_few_held_out_positives_get_no_interval() -> None:
    y, s = _known_case()
    held_y = np.r_[np.ones(4), np.zeros(60)]
    held_s = np.r_[np.full(4, 0.9), np.arange(1, 61) / 100]
    point = operating_point(parse_rule("youden"), y, s, held_y, held_s, stratified_weights(held_y, 100, seed=0))
    assert point["reliable"] is False and point["sensitivity_ci"] == [None, None]


def test_cli_chooses_on_validation_saves_and_decides(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)

    def files(split: str, n: int) -> tuple[Path, Path]:
        names = [f"{split}{i:05d}.png" for i in range(n)]
        y = (rng.random((n, 2)) < 0.3).astype(int)
        gt = pd.DataFrame({"Image Index": names, "Effusion": y[:, 0], "Edema": y[:, 1]})
        pred = pd.DataFrame({"Image Index": names, "prob_Effusion": y[:, 0] + rng.normal(0, 0.7, n),
                             "prob_Edema": y[:, 1] + rng.normal(0, 0.7, n)})
        gt_path, pred_path = tmp_path / f"{split}_gt.csv", tmp_path / f"{split}_pred.csv"
        gt.to_csv(gt_path, index=False)
        pred.to_csv(pred_path, index=False)
        return gt_path, pred_path

    valid_gt, valid_pred = files("v", 300)
    test_gt, test_pred = files("t", 400)
    run = tmp_path / "run"
    out = tmp_path / "rows.json"
    result = CliRunner().invoke(app, [
        "evaluate", "--groundtruth", str(test_gt), "--predictions", str(test_pred), "--bootstrap", "100",
        "--operating-point", "sensitivity=0.9", "--validation-groundtruth", str(valid_gt),
        "--validation-predictions", str(valid_pred), "--save-thresholds", str(run), "--json", str(out),
    ])
    assert result.exit_code == 0, result.output
    row = json.loads(out.read_text())[0]
    effusion = row["operating_point"]["tasks"]["Effusion"]
    valid = pd.read_csv(valid_pred).merge(pd.read_csv(valid_gt), on="Image Index")
    expected = choose_threshold(valid["Effusion"].to_numpy(), valid["prob_Effusion"].to_numpy(),
                                parse_rule("sensitivity=0.9"))
    assert effusion["threshold"] == pytest.approx(expected, abs=1e-6)
    assert effusion["chosen_on"]["sensitivity"] >= 0.9
    saved = load_thresholds(run)
    assert saved["rule"] == "sensitivity=0.9" and saved["thresholds"]["Effusion"] == pytest.approx(expected, abs=1e-6)
    decided, missing = add_decisions(pd.read_csv(test_pred), saved["thresholds"])
    assert missing == []
    np.testing.assert_array_equal(decided["decision_prob_Effusion"],
                                  (decided["prob_Effusion"] >= saved["thresholds"]["Effusion"]).astype(float))
    no_valid = CliRunner().invoke(app, ["evaluate", "--groundtruth", str(test_gt), "--predictions", str(test_pred),
                                        "--operating-point", "youden"])
    assert "never on the evaluated one" in str(no_valid.exception)


def test_viewer_rule_thresholds_match_the_library() -> None:
    from chexcft.viewer.performance import rule_thresholds

    y, s = _known_case()
    labels = pd.DataFrame({"Edema": y, "Fracture": np.nan})
    probabilities = np.stack([s, s], axis=1)
    out = rule_thresholds("sensitivity=0.9", labels, probabilities, ["Edema", "Fracture"])
    assert out == {"Edema": pytest.approx(0.56)}
