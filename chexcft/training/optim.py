"""The optimiser, schedule and loss of a run: Adam + cosine for BCE, LibAUC's PESG for the AUC-margin loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from chexcft.errors import ChexcftError
from chexcft.training.config import TrainConfig
from chexcft.training.loss import EntryLoss, MaskedAUCMLoss, masked_loss

COSINE = "cosine annealing per optimiser step from lr to lr/100 (no warm-up)"
PESG_SCHEDULE = ("constant lr in epoch 1, lr/10 from epoch 2 on; PESG's epoch-level reference point is reset "
                 "(update_regularizer) at every epoch boundary")
AUCM_KEYS = ("a", "b", "alpha")


def _libauc() -> Any:
    try:
        import libauc.optimizers
    except ImportError as exc:
        raise ChexcftError(
            "--loss aucm needs the libauc package: pip install --no-deps 'libauc>=2.0' "
            "(its losses and optimisers need only torch and numpy)"
        ) from exc
    return libauc.optimizers


@dataclass
class Objective:
    """What one training step uses: the optimiser, its schedule, and the loss (with its own state for aucm)."""

    config: TrainConfig
    optimizer: torch.optim.Optimizer
    scheduler: Any
    aucm: MaskedAUCMLoss | None = None

    def loss(self, raw: torch.Tensor, layout: Any, targets: torch.Tensor, mask: torch.Tensor,
             class_targets: torch.Tensor | None = None, entry_loss: EntryLoss | None = None) -> torch.Tensor:
        """The batch's loss: masked BCE (+CE), or the masked AUC-margin loss on sigmoid scores."""
        if self.aucm is None:
            return masked_loss(raw, layout, targets, mask, class_targets, entry_loss)
        binary, _ = layout.split_logits(raw.float())
        return self.aucm(torch.sigmoid(binary), targets, mask)

    def start_epoch(self, epoch_index: int) -> None:
        """PESG: from the second epoch on, move the reference point to the average of the last epoch's iterates."""
        if self.aucm is not None and epoch_index > 0:
            self.optimizer.update_regularizer(decay_factor=None)  # type: ignore[attr-defined]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The loss's own parameters (aucm: a, b, alpha), for the checkpoint."""
        if self.aucm is None:
            return {}
        return {f"aucm.{key}": getattr(self.aucm, key).detach() for key in AUCM_KEYS}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Copy a checkpoint's a, b, alpha back in place (PESG holds references to them)."""
        if self.aucm is None:
            return
        with torch.no_grad():
            for key in AUCM_KEYS:
                getattr(self.aucm, key).copy_(tensors[f"aucm.{key}"])

    def describe(self) -> dict[str, Any]:
        """optimizer, scheduler and loss entries for config.json."""
        c = self.config
        if self.aucm is None:
            return {
                "optimizer": {"name": "Adam", "lr": c.lr, "betas": [0.9, 0.999], "weight_decay": c.weight_decay},
                "scheduler": {"name": "cosine", "description": COSINE},
                "loss": "masked binary cross-entropy (+ cross-entropy, ignore_index -100, for U-MultiClass), mean over "
                "counted entries" + (f"; Large Loss {c.blank} on blanks" if c.large_loss else ""),
            }
        return {
            "optimizer": {"name": "PESG (libauc)", "lr": c.lr, "mode": "sgd", "momentum": 0.9, "clip_value": 1.0,
                          "weight_decay": c.weight_decay, "epoch_decay": c.epoch_decay},
            "scheduler": {"name": "pesg-step", "description": PESG_SCHEDULE},
            "loss": f"masked multi-label AUC-margin loss (libauc v1 formula, margin {c.aucm_margin}) on sigmoid scores, "
            "class prior over the known entries of each batch",
        }


def make_objective(config: TrainConfig, model: torch.nn.Module, steps_per_epoch: int, n_labels: int,
                   device: torch.device) -> Objective:
    """Build the optimiser and schedule for `config.loss` (config already resolved: lr and weight_decay set)."""
    assert config.lr is not None and config.weight_decay is not None
    if config.loss == "bce":
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs * steps_per_epoch, eta_min=config.lr / 100
        )
        return Objective(config, optimizer, scheduler)
    optimizers = _libauc()
    aucm = MaskedAUCMLoss(n_labels, margin=config.aucm_margin, device=device)
    optimizer = optimizers.PESG(
        list(model.parameters()), loss_fn=aucm, lr=config.lr, mode="sgd", momentum=0.9,
        epoch_decay=config.epoch_decay, weight_decay=config.weight_decay, verbose=False, device=device,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if step < steps_per_epoch else 0.1)
    return Objective(config, optimizer, scheduler, aucm)
