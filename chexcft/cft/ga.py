"""CFT-GA: one category's row (weight and bias) optimised by a Nevergrad optimiser on the metric itself.

Each step asks a whole population, scores all candidates with one matrix product and one vectorised
ranking pass, and tells the (negated) metric back. The bias is a coordinate like any other and the
chosen candidate's bias is what is written (the authors' code lost it).

Mutation scale: sigma = ga_sigma * std(original training logits) / RMS(norm of [z, 1]). A random
perturbation of sigma per coordinate moves an image's logit by about sigma * |[z, 1]|, i.e. by about
ga_sigma times the spread of the original logits, whatever the scale of the features or of the row.
"""

from __future__ import annotations

import time

import nevergrad as ng
import numpy as np
import torch

from chexcft.cft.problem import CategoryProblem, FitResult

GA_LIKE: tuple[str, ...] = ("TwoPointsDE", "RecES", "RecMixES", "RecMutDE", "DE", "CMA", "OnePlusOne")


def optimizer_class(name: str):
    """The Nevergrad optimiser registered under `name` (ValueError listing GA-like choices if unknown)."""
    try:
        return ng.optimizers.registry[name]
    except KeyError:
        raise ValueError(f"unknown Nevergrad optimizer {name!r}; GA-like choices: {', '.join(GA_LIKE)}") from None


def mutation_sigma(problem: CategoryProblem, weight: np.ndarray, bias: float, ga_sigma: float) -> float:
    """Mutation step per coordinate such that a mutation moves logits by ~ga_sigma x their spread."""
    z = problem.z_train
    rows = z[: min(z.shape[0], 20_000)]
    logits = rows @ torch.as_tensor(weight, dtype=torch.float32) + float(bias)
    spread = float(logits.std()) if rows.shape[0] > 1 else 1.0
    rms_norm = float(torch.sqrt((rows.double() ** 2).sum(dim=1).mean() + 1.0))
    if not np.isfinite(spread) or spread <= 0:
        spread = 1.0
    return ga_sigma * spread / rms_norm


def fit_ga(
    problem: CategoryProblem,
    weight: np.ndarray,
    bias: float,
    *,
    optimizer: str = "TwoPointsDE",
    population: int = 50,
    max_steps: int = 5000,
    patience: int = 300,
    ga_sigma: float = 0.05,
    seed: int = 0,
    time_offset: float = 0.0,
) -> FitResult:
    """Evolve the row with Nevergrad; validation of the best-so-far after every population; keep the best."""
    tic = time.perf_counter()
    w0 = np.asarray(weight, dtype=np.float32)
    d = w0.shape[0]
    x0 = np.append(w0, np.float32(bias)).astype(np.float64)
    sigma = mutation_sigma(problem, w0, bias, ga_sigma)
    parametrization = ng.p.Array(init=x0).set_mutation(sigma=sigma)
    parametrization.random_state = np.random.RandomState(seed)
    opt = optimizer_class(optimizer)(parametrization=parametrization, budget=max_steps * population, num_workers=population)
    opt.suggest(x0)  # the trained row itself is the first candidate

    best_train = -np.inf
    best_valid = before = problem.valid_metric(torch.from_numpy(w0), float(bias))
    kept_w, kept_b = w0.copy(), float(bias)
    since_best, steps = 0, 0
    for steps in range(1, max_steps + 1):
        candidates = [opt.ask() for _ in range(population)]
        x = torch.from_numpy(np.stack([c.value for c in candidates]).astype(np.float32))
        fitness = problem.train_metric(x[:, :d], x[:, d])
        for candidate, value in zip(candidates, fitness):
            opt.tell(candidate, -float(value))
        j = int(np.argmax(fitness))
        improved = False
        if fitness[j] > best_train:
            best_train = float(fitness[j])
            current = problem.valid_metric(x[j, :d], float(x[j, d]))
            if current > best_valid:
                best_valid, improved = current, True
                kept_w, kept_b = x[j, :d].numpy().copy(), float(x[j, d])
                problem.report_progress(kept_w, kept_b, time_offset)
        if improved:
            since_best = 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    return FitResult(kept_w, kept_b, before, best_valid, steps, best_valid > before, time.perf_counter() - tic)
