"""CFT-GA: one category's row optimised on the metric itself (AUC on the known training labels), three ways.

- `fit_subspace_ga` (default, `optimizer="subspace"`): a Nevergrad optimiser (TwoPointsDE by default; CMA is an option) searches a
  low-dimensional subspace around the starting row: the row itself, its BP move (or the BCE descent direction),
  the difference of class means, the Fisher direction, and the leading principal directions of the category's
  within-class variation (moments from every fit row). The subspace projections are computed once, so a whole
  population is scored with one small matrix product and one vectorised ranking pass, and the search can afford
  to move far in 1,024 dimensions along directions that matter. The chosen ranking is then given a logistic
  scale and bias.
- `fit_authors_ga` (`optimizer="authors"`): the authors' operators, vectorised: population 50 copies of the
  trained row, roulette (fitness-proportional) selection, uniform crossover taking each gene from the first parent
  with probability 0.2, with probability 0.5 U[-0.001, 0.001] noise on every gene of an offspring, 1 elite.
- `fit_ga` (any other Nevergrad optimiser name): that optimiser on all d + 1 coordinates. Mutation scale:
  sigma = ga_sigma * std(original training logits) / RMS(norm of [z, 1]), so a mutation moves an image's logit by
  about ga_sigma times the spread of the original logits, whatever the scale of the features or of the row.

Every optimiser keeps the candidate that is best on the early-stopping split and stops on patience (generations
without improvement there), on max_steps or on the category's time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import nevergrad as ng
import numpy as np
import torch

from chexcft.calibration import fit_platt_1d
from chexcft.cft.metrics import metric_rows
from chexcft.cft.problem import CategoryProblem, EarlyStopping, FitResult, project

GA_LIKE: tuple[str, ...] = ("TwoPointsDE", "RecES", "RecMixES", "RecMutDE", "DE", "CMA", "OnePlusOne")
# The estimator's own GA names; any other name is a Nevergrad optimiser run on all coordinates.
SUBSPACE, AUTHORS = "subspace", "authors"


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
    logits = rows @ problem.tensor(weight) + float(bias)
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
    deadline: float = float("inf"),
) -> FitResult:
    """Evolve all d + 1 coordinates with Nevergrad; the stop split's metric of the best-so-far after every population."""
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
    before = problem.valid_metric(w0, float(bias))
    kept_w, kept_b = w0.copy(), float(bias)
    stop, steps = EarlyStopping(before, patience, deadline), 0
    for steps in range(1, max_steps + 1):
        candidates = [opt.ask() for _ in range(population)]
        x = problem.tensor(np.stack([c.value for c in candidates]))
        fitness = problem.train_metric(x[:, :d], x[:, d])
        for candidate, value in zip(candidates, fitness):
            opt.tell(candidate, -float(value))
        j = int(np.argmax(fitness))
        current = -np.inf  # the stop split is looked at only when the training fitness improves
        if fitness[j] > best_train:
            best_train = float(fitness[j])
            current = problem.valid_metric(x[j, :d], float(x[j, d]))
        if stop.update(current):
            kept_w, kept_b = x[j, :d].cpu().numpy().copy(), float(x[j, d])
            problem.report_progress(kept_w, kept_b, time_offset)
        if stop.stop:
            break
    return FitResult(kept_w, kept_b, before, stop.best, steps, stop.best > before, time.perf_counter() - tic,
                     {"ga": optimizer, "dims": d + 1, "time_budget_hit": time.perf_counter() >= deadline})


@dataclass
class Offspring:
    """One generation of the authors' GA, with the draws that made it (for checking the operators)."""

    population: torch.Tensor  # (P, D): the elites first, then the children
    probabilities: np.ndarray  # (P,) roulette probabilities of the parents' generation
    parents: np.ndarray  # (P - elites, 2) indices of each child's first and second parent
    from_first: torch.Tensor  # (P - elites, D) bool: gene taken from the first parent
    mutated: np.ndarray  # (P - elites,) bool: the child received uniform noise


def authors_offspring(population: torch.Tensor, fitness: np.ndarray, rng: np.random.Generator, *,
                      crossover: float = 0.2, mutation_rate: float = 0.5, mutation_scale: float = 1e-3,
                      elites: int = 1) -> Offspring:
    """The authors' generation step: elites, roulette parents, uniform crossover, uniform mutation of whole children."""
    size, genes = population.shape
    fitness = np.asarray(fitness, dtype=np.float64)
    shifted = np.clip(fitness, 0.0, None)
    probabilities = shifted / shifted.sum() if shifted.sum() > 0 else np.full(size, 1.0 / size)
    elite = np.argsort(-fitness, kind="stable")[:elites]
    n_children = size - elites
    parents = rng.choice(size, size=(n_children, 2), p=probabilities)
    from_first = torch.from_numpy(rng.random((n_children, genes)) < crossover).to(population.device)
    idx = torch.from_numpy(parents).to(population.device)
    children = torch.where(from_first, population[idx[:, 0]], population[idx[:, 1]])
    mutated = rng.random(n_children) < mutation_rate
    if mutated.any():
        noise = rng.uniform(-mutation_scale, mutation_scale, size=(int(mutated.sum()), genes)).astype(np.float32)
        rows = torch.from_numpy(np.flatnonzero(mutated)).to(population.device)
        children[rows] += torch.from_numpy(noise).to(population.device)
    next_population = torch.cat([population[torch.from_numpy(elite).to(population.device)], children])
    return Offspring(next_population, probabilities, parents, from_first, mutated)


def fit_authors_ga(
    problem: CategoryProblem,
    weight: np.ndarray,
    bias: float,
    *,
    population: int = 50,
    max_steps: int = 5000,
    patience: int = 300,
    seed: int = 0,
    time_offset: float = 0.0,
    deadline: float = float("inf"),
) -> FitResult:
    """The authors' GA (see `authors_offspring`), every individual a copy of the trained row at the start.

    The whole population is scored with one matrix product and one ranking pass; after every generation the
    fittest individual is scored on the early-stopping split, the best kept, patience counted in generations.
    """
    tic = time.perf_counter()
    rng = np.random.default_rng(seed)
    w0 = np.asarray(weight, dtype=np.float32)
    d = w0.shape[0]
    x0 = problem.tensor(np.append(w0, np.float32(bias)))
    pop = x0[None, :].repeat(population, 1)
    fitness = problem.train_metric(pop[:1, :d], pop[:1, d]).repeat(population)  # identical copies: scored once
    before = problem.valid_metric(w0, float(bias))
    kept_w, kept_b = w0.copy(), float(bias)
    stop, steps = EarlyStopping(before, patience, deadline), 0
    for steps in range(1, max_steps + 1):
        pop = authors_offspring(pop, fitness, rng).population
        fitness = problem.train_metric(pop[:, :d], pop[:, d])
        j = int(np.argmax(fitness))
        current = problem.valid_metric(pop[j, :d], float(pop[j, d]))
        if stop.update(current):
            kept_w, kept_b = pop[j, :d].cpu().numpy().copy(), float(pop[j, d])
            problem.report_progress(kept_w, kept_b, time_offset)
        if stop.stop:
            break
    return FitResult(kept_w, kept_b, before, stop.best, steps, stop.best > before, time.perf_counter() - tic,
                     {"ga": AUTHORS, "dims": d + 1, "time_budget_hit": time.perf_counter() >= deadline})


def _stratified_rows(n_neg: int, n: int, max_rows: int, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """At most max_rows row indices of a negatives-first block, both classes in proportion; (indices, n_neg kept)."""
    if n <= max_rows:
        return torch.arange(n), n_neg
    keep_neg = min(n_neg, max(1, round(max_rows * n_neg / n)))
    keep_pos = min(n - n_neg, max(1, max_rows - keep_neg))
    neg = torch.sort(torch.randperm(n_neg, generator=generator)[:keep_neg]).values
    pos = torch.sort(torch.randperm(n - n_neg, generator=generator)[:keep_pos]).values + n_neg
    return torch.cat([neg, pos]), keep_neg


def class_moments(z: torch.Tensor, n_neg: int, chunk: int = 16_384) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean of negatives, mean of positives, pooled within-class covariance (d, d)), float64, of a negatives-first
    block, from every row in chunks (no centred copy of the block is made)."""
    d = z.shape[1]
    scatter = torch.zeros(d, d, dtype=torch.float64, device=z.device)
    means = []
    for block in (z[:n_neg], z[n_neg:]):
        mean = block.mean(dim=0).double() if block.shape[0] else torch.zeros(d, dtype=torch.float64, device=z.device)
        means.append(mean)
        for start in range(0, block.shape[0], chunk):
            centred = block[start:start + chunk] - mean.to(z.dtype)
            scatter += (centred.T @ centred).double()  # float32 product, float64 sum over chunks
    return means[0], means[1], scatter / max(z.shape[0] - 2, 1)


def subspace_basis(z: torch.Tensor, n_neg: int, weight: torch.Tensor, bias: float, *, reference: torch.Tensor | None,
                   n_components: int, seed: int) -> torch.Tensor:
    """Orthogonal search directions (d, k) around `weight`, each scaled to move the logits as much as `weight` does.

    The row itself, its move from `reference` (BP's move when GA follows BP), the BCE descent direction, the
    difference of class means, the Fisher direction and the descent direction preconditioned by the (shrunk)
    within-class covariance (close to a penalised Newton step), and the leading principal directions of the
    within-class variation (what the row should learn to ignore or use). The moments come from every row of `z`:
    a Fisher direction from a few thousand rows in 1,024 dimensions is mostly noise (on the known-answer
    benchmark, 4,096 rows left the GA alone at 18% of the oracle's gap; all rows, 40%).
    """
    d = z.shape[1]
    mean_neg, mean_pos, cov = class_moments(z, n_neg)
    generator = torch.Generator().manual_seed(seed)
    diff = mean_pos - mean_neg
    y = torch.zeros(z.shape[0], device=z.device)
    y[n_neg:] = 1.0
    descent = -(z.T @ (torch.sigmoid(z @ weight + bias) - y)) / z.shape[0]
    factor = torch.linalg.cholesky(cov + (0.1 * float(torch.diagonal(cov).mean()) + 1e-12) * torch.eye(d, dtype=cov.dtype, device=cov.device))
    solved = torch.cholesky_solve(torch.stack([diff, descent.double()], dim=1), factor)
    fisher, preconditioned = solved[:, 0].to(z.dtype), solved[:, 1].to(z.dtype)  # preconditioned: ~ a Newton step
    directions = [weight, descent, preconditioned, diff.to(z.dtype), fisher]
    if reference is not None:
        directions.append(weight - reference)
    k = min(n_components, z.shape[0] - 2, d)
    if k > 0:
        # leading eigenvectors by subspace iteration (a full eigh of d x d costs seconds on 2 cores)
        v = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64).to(cov.device))[0]
        for _ in range(8):
            v = torch.linalg.qr(cov @ v)[0]
        directions += list(v.T.to(z.dtype))
    stacked = torch.stack([v.to(z.dtype) for v in directions], dim=1)
    q, r = torch.linalg.qr(stacked)
    keep = torch.abs(torch.diagonal(r)) > 1e-6 * torch.abs(torch.diagonal(r)).max()
    basis = q[:, keep]
    sample = z[torch.randperm(z.shape[0], generator=generator)[: min(z.shape[0], 4096)].to(z.device)]
    spread = float((sample @ weight).std()) if sample.shape[0] > 1 else 1.0
    spread = spread if np.isfinite(spread) and spread > 0 else 1.0
    scale = (sample @ basis).std(dim=0).clamp(min=1e-12)
    return basis * (spread / scale)


def _fit_scale_and_bias(scores: torch.Tensor, y: torch.Tensor, reference_spread: float, prior: float = 1.0,
                        bounds: tuple[float, float] = (0.1, 10.0)) -> tuple[float, float]:
    """(a, b) of p = sigmoid(a * score + b): the scores are first scaled to `reference_spread` (the start's logit
    spread), then a is the maximum-a-posteriori slope with a Gaussian prior of `prior` images' weight toward that
    scale, kept within `bounds` times it, and b the maximum-likelihood bias at that slope.

    Without the prior and bounds, scores that separate the fit rows (a few dozen known labels can) send a to
    infinity: rows of 1e8 that saturate every probability and dominate an ensemble's mean logit.
    """
    s = scores.double()
    target = y.double()
    spread = float(s.std()) if s.numel() > 1 else 0.0
    if not (np.isfinite(spread) and spread > 0 and np.isfinite(reference_spread) and reference_spread > 0):
        return 1.0, 0.0
    unit = reference_spread / spread
    slope, _ = fit_platt_1d((s * unit).cpu().numpy(), target.cpu().numpy(), ridge=(prior, 1e-6))
    slope = min(max(slope if np.isfinite(slope) else 1.0, bounds[0]), bounds[1])
    # the bias solves sum(sigmoid(slope * x + b)) = sum(y), monotone in b: bisection cannot diverge
    x, positives = slope * unit * s, float(target.sum())
    low, high = -50.0 - float(x.max()), 50.0 - float(x.min())
    for _ in range(60):
        middle = (low + high) / 2
        if float(torch.sigmoid(x + middle).sum()) > positives:
            high = middle
        else:
            low = middle
    return slope * unit, (low + high) / 2


def shortest_within_one_se(history: list[tuple[np.ndarray, float]], problem: CategoryProblem) -> tuple[np.ndarray, float]:
    """Of the improving candidates (coefficients, stop-split AUC), the smallest move whose AUC is within one standard
    error (Hanley-McNeil) of the best: BP's penalty rule, for the GA (other metrics: the best)."""
    by_move = sorted(history, key=lambda item: float(np.linalg.norm(item[0])))
    return by_move[problem.first_within_one_se([value for _, value in by_move])]


def fit_subspace_ga(
    problem: CategoryProblem,
    weight: np.ndarray,
    bias: float,
    *,
    reference: np.ndarray | None = None,
    optimizer: str = "TwoPointsDE",
    population: int = 20,
    max_steps: int = 100,
    patience: int = 20,
    n_components: int = 8,
    max_rows: int = 10_000,
    sigma: float = 0.25,
    seed: int = 0,
    time_offset: float = 0.0,
    deadline: float = float("inf"),
) -> FitResult:
    """Nevergrad in a k-dimensional subspace around the row (see `subspace_basis`), fitness on <= max_rows known rows.

    Fitness rows are a fixed stratified sample of the fit rows (the same for every candidate, so candidates are
    compared on paired data); every candidate is also scored on the early-stopping split, and the one kept is the
    smallest move within one standard error of the best there (`shortest_within_one_se`, BP's penalty rule).
    """
    tic = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    w_start = problem.tensor(weight)
    rows, n_neg = _stratified_rows(problem.n_neg_train, problem.z_train.shape[0], max_rows, generator)
    z = torch.index_select(problem.z_train, 0, rows.to(problem.device))
    ref = problem.tensor(reference) if reference is not None else None
    if ref is not None and float(torch.linalg.vector_norm(w_start - ref)) == 0.0:
        ref = None
    with torch.no_grad():
        basis = subspace_basis(problem.z_train, problem.n_neg_train, w_start, float(bias), reference=ref,
                               n_components=n_components, seed=seed)
        fit_start, fit_proj = z @ w_start, project(z, basis)  # (m,), (m, k)
        stop_start, stop_proj = problem.z_valid @ w_start, project(problem.z_valid, basis)
    k = basis.shape[1]
    before = problem.valid_metric(w_start, float(bias))
    parametrization = ng.p.Array(init=np.zeros(k)).set_mutation(sigma=sigma)
    parametrization.random_state = np.random.RandomState(seed)
    opt = optimizer_class(optimizer)(parametrization=parametrization, budget=max_steps * population, num_workers=population)
    history: list[tuple[np.ndarray, float]] = []  # every candidate that beat the start on the stop split
    stop, steps = EarlyStopping(before, patience, deadline), 0
    for steps in range(1, max_steps + 1):
        candidates = [opt.ask() for _ in range(population)]
        a = problem.tensor(np.stack([c.value for c in candidates]))  # (P, k)
        with torch.no_grad():
            scores = fit_start[None, :] + a @ fit_proj.T
        fitness = metric_rows(problem.metric, scores, n_neg)
        for candidate, value in zip(candidates, fitness):
            opt.tell(candidate, -float(value))
        with torch.no_grad():
            stop_values = metric_rows(problem.metric, stop_start[None, :] + a @ stop_proj.T, problem.n_neg_valid)
        history += [(row, float(value)) for row, value in zip(a.cpu().numpy(), stop_values) if value > before]
        j = int(np.argmax(stop_values))
        if stop.update(float(stop_values[j])):
            if problem.progress is not None:
                w = (w_start + basis @ a[j]).cpu().numpy()
                problem.report_progress(w, float(bias), time_offset)
        if stop.stop:
            break
    info = {"ga": f"{SUBSPACE}/{optimizer}", "dims": k, "time_budget_hit": time.perf_counter() >= deadline}
    if not stop.best > before:
        return FitResult(np.asarray(weight, dtype=np.float32).copy(), float(bias), before, before, steps, False,
                         time.perf_counter() - tic, info)
    best_a, best_stop = shortest_within_one_se(history, problem)
    info["best_stop"], info["move"] = stop.best, float(np.linalg.norm(best_a))
    with torch.no_grad():
        a = problem.tensor(best_a)
        w = w_start + basis @ a
        y = torch.zeros(z.shape[0], device=problem.device)
        y[n_neg:] = 1.0
        scale, b = _fit_scale_and_bias(fit_start + fit_proj @ a, y, reference_spread=float(fit_start.std()))
    info["coefficients"] = [float(v) for v in best_a]
    return FitResult((scale * w).cpu().numpy().astype(np.float32), b, before, best_stop, steps, True,
                     time.perf_counter() - tic, info)
