"""CFT-BP: fine-tuning one category's row (weight and bias) on its known labels by gradient methods.

Two solvers:
- `fit_bp_penalised` (default): penalised logistic regression toward the trained row,
  sum_i BCE(z_i.w + b, y_i) + rho * ||w - w0||^2, solved for a small grid of penalties at once (one pass over the
  rows serves every penalty) by damped Newton steps with a curvature matrix estimated once per category, to a
  tolerance; the penalty is chosen on the early-stopping split. rho = lambda * hbar, where hbar is the mean
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

from chexcft.cft.problem import CategoryProblem, EarlyStopping, FitResult, project

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
    grad_b = torch.zeros(1, dtype=w.dtype, device=w.device)
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


# Penalty grid in images' worth of curvature (see the module docstring), strongest last.
DEFAULT_LAMBDAS: tuple[float, ...] = (1.0, 10.0, 100.0, 1_000.0, 10_000.0)


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


def _loss_and_gradient(z: torch.Tensor, y: torch.Tensor, W: torch.Tensor, B: torch.Tensor, w0: torch.Tensor,
                       rho: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """Penalised summed BCE of L heads (W (d, L), B (L,)) and its gradient ((d+1, L): weights then bias), one pass."""
    d, L = W.shape
    loss = torch.zeros(L, dtype=torch.float64, device=W.device)
    grad = torch.zeros(d + 1, L, dtype=W.dtype, device=W.device)
    with torch.no_grad():
        for start in range(0, z.shape[0], chunk):
            block = z[start : start + chunk]
            target = y[start : start + chunk, None]
            logits = project(block, W) + B[None, :]
            loss += (F.softplus(logits) - target * logits).sum(dim=0, dtype=torch.float64)
            residual = torch.sigmoid(logits) - target
            for j in range(L):  # GEMVs: see chexcft.cft.problem.project
                grad[:d, j].addmv_(block.T, residual[:, j].contiguous())
            grad[d] += residual.sum(dim=0)
        diff = W - w0[:, None]
        loss += (rho * (diff * diff).sum(dim=0)).double()
        grad[:d] += 2 * rho * diff
    return loss, grad


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
    """Penalised logistic fine-tuning toward the trained row for every lambda at once; lambda chosen on the stop split.

    Damped Newton with the curvature at the trained row (Armijo backtracking per penalty); a penalty's solve stops
    when its Newton decrement is below tol per row (the loss is then within about tol x n of its minimum).
    """
    tic = time.perf_counter()
    z, y = problem.z_train, problem.y_train
    n, d = z.shape
    w0 = problem.tensor(weight)
    H, hbar = curvature(z, y, w0, float(bias), max_rows=curvature_rows, seed=seed)
    lam = torch.tensor([float(v) for v in lambdas], dtype=torch.float64)
    rho64 = (lam * hbar).to(H.device)
    rho = rho64.to(torch.float32)
    L = len(lambdas)
    jitter = 1e-6 * float(torch.diagonal(H).mean()) + 1e-12
    factors = []
    for j in range(L):
        system = H.clone()
        system.diagonal()[:d] += 2 * rho64[j]
        system.diagonal().add_(jitter)
        factors.append(torch.linalg.cholesky(system))

    def newton(g: torch.Tensor, j: int) -> torch.Tensor:
        return torch.cholesky_solve(-g.double()[:, None], factors[j])[:, 0].to(torch.float32)

    theta = torch.cat([w0, torch.tensor([float(bias)], device=z.device)])[:, None].repeat(1, L)
    loss, grad = _loss_and_gradient(z, y, theta[:d], theta[d], w0, rho)
    delta = torch.stack([newton(grad[:, j], j) for j in range(L)], dim=1)
    step = torch.ones(L, dtype=torch.float32, device=z.device)
    active = torch.ones(L, dtype=torch.bool)
    iterations = 0
    for iterations in range(1, max_steps + 1):
        slope = (grad * delta).sum(dim=0).double().cpu()  # = -g' H^-1 g <= 0: the predicted decrease is -slope / 2
        active &= (-slope / 2 > tol * n) & (step.cpu() > 1e-4)
        if not bool(active.any()) or time.perf_counter() >= deadline:
            break
        cols = torch.nonzero(active).flatten().to(z.device)
        trial = theta[:, cols] + step[cols] * delta[:, cols]
        trial_loss, trial_grad = _loss_and_gradient(z, y, trial[:d], trial[d], w0, rho[cols])
        for k, j in enumerate(cols.tolist()):
            if float(trial_loss[k]) <= float(loss[j]) + 1e-4 * float(step[j]) * float(slope[j]):
                theta[:, j], loss[j], grad[:, j] = trial[:, k], trial_loss[k], trial_grad[:, k]
                delta[:, j] = newton(grad[:, j], j)
                step[j] = min(1.0, 2.0 * float(step[j]))
            else:
                step[j] = 0.5 * float(step[j])
    scores = problem.valid_metrics(theta[:d].T, theta[d])
    before = problem.valid_metric(w0, float(bias))
    # the best penalty on the stop split; ties go to the stronger penalty (the smaller move)
    j = max(range(L), key=lambda i: (scores[i], lambdas[i]))
    best_w = theta[:d, j].detach().cpu().numpy().copy()
    best_b = float(theta[d, j])
    improved = bool(scores[j] > before)
    if improved:
        problem.report_progress(best_w, best_b, time_offset)
    moved = float(np.linalg.norm(best_w - np.asarray(weight, dtype=np.float32)) / max(np.linalg.norm(weight), 1e-12))
    info = {"solver": "newton", "lambda": float(lambdas[j]), "relative_move": moved,
            "stop_by_lambda": {float(v): float(s) for v, s in zip(lambdas, scores)},
            "time_budget_hit": time.perf_counter() >= deadline}
    if not improved:
        best_w, best_b = np.asarray(weight, dtype=np.float32).copy(), float(bias)
    return FitResult(best_w, best_b, before, float(max(scores[j], before)), iterations, improved,
                     time.perf_counter() - tic, info)
