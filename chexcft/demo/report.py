def _relative(path: Path, base: Path) -> str:
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


def _cft_section(members: Sequence[Path]) -> str:
    """Per member: what CFT kept per competition task, with validation AUC before and after (from cft/report.csv)."""
    blocks = []
    wanted = ["observation", "status", "method_kept", "valid_before", "valid_bp", "valid_ga", "valid_after",
              "n_train_pos", "n_train_neg", "seconds"]
    for member in members:
        path = Path(member) / "cft" / "report.csv"
        if not path.is_file():
            blocks.append(f"**{Path(member).name}**: no cft/report.csv")
            continue
        frame = pd.read_csv(path)
        if "observation" in frame.columns:
            frame = frame[frame["observation"].isin(COMPETITION_TASKS)]
        frame = frame[[c for c in wanted if c in frame.columns]]
        blocks.append(f"**{Path(member).name}** ({_relative(path, Path(member).parent.parent)})\n\n{frame_table(frame)}")
    return "\n\n".join(blocks)


def reading_note(result: Any, data: Any) -> str:
    """One paragraph that says which way CFT moved the held-out AUC and how small the selection split is."""
    from chexcft.evaluation import load_groundtruth

    valid = load_groundtruth(data.valid_csv)
    counts = ", ".join(f"{task} {int(valid[task].sum())}" for task in COMPETITION_TASKS)
    after = _by_name(result.after)
    changes = [after[row["name"]]["mean_auc"] - row["mean_auc"] for row in result.before
               if row.get("mean_auc") is not None and after.get(row["name"], {}).get("mean_auc") is not None]
    if not changes:
        return ""
    lowered = sum(change < 0 for change in changes)
    direction = (f"CFT lowered the held-out mean AUC of {lowered} of {len(changes)} rows" if lowered
                 else "CFT did not lower the held-out mean AUC of any row")
    return (
        f"{direction}. CFT picks each task's candidate row on a holdout of the known training labels and keeps "
        f"it only when its validation AUC gain is significant (one-sided DeLong); the validation split has few "
        f"positives ({counts}), so few rows pass and a passing row can still be noise: compare the validation "
        "gains in the CFT section with the held-out changes here. Separating selection from reporting is what "
        "makes this visible. The ensemble row also changes because each member's Platt calibration rescales "
        "its probabilities before they are averaged."
    )


def write_demo_report(result: Any, data: Any, before_table: Any, after_table: Any, policies: Sequence[str]) -> dict[str, Path]:
    """Write OUT/report.md and OUT/plots/*.png for a chexcft.demo.DemoResult; returns the plot paths."""
    from chexcft.evaluation.plots import plot_roc
    from chexcft.evaluation.report import ScoreTable

    out = Path(result.out)
    plots_dir = out / "plots"
    names = [m.name for m in result.members]
    labels = {name: f"{policy}" for name, policy in zip(names, policies)}
    labels["ensemble-mean"] = "mean of the members"

    roc_scores = {f"{name} after CFT": after_table.scores[name] for name in names}
    roc_scores["ensemble before CFT"] = before_table.scores["ensemble-mean"]
    roc_scores["ensemble after CFT"] = after_table.scores["ensemble-mean"]
    kinds = {name: ("ensemble" if name.startswith("ensemble") else "model") for name in roc_scores}
    roc = ScoreTable(after_table.studies, after_table.tasks, after_table.labels, roc_scores, kinds)
    curves = {"ensemble before CFT (raw)": before_table.scores["ensemble-mean"],
              "ensemble after CFT + Platt": after_table.scores["ensemble-mean"]}
    plots = {
        "roc": plot_roc(roc, plots_dir / "roc_test.png"),
        "auc_change": save_figure(auc_change_figure(result.before, result.after, after_table.tasks),
                                  plots_dir / "auc_before_after_cft.png"),
        "reliability": save_figure(reliability_figure(after_table.labels, curves, after_table.tasks),
                                   plots_dir / "reliability_test.png"),
    }

    settings = result.settings
    n_test = len(after_table.studies)
    positives = ", ".join(f"{task} {int(after_table.labels[:, t].sum())}" for t, task in enumerate(after_table.tasks))
    report = Report(
        "chexcft demo report",
        intro=(
            f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `chexcft demo"
            f"{' --quick' if settings.quick else ''}`. All AUCs below are on the **held-out test split** "
            f"({n_test} studies; positives: {positives}), which no step saw: members were trained on train "
            "(selecting their best epoch on valid), CFT re-fitted each task's head row on the known train labels "
            "(early stopping on a holdout of them) and kept a new row only when its gain on valid was significant, "
            "and the Platt calibration was fitted on valid. Intervals are 95% stratified bootstrap intervals. The demo images are 64x64 NIH radiographs "
            "with simulated partial labels: the numbers show that the pipeline works end to end, they are not a "
            "benchmark (with 3-5 positives for some tasks the intervals are wide)."
        ),
    )
    report.add("Held-out AUC before and after CFT (mean over the 5 competition tasks)",
               summary_table(result.before, result.after, labels) + "\n\n" + reading_note(result, data))
    report.add("Per task (radiologists on or below the ROC curve, of 3, in brackets)",
               task_table(result.before, result.after, after_table.tasks), _relative(plots["auc_change"], out))
    report.add("ROC curves on the test split, with the three radiologists' operating points", "",
               _relative(plots["roc"], out))
    report.add("Calibration on the test split (expected calibration error, 10 bins)",
               calibration_table(after_table.labels, curves, after_table.tasks), _relative(plots["reliability"], out))
    report.add("CFT per member (validation AUC: selection split, not the reported result)",
               _cft_section(result.members))
    setting_rows = pd.DataFrame(
        [(key, ", ".join(value) if isinstance(value, list) else value) for key, value in settings.to_dict().items()],
        columns=["setting", "value"],
    )
    report.add("Settings", frame_table(setting_rows.astype(str)) + "\n\nMember policies: "
               + ", ".join(f"{name} {policy}" for name, policy in zip(names, policies)))
    timing = pd.DataFrame(
        [(stage, f"{seconds:.1f}", "reused" if result.reused.get(stage) else "")
         for stage, seconds in result.seconds.items() if stage != "report"],
        columns=["stage", "seconds", "note"],
    )
    report.add("Stage timings", frame_table(timing))
    files = [
        ("report", out / "report.md"),
        ("submission (test split, scorer-checked)", result.submission),
        ("ensemble (members with cft/)", result.ensemble / "ensemble.json"),
        ("evaluation rows before CFT", result.evaluation["before"]),
        ("evaluation rows after CFT", result.evaluation["after"]),
        ("test predictions per member", Path(next(iter(result.predictions.values()))).parent),
        ("preprocessing cache", result.cache),
    ]
    report.add("Files", "\n".join(f"- {what}: `{_relative(path, out)}`" for what, path in files))
    report.add("Open the viewer", f"```\n{result.view_command}\n```")
    report.write(out / "report.md")
    return plots
