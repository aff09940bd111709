"""Training losses: masked BCE (+ CE for U-MultiClass) and the masked AUC-margin loss (LibAUC's, with a mask)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from chexcft.labels import IGNORE_INDEX

EntryLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (binary logits, targets) -> per-entry loss (B, C)


def masked_loss(
    raw: torch.Tensor,
    layout: object,
    targets: torch.Tensor,
    mask: torch.Tensor,
    class_targets: torch.Tensor | None = None,
    entry_loss: EntryLoss | None = None,
) -> torch.Tensor:
    """Mean loss over the entries that count: BCE weighted by `mask`, CE over non-ignored class targets.

    `raw` are the head's outputs (N, width); `layout` a HeadLayout; `mask` is 0 on U-MultiClass columns,
    whose 3-way logits get a cross-entropy against `class_targets` (N, M) with ignore_index -100.
    `entry_loss` replaces the per-entry BCE (chexcft.training.large_loss); the denominator stays the mask's sum.
    """
    binary, classes = layout.split_logits(raw.float())
    if entry_loss is None:
        bce = F.binary_cross_entropy_with_logits(binary, targets, reduction="none")
    else:
        bce = entry_loss(binary, targets)
    total = (bce * mask).sum()
    count = mask.sum()
    if class_targets is not None and class_targets.numel() and classes.shape[1]:
        ce = F.cross_entropy(
            classes.reshape(-1, classes.shape[-1]), class_targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total = total + ce
        count = count + (class_targets != IGNORE_INDEX).sum()
    return total / count.clamp(min=1.0)


class MaskedAUCMLoss(torch.nn.Module):
    """LibAUC's multi-label AUC-margin loss (v1, squared hinge; Yuan et al., ICCV 2021) over the known entries only.

    Per label c, over the batch entries with mask > 0 (n_c of them), with scores h = sigmoid(logit) and the
    batch prior p = positives / n_c:
      (1-p) E[(h-a)^2 | y=1] + p E[(h-b)^2 | y=0] + 2 alpha (p(1-p) m + E[p h 1{y=0} - (1-p) h 1{y=1}]) - p(1-p) alpha^2
    where E is the mean over the n_c known entries; the result is averaged over the labels (a label without known
    entries adds 0). With every entry known this is libauc.losses.MultiLabelAUCMLoss(version="v1") for m = 1,
    and the mean of per-label libauc.losses.AUCMLoss for any m (the multi-label class of libauc 2.0.1 drops m
    from the alpha term). `a`, `b`, `alpha` are the attributes libauc.optimizers.PESG optimises.
    """

    def __init__(self, num_labels: int, margin: float = 1.0, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.num_labels = int(num_labels)
        self.margin = float(margin)
        self.a = torch.nn.Parameter(torch.zeros(self.num_labels, device=device))
        self.b = torch.nn.Parameter(torch.zeros(self.num_labels, device=device))
        self.alpha = torch.nn.Parameter(torch.zeros(self.num_labels, device=device))

    def forward(self, scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Loss of scores in [0, 1] (B, C) against 0/1 targets (B, C); entries with mask 0 do not enter it."""
        known = torch.ones_like(scores) if mask is None else (mask > 0).to(scores.dtype)
        pos = (targets == 1).to(scores.dtype) * known
        neg = (targets == 0).to(scores.dtype) * known
        n = known.sum(0).clamp(min=1.0)
        p = pos.sum(0) / n

        def mean(x: torch.Tensor) -> torch.Tensor:
            return (x * known).sum(0) / n

        loss = (
            (1 - p) * mean((scores - self.a) ** 2 * pos)
            + p * mean((scores - self.b) ** 2 * neg)
            + 2 * self.alpha * (p * (1 - p) * self.margin + mean(p * scores * neg - (1 - p) * scores * pos))
            - p * (1 - p) * self.alpha**2
        )
        return loss.sum() / self.num_labels
