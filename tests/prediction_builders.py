"""Builders for the predict / submit / bundle tests: an input tree with a DICOM study and unreadable images,
tiny random-init run directories, and a re-implementation of the official CheXpert scorer's checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from chexcft.schema import COMPETITION_TASKS, OBSERVATIONS
from tests.builders import RELEASE, make_chexpert_tree, synthetic_xray


def write_dicom(path: Path, pixels: np.ndarray, view: str = "PA") -> Path:
    """Write a 12-bit MONOCHROME2 DX DICOM file with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.ViewPosition = view
    ds.PatientID = "anonymous"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = (pixels.astype(np.uint16) & 0x0FFF).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass
class PredictionTree:
    """A CheXpert-layout input for prediction and what is special in it."""

    root: Path  # folder containing the release folder
    input_csv: Path  # CheXpert-style CSV (valid.csv + extra rows), every study has a readable image
    frame: pd.DataFrame  # the rows of input_csv
    dicom_study: str
    broken_image: str  # Path of the one unreadable image (a frontal; its study has a readable lateral)
    broken_study: str
    lateral_only_study: str  # a study with only a lateral image
    train_csv: Path  # the tree's train.csv (for --fill-missing prior)


def _row(path: str, frontal: bool, labels: dict[str, float]) -> dict[str, object]:
    row: dict[str, object] = {
        "Path": path, "Sex": "Female", "Age": 60,
        "Frontal/Lateral": "Frontal" if frontal else "Lateral", "AP/PA": "PA" if frontal else np.nan,
    }
    row.update({name: labels.get(name, 0.0) for name in OBSERVATIONS})
    return row


def make_prediction_tree(tmp_path: Path, seed: int = 0) -> PredictionTree:
    """valid.csv of a generated tree plus: a DICOM study (frontal .dcm + lateral .jpg), a study whose frontal
    is unreadable but lateral is fine, and a lateral-only study."""
    tree = make_chexpert_tree(tmp_path, n_patients=6, seed=seed, image_shape=(48, 40))
    base = f"{RELEASE}/valid"
    dicom_study = f"{base}/patient90001/study1"
    broken_study = f"{base}/patient90002/study1"
    lateral_only = f"{base}/patient90003/study2"
    write_dicom(tmp_path / dicom_study / "view1_frontal.dcm", synthetic_xray(50, 44, seed=7).astype(np.uint16) * 16)
    Image.fromarray(synthetic_xray(44, 50, seed=8)).save(tmp_path / dicom_study / "view2_lateral.jpg")
    (tmp_path / broken_study).mkdir(parents=True)
    (tmp_path / broken_study / "view1_frontal.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated, not a JPEG")
    Image.fromarray(synthetic_xray(44, 50, seed=9)).save(tmp_path / broken_study / "view2_lateral.jpg")
    (tmp_path / lateral_only).mkdir(parents=True)
    Image.fromarray(synthetic_xray(44, 50, seed=10)).save(tmp_path / lateral_only / "view1_lateral.jpg")
    extra = pd.DataFrame(
        [
            _row(f"{dicom_study}/view1_frontal.dcm", True, {"Edema": 1.0}),
            _row(f"{dicom_study}/view2_lateral.jpg", False, {"Edema": 1.0}),
            _row(f"{broken_study}/view1_frontal.jpg", True, {"Atelectasis": 1.0}),
            _row(f"{broken_study}/view2_lateral.jpg", False, {"Atelectasis": 1.0}),
            _row(f"{lateral_only}/view1_lateral.jpg", False, {"Cardiomegaly": 1.0}),
        ]
    )
    frame = pd.concat([tree.valid, extra], ignore_index=True)
    input_csv = tree.release_dir / "input.csv"
    frame.to_csv(input_csv, index=False)
    return PredictionTree(
        tmp_path, input_csv, frame, dicom_study, f"{broken_study}/view1_frontal.jpg", broken_study, lateral_only,
        tree.train_csv,
    )


def add_unreadable_study(tree: PredictionTree) -> tuple[Path, str]:
    """Write input_unreadable.csv = input.csv + a study whose only image is unreadable; return (csv, study)."""
    study = f"{RELEASE}/valid/patient90004/study1"
    (tree.root / study).mkdir(parents=True)
    (tree.root / study / "view1_frontal.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a PNG")
    extra = pd.DataFrame([_row(f"{study}/view1_frontal.png", True, {"Edema": 1.0})])
    frame = pd.concat([tree.frame, extra], ignore_index=True)
    csv = tree.input_csv.with_name("input_unreadable.csv")
    frame.to_csv(csv, index=False)
    return csv, study


def study_groundtruth(frame: pd.DataFrame) -> pd.DataFrame:
    """Study-level ground truth (Study + 5 tasks, 0/1) as the scorer's file has it."""
    studies = frame["Path"].astype(str).str.rpartition("/")[0]
    labels = frame[list(COMPETITION_TASKS)].fillna(0.0).replace(-1.0, 1.0)
    table = labels.groupby(studies.to_numpy(), sort=False).max()
    return table.rename_axis("Study").reset_index()


def official_score(submission_csv: Path, groundtruth: pd.DataFrame) -> dict[str, float]:
    """Re-implementation of the official scorer: '/' appended to both Study columns, inner join whose row count
    must equal both files', then ROC-AUC per task. Raises AssertionError where the scorer would fail."""
    from sklearn.metrics import roc_auc_score

    predictions = pd.read_csv(submission_csv)
    assert list(predictions.columns) == ["Study", *COMPETITION_TASKS], list(predictions.columns)
    gt = groundtruth.copy()
    gt["Study"] = gt["Study"].astype(str) + "/"
    predictions["Study"] = predictions["Study"].astype(str) + "/"
    merged = gt.merge(predictions, on="Study", how="inner", suffixes=("_gt", "_pred"))
    assert len(merged) == len(gt) == len(predictions), (len(merged), len(gt), len(predictions))
    scores: dict[str, float] = {}
    for task in COMPETITION_TASKS:
        values = merged[f"{task}_pred"].to_numpy(dtype=float)
        assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all(), task
        truth = merged[f"{task}_gt"].to_numpy()
        scores[task] = float(roc_auc_score(truth, values)) if len(set(truth)) == 2 else float("nan")
    return scores


def make_tiny_run(
    run_dir: Path,
    *,
    train_csv: Path | None = None,
    root: Path | None = None,
    observations: tuple[str, ...] = OBSERVATIONS,
    image_size: int = 32,
    seed: int = 0,
    cft: bool = False,
) -> Path:
    """A random-init arch="tiny" run saved as chexcft.runs saves one (no training); optionally a CFT head + Platt."""
    import torch

    from chexcft.models import HeadLayout, build_model
    from chexcft.runs import Calibration, run_paths, save_weights, write_calibration, write_cft_head, write_config

    model = build_model("tiny", HeadLayout(tuple(observations)), init="random", seed=seed)
    with torch.no_grad():  # a spread of outputs, so that max and mean over views differ visibly
        model.head.weight.mul_(20.0)
    save_weights(model, run_paths(run_dir).weights("best"))
    config = {
        "kind": "chexcft-run",
        "arch": "tiny",
        "image_size": image_size,
        "observations": list(observations),
        "model": model.spec(),
        "train_csv": str(train_csv) if train_csv else None,
        "root": str(root) if root else None,
    }
    write_config(run_dir, config, train_csv=train_csv)
    if cft:
        weight, bias = model.effective_binary_head()
        rng = np.random.default_rng(seed)
        write_cft_head(run_dir, weight.detach().numpy() * 1.5, bias.detach().numpy() + 0.2)
        slopes = tuple(rng.uniform(0.5, 1.5, len(observations)))
        offsets = tuple(rng.uniform(-0.5, 0.5, len(observations)))
        write_calibration(run_paths(run_dir).calibration, Calibration(tuple(observations), slopes, offsets))
    return run_dir
