"""The training loss: masked binary cross-entropy plus cross-entropy for U-MultiClass observations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from chexcft.labels import IGNORE_INDEX


def masked_loss(
    raw: torch.Tensor,
    layout: object,
    targets: torch.Tensor,
    mask: torch.Tensor,
    class_targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean loss over the entries that count: BCE weighted by `mask`, CE over non-ignored class targets.

    `raw` are the head's outputs (N, width); `layout` a HeadLayout; `mask` is 0 on U-MultiClass columns,
    whose 3-way logits get a cross-entropy against `class_targets` (N, M) with ignore_index -100.
    """
    binary, classes = layout.split_logits(raw.float())
    bce = F.binary_cross_entropy_with_logits(binary, targets, reduction="none")
    total = (bce * mask).sum()
    count = mask.sum()
    if class_targets is not None and class_targets.numel() and classes.shape[1]:
        ce = F.cross_entropy(
            classes.reshape(-1, classes.shape[-1]), class_targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total = total + ce
        count = count + (class_targets != IGNORE_INDEX).sum()
    return total / count.clamp(min=1.0)
