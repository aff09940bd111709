"""One PNG with a ROC panel per task: every row's curve and the three radiologists' operating points."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from chexcft.evaluation.metrics import roc_auc, undefined_auc_reason  # noqa: E402
from chexcft.evaluation.report import ScoreTable  # noqa: E402
from chexcft.fileio import atomic_path  # noqa: E402
from chexcft.schema import RADIOLOGIST_POINTS, STUDY_COLUMN  # noqa: E402


def plot_roc(table: ScoreTable, out: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Write the ROC figure (one panel per task, radiologists as markers) to `out` as PNG, atomically."""
    n_tasks = len(table.tasks)
    fig, axes = plt.subplots(1, n_tasks, figsize=(3.6 * n_tasks, 3.9), squeeze=False)
    for t, (task, ax) in enumerate(zip(table.tasks, axes[0])):
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
        benchmark = RADIOLOGIST_POINTS.get(task, ()) if table.key == STUDY_COLUMN else ()  # study-level benchmark
        points = np.array(benchmark, dtype=float).reshape(-1, 2)
        if points.size:
            ax.scatter(1.0 - points[:, 0], points[:, 1], marker="X", s=50, color="black", zorder=5,
                       label="radiologists")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("1 - specificity")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.01)
        ax.set_aspect("equal")
        ax.legend(fontsize=5, loc="lower right")
    axes[0][0].set_ylabel("sensitivity")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(out)
