"""Large Loss (LL-R, LL-Ct, LL-Cp), the masked AUC-margin loss, oversampling: unit cases on hand-made batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chexcft.distributed import DistInfo
from chexcft.errors import ChexcftError
from chexcft.training.large_loss import LargeLoss, large_loss_matrix, modified_count, select_largest, unobserved_entries
from chexcft.training.loss import MaskedAUCMLoss, masked_loss


def _single() -> DistInfo:
    return DistInfo(rank=0, world_size=1, local_rank=0)


def _batch():
    """4 x 3 batch, targets 0 everywhere; logits chosen so the BCE-vs-0 ranking is known; U = unobserved."""
    logits = torch.tensor([
        [3.0, -2.0, 0.5],   # U  O  U
        [9.0, 1.5, -1.0],   # O  U  U   (9.0 is observed: the largest loss of all, never selected)
        [2.0, 0.0, 8.0],    # U  U  O
        [-3.0, 2.5, 1.0],   # U  U  O
    ])  # fmt: skip
    unobserved = torch.tensor([
        [True, False, True],
        [False, True, True],
        [True, True, False],
        [True, True, False],
    ])  # fmt: skip
    return logits, torch.zeros_like(logits), unobserved


def test_exactly_the_k_largest_unobserved_losses_are_rejected_or_corrected() -> None:
    logits, targets, unobserved = _batch()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    # Unobserved logits by size: 3.0 (0,0), 2.5 (3,1), 2.0 (2,0), 1.5 (1,1), ...: the top 3 of them.
    expected = {(0, 0), (3, 1), (2, 0)}
    rows, cols = select_largest(bce, unobserved, 3)
    assert set(zip(rows.tolist(), cols.tolist())) == expected

    rejected, _ = large_loss_matrix(logits, targets, unobserved, "LL-R", 3)
    corrected, _ = large_loss_matrix(logits, targets, unobserved, "LL-Ct", 3)
    against_one = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    for r in range(4):
        for c in range(3):
            if (r, c) in expected:
                assert rejected[r, c] == 0
                assert torch.equal(corrected[r, c], against_one[r, c])
            else:
                assert torch.equal(rejected[r, c], bce[r, c]) and torch.equal(corrected[r, c], bce[r, c])
    # LL-R keeps the rejected entries in the denominator (the official code's mean over the whole matrix).
    mask = torch.ones_like(logits)
    layout = type("L", (), {"split_logits": staticmethod(lambda raw: (raw, raw[:, :0]))})()
    loss = masked_loss(logits, layout, targets, mask, entry_loss=lambda lg, t: large_loss_matrix(lg, t, unobserved, "LL-R", 3)[0])
    assert torch.isclose(loss, rejected.sum() / 12)


def test_observed_labels_are_never_modified_even_when_k_exceeds_the_unobserved() -> None:
    logits, targets, unobserved = _batch()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    for scheme in ("LL-R", "LL-Ct", "LL-Cp"):
        matrix, (rows, cols) = large_loss_matrix(logits, targets, unobserved, scheme, 100)
        assert len(rows) == int(unobserved.sum())  # capped at the unobserved entries
        assert unobserved[rows, cols].all()
        assert torch.equal(matrix[~unobserved], bce[~unobserved])


def test_schedule_warm_up_then_growth() -> None:
    n = 16 * 10
    assert [modified_count("LL-R", e, 0.5, n) for e in (1, 2, 3, 5)] == [0, 1, 2, 4]  # ceil(160 * (e-1) * 0.005)
    assert [modified_count("LL-Ct", e, 0.5, n) for e in (1, 2, 3, 5)] == [0, 1, 2, 4]
    assert [modified_count("LL-Cp", e, 0.5, n) for e in (1, 2, 3, 5)] == [0, 1, 1, 1]  # fixed after the warm-up
    assert modified_count("LL-R", 4, 0.1, 1000) == 3  # 1000 * 0.003 is 3.0000000000000004 in floating point
    assert modified_count("LL-R", 11, 0.2, 352) == math.ceil(352 * 0.02)
    with pytest.raises(ChexcftError, match="LL-X"):
        modified_count("LL-X", 2, 0.1, 10)


def test_large_loss_state_follows_the_schedule_and_llcp_flips_persist() -> None:
    raw = np.array([[np.nan, 0, np.nan], [1, np.nan, np.nan], [np.nan, np.nan, 1], [np.nan, np.nan, 0]], dtype=np.float32)
    mask = np.ones_like(raw)
    unobserved = unobserved_entries(raw, mask)
    logits, targets, _ = _batch()
    targets = torch.from_numpy(np.nan_to_num(raw, nan=0.0))
    index = torch.arange(4)
    for scheme in ("LL-R", "LL-Ct", "LL-Cp"):
        state = LargeLoss(scheme, 25.0, unobserved)  # B*C = 12: k = 3 per batch (LL-R/Ct epoch 2, LL-Cp from 2)
        state.start_epoch(0)
        plain = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        assert torch.equal(state.entry_loss(index, 0)(logits, targets), plain)  # epoch 1: warm-up
        assert state.end_epoch(_single()) == []
        state.start_epoch(1)
        state.entry_loss(index, 0)(logits, targets)
        records = state.end_epoch(_single())
        chosen = {(row, col) for _, _, _, row, col, _ in records}
        assert len(records) == 3 and all(unobserved[r, c] for r, c in chosen)
        if scheme == "LL-Cp":
            assert {tuple(x) for x in state.flipped.nonzero().tolist()} == chosen
            assert not state.unobserved[tuple(zip(*chosen))].any()
            # Epoch 3: the flipped entries are trained as positives whatever the model says, and never selected again.
            state.start_epoch(2)
            loss = state.entry_loss(index, 0)(logits, targets)
            state.end_epoch(_single())
            for r, c in chosen:
                assert torch.isclose(loss[r, c], F.binary_cross_entropy_with_logits(logits[r, c], torch.tensor(1.0)))
            assert len(state.flipped.nonzero()) == 6  # three more flips, distinct from the first three
            restored = LargeLoss(scheme, 25.0, unobserved)
            restored.load_state_tensors(state.state_tensors())
            assert torch.equal(restored.flipped, state.flipped)
        else:
            assert not state.flipped.any()  # LL-R and LL-Ct change nothing beyond the batch


def test_unobserved_are_blanks_of_binary_columns_only() -> None:
    from chexcft.labels import make_targets

    raw = np.array([[np.nan, -1, np.nan], [1, np.nan, 0], [0, -1, np.nan]], dtype=np.float32)
    targets = make_targets(raw, ("Cardiomegaly", "Edema", "Atelectasis"), "Cardiomegaly=U-MultiClass,Edema=U-Zeros,Atelectasis=U-Zeros")
    unobserved = unobserved_entries(raw, targets.mask)
    # Cardiomegaly is 3-way (mask 0): not LL's; uncertain (-1) entries are observations, decided by the policy.
    assert unobserved.tolist() == [[False, False, True], [False, True, False], [False, False, True]]


def test_masked_aucm_matches_libauc_when_every_label_is_known() -> None:
    losses = pytest.importorskip("libauc.losses", reason="libauc is not installed (pip install --no-deps libauc)")
    torch.manual_seed(0)
    scores = torch.rand(32, 4)
    targets = (torch.rand(32, 4) < 0.3).float()
    ours = MaskedAUCMLoss(4, margin=1.0)
    theirs = losses.MultiLabelAUCMLoss(margin=1.0, num_labels=4, version="v1", device="cpu")
    with torch.no_grad():
        for name in ("a", "b", "alpha"):
            values = torch.rand(4)
            getattr(ours, name).copy_(values)
            getattr(theirs, name).data.copy_(values)
    assert torch.isclose(ours(scores, targets), theirs(scores, targets), atol=1e-6)
    # Any margin: the mean over labels of libauc's single-label AUCMLoss (whose v1 formula keeps the margin).
    margin = MaskedAUCMLoss(4, margin=0.6)
    with torch.no_grad():
        for name in ("a", "b", "alpha"):
            getattr(margin, name).copy_(getattr(ours, name))
    per_label = []
    for c in range(4):
        single = losses.AUCMLoss(margin=0.6, version="v1", device="cpu")
        with torch.no_grad():
            for name in ("a", "b", "alpha"):
                getattr(single, name).copy_(getattr(ours, name)[c : c + 1])
        per_label.append(single(scores[:, c : c + 1], targets[:, c : c + 1]))
    assert torch.isclose(margin(scores, targets), torch.stack(per_label).mean(), atol=1e-6)


def test_masked_aucm_ignores_unknown_entries() -> None:
    torch.manual_seed(1)
    scores = torch.rand(16, 3, requires_grad=True)
    targets = (torch.rand(16, 3) < 0.4).float()
    mask = (torch.rand(16, 3) < 0.7).float()
    loss_fn = MaskedAUCMLoss(3)
    with torch.no_grad():
        loss_fn.a.fill_(0.7), loss_fn.b.fill_(0.2), loss_fn.alpha.fill_(0.5)
    loss = loss_fn(scores, targets, mask)
    (grad,) = torch.autograd.grad(loss, scores)
    # Change every masked entry's score and flip its target: the loss and the other gradients stay the same.
    other_scores = torch.where(mask > 0, scores.detach(), torch.rand(16, 3)).requires_grad_(True)
    other_targets = torch.where(mask > 0, targets, 1 - targets)
    other = loss_fn(other_scores, other_targets, mask)
    (other_grad,) = torch.autograd.grad(other, other_scores)
    assert torch.equal(loss, other)
    assert torch.equal(grad[mask > 0], other_grad[mask > 0]) and (other_grad[mask == 0] == 0).all()
    # Same as the loss over the known rows alone, label by label (the class prior over known entries only).
    per_label = []
    for c in range(3):
        keep = mask[:, c] > 0
        single = MaskedAUCMLoss(1)
        with torch.no_grad():
            single.a.fill_(0.7), single.b.fill_(0.2), single.alpha.fill_(0.5)
        per_label.append(single(scores[keep, c : c + 1], targets[keep, c : c + 1]))
    assert torch.isclose(loss, torch.stack(per_label).mean(), atol=1e-6)


def test_oversample_repeats_and_parse_errors() -> None:
    from chexcft.training.distributed import EpochSampler
    from chexcft.training.oversample import oversample_repeats, parse_oversample

    assert parse_oversample("cardiomegaly=2, Consolidation=3") == {"Cardiomegaly": 2, "Consolidation": 3}
    for bad, word in (("Cardiomegaly", "Observation=factor"), ("Heart=2", "Observation=factor"),
                      ("Cardiomegaly=1.5", "whole number"), ("Cardiomegaly=0", "at least 1")):
        with pytest.raises(ChexcftError, match=word):
            parse_oversample(bad)
    targets = np.array([[1, 0], [0, 1], [1, 1], [0, 0], [1, 0]], dtype=np.float32)
    mask = np.array([[1, 1], [1, 1], [1, 1], [1, 1], [0, 1]], dtype=np.float32)
    repeats = oversample_repeats(targets, mask, ("Cardiomegaly", "Consolidation"), "Cardiomegaly=2,Consolidation=3")
    assert repeats.tolist() == [2, 3, 3, 1, 1]  # the largest factor; a masked positive does not count
    with pytest.raises(ChexcftError, match="Edema"):
        oversample_repeats(targets, mask, ("Cardiomegaly", "Consolidation"), "Edema=2")
    sampler = EpochSampler(5, _single(), seed=0, batch_size=2, repeats=repeats)
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(3)
    assert first == list(sampler)  # seeded: the same epoch gives the same order
    counts = np.bincount(first, minlength=5)
    assert len(first) == 10 and counts.tolist() == repeats.tolist()
