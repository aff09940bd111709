"""chexcft viewer: browse studies, calibrated predictions, Grad-CAM heatmaps, per-finding AUC, exports.

Start it with `chexcft view --model RUN_DIR --data CSV_OR_FOLDER [--groundtruth CSV]`, or
`streamlit run app/viewer.py -- --model RUN_DIR --data CSV_OR_FOLDER [...]`.
This script is layout and widgets only: everything it shows is computed by the chexcft package.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable

import numpy as np
import pandas as pd
import streamlit as st

from chexcft.errors import ChexcftError
from chexcft.io import XRay, dicom_header, read_xray, sniff_format
from chexcft.evaluation.metrics import MIN_CLASS_COUNT
from chexcft.viewer import browser, exports, images, performance, session, upload
from chexcft.viewer.options import ViewerOptions, parse_viewer_args

PAGES = ("Studies", "Performance", "Upload", "Export")
SORT_LABELS = {"predicted probability": "probability", "disagreement with label": "disagreement", "study name": "study"}
MEAN_OF_MEMBERS = "all models (mean)"
CALIBRATED = "calibrated"  # after CFT and calibration (an ensemble: its rule and its own calibration)
RAW = "raw model"  # the trained head alone (an ensemble: combined by its rule, uncalibrated)


# ---------------------------------------------------------------- cached loaders (all computing is in chexcft)
@st.cache_resource(show_spinner="Loading models...")
def get_models(models: tuple[str, ...], which: str, device: str) -> session.ModelSet:
    return session.load_runs(models, which=which, device=device)


@st.cache_data(show_spinner="Reading the image table...")
def get_table(data: str, root: str | None) -> pd.DataFrame:
    return session.load_table(data, root)


@st.cache_data(show_spinner=False)
def get_labels(data: str, root: str | None, groundtruth: str | None) -> pd.DataFrame | None:
    return session.load_labels(get_table(data, root), groundtruth, root)


@st.cache_data(show_spinner=False)
def get_predictions(opts: ViewerOptions) -> session.MemberPredictions:
    models = get_models(opts.models, opts.which, opts.device)
    table = get_table(opts.data, opts.root)
    bar = st.progress(0.0, text=f"Predicting {len(table)} images with {len(models.runs)} model(s)...")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Predicting: batch {done} of {total}")

    result = session.predict_table_members(models, table, batch_size=opts.batch_size, progress=progress)
    bar.empty()
    return result


@st.cache_data(show_spinner="Predicting...", max_entries=16)
def get_upload_predictions(opts: ViewerOptions, digest: str, _pixels: np.ndarray,
                           name: str) -> session.MemberPredictions:
    models = get_models(opts.models, opts.which, opts.device)
    return session.predict_pixels_members(models, _pixels, name)


@st.cache_data(show_spinner=False, max_entries=64)
def get_xray(path: str, window: tuple[float, float] | None) -> XRay:
    return read_xray(path, window=window)


@st.cache_data(show_spinner=False, max_entries=64)
def get_header(path: str, include_phi: bool) -> dict[str, str] | None:
    return dicom_header(path, include_phi=include_phi) if sniff_format(path) == "dicom" else None


@st.cache_data(show_spinner="Computing the Grad-CAM heatmap...", max_entries=128)
def get_heatmap(opts: ViewerOptions, key: str, _pixels: np.ndarray, finding: str, member: str) -> np.ndarray:
    """Grad-CAM for the image identified by `key` (a path, or an upload's digest)."""
    from chexcft.heatmap import finding_heatmap, mean_heatmap
    from chexcft.predict import run_image_size

    models = get_models(opts.models, opts.which, opts.device)
    chosen = range(len(models.runs)) if member == MEAN_OF_MEMBERS else [models.names.index(member)]
    maps = []
    for index in chosen:
        run = models.runs[index]
        maps.append(finding_heatmap(run.model, _pixels, list(run.observations).index(finding), run_image_size(run)))
    return mean_heatmap(maps)


@st.cache_data(show_spinner="Computing AUCs with bootstrap intervals...")
def get_auc_rows(opts: ViewerOptions, findings: tuple[str, ...]) -> list[dict]:
    truth, tables = _study_tables(opts, findings)
    return performance.auc_rows(truth, tables, findings)


@st.cache_data(show_spinner="Drawing ROC curves...")
def get_roc_png(opts: ViewerOptions) -> bytes:
    observations = get_models(opts.models, opts.which, opts.device).observations
    truth, tables = _study_tables(opts, performance.known_findings(observations))
    return performance.roc_png(truth, tables)


def _study_tables(opts: ViewerOptions, findings: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    predictions = get_predictions(opts)
    labels = get_labels(opts.data, opts.root, opts.groundtruth)
    rows = performance.labelled_rows(predictions.mean("calibrated"), labels)
    truth = performance.study_groundtruth(np.asarray(predictions.paths)[rows], labels[rows], findings)
    tables = {CALIBRATED: performance.study_predictions(predictions.frame("calibrated"), findings),
              RAW: performance.study_predictions(predictions.frame("raw"), findings)}
    if len(predictions.members) > 1:
        for index, name in enumerate(predictions.members):
            tables[name] = performance.study_predictions(predictions.frame("calibrated", index), findings)
    return truth, tables


Thresholds = float | dict[str, float]


def _threshold_of(thresholds: Thresholds, finding: str) -> float:
    return thresholds if isinstance(thresholds, float) else float(thresholds.get(finding, 0.5))


@st.cache_data(show_spinner="Choosing thresholds...")
def get_rule_thresholds(opts: ViewerOptions, rule: str) -> dict[str, float]:
    predictions = get_predictions(opts)
    labels = get_labels(opts.data, opts.root, opts.groundtruth)
    return performance.rule_thresholds(rule, labels, predictions.mean("calibrated"), predictions.observations)


def threshold_control(opts: ViewerOptions, predictions: session.MemberPredictions, labels: pd.DataFrame | None,
                      finding: str) -> Thresholds:
    """The sidebar's decision threshold: manual, the model's saved thresholds, or an operating-point rule."""
    choices = performance.threshold_choices(opts.models)
    if labels is None:
        choices = [c for c in choices if c not in performance.RULE_CHOICES]
    choice = st.sidebar.selectbox("Decision threshold", choices, key="threshold-rule",
                                  help="manual: one slider for every finding; saved: thresholds.json written by "
                                       "`chexcft evaluate --operating-point ... --save-thresholds`; a rule: per "
                                       "finding, chosen on this data's labels.")
    if choice == performance.MANUAL:
        return float(st.sidebar.slider("Threshold", 0.0, 1.0, 0.5, 0.01, key="threshold"))
    if choice == performance.SAVED:
        saved = performance.saved_thresholds(opts.models) or {"thresholds": {}}
        st.sidebar.caption(f"Saved {saved.get('rule', '')} thresholds (chosen on validation); "
                           f"{finding}: {_threshold_of(saved['thresholds'], finding):.3g}")
        return dict(saved["thresholds"])
    thresholds = get_rule_thresholds(opts, choice)
    st.sidebar.caption(f"{choice}, chosen on these images' labels (in-sample, not held out); "
                       f"{finding}: " + (f"{thresholds[finding]:.3g}" if finding in thresholds else "none (0.5)"))
    return thresholds


# ---------------------------------------------------------------- panels
def image_panel(read: Callable[[tuple[float, float] | None], XRay], heat: Callable[[np.ndarray], np.ndarray] | None,
                header: dict[str, str] | None, key: str, description: str) -> None:
    """The X-ray with window/level, zoom and an optional Grad-CAM overlay."""
    base = read(None)
    limits = images.window_range(base.meta, header)
    controls = st.columns(3)
    show_heat = controls[0].toggle("Grad-CAM overlay", value=heat is not None, key=f"{key}-heat",
                                   disabled=heat is None)
    opacity = controls[1].slider("Heatmap opacity", 0.0, 1.0, 0.6, 0.05, key=f"{key}-opacity", disabled=not show_heat)
    factor = controls[2].slider("Zoom", 1.0, 4.0, 1.0, 0.25, key=f"{key}-zoom")
    with st.expander("Window / level and pan"):
        note = "" if limits.from_file else " (the file has none: full range shown)"
        custom = st.checkbox("Custom window" + note, key=f"{key}-custom")
        step = max((limits.high - limits.low) / 256.0, 1e-3)
        center = st.slider("Window center (level)", limits.low, limits.high, limits.center, step, key=f"{key}-center",
                           disabled=not custom)
        width = st.slider("Window width", step, limits.high - limits.low + 1.0, limits.width, step, key=f"{key}-width",
                          disabled=not custom)
        pan_x = st.slider("Pan left-right", 0.0, 1.0, 0.5, 0.05, key=f"{key}-pan-x", disabled=factor == 1.0)
        pan_y = st.slider("Pan up-down", 0.0, 1.0, 0.5, 0.05, key=f"{key}-pan-y", disabled=factor == 1.0)
    shown = read((center, width)) if custom else base
    if show_heat and heat is not None:
        picture = images.overlay(shown.pixels, heat(base.pixels), opacity)
        description += " with Grad-CAM heatmap"
    else:
        picture = images.to_uint8(shown.pixels)
    picture = images.display_size(images.zoom(picture, factor, pan_x, pan_y))
    window = shown.meta.get("window")
    window_text = "file/none" if window is None else str(tuple(round(v, 1) for v in window))
    caption = (f"{base.meta.get('format', '?').upper()} {base.meta.get('original_size')} · "
               f"{base.meta.get('photometric', '')} · window {window_text} · zoom {factor:g}x")
    st.image(picture, caption=caption, width="stretch", alt=description)


def header_panel(get: Callable[[bool], dict[str, str] | None], key: str) -> None:
    """The DICOM header with patient-identifying fields hidden unless the user turns them on."""
    with st.expander("DICOM header"):
        include_phi = st.toggle("Show patient-identifying fields (PHI)", value=False, key=f"{key}-phi")
        header = get(include_phi)
        if header is None:
            st.caption("Not a DICOM file: no header.")
        else:
            st.dataframe(pd.DataFrame({"keyword": list(header), "value": list(header.values())}), hide_index=True,
                         width="stretch", height=300)
            if not include_phi:
                st.caption("Patient-identifying fields (names, IDs, dates, institutions, UIDs, private tags) "
                           "are hidden.")


def predictions_panel(predictions: session.MemberPredictions, row: int, thresholds: Thresholds, finding: str) -> None:
    """Per finding: calibrated (after CFT) next to the raw output, each model's value, decision at the threshold."""
    table = session.prediction_rows(predictions, row, thresholds)
    threshold = _threshold_of(thresholds, finding)
    column = list(predictions.observations).index(finding)
    calibrated, raw = predictions.mean("calibrated")[row, column], predictions.mean("raw")[row, column]
    if not np.isfinite(calibrated):
        st.error("This image could not be read: no prediction.")
        return
    left, right = st.columns(2)
    left.metric(f"{finding} (calibrated)", f"{calibrated:.3f}", delta=f"raw model {raw:.3f}", delta_color="off",
                delta_arrow="off")
    right.metric("Decision", "positive" if calibrated >= threshold else "negative", delta=f"threshold {threshold:.2f}",
                 delta_color="off", delta_arrow="off")
    value_columns = [c for c in table.columns if c not in ("Finding",) and not c.startswith("Decision")]
    styled = table.style.apply(lambda r: ["font-weight: bold" if r["Finding"] == finding else "" for _ in r], axis=1)
    config = {c: st.column_config.NumberColumn(format="%.3f", width="small") for c in value_columns}
    config.update({c: st.column_config.TextColumn(width="small") for c in table.columns if c.startswith("Decision")})
    st.dataframe(styled, hide_index=True, width="stretch", height=35 * (len(table) + 1) + 3, column_config=config)
    rule = predictions.combination.rule if predictions.combination is not None else "mean-logit"
    members = (f" Other columns: each model's own calibrated value; the ensemble combines the members' logits by "
               f"{rule} and applies its own calibration.")
    st.caption(f"Calibrated = after CFT and Platt calibration (what `chexcft predict` writes); Raw model = the trained "
               f"head alone; Decision at threshold {threshold:.3g}"
               + ("." if isinstance(thresholds, float) else " (each finding at its own threshold).")
               + (members if len(predictions.members) > 1 else ""))


# ---------------------------------------------------------------- pages
def studies_page(opts: ViewerOptions, models: session.ModelSet, table: pd.DataFrame,
                 predictions: session.MemberPredictions, labels: pd.DataFrame | None, finding: str, threshold: Thresholds,
                 member: str) -> None:
    st.header("Studies")
    index = browser.study_index(table, predictions.mean("calibrated"), list(predictions.observations).index(finding),
                                labels, finding)
    filters = st.columns([3, 2, 2, 2, 2])
    search = filters[0].text_input("Search patient or study", key="search")
    patients = ["All patients", *dict.fromkeys(index["Patient"])]
    patient = filters[1].selectbox("Patient", patients, key="patient")
    label = filters[2].selectbox(f"Label ({finding})", browser.LABEL_FILTERS, key="label-filter",
                                 disabled=labels is None)
    sort = filters[3].selectbox("Sort by", list(SORT_LABELS), key="sort")
    order = filters[4].selectbox("Order", ("highest first", "lowest first"), key="order")
    selected = browser.select_studies(index, search=search, patient=None if patient == patients[0] else patient,
                                      label=label if labels is not None else "any", sort=SORT_LABELS[sort],
                                      descending=order == "highest first")
    st.dataframe(
        selected[["Patient", "Study", "views", "probability", "label name", "disagreement"]].rename(
            columns={"probability": f"P({finding})", "label name": "label"}),
        hide_index=True, width="stretch", height=210,
        column_config={f"P({finding})": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f"),
                       "disagreement": st.column_config.NumberColumn(format="%.3f")})
    st.caption(f"{len(selected)} of {len(index)} studies · probability = max over the study's views")
    if not len(selected):
        st.info("No study matches the filters.")
        return
    titles = {row["Study"]: browser.study_title(row) for _, row in selected.iterrows()}
    study = st.selectbox("Study", list(titles), format_func=titles.get, key="study")
    rows = selected.loc[selected["Study"] == study, "rows"].iloc[0]
    views = {browser.view_name(table.loc[r, "Path"]): int(r) for r in rows}
    view = st.radio("View", list(views), horizontal=True, key="view")
    row = views[view]
    path = str(table.loc[row, "abs_path"]) if "abs_path" in table.columns else str(table.loc[row, "Path"])

    left, right = st.columns(2)
    with left:
        try:
            header = get_header(path, False)
            readable = np.isfinite(predictions.mean("calibrated")[row]).all()
            heat = (lambda pixels: get_heatmap(opts, path, pixels, finding, member)) if readable else None
            image_panel(lambda window: get_xray(path, window), heat, header, key="study",
                        description=f"X-ray {table.loc[row, 'Path']} ({finding})")
        except ChexcftError as exc:
            st.error(str(exc))
    with right:
        st.subheader(f"Predictions · {view}")
        st.caption(str(table.loc[row, "Path"]))
        predictions_panel(predictions, row, threshold, finding)
        if labels is not None:
            st.caption("Labels: " + browser.label_summary(labels.loc[row], predictions.observations))
        header_panel(lambda phi: get_header(path, phi), key="study")


def performance_page(opts: ViewerOptions, models: session.ModelSet, predictions: session.MemberPredictions,
                     labels: pd.DataFrame | None) -> None:
    st.header("Performance")
    if labels is None:
        st.info("No labels: start the viewer with `--groundtruth CSV` (or a data CSV with labels) to see AUCs, "
                "ROC curves and reliability diagrams.")
        cft_section(models)
        return
    rows = performance.labelled_rows(predictions.mean("calibrated"), labels)
    findings = performance.evaluable_findings(labels[rows], predictions.observations)
    if not findings:
        st.warning("No finding is labelled 0/1 on every image, so no AUC can be computed.")
    else:
        st.subheader("AUC per finding (study level, 95% bootstrap interval)")
        try:
            rows = get_auc_rows(opts, findings)
            means = performance.mean_aucs(rows)
            for column, (name, (mean, ci)) in zip(st.columns(len(means)), means.items()):
                interval = "" if ci[0] is None else f"95% CI [{ci[0]:.3f}, {ci[1]:.3f}]"
                column.metric(f"Mean AUC · {name}", "n/a" if mean is None else f"{mean:.3f}", delta=interval,
                              delta_color="off", delta_arrow="off")
            table = performance.auc_table(rows)
            st.dataframe(table, hide_index=True, width="stretch",
                         column_config={c: st.column_config.NumberColumn(format="%.3f")
                                        for c in table.columns if c.endswith(" AUC")})
            st.caption(f"Over {len(findings)} findings labelled 0/1 on every image; study = max over its views. "
                       f"'unreliable': fewer than {MIN_CLASS_COUNT} positive or negative studies, so no interval. "
                       f"'{CALIBRATED}' = after CFT and calibration, '{RAW}' = the trained head alone.")
        except ChexcftError as exc:
            st.error(str(exc))
        tasks = performance.known_findings(predictions.observations)
        if len(tasks) == 5 and all(task in findings for task in tasks):
            st.subheader("ROC curves with the three radiologists (competition tasks)")
            try:
                st.image(get_roc_png(opts), width="stretch")
            except ChexcftError as exc:
                st.error(str(exc))
        st.subheader("Reliability before and after calibration (image level)")
        default = [t for t in tasks if t in findings] or list(findings[:5])
        chosen = st.multiselect("Findings", list(findings), default=default, key="reliability-findings")
        if chosen:
            before, after = predictions.mean("uncalibrated"), predictions.mean("calibrated")
            figure = performance.reliability_figure(labels, before, after, predictions.observations, chosen)
            st.pyplot(figure, clear_figure=True)
            st.dataframe(performance.reliability_table(labels, before, after, predictions.observations, chosen),
                         hide_index=True, width="stretch")
            uncalibrated = (models.combination.calibration is None if models.combination is not None
                            else models.runs[0].calibration is None)
            if uncalibrated:
                st.caption("No calibration fitted (run `chexcft cft`, or `chexcft calibrate-ensemble` for an "
                           "ensemble): before and after coincide.")
    cft_section(models)


def cft_section(models: session.ModelSet) -> None:
    st.subheader("CFT report (per category, before/after fine-tuning)")
    reports = performance.cft_reports(models.run_dirs, models.names)
    for (name, report), run_dir in zip(reports.items(), models.run_dirs):
        if report is None:
            st.caption(f"{name}: no CFT report (run `chexcft cft --run RUN_DIR ...`).")
            continue
        st.markdown(f"**{name}**")
        pairs = performance.before_after_columns(report)
        if pairs and "observation" in report.columns:
            before, after = pairs[0]
            chart = report.set_index("observation")[[before, after]].dropna(how="all")
            chart.columns = ["before CFT", "after CFT"]
            st.bar_chart(chart, stack=False, height=260, y_label=before.replace("_before", "").replace("_", " "))
        note = performance.cft_note(run_dir)
        if note:
            st.caption(f"Note: {note}")
        st.dataframe(report, hide_index=True, width="stretch")


def upload_page(opts: ViewerOptions, finding: str, threshold: Thresholds, member: str) -> None:
    st.header("Upload one image")
    st.caption(f"DICOM, PNG or JPEG, at most {upload.MAX_UPLOAD_MB} MB. The file's content decides its format; "
               "nothing is unpickled.")
    uploaded = st.file_uploader("X-ray file", key="upload")
    if uploaded is None:
        return
    data = uploaded.getvalue()
    name = uploaded.name
    try:
        base = upload.read_upload(name, data)
        header = upload.upload_header(name, data)
    except ChexcftError as exc:
        st.error(str(exc))
        return
    digest = "upload:" + hashlib.sha256(data).hexdigest()
    predictions = get_upload_predictions(opts, digest, base.pixels, name)
    left, right = st.columns(2)
    with left:
        image_panel(lambda window: base if window is None else upload.read_upload(name, data, window=window),
                    lambda pixels: get_heatmap(opts, digest, pixels, finding, member), header, key="upload",
                    description=f"Uploaded X-ray {name} ({finding})")
    with right:
        st.subheader(f"Predictions · {name}")
        predictions_panel(predictions, 0, threshold, finding)
        header_panel(lambda phi: upload.upload_header(name, data, include_phi=phi), key="upload")


def export_page(opts: ViewerOptions, table: pd.DataFrame, predictions: session.MemberPredictions) -> None:
    st.header("Export")
    frame = predictions.frame("calibrated")
    st.markdown(f"**{len(frame)}** readable images, **{table['Study'].nunique()}** studies in `{opts.data}`.")
    if exports.has_competition_tasks(predictions.observations):
        try:
            submission = exports.submission_frame(frame, table)
            st.download_button("Download competition submission CSV", exports.frame_csv(submission),
                               file_name="submission.csv", mime="text/csv", key="download-submission")
            st.caption("Study + the 5 competition tasks, views combined by max; passes the scorer's checks. Preview:")
            formats = {t: st.column_config.NumberColumn(format="%.4f") for t in submission.columns[1:]}
            st.dataframe(submission.head(8), hide_index=True, width="stretch", column_config=formats)
        except ChexcftError as exc:
            st.error(str(exc))
    else:
        st.warning("The models do not predict all 5 competition tasks, so no submission can be written.")
    st.download_button("Download per-image predictions CSV", exports.frame_csv(frame),
                       file_name="predictions.csv", mime="text/csv", key="download-predictions")
    st.caption("Path + every finding's calibrated probability (the `chexcft predict` layout).")
    if len(predictions.failures):
        st.warning(f"{len(predictions.failures)} image(s) could not be read and are left out:")
        st.dataframe(predictions.failures, hide_index=True, width="stretch")


# ---------------------------------------------------------------- main
def main() -> None:
    st.set_page_config(page_title="chexcft viewer", layout="wide")
    try:
        opts = parse_viewer_args(sys.argv[1:])
        models = get_models(opts.models, opts.which, opts.device)
        table = get_table(opts.data, opts.root)
        labels = get_labels(opts.data, opts.root, opts.groundtruth)
        predictions = get_predictions(opts)
    except ChexcftError as exc:
        st.error(str(exc))
        st.stop()

    st.sidebar.title("chexcft viewer")
    page = st.sidebar.radio("Page", PAGES, key="page")
    observations = list(predictions.observations)
    tasks = performance.known_findings(predictions.observations)
    finding = st.sidebar.selectbox("Finding", observations, index=observations.index(tasks[0]) if tasks else 0,
                                   key="finding")
    threshold = threshold_control(opts, predictions, labels, finding)
    member = MEAN_OF_MEMBERS
    if len(models.runs) > 1:
        member = st.sidebar.selectbox("Heatmap model", [MEAN_OF_MEMBERS, *models.names], key="heatmap-model")
    st.sidebar.divider()
    cft = ", ".join(f"{n}: {'CFT + calibration' if r.calibration is not None else 'CFT' if r.has_cft else 'no CFT'}"
                    for n, r in zip(models.names, models.runs))
    st.sidebar.caption(f"Models: {cft}")
    if models.combination is not None:
        calibration = "its own calibration" if models.combination.calibration is not None else "no calibration"
        st.sidebar.caption(f"Ensemble: members' logits combined by {models.combination.rule}, {calibration}")
    st.sidebar.caption(f"Data: {opts.data} · {len(table)} images · {table['Study'].nunique()} studies")
    if models.dropped:
        st.sidebar.caption("Not predicted by every model: " + ", ".join(models.dropped))
    if len(predictions.failures):
        st.sidebar.warning(f"{len(predictions.failures)} unreadable image(s) (see Export)")
    if opts.groundtruth:
        st.sidebar.caption(f"Ground truth: {opts.groundtruth}")

    if page == "Studies":
        studies_page(opts, models, table, predictions, labels, finding, threshold, member)
    elif page == "Performance":
        performance_page(opts, models, predictions, labels)
    elif page == "Upload":
        upload_page(opts, finding, threshold, member)
    else:
        export_page(opts, table, predictions)


if __name__ == "__main__":  # Streamlit runs the script as __main__; a spawned worker re-imports it as __mp_main__
    main()
