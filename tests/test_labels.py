"""Uncertainty policies on hand-made label matrices: exact targets, masks, known and class targets."""

from __future__ import annotations

import numpy as np
import pytest

from chexcft.errors import ChexcftError, InvalidDatasetError
from chexcft.labels import (
    IGNORE_INDEX,
    POLICIES,
    make_targets,
    multiclass_observations,
    needs_self_training,
    parse_policy,
    relabel_uncertain,
)
from chexcft.schema import OBSERVATIONS

NAN = np.nan
# One column per policy; rows: positive, negative, uncertain, blank.
COLUMNS = ("Ign", "Zer", "One", "Mc", "Self", "LsrO", "LsrZ")
POLICY_OF = dict(zip(COLUMNS, ("U-Ignore", "U-Zeros", "U-Ones", "U-MultiClass", "U-SelfTrained", "LSR-Ones", "LSR-Zeros")))
RAW = np.array([[1.0] * 7, [0.0] * 7, [-1.0] * 7, [NAN] * 7])


def test_every_policy_blank_negative_exact_targets_and_masks():
    t = make_targets(RAW, COLUMNS, POLICY_OF, blank="negative", seed=3)
    lsr_ones, lsr_zeros = t.targets[2, 5], t.targets[2, 6]
    assert 0.55 <= lsr_ones <= 0.85 and 0.0 <= lsr_zeros <= 0.3
    expected_targets = np.array(
        [
            [1, 1, 1, 1, 1, 1, 1],
            [0, 0, 0, 0, 0, 0, 0],
            [0, 0, 1, 0, 0, lsr_ones, lsr_zeros],
            [0, 0, 0, 0, 0, 0, 0],
        ],
        dtype=np.float32,
    )
    expected_mask = np.array(
        [
            [1, 1, 1, 0, 1, 1, 1],
            [1, 1, 1, 0, 1, 1, 1],
            [0, 1, 1, 0, 0, 1, 1],
            [1, 1, 1, 0, 1, 1, 1],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(t.targets, expected_targets)
    np.testing.assert_array_equal(t.mask, expected_mask)
    assert t.multiclass == ("Mc",)
    np.testing.assert_array_equal(t.class_targets, np.array([[1], [0], [2], [0]], dtype=np.int64))
    np.testing.assert_array_equal(t.known, np.array([[True] * 7, [True] * 7, [False] * 7, [False] * 7]))
    assert t.targets.dtype == np.float32 and t.mask.dtype == np.float32 and t.class_targets.dtype == np.int64
    assert t.policies == tuple(POLICY_OF[c] for c in COLUMNS)


def test_every_policy_blank_ignored():
    t = make_targets(RAW, COLUMNS, POLICY_OF, blank="ignore", seed=3)
    np.testing.assert_array_equal(t.mask[3], np.zeros(7, dtype=np.float32))
    np.testing.assert_array_equal(t.mask[2], np.array([0, 1, 1, 0, 0, 1, 1], dtype=np.float32))
    np.testing.assert_array_equal(t.class_targets[:, 0], np.array([1, 0, 2, IGNORE_INDEX]))
    np.testing.assert_array_equal(t.known[:, 0], np.array([True, True, False, False]))


def test_lsr_draws_are_seeded_and_per_entry():
    raw = np.full((50, 2), -1.0)
    a = make_targets(raw, ("X", "Y"), {"X": "LSR-Ones", "Y": "LSR-Zeros"}, seed=7)
    b = make_targets(raw, ("X", "Y"), {"X": "LSR-Ones", "Y": "LSR-Zeros"}, seed=7)
    c = make_targets(raw, ("X", "Y"), {"X": "LSR-Ones", "Y": "LSR-Zeros"}, seed=8)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert not np.array_equal(a.targets, c.targets)
    assert a.targets[:, 0].min() >= 0.55 and a.targets[:, 0].max() <= 0.85
    assert a.targets[:, 1].min() >= 0.0 and a.targets[:, 1].max() <= 0.3
    assert len(np.unique(a.targets[:, 0])) == 50
    # An observation's draws do not depend on the other column's policy.
    d = make_targets(raw, ("X", "Y"), {"X": "LSR-Ones", "Y": "U-Ones"}, seed=7)
    np.testing.assert_array_equal(a.targets[:, 0], d.targets[:, 0])


def test_two_multiclass_columns_keep_observation_order():
    raw = np.array([[-1.0, 1.0, 0.0], [0.0, -1.0, 1.0]])
    t = make_targets(raw, ("P", "Q", "R"), {"P": "U-MultiClass", "Q": "U-Zeros", "R": "U-MultiClass"})
    assert t.multiclass == ("P", "R")
    np.testing.assert_array_equal(t.class_targets, np.array([[2, 0], [0, 1]]))
    np.testing.assert_array_equal(t.mask, np.array([[0, 1, 0], [0, 1, 0]], dtype=np.float32))
    np.testing.assert_array_equal(t.targets[:, 1], np.array([1, 0], dtype=np.float32))


def test_self_trained_soft_and_hard_relabel_and_known_from_original():
    raw = np.array([[-1.0, -1.0], [1.0, -1.0], [NAN, 0.0]])
    probs = np.array([[0.8, 0.2], [0.1, 0.4], [0.5, 0.5]])
    soft = relabel_uncertain(raw, probs)
    np.testing.assert_allclose(soft, np.array([[0.8, 0.2], [1.0, 0.4], [NAN, 0.0]]), rtol=1e-6)
    policies = {"S": "U-SelfTrained", "T": "U-SelfTrained"}
    first = make_targets(raw, ("S", "T"), policies)
    np.testing.assert_array_equal(first.mask, np.array([[0, 0], [1, 0], [1, 1]], dtype=np.float32))
    second = make_targets(soft, ("S", "T"), policies, known_raw=raw)
    np.testing.assert_allclose(second.targets, np.array([[0.8, 0.2], [1, 0.4], [0, 0]]), rtol=1e-6)
    np.testing.assert_array_equal(second.mask, np.ones((3, 2), dtype=np.float32))
    np.testing.assert_array_equal(second.known, np.array([[False, False], [True, False], [False, True]]))

    hard = relabel_uncertain(raw, probs, hard=True)
    np.testing.assert_array_equal(hard, np.array([[1.0, 0.0], [1.0, 0.0], [NAN, 0.0]], dtype=np.float32))
    only_first = relabel_uncertain(raw, probs, hard=True, columns=[True, False])
    np.testing.assert_array_equal(only_first[:, 1], raw[:, 1].astype(np.float32))
    with pytest.raises(ChexcftError):
        relabel_uncertain(raw, probs[:2])


def test_known_is_independent_of_policy():
    raw = np.array([[1.0, -1.0, NAN, 0.0]] * 2)
    names = ("A", "B", "C", "D")
    for policy in POLICIES:
        for blank in ("negative", "ignore"):
            t = make_targets(raw, names, policy, blank=blank)
            np.testing.assert_array_equal(t.known, np.array([[True, False, False, True]] * 2))


def test_invalid_values_and_shapes_name_row_and_column():
    raw = np.array([[1.0, 0.0], [2.0, 0.0]])
    with pytest.raises(InvalidDatasetError, match=r"row 1, column 'A'"):
        make_targets(raw, ("A", "B"), "U-Ones")
    with pytest.raises(InvalidDatasetError, match="shape"):
        make_targets(np.zeros((2, 3)), ("A", "B"), "U-Ones")
    with pytest.raises(ChexcftError, match="blank"):
        make_targets(np.zeros((2, 2)), ("A", "B"), "U-Ones", blank="zero")
    with pytest.raises(InvalidDatasetError, match="U-MultiClass"):
        make_targets(np.array([[0.4]]), ("A",), "U-MultiClass")


def test_parse_policy_presets_and_pairs():
    assert set(parse_policy("U-Zeros", OBSERVATIONS).values()) == {"U-Zeros"}
    paper = parse_policy("chexpert-paper", OBSERVATIONS)
    assert paper["Atelectasis"] == "U-Ones" and paper["Edema"] == "U-Ones"
    assert paper["Cardiomegaly"] == "U-MultiClass" and paper["Pleural Effusion"] == "U-MultiClass"
    assert paper["Consolidation"] == "U-SelfTrained"
    assert paper["Fracture"] == "U-Ones" and paper["No Finding"] == "U-Ones"
    pairs = parse_policy("Atelectasis=U-Ones, cardiomegaly=u-multiclass, *=U-Zeros, Edema=LSR-Ones", OBSERVATIONS)
    assert pairs["Atelectasis"] == "U-Zeros"  # "*" later in the list overrides earlier pairs
    assert pairs["Edema"] == "LSR-Ones" and pairs["Fracture"] == "U-Zeros"
    mixed = parse_policy("chexpert-paper,Fracture=U-Ignore", OBSERVATIONS)
    assert mixed["Fracture"] == "U-Ignore" and mixed["Cardiomegaly"] == "U-MultiClass"
    default = parse_policy("Edema=U-Zeros", OBSERVATIONS)
    assert default["Edema"] == "U-Zeros" and default["Atelectasis"] == "U-Ones"
    assert multiclass_observations(paper, OBSERVATIONS) == ("Cardiomegaly", "Pleural Effusion")
    assert needs_self_training(paper, OBSERVATIONS) and not needs_self_training(default, OBSERVATIONS)


@pytest.mark.parametrize("spec", ["U-Maybe", "Nodule=U-Ones", "Edema=U-Maybe", ""])
def test_parse_policy_rejects_unknown_names(spec):
    with pytest.raises(ChexcftError):
        parse_policy(spec, OBSERVATIONS)


def test_make_targets_accepts_spec_string_and_real_label_rows():
    from tests.builders import label_rows

    frame = label_rows(200, seed=0)
    raw = frame[list(OBSERVATIONS)].to_numpy(dtype=float)
    t = make_targets(raw, OBSERVATIONS, "chexpert-paper")
    assert t.targets.shape == (200, 14) and t.class_targets.shape == (200, 2)
    np.testing.assert_array_equal(t.known, (raw == 1) | (raw == 0))
    cardio = OBSERVATIONS.index("Cardiomegaly")
    assert (t.mask[:, cardio] == 0).all()
    ones = OBSERVATIONS.index("Atelectasis")
    np.testing.assert_array_equal(t.targets[raw[:, ones] == -1, ones], 1.0)
