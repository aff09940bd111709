"""CFT-BP: full-batch gradient fine-tuning of one category's row (weight and bias) with Adam."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from chexcft.cft.problem import CategoryProblem, FitResult

LOSSES: tuple[str, ...] = ("bce", "asl")


def asymmetric_loss(
    logits: torch.Tensor, y: torch.Tensor, gamma_neg: float = 4.0, gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8
) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al. 2021), summed, as in the CFT authors' code."""
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0.0) if clip > 0 else p
    loss_pos = y * torch.log(p.clamp(min=eps))
    loss_neg = (1 - y) * torch.log((1 - p_neg).clamp(min=eps))
    if gamma_pos > 0:
        loss_pos = loss_pos * (1 - p) ** gamma_pos
    if gamma_neg > 0:
        loss_neg = loss_neg * p_neg**gamma_neg
    return -(loss_pos + loss_neg).sum()


def loss_function(name: str):
    """The training loss by name: "bce" (mean binary cross-entropy) or "asl" (summed asymmetric loss)."""
    if name == "bce":
        return F.binary_cross_entropy_with_logits
    if name == "asl":
        return asymmetric_loss
    raise ValueError(f"unknown loss {name!r}; choose one of {LOSSES}")


def bce_gradient(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the mean BCE w.r.t. (w, b) in closed form, streaming z once in cache-sized row blocks.

    Each block's logits and its contribution z_block.T @ residual are computed while the block is still in
    cache, so a step reads the features from memory once instead of twice (forward, then backward).
    """
    grad_w = torch.zeros_like(w)
    grad_b = torch.zeros(1, dtype=w.dtype)
    with torch.no_grad():
        for start in range(0, z.shape[0], chunk):
            block = z[start : start + chunk]
            residual = torch.sigmoid(torch.addmv(b, block, w)) - y[start : start + chunk]
            grad_w.addmv_(block.T, residual)
            grad_b += residual.sum()
    return grad_w / z.shape[0], grad_b / z.shape[0]


def fit_bp(
    problem: CategoryProblem,
    weight: np.ndarray,
    bias: float,
    *,
    loss: str = "bce",
    lr: float = 1e-4,
    max_steps: int = 5000,
    patience: int = 300,
    time_offset: float = 0.0,
) -> FitResult:
    """Adam on the known training rows, validation metric after every step; keep the best, stop on patience."""
    tic = time.perf_counter()
    loss_fn = loss_function(loss)
    w0 = torch.as_tensor(np.asarray(weight, dtype=np.float32))
    w = w0.clone().requires_grad_(True)
    b = torch.tensor([float(bias)], dtype=torch.float32, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=lr)
    y = problem.y_train
    z = problem.z_train
    best_valid = before = problem.valid_metric(w0, float(bias))
    best_w, best_b = w0.numpy().copy(), float(bias)
    since_best, steps = 0, 0
    for steps in range(1, max_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        if loss == "bce":
            w.grad, b.grad = bce_gradient(z, y, w.detach(), b.detach())
        else:
            loss_fn(torch.addmv(b, z, w), y).backward()
        optimizer.step()
        with torch.no_grad():
            current = problem.valid_metric(w, b)
        if current > best_valid:
            best_valid, since_best = current, 0
            best_w, best_b = w.detach().numpy().copy(), float(b.detach()[0])
            problem.report_progress(best_w, best_b, time_offset)
        else:
            since_best += 1
            if since_best >= patience:
                break
    return FitResult(best_w, best_b, before, best_valid, steps, best_valid > before, time.perf_counter() - tic)
