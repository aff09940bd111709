"""One PNG with a ROC panel per task: every row's curve and, where that benchmark exists, the radiologists' points."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from chexcft.evaluation.metrics import roc_auc, undefined_auc_reason  # noqa: E402
from chexcft.evaluation.radiologists import benchmark_points  # noqa: E402
from chexcft.evaluation.report import ScoreTable  # noqa: E402
from chexcft.fileio import atomic_path  # noqa: E402

PANELS_PER_ROW = 5  # the five competition tasks fit one row; `--tasks all` wraps onto more


def roc_figure(table: ScoreTable) -> plt.Figure:
    """The ROC figure: one panel per task, the radiologists as markers where their benchmark exists."""
    n_tasks = len(table.tasks)
    columns = min(n_tasks, PANELS_PER_ROW)
    n_rows = -(-n_tasks // columns)
    fig, axes = plt.subplots(n_rows, columns, figsize=(3.6 * columns, 3.9 * n_rows), squeeze=False)
    for ax in axes.flat[n_tasks:]:
        ax.set_visible(False)
    benchmark = benchmark_points(table.tasks, table.key, table.studies)
    for t, (task, ax) in enumerate(zip(table.tasks, axes.flat)):
        labels = table.labels[:, t]
        ax.plot([0, 1], [0, 1], color="0.8", lw=0.8, ls="--")
        reason = undefined_auc_reason(labels)
        if reason is None:
            for name, scores in table.scores.items():
                known = (labels == 0) | (labels == 1)
                fpr, tpr, _ = roc_curve(labels[known], scores[known, t])
                width = 1.8 if table.kinds.get(name) == "ensemble" else 0.9
                ax.plot(fpr, tpr, lw=width, label=f"{name} {roc_auc(labels, scores[:, t]):.3f}")
        else:
            ax.text(0.5, 0.5, f"AUC undefined:\n{reason}", ha="center", va="center", fontsize=8)
        points = np.array(benchmark[task], dtype=float).reshape(-1, 2)
        if points.size:
            ax.scatter(1.0 - points[:, 0], points[:, 1], marker="X", s=50, color="black", zorder=5,
                       label="radiologists")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("1 - specificity")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=5, loc="lower right")
    for row in axes:
        row[0].set_ylabel("sensitivity")
    fig.tight_layout()
    return fig


def plot_roc(table: ScoreTable, out: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write the ROC figure (roc_figure) to `out` as PNG, atomically."""
    fig = roc_figure(table)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(out)
