"""One category's fine-tuning problem: its known rows (negatives first), the selection rule and the result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from chexcft.cft.metrics import auc_standard_error, metric_rows

def project(z: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """z (n, d) @ columns (d, k) -> (n, k). On the CPU as k matrix-vector products: CPU BLAS's narrow GEMMs are
    several times slower than k GEMVs at this shape (measured: 5 columns, 34 ms vs 7.5 ms per 2048 x 1024 block)."""
    if z.device.type != "cpu" or columns.shape[1] > 64:
        return z @ columns
    return torch.stack([torch.mv(z, columns[:, j].contiguous()) for j in range(columns.shape[1])], dim=1)


# Called whenever the kept head improves: (seconds since the category started, weight (d,), bias).
Progress = Callable[[float, np.ndarray, float], None]


@dataclass
class CategoryProblem:
    """Known training and validation rows of one category, each block ordered negatives first."""

    z_train: torch.Tensor  # (n, d) float32
    n_neg_train: int
    z_valid: torch.Tensor  # (m, d) float32
    n_neg_valid: int
    metric: str = "auc"
    started: float = field(default_factory=time.perf_counter)
    progress: Progress | None = None
    _callback_seconds: float = 0.0

    @property
    def device(self) -> torch.device:
        """The device holding the features (every computation on them runs there)."""
        return self.z_train.device

    @property
    def y_train(self) -> torch.Tensor:
        """Training targets (n,) float32: zeros then ones, on the features' device."""
        y = torch.ones(self.z_train.shape[0], dtype=torch.float32, device=self.device)
        y[: self.n_neg_train] = 0.0
        return y

    def tensor(self, values: np.ndarray | torch.Tensor) -> torch.Tensor:
        """`values` as a float32 tensor on the features' device."""
        return torch.as_tensor(np.asarray(values, dtype=np.float32) if not isinstance(values, torch.Tensor) else values,
                               dtype=torch.float32, device=self.device)

    def train_metric(self, weights: torch.Tensor, biases: torch.Tensor) -> np.ndarray:
        """Training metric of k heads, weights (k, d), biases (k,): one matrix product, one ranking pass."""
        with torch.no_grad():
            scores = project(self.z_train, self.tensor(weights).T).T + self.tensor(biases)[:, None]
        return metric_rows(self.metric, scores, self.n_neg_train)

    def valid_metric(self, weight: np.ndarray | torch.Tensor, bias: float | torch.Tensor) -> float:
        """Validation metric of one head."""
        with torch.no_grad():
            bias = self.tensor(bias) if isinstance(bias, torch.Tensor) else float(bias)
            scores = (self.z_valid @ self.tensor(weight) + bias)[None, :]
        return float(metric_rows(self.metric, scores, self.n_neg_valid)[0])

    def standard_error(self, value: float) -> float:
        """Standard error of an AUC of `value` on the early-stopping split (Hanley-McNeil); 0 for other metrics."""
        n_pos = self.z_valid.shape[0] - self.n_neg_valid
        return auc_standard_error(value, n_pos, self.n_neg_valid) if self.metric == "auc" else 0.0

    def first_within_one_se(self, values: list[float]) -> int:
        """Index of the first of `values` (stop-split metrics, most preferred first) within one standard error of
        the best: the rule BP (strongest penalty) and the GA (smallest move) choose by."""
        best = max(values)
        margin = self.standard_error(best)
        return next(i for i, value in enumerate(values) if value >= best - margin)

    def elapsed(self) -> float:
        """Seconds since the category started, not counting time spent in progress callbacks."""
        return time.perf_counter() - self.started - self._callback_seconds

    def report_progress(self, weight: np.ndarray, bias: float, offset: float = 0.0) -> None:
        """Tell the progress callback (if any) that the kept head is now (weight, bias)."""
        if self.progress is None:
            return
        now = self.elapsed()
        tic = time.perf_counter()
        self.progress(now + offset, np.array(weight, dtype=np.float32, copy=True), float(bias))
        self._callback_seconds += time.perf_counter() - tic


@dataclass
class FitResult:
    """What one optimiser did on one category."""

    weight: np.ndarray  # (d,) float32, the original row when nothing beat it
    bias: float
    valid_before: float
    valid_after: float
    steps: int
    improved: bool
    seconds: float
    info: dict = field(default_factory=dict)  # optimiser-specific facts for the report (e.g. the chosen lambda)


class EarlyStopping:
    """Patience and time budget of one optimiser loop; `update(value)` says whether `value` beats the best so far."""

    def __init__(self, best: float, patience: int, deadline: float) -> None:
        self.best, self.patience, self.deadline, self.since_best = best, patience, deadline, 0

    def update(self, value: float) -> bool:
        """Record one step's stop-split metric; True when it improves on the best."""
        if value > self.best:
            self.best, self.since_best = value, 0
            return True
        self.since_best += 1
        return False

    @property
    def stop(self) -> bool:
        """Patience used up, or the deadline passed."""
        return self.since_best >= self.patience or time.perf_counter() >= self.deadline
