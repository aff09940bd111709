"""Builders for the viewer tests: a CheXpert-layout input (with a DICOM study and an unreadable image), a ground-truth
CSV, two tiny runs with CFT head + calibration + CFT report, and an ensemble directory holding them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from chexcft.schema import OBSERVATIONS
from tests.prediction_builders import PredictionTree, make_prediction_tree, make_tiny_run


@dataclass
class ViewerInputs:
    """Everything `chexcft view` needs, under one tmp folder."""

    tree: PredictionTree
    data_csv: Path  # CheXpert CSV to browse (labels 0/1 on the competition tasks)
    groundtruth_csv: Path  # the same images' labels
    ensemble_dir: Path  # ensemble.json + member-0, member-1
    run_dirs: list[Path]

    def argv(self, *, ensemble: bool = True, groundtruth: bool = True) -> list[str]:
        """The viewer's options for these inputs."""
        models = [str(self.ensemble_dir)] if ensemble else [str(self.run_dirs[0])]
        argv = [arg for model in models for arg in ("--model", model)]
        argv += ["--data", str(self.data_csv), "--root", str(self.tree.root)]
        if groundtruth:
            argv += ["--groundtruth", str(self.groundtruth_csv)]
        return argv


def write_cft_report(run_dir: Path, observations: tuple[str, ...] = OBSERVATIONS, seed: int = 0) -> Path:
    """A RUN_DIR/cft/report.csv with the estimator's columns (validation AUC before/after per category)."""
    rng = np.random.default_rng(seed)
    before = rng.uniform(0.55, 0.8, len(observations))
    report = pd.DataFrame({
        "observation": list(observations),
        "valid_before": before,
        "valid_after": before + rng.uniform(0.0, 0.05, len(observations)),
        "method_kept": ["ga"] * len(observations),
        "status": ["fine-tuned"] * len(observations),
    })
    path = run_dir / "cft" / "report.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    report.to_csv(path, index=False)
    return path


def make_viewer_inputs(tmp_path: Path) -> ViewerInputs:
    """A prediction tree, its ground truth, two CFT-calibrated tiny runs (32 px) and an ensemble of them."""
    tree = make_prediction_tree(tmp_path / "data")
    frame = tree.frame.copy()
    labels = frame[list(OBSERVATIONS)].fillna(0.0).replace(-1.0, 1.0)
    frame[list(OBSERVATIONS)] = labels
    data_csv = tree.input_csv
    frame.to_csv(data_csv, index=False)
    groundtruth_csv = tmp_path / "groundtruth.csv"
    frame.to_csv(groundtruth_csv, index=False)
    ensemble = tmp_path / "ensemble"
    runs = []
    for index in range(2):
        run = make_tiny_run(ensemble / f"member-{index}", train_csv=tree.train_csv, root=tree.root, image_size=32,
                            seed=index, cft=True)
        write_cft_report(run, seed=index)
        runs.append(run)
    (ensemble / "ensemble.json").write_text(json.dumps({"members": ["member-0", "member-1"]}))
    return ViewerInputs(tree, data_csv, groundtruth_csv, ensemble, runs)
