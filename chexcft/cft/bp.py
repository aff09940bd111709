"""CFT-BP: fine-tuning one category's row (weight and bias) on its known labels by gradient methods.

Two solvers:
- `fit_bp_penalised` (default): penalised logistic regression toward the trained row,
  sum_i BCE(z_i.w + b, y_i) + rho * ||w - w0||^2, solved along a warm-started path from the strongest penalty
  to the weakest by damped Newton steps with a curvature matrix estimated once per category, to a tolerance; the
  path stops when the early-stopping split's metric falls, and the strongest penalty within one standard error of
  the best is kept. rho = lambda * hbar, where hbar is the mean
  curvature one image contributes per coordinate, so lambda is the prior's weight counted in images: with few
  known images the prior dominates and the row moves a little, with many it moves more.
- `fit_bp` (the authors'): full-batch Adam on BCE or the summed asymmetric loss, the early-stopping metric after
  every step, patience.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from chexcft.cft.problem import CategoryProblem, EarlyStopping, FitResult

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


def _bce_pass(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor, *, with_loss: bool,
              chunk: int = 2048) -> tuple[float, torch.Tensor]:
    """Summed BCE (if `with_loss`, else 0) and its gradient [w, b] (d+1,), streaming z once in cache-sized row blocks.

    Each block's logits and its contribution z_block.T @ residual are computed while the block is still in
    cache, so a step reads the features from memory once instead of twice (forward, then backward).
    """
    d = w.shape[0]
    loss = 0.0
    grad = torch.zeros(d + 1, dtype=w.dtype, device=w.device)
    with torch.no_grad():
        for start in range(0, z.shape[0], chunk):
            block = z[start : start + chunk]
            target = y[start : start + chunk]
            logits = torch.addmv(b, block, w)
            if with_loss:
                loss += float((F.softplus(logits) - target * logits).sum(dtype=torch.float64))
            residual = torch.sigmoid(logits) - target
            grad[:d].addmv_(block.T, residual)
            grad[d] += residual.sum()
    return loss, grad


def bce_gradient(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the mean BCE w.r.t. (w, b) in closed form, in one pass over z (`_bce_pass`)."""
    _, grad = _bce_pass(z, y, w, b, with_loss=False)
    return grad[:-1] / z.shape[0], grad[-1:] / z.shape[0]


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
    deadline: float = float("inf"),
) -> FitResult:
    """Adam on the known training rows, validation metric after every step; keep the best, stop on patience."""
    tic = time.perf_counter()
    loss_fn = loss_function(loss)
    w0 = problem.tensor(weight)
    w = w0.clone().requires_grad_(True)
    b = torch.tensor([float(bias)], dtype=torch.float32, device=problem.device, requires_grad=True)
    optimizer = torch.optim.Adam([w, b], lr=lr)
    y = problem.y_train
    z = problem.z_train
    before = problem.valid_metric(w0, float(bias))
    best_w, best_b = np.asarray(weight, dtype=np.float32).copy(), float(bias)
    stop, steps = EarlyStopping(before, patience, deadline), 0
    for steps in range(1, max_steps + 1):
        optimizer.zero_grad(set_to_none=True)
        if loss == "bce":
            w.grad, b.grad = bce_gradient(z, y, w.detach(), b.detach())
        else:
            loss_fn(torch.addmv(b, z, w), y).backward()
        optimizer.step()
        with torch.no_grad():
            current = problem.valid_metric(w, b)
        if stop.update(current):
            best_w, best_b = w.detach().cpu().numpy().copy(), float(b.detach()[0])
            problem.report_progress(best_w, best_b, time_offset)
        if stop.stop:
            break
    return FitResult(best_w, best_b, before, stop.best, steps, stop.best > before, time.perf_counter() - tic,
                     {"solver": "adam", "time_budget_hit": time.perf_counter() >= deadline})


# Penalty grid in images' worth of curvature (see the module docstring), half-decades; the path runs strongest first.
DEFAULT_LAMBDAS: tuple[float, ...] = (30_000.0, 10_000.0, 3_000.0, 1_000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 1.0)


def curvature(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, b: float, *, max_rows: int = 4096,
              seed: int = 0) -> tuple[torch.Tensor, float]:
    """Logistic curvature at (w, b) for [z, 1], estimated on a random subsample and scaled to all n rows.

    Returns the (d+1, d+1) float64 matrix and hbar, the mean curvature per image and per weight coordinate.
    """
    n, d = z.shape
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(n, generator=generator)[: min(n, max_rows)].to(z.device)
    sample = torch.index_select(z, 0, rows)
    with torch.no_grad():
        p = torch.sigmoid(sample @ w + b)
        weight = p * (1 - p)
        ones = torch.ones(sample.shape[0], 1, dtype=sample.dtype, device=sample.device)
        design = torch.cat([sample, ones], dim=1)
        H = (design.T @ (design * weight[:, None])).double() * (n / sample.shape[0])
    hbar = float(torch.diagonal(H)[:d].sum()) / (d * n)
    return H, max(hbar, 1e-12)


def _loss_and_gradient(z: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, w0: torch.Tensor,
                       rho: float) -> tuple[float, torch.Tensor]:
    """Penalised summed BCE of one head theta = [w, b] (d+1,) and its gradient, in one pass over z."""
    d = w0.shape[0]
    loss, grad = _bce_pass(z, y, theta[:d], theta[d:], with_loss=True)
    with torch.no_grad():
        diff = theta[:d] - w0
        loss += rho * float((diff.double() ** 2).sum())
        grad[:d] += 2 * rho * diff
    return loss, grad


def _newton_solve(z: torch.Tensor, y: torch.Tensor, theta: torch.Tensor, w0: torch.Tensor, rho: float,
                  factor: torch.Tensor, *, max_steps: int, tol: float, deadline: float) -> tuple[torch.Tensor, int]:
    """Damped Newton with a fixed curvature factor and Armijo backtracking, until the Newton decrement < tol per row."""
    n = z.shape[0]
    loss, grad = _loss_and_gradient(z, y, theta, w0, rho)
    step, passes = 1.0, 1
    for _ in range(max_steps):
        delta = torch.cholesky_solve(-grad.double()[:, None], factor)[:, 0].to(theta.dtype)
        slope = float((grad.double() * delta.double()).sum())  # = -g' H^-1 g <= 0: the predicted decrease is -slope/2
        if -slope / 2 <= tol * n or step < 1e-4 or time.perf_counter() >= deadline:
            break
        trial = theta + step * delta
        trial_loss, trial_grad = _loss_and_gradient(z, y, trial, w0, rho)
        passes += 1
        if trial_loss <= loss + 1e-4 * step * slope:
            theta, loss, grad, step = trial, trial_loss, trial_grad, min(1.0, 2.0 * step)
        else:
            step *= 0.5
    return theta, passes


def fit_bp_penalised(
    problem: CategoryProblem,
    weight: np.ndarray,
    bias: float,
    *,
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
    max_steps: int = 100,
    tol: float = 1e-5,
    curvature_rows: int = 4096,
    seed: int = 0,
    time_offset: float = 0.0,
    deadline: float = float("inf"),
) -> FitResult:
    """Penalised logistic fine-tuning toward the trained row along a warm-started path of penalties.

    From the strongest penalty to the weakest, each solve starting from the previous solution (damped Newton with
    the curvature at the trained row); the path stops at the first penalty whose stop-split metric is below the best
    so far. The penalty kept is the strongest whose AUC is within one standard error (Hanley-McNeil) of the best:
    with few known labels the stop split cannot tell the penalties apart and the row moves little.
    """
    tic = time.perf_counter()
    z, y = problem.z_train, problem.y_train
    d = z.shape[1]
    w0 = problem.tensor(weight)
    H, hbar = curvature(z, y, w0, float(bias), max_rows=curvature_rows, seed=seed)
    jitter = 1e-6 * float(torch.diagonal(H).mean()) + 1e-12
    before = problem.valid_metric(w0, float(bias))
    theta = torch.cat([w0, torch.tensor([float(bias)], device=z.device)])
    path: list[tuple[float, torch.Tensor, float]] = []
    passes = 0
    for lam in sorted({float(v) for v in lambdas}, reverse=True):
        if time.perf_counter() >= deadline:
            break
        rho = lam * hbar
        system = H.clone()
        system.diagonal()[:d] += 2 * rho
        system.diagonal().add_(jitter)
        theta, used = _newton_solve(z, y, theta, w0, rho, torch.linalg.cholesky(system), max_steps=max_steps, tol=tol,
                                    deadline=deadline)
        passes += used
        score = problem.valid_metric(theta[:d], float(theta[d]))
        best_so_far = max((s for _, _, s in path), default=-np.inf)
        path.append((lam, theta.clone(), score))
        if score < best_so_far:
            break
    lam, chosen, score = path[problem.first_within_one_se([s for _, _, s in path])]  # path: strongest penalty first
    best_w, best_b = chosen[:d].cpu().numpy().copy(), float(chosen[d])
    improved = bool(score > before)
    if improved:
        problem.report_progress(best_w, best_b, time_offset)
    moved = float(np.linalg.norm(best_w - np.asarray(weight, dtype=np.float32)) / max(np.linalg.norm(weight), 1e-12))
    info = {"solver": "newton", "lambda": lam, "relative_move": moved,
            "stop_by_lambda": {v: s for v, _, s in path}, "time_budget_hit": time.perf_counter() >= deadline}
    if not improved:
        best_w, best_b = np.asarray(weight, dtype=np.float32).copy(), float(bias)
    return FitResult(best_w, best_b, before, float(max(score, before)), passes, improved, time.perf_counter() - tic, info)
