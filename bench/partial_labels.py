"""Partial-label schemes on the bundled demo data: held-out AUC before/after CFT and Large Loss rejection precision.

Not a speed benchmark: a measurement (issue 11's closing note). Every member is trained with the same seed, so
all of them share the initial weights and the batch order and differ only in how they treat the blanks (or in
the loss). Members, at the demo's settings (chexcft.demo.DemoSettings unless overridden):
  assume-negative  U-Ones, blanks trained as 0 (today's default)
  LL-R / LL-Ct / LL-Cp   U-Ones, Large Loss on the blanks (--delta-rel)
  AUC-margin       two-stage: the assume-negative member's best weights, head reset, masked AUCM + PESG
                   (--aucm-epochs, default 2 as in LibAUC's CheXpert example: lr 0.1, then 0.01)
Then `chexcft cft` (the demo's budgets) on each, held-out mean AUC on the demo test split (bootstrap 95% CI),
and for the LL members the rejection precision: the fraction of modified (rejected/corrected) entries whose true
label (data/demo/train_truth.csv) is positive, against the base rate of true positives among all unobserved
entries of the training split.

    python bench/partial_labels.py --out /tmp/pl [--epochs 3] [--delta-rel 0.5] [--members negative,LL-R,...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chexcft.demo import DemoData, DemoSettings  # noqa: E402
from chexcft.training import TrainConfig, is_finished, train  # noqa: E402

MEMBERS = ("negative", "LL-R", "LL-Ct", "LL-Cp", "aucm")


def _configs(data: DemoData, out: Path, settings: DemoSettings, epochs: int, delta_rel: float, wanted: list[str],
             aucm_epochs: int = 2) -> dict[str, TrainConfig]:
    base = TrainConfig(
        train_csv=str(data.train_csv), valid_csv=str(data.valid_csv), root=str(data.root), out="unused",
        policy="U-Ones", arch=settings.arch, image_size=settings.image_size, epochs=epochs,
        batch_size=settings.batch_size, lr=settings.lr, seed=settings.seed, device="auto",
        cache_dir=str(out / "cache"), quiet=True, resume=True,
    )  # fmt: skip
    configs = {"negative": base.replace(out=str(out / "negative"))}
    for scheme in ("LL-R", "LL-Ct", "LL-Cp"):
        configs[scheme] = base.replace(out=str(out / scheme), blank=scheme, delta_rel=delta_rel)
    best = out / "negative" / "weights" / "best.safetensors"
    configs["aucm"] = base.replace(out=str(out / "aucm"), loss="aucm", lr=None, init=f"file:{best}", reset_head=True,
                                   epochs=aucm_epochs)
    return {name: configs[name] for name in wanted}


def _cft(run: Path, data: DemoData, settings: DemoSettings) -> None:
    if (run / "cft" / "head.safetensors").is_file():
        return
    params = dict(settings.cft_params)
    budgets = [f"--{key.replace('_', '-')}={params[key]}" for key in ("max_steps", "patience", "population") if key in params]
    command = [
        sys.executable, "-m", "chexcft", "cft", "--run", str(run), "--train-csv", str(data.train_csv),
        "--valid-csv", str(data.valid_csv), "--test-csv", str(data.test_csv), "--root", str(data.root),
        "--method", settings.cft_method, *budgets, "--seed", str(settings.seed),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def _held_out(runs: dict[str, Path], data: DemoData, settings: DemoSettings, out: Path) -> dict[str, dict[str, dict]]:
    from chexcft.data import read_table
    from chexcft.evaluation import evaluate_table, load_groundtruth, load_predictions, score_table
    from chexcft.predict import predict_table, write_predictions

    table = read_table(data.test_csv, data.root)
    truth = load_groundtruth(data.test_csv)
    result: dict[str, dict[str, dict]] = {}
    for stage, use_cft in (("before", False), ("after", True)):
        tables = {}
        for name, run in runs.items():
            predicted = predict_table(table, [run], use_cft=use_cft, batch_size=64, progress=False)
            path, _ = write_predictions(predicted, out / "predictions" / f"{name}_{stage}.csv")
            tables[name] = load_predictions(path)
        rows = evaluate_table(score_table(truth, tables, ensembles=(), seed=settings.seed),
                              bootstrap=settings.bootstrap, seed=settings.seed)
        for row in rows:
            result.setdefault(row["name"], {})[stage] = row
    return result


def _precision(run: Path, data: DemoData) -> dict[str, object] | None:
    logs = sorted((run / "large_loss").glob("epoch-*.csv"))
    if not logs:
        return None
    config = json.loads((run / "config.json").read_text())
    observations = config["observations"]
    multiclass = set(config["multiclass"])
    truth = pd.read_csv(data.root / "train_truth.csv").set_index("Path")
    train = pd.read_csv(data.train_csv).set_index("Path")
    binary = [o for o in observations if o not in multiclass]
    blanks = train[binary].isna()
    true_pos = truth.loc[train.index, binary] == 1
    base_rate = float(true_pos.to_numpy()[blanks.to_numpy()].mean())
    selected = pd.concat([pd.read_csv(p) for p in logs], ignore_index=True)
    if selected.empty:
        return {"selected": 0, "distinct": 0, "precision": float("nan"), "base_rate": base_rate, "by_epoch": {}}
    hits = np.array([truth.at[path, obs] == 1 for path, obs in zip(selected["Path"], selected["observation"])])
    selected["true_positive"] = hits
    distinct = selected.drop_duplicates(["Path", "observation"])
    by_epoch = {int(e): (int(len(g)), float(g["true_positive"].mean())) for e, g in selected.groupby("epoch")}
    return {
        "selected": int(len(selected)),
        "distinct": int(len(distinct)),
        "precision": float(hits.mean()),
        "precision_distinct": float(distinct["true_positive"].mean()),
        "base_rate": base_rate,
        "n_unobserved": int(blanks.to_numpy().sum()),
        "by_epoch": by_epoch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (runs, CFT heads, predictions)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo's")
    parser.add_argument("--delta-rel", type=float, default=0.5)
    parser.add_argument("--members", default=",".join(MEMBERS))
    parser.add_argument("--aucm-epochs", type=int, default=2, help="second-stage epochs (LibAUC's example: 2)")
    args = parser.parse_args()
    settings = DemoSettings()
    epochs = args.epochs or settings.epochs
    data = DemoData.bundled()
    out = args.out.resolve()
    wanted = [m.strip() for m in args.members.split(",") if m.strip()]
    configs = _configs(data, out, settings, epochs, args.delta_rel, wanted, args.aucm_epochs)
    timings: dict[str, dict[str, float]] = {}
    for name, config in configs.items():
        timings[name] = {}
        if not is_finished(config.out):
            wall, cpu = time.perf_counter(), time.process_time()
            train(config)
            timings[name]["train_wall_s"] = time.perf_counter() - wall
            timings[name]["train_cpu_s"] = time.process_time() - cpu
        wall = time.perf_counter()
        _cft(Path(config.out), data, settings)
        timings[name]["cft_wall_s"] = time.perf_counter() - wall
        print(f"{name}: trained and fine-tuned  {timings[name]}  load {os.getloadavg()}", flush=True)
    runs = {name: Path(c.out) for name, c in configs.items()}
    held = _held_out(runs, data, settings, out)
    rows = []
    for name in runs:
        before, after = held[name]["before"], held[name]["after"]
        precision = _precision(runs[name], data) if name.startswith("LL-") else None
        rows.append({
            "member": name,
            "mean AUC before CFT": before["mean_auc"],
            "CI before": before.get("mean_auc_ci"),
            "mean AUC after CFT": after["mean_auc"],
            "CI after": after.get("mean_auc_ci"),
            "modified entries": precision["selected"] if precision else None,
            "rejection precision": precision["precision"] if precision else None,
            "base rate": precision["base_rate"] if precision else None,
            "by epoch (n, precision)": precision["by_epoch"] if precision else None,
        })
    frame = pd.DataFrame(rows)
    (out / "summary.json").write_text(json.dumps({"rows": rows, "timings": timings, "epochs": epochs,
                                                  "delta_rel": args.delta_rel, "load": os.getloadavg()}, default=str, indent=1))
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 60):
        print(frame.to_string(index=False))
    print(f"settings: {settings.arch}, {settings.image_size} px, {epochs} epochs, batch {settings.batch_size}, "
          f"lr {settings.lr}, seed {settings.seed}, delta_rel {args.delta_rel}%; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
