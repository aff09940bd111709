"""Evaluate speed: chexcft's vectorised stratified bootstrap against a plain per-replicate scikit-learn loop.

Data: the reproduced CheXNet's per-image predictions for NIH's 22,433 test images x 14 findings
(../shared/benchmarks/nih-test, read in place, never copied); when absent, synthetic data of the same shape
and prevalences. Both sides compute the same 1,000 stratified replicates (chexcft.evaluation.bootstrap's
multiplicities, drawn once and timed on chexcft's side):

- chexcft: `stratified_weights` + `bootstrap_aucs` (every replicate and finding at once, O(n * B) per finding);
- baseline: for each replicate, the resampled rows (`np.repeat`) and one `sklearn.metrics.roc_auc_score` per
  finding. By default the baseline runs the first 100 replicates and its time is scaled to 1,000 (its cost
  per replicate is constant); `--baseline-replicates 1000` runs them all.

The AUCs of both sides are compared replicate by replicate. Also timed: the whole `chexcft evaluate` path in
process (read files, match findings, AUC, bootstrap, DeLong, JSON rows). Wall and CPU seconds and the load
average are printed, as the machine may be shared.

    .venv/bin/python bench/evaluate_speed.py
    .venv/bin/python bench/evaluate_speed.py --baseline-replicates 1000 --markdown section.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from chexcft.evaluation.bootstrap import bootstrap_aucs, stratified_weights  # noqa: E402
from chexcft.provenance import cpu_model  # noqa: E402

NIH_TEST = REPO.parent / "shared" / "benchmarks" / "nih-test"
PREVALENCE = (0.108, 0.026, 0.123, 0.176, 0.051, 0.060, 0.012, 0.049, 0.043, 0.018, 0.023, 0.016, 0.033, 0.002)


def load_data(seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Labels and scores (n, 14): the NIH reproduction when present, else synthetic data of that shape."""
    if (NIH_TEST / "chexnet_predictions.csv").is_file():
        from chexcft.evaluation.files import load_evaluation

        inputs = load_evaluation(NIH_TEST / "groundtruth.csv", {"chexnet": NIH_TEST / "chexnet_predictions.csv"},
                                 tasks="all")
        tasks = list(inputs.match.tasks)
        truth = inputs.groundtruth.set_index(inputs.key)
        scores = inputs.predictions["chexnet"].set_index(inputs.key).loc[truth.index, tasks]
        return truth[tasks].to_numpy(np.float64), scores.to_numpy(np.float64), "NIH test (CheXNet reproduction)"
    rng = np.random.default_rng(seed)
    y = (rng.random((22433, len(PREVALENCE))) < np.array(PREVALENCE)).astype(np.float64)
    return y, rng.normal(size=y.shape) + 1.2 * y, "synthetic, NIH test shape (../shared absent)"


def timed(function, *args):  # noqa: ANN001, ANN201 - a small timing helper
    """(result, wall seconds, CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def baseline_loop(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One roc_auc_score per replicate and finding, on the resampled rows."""
    out = np.empty((weights.shape[0], y.shape[1]))
    rows = np.arange(y.shape[0])
    for b in range(weights.shape[0]):
        index = np.repeat(rows, weights[b])
        for t in range(y.shape[1]):
            out[b, t] = roc_auc_score(y[index, t], scores[index, t])
    return out


def whole_evaluate(seed: int, replicates: int) -> float | None:
    """Wall seconds of the in-process `chexcft evaluate` path on the NIH files (None when they are absent)."""
    if not (NIH_TEST / "chexnet_predictions.csv").is_file():
        return None
    from chexcft.evaluation.files import load_evaluation
    from chexcft.evaluation.report import evaluate_table, score_table

    start = time.perf_counter()
    inputs = load_evaluation(NIH_TEST / "groundtruth.csv", {"chexnet": NIH_TEST / "chexnet_predictions.csv"},
                             tasks="all")
    table = score_table(inputs.groundtruth, inputs.predictions, ensembles=(), tasks=inputs.match.tasks,
                        key=inputs.key, match=inputs.match)
    evaluate_table(table, bootstrap=replicates, seed=seed)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates (chexcft's default)")
    parser.add_argument("--baseline-replicates", type=int, default=100,
                        help="replicates the sklearn loop runs (its time is scaled to --replicates)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", type=Path, help="write the markdown section here")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    y, scores, source = load_data(args.seed)
    weights, w_wall, w_cpu = timed(stratified_weights, y, args.replicates, args.seed)
    fast, b_wall, b_cpu = timed(bootstrap_aucs, y, scores, weights)
    chexcft_wall, chexcft_cpu = w_wall + b_wall, w_cpu + b_cpu
    k = min(args.baseline_replicates, args.replicates)
    slow, s_wall, s_cpu = timed(baseline_loop, y, scores, weights[:k])
    scale = args.replicates / k
    base_wall, base_cpu = s_wall * scale, s_cpu * scale
    difference = float(np.nanmax(np.abs(slow - fast[:k])))
    whole = whole_evaluate(args.seed, args.replicates)
    load_end = os.getloadavg()[0]
    n, t = y.shape
    scaled = "" if k == args.replicates else f" ({k} replicates run: {s_wall:.1f} s wall, scaled x{scale:g})"
    lines = [
        f"Data: {source}: {n:,} images x {t} findings, {args.replicates:,} stratified bootstrap replicates, seed "
        f"{args.seed}. Machine: {cpu_model()}, {os.cpu_count()} cores, load average {load_start:.1f} at the start "
        f"and {load_end:.1f} at the end (shared machine).",
        "",
        "| | wall s | CPU s |",
        "|---|---:|---:|",
        f"| chexcft: stratified multiplicities (`stratified_weights`) | {w_wall:.2f} | {w_cpu:.2f} |",
        f"| chexcft: AUC of every replicate and finding (`bootstrap_aucs`) | {b_wall:.2f} | {b_cpu:.2f} |",
        f"| **chexcft total** | **{chexcft_wall:.2f}** | **{chexcft_cpu:.2f}** |",
        f"| baseline: `roc_auc_score` per replicate and finding{scaled} | {base_wall:.1f} | {base_cpu:.1f} |",
        "",
        f"Speed-up: **{base_wall / chexcft_wall:.1f}x** wall, {base_cpu / chexcft_cpu:.1f}x CPU (target >= 20x; "
        f"chexcft under 30 s: {'yes' if chexcft_wall < 30 else 'NO'}). Largest AUC difference between the two over "
        f"the {k} shared replicates: {difference:.1e}.",
    ]
    if whole is not None:
        lines += ["", f"The whole in-process evaluate path (read both CSVs, match findings, AUC, {args.replicates:,}-"
                      f"replicate bootstrap, DeLong intervals, JSON rows): {whole:.1f} s wall."]
    text = "\n".join(lines)
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
