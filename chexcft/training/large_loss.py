"""Large Loss Matters (Kim et al., CVPR 2022): reject or correct the largest losses of unobserved labels.

Unobserved entries are the blanks of the binary (non U-MultiClass) columns. They are trained as negatives
with BCE; from epoch 2 on, in every batch, the k largest of their losses over the flattened B x C batch are
  LL-R   rejected: the loss becomes 0 (it stays in the mean's denominator, as in the official code),
  LL-Ct  corrected for this batch only: BCE against 1 instead of 0,
  LL-Cp  corrected permanently: the label is flipped to 1 (this batch and every later epoch; a flipped entry
         counts as an observed positive from then on and is never selected again).
k = ceil(B * C * rate): LL-R and LL-Ct use rate = (epoch - 1) * delta_rel / 100 (epoch 1 is a warm-up and the
rate grows with no cap); LL-Cp uses rate = delta_rel / 100 from epoch 2 on (the official code's warm-up test
`clean_rate == 1` applies to every scheme). Exactly k entries are taken (torch.topk, so ties break by position)
and only among the unobserved ones, capped at their number: observed labels are never touched. (The official
code thresholds with `<` against the k-th value, which can also modify observed entries when that value is 0.)

Uncertain entries are observations the labeller made: a policy decides them (U-Zeros trains them as 0, U-Ignore
leaves them out) and LL never rejects or flips them. Under DDP every process selects within its own batch (as a
single process with a batch of B would) and the LL-Cp flips of all processes are merged at the end of each epoch,
so every process, the checkpoint and the next epoch see the same labels.

The flips are stored with each end-of-epoch checkpoint (`extra.large_loss.flipped`), so `--resume` after a
kill replays the run exactly; the entries modified in each epoch are logged to RUN_DIR/large_loss/epoch-NNNN.csv.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from chexcft.distributed import DistInfo
from chexcft.errors import ChexcftError
from chexcft.training.config import LL_SCHEMES

LOG_DIR = "large_loss"
STATE_KEY = "large_loss.flipped"


def modified_count(scheme: str, epoch: int, delta_rel: float, n_entries: int) -> int:
    """k: how many unobserved entries of a batch of `n_entries` (B * C) are modified in 1-based `epoch`."""
    if scheme not in LL_SCHEMES:
        raise ChexcftError(f"unknown Large Loss scheme {scheme!r}; expected one of {', '.join(LL_SCHEMES)}")
    if epoch <= 1:
        return 0
    rate = delta_rel / 100 if scheme == "LL-Cp" else (epoch - 1) * delta_rel / 100
    return math.ceil(round(n_entries * rate, 9))  # round: 0.1 * 3 must not become 0.30000000000000004


def select_largest(loss: torch.Tensor, unobserved: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the k largest entries of `loss` (B, C) among the `unobserved` ones (at most all of them)."""
    k = min(int(k), int(unobserved.sum()))
    if k <= 0:
        empty = torch.zeros(0, dtype=torch.long, device=loss.device)
        return empty, empty
    values = loss.detach().masked_fill(~unobserved, float("-inf")).flatten()
    flat = torch.topk(values, k, sorted=True).indices
    return flat // loss.shape[1], flat % loss.shape[1]


def large_loss_matrix(
    logits: torch.Tensor, targets: torch.Tensor, unobserved: torch.Tensor, scheme: str, k: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Per-entry BCE (B, C) with the k largest unobserved losses rejected or corrected; returns it and their (rows, cols)."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    rows, cols = select_largest(bce, unobserved, k)
    if rows.numel() == 0:
        return bce, (rows, cols)
    chosen = torch.zeros_like(unobserved)
    chosen[rows, cols] = True
    if scheme == "LL-R":
        modified = torch.where(chosen, torch.zeros_like(bce), bce)
    else:
        modified = torch.where(chosen, F.binary_cross_entropy_with_logits(logits, torch.ones_like(targets), reduction="none"), bce)
    return modified, (rows, cols)


def unobserved_entries(raw: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blanks (NaN in the raw labels) that the binary loss counts (mask > 0: not on U-MultiClass columns)."""
    return np.isnan(np.asarray(raw, dtype=np.float64)) & (np.asarray(mask) > 0)


class LargeLoss:
    """One run's Large Loss state: the scheme and schedule, the unobserved entries, LL-Cp's flips, the epoch's log."""

    def __init__(self, scheme: str, delta_rel: float, unobserved: np.ndarray) -> None:
        if scheme not in LL_SCHEMES:
            raise ChexcftError(f"unknown Large Loss scheme {scheme!r}; expected one of {', '.join(LL_SCHEMES)}")
        self.scheme = scheme
        self.delta_rel = float(delta_rel)
        self.initial_unobserved = torch.from_numpy(np.asarray(unobserved, dtype=bool).copy())
        self.flipped = torch.zeros_like(self.initial_unobserved)
        self.epoch = 1
        self._records: list[tuple[int, int, int, int, float]] = []  # (epoch, step, row, col, loss before)
        self._new_flips: list[tuple[int, int]] = []

    @property
    def unobserved(self) -> torch.Tensor:
        """Entries still unobserved (the initial blanks minus LL-Cp's flips), (n, C) bool on the CPU."""
        return self.initial_unobserved & ~self.flipped

    def start_epoch(self, epoch_index: int) -> None:
        """Begin 0-based epoch `epoch_index` (the schedule's epoch is epoch_index + 1)."""
        self.epoch = epoch_index + 1
        self._records = []
        self._new_flips = []

    def entry_loss(self, index: torch.Tensor, step: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The per-entry loss of one batch (dataset positions `index`), for chexcft.training.loss.masked_loss."""
        rows_cpu = index.detach().cpu().long()

        def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            unobserved = self.unobserved[rows_cpu].to(logits.device)
            flipped = self.flipped[rows_cpu].to(logits.device)
            targets = torch.where(flipped, torch.ones_like(targets), targets)
            k = modified_count(self.scheme, self.epoch, self.delta_rel, unobserved.numel())
            matrix, (rows, cols) = large_loss_matrix(logits, targets, unobserved, self.scheme, k)
            if rows.numel():
                before = F.binary_cross_entropy_with_logits(logits[rows, cols], targets[rows, cols], reduction="none")
                global_rows = rows_cpu[rows.cpu()].tolist()
                for row, col, value in zip(global_rows, cols.cpu().tolist(), before.detach().cpu().tolist()):
                    self._records.append((self.epoch, step, row, col, value))
                if self.scheme == "LL-Cp":
                    self.flipped[global_rows, cols.cpu()] = True
                    self._new_flips.extend(zip(global_rows, cols.cpu().tolist()))
            return matrix

        return loss

    def end_epoch(self, info: DistInfo) -> list[tuple[int, int, int, int, int, float]]:
        """Merge every process's flips of this epoch; return all processes' records as (rank, epoch, step, row, col, loss)."""
        mine = [(info.rank, *record) for record in self._records]
        if not info.distributed:
            return mine
        gathered: list[object] = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, {"records": mine, "flips": self._new_flips})
        records: list[tuple[int, int, int, int, int, float]] = []
        for part in gathered:
            assert isinstance(part, dict)
            records.extend(part["records"])
            for row, col in part["flips"]:
                self.flipped[row, col] = True
        return records

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What a checkpoint must keep: LL-Cp's flips (uint8, n x C)."""
        return {STATE_KEY: self.flipped.to(torch.uint8)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the flips saved by state_tensors (a checkpoint without them has none)."""
        stored = tensors.get(STATE_KEY)
        if stored is None:
            return
        if tuple(stored.shape) != tuple(self.flipped.shape):
            raise ChexcftError(f"checkpoint's Large Loss flips have shape {tuple(stored.shape)}; the run needs {tuple(self.flipped.shape)}")
        self.flipped = stored.bool().clone()

    def describe(self) -> dict[str, object]:
        """The settings and rules, for config.json."""
        return {
            "scheme": self.scheme,
            "delta_rel_percent": self.delta_rel,
            "k": "ceil(B*C*delta_rel/100) from epoch 2" if self.scheme == "LL-Cp" else "ceil(B*C*(epoch-1)*delta_rel/100)",
            "unobserved": "blank entries of binary columns (uncertain entries are left to the policy)",
            "rejected_in_denominator": True,
            "ddp": "each process selects within its own batch; LL-Cp flips are merged at the end of each epoch",
            "n_unobserved": int(self.initial_unobserved.sum()),
            "log": f"{LOG_DIR}/epoch-NNNN.csv",
        }


def write_epoch_log(run_dir: Path, epoch: int, records: list[tuple[int, int, int, int, int, float]],
                    paths: np.ndarray, observations: tuple[str, ...], scheme: str) -> Path:
    """RUN_DIR/large_loss/epoch-NNNN.csv: one row per modified entry (rank, step, training row, Path, observation, loss)."""
    from chexcft.fileio import atomic_write_csv

    frame = pd.DataFrame(records, columns=["rank", "epoch", "step", "row", "col", "loss"])
    frame = frame.sort_values(["step", "rank", "row", "col"], kind="stable").reset_index(drop=True)
    frame.insert(4, "Path", paths[frame["row"].to_numpy()] if len(frame) else pd.Series([], dtype=object))
    frame.insert(5, "observation", [observations[c] for c in frame["col"]])
    frame.insert(0, "scheme", scheme)
    path = Path(run_dir) / LOG_DIR / f"epoch-{epoch:04d}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(path, frame.drop(columns=["col"]))
    return path
