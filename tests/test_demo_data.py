"""The bundled demo data: CheXpert layout, patient-disjoint splits, full valid/test labels, the train protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexcft.data import missing_files, read_chexpert_csv
from chexcft.demo.data import (
    RELEASE,
    SPLITS,
    UNCERTAIN_IF_POSITIVE,
    UNCERTAIN_IF_RELATED,
    UNCERTAIN_OTHERWISE,
    build_demo_data,
    demo_csv,
    demo_root,
    hide_labels,
    pseudo_label_errors,
    related_positive,
)
from chexcft.data.nih import MAPPED_OBSERVATIONS, NIH_TO_CHEXPERT
from chexcft.errors import InvalidDatasetError
from chexcft.fileio import read_json
from chexcft.schema import COMPETITION_TASKS, CSV_HEADER, OBSERVATIONS

UNMAPPED = [o for o in OBSERVATIONS if o not in MAPPED_OBSERVATIONS]
BINARY = [o for o in MAPPED_OBSERVATIONS if o != "No Finding"]


@pytest.fixture(scope="module")
def demo() -> dict[str, pd.DataFrame]:
    """The three bundled splits, read and validated."""
    return {split: read_chexpert_csv(demo_csv(split)) for split in SPLITS}


@pytest.fixture(scope="module")
def truth() -> pd.DataFrame:
    """The true full labels of the demo train split."""
    return pd.read_csv(demo_root() / "train_truth.csv")


def test_layout_header_and_images(demo: dict[str, pd.DataFrame]) -> None:
    assert demo_root() == Path(__file__).resolve().parent.parent / "data" / "demo"
    for split, frame in demo.items():
        assert demo_csv(split).read_text().splitlines()[0] == ",".join(CSV_HEADER)
        assert missing_files(frame) == []
        assert frame["Path"].str.fullmatch(rf"{RELEASE}/{split}/patient\d{{5}}/study\d+/view1_frontal\.png").all()
        assert frame["study"].is_unique  # one frontal image per NIH follow-up
        assert set(frame["view"]) <= {"AP", "PA"} and set(frame["Sex"]) <= {"Male", "Female"}
        with Image.open(frame["abs_path"].iloc[0]) as image:
            assert image.size == (64, 64)
    assert (demo_root() / RELEASE / "SOURCE.txt").read_text().count("NIH") >= 2
    with pytest.raises(InvalidDatasetError, match="unknown demo split"):
        demo_csv("holdout")


def test_splits_are_patient_disjoint_and_sized(demo: dict[str, pd.DataFrame]) -> None:
    patients = {split: set(frame["patient"]) for split, frame in demo.items()}
    assert not (patients["train"] & patients["valid"])
    assert not (patients["train"] & patients["test"])
    assert not (patients["valid"] & patients["test"])
    total = sum(len(f) for f in demo.values())
    for split, target in (("train", 0.70), ("valid", 0.15), ("test", 0.15)):
        assert abs(len(demo[split]) / total - target) < 0.05


def test_valid_and_test_are_fully_labelled(demo: dict[str, pd.DataFrame]) -> None:
    for split in ("valid", "test"):
        frame = demo[split]
        assert frame[UNMAPPED].isna().all().all()
        assert frame[list(MAPPED_OBSERVATIONS)].isin([0.0, 1.0]).all().all()
        for task in COMPETITION_TASKS:
            assert (frame[task] == 1).sum() >= 3, (split, task)
        assert frame["patient"].value_counts().iloc[0] <= 0.2 * len(frame)


def test_train_follows_the_protocol(demo: dict[str, pd.DataFrame], truth: pd.DataFrame) -> None:
    train = pd.read_csv(demo_csv("train"))
    protocol = read_json(demo_root() / "protocol.json")
    assert train["Path"].tolist() == truth["Path"].tolist()
    assert truth[list(MAPPED_OBSERVATIONS)].isin([0.0, 1.0]).all().all() and truth[UNMAPPED].isna().all().all()
    assert train[UNMAPPED].isna().all().all()
    labels, true = train[BINARY].to_numpy(), truth[BINARY].to_numpy()
    known = np.isin(labels, [0.0, 1.0])
    assert abs(known.mean() - protocol["known_fraction"]) < 0.03
    np.testing.assert_array_equal(labels[known], true[known])  # what is known is true
    assert np.isin(labels[~known], [-1.0]).sum() + np.isnan(labels[~known]).sum() == (~known).sum()
    assert set(train["No Finding"].dropna()) <= {1.0}
    # Every competition task has each kind of label, and truth positives are present in train.
    for task in COMPETITION_TASKS:
        assert {1.0, 0.0, -1.0} <= set(train[task].dropna()) and (truth[task] == 1).sum() >= 3
    # Uncertain mentions concentrate on hidden true negatives that carry a related positive.
    related = related_positive(truth[list(OBSERVATIONS)].to_numpy(dtype=float))[:, [OBSERVATIONS.index(o) for o in BINARY]]
    hidden_neg = ~known & (true == 0)
    rate_related = (labels[hidden_neg & related] == -1).mean()
    rate_other = (labels[hidden_neg & ~related] == -1).mean()
    assert rate_related > 0.6 and rate_other < 0.2
    # Sex, age and projection are the NIH ones, unchanged by the protocol.
    for column in ("Sex", "Age", "AP/PA"):
        assert train[column].tolist() == truth[column].tolist()


def test_pseudo_labels_are_systematically_wrong(truth: pd.DataFrame) -> None:
    errors = pseudo_label_errors(pd.read_csv(demo_csv("train")), truth).set_index("task")
    assert list(errors.index) == list(COMPETITION_TASKS)
    assert (errors["u_ones_false_pos"] > 0).all() and (errors["u_zeros_false_neg"] > 0).all()
    assert (errors["u_ones_false_pos"] > errors["u_ones_false_neg"]).all()


def test_hide_labels_rates() -> None:
    rng = np.random.default_rng(0)
    values = (rng.random((4000, len(OBSERVATIONS))) < 0.15).astype(float)
    values[:, [OBSERVATIONS.index(o) for o in UNMAPPED]] = np.nan
    truth = pd.DataFrame(values, columns=list(OBSERVATIONS))
    hidden = hide_labels(truth, seed=1, known_fraction=0.3)
    columns = [OBSERVATIONS.index(o) for o in BINARY]
    out, true = hidden[BINARY].to_numpy(), values[:, columns]
    related = related_positive(values)[:, columns]
    known = np.isin(out, [0.0, 1.0])
    assert abs(known.mean() - 0.3) < 0.01
    assert abs((out[~known & (true == 1)] == -1).mean() - UNCERTAIN_IF_POSITIVE) < 0.03
    assert abs((out[~known & (true == 0) & related] == -1).mean() - UNCERTAIN_IF_RELATED) < 0.03
    assert abs((out[~known & (true == 0) & ~related] == -1).mean() - UNCERTAIN_OTHERWISE) < 0.03
    assert hidden[UNMAPPED].isna().all().all()
    pd.testing.assert_frame_equal(hidden, hide_labels(truth, seed=1, known_fraction=0.3))
    assert not hidden.equals(hide_labels(truth, seed=2, known_fraction=0.3))


def _generated_nih(tmp_path: Path, n_patients: int = 80) -> Path:
    """A small folder in the nih1000 format (labels.csv + images/) with random findings."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "nih"
    (folder / "images").mkdir(parents=True)
    findings = [k for k in NIH_TO_CHEXPERT if k != "No Finding"]
    rows = []
    for patient in range(1, n_patients + 1):
        for follow_up in range(int(rng.integers(1, 4))):
            present = [f for f in findings if rng.random() < 0.15]
            name = f"{patient:08d}_{follow_up:03d}.png"
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / "images" / name)
            rows.append({"Image Index": name, "Finding Labels": "|".join(present) or "No Finding",
                         "Patient ID": patient, "Patient Age": 40 + follow_up, "Patient Gender": "M",
                         "View Position": "PA", "Follow-up #": follow_up})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder


def test_build_is_reproducible(shared_dir: Path | None, tmp_path: Path) -> None:
    nih = shared_dir / "data" / "nih1000" if shared_dir is not None else None
    if nih is not None and (nih / "labels.csv").is_file():
        # The committed files are exactly what the code produces from the shared NIH folder.
        out = build_demo_data(nih, tmp_path / "demo", seed=0)
        for relative in [f"{RELEASE}/{s}.csv" for s in SPLITS] + ["train_truth.csv", "protocol.json"]:
            assert (out / relative).read_bytes() == (demo_root() / relative).read_bytes(), relative
        return
    source = _generated_nih(tmp_path)
    first = build_demo_data(source, tmp_path / "a", seed=0)
    second = build_demo_data(source, tmp_path / "b", seed=0)
    for relative in [f"{RELEASE}/{s}.csv" for s in SPLITS] + ["train_truth.csv"]:
        assert (first / relative).read_bytes() == (second / relative).read_bytes()
    assert missing_files(read_chexpert_csv(first / RELEASE / "train.csv")) == []


def test_build_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    source = _generated_nih(tmp_path)
    target = tmp_path / "mine"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidDatasetError, match="refusing to overwrite"):
        build_demo_data(source, target)
    assert (target / "precious.txt").exists()
    # A previous demo build is replaced atomically.
    build_demo_data(source, tmp_path / "demo")
    rebuilt = build_demo_data(source, tmp_path / "demo", seed=1)
    assert (rebuilt / RELEASE / "train.csv").is_file() and not list(tmp_path.glob(".demo.*"))


def test_the_external_set_is_nih617_in_the_chexpert_layout_with_full_labels() -> None:
    from chexcft.data import read_table
    from chexcft.demo.data import EXTERNAL_RELEASE, external_csv, external_root

    frame = read_chexpert_csv(external_csv())
    assert external_csv().read_text().splitlines()[0] == ",".join(CSV_HEADER)
    assert len(frame) == 617 and frame["patient"].is_unique and missing_files(frame) == []
    assert frame["Path"].str.fullmatch(rf"{EXTERNAL_RELEASE}/test/patient\d{{5}}/study\d+/view1_frontal\.png").all()
    train_patients = set(read_table(demo_csv("train"), demo_root())["patient"].str.rpartition("/")[2])
    assert not train_patients & set(frame["patient"].str.rpartition("/")[2])  # no patient shared with NIH1000
    assert frame[BINARY].isin([0.0, 1.0]).all().all() and frame[UNMAPPED].isna().all().all()
    # NIH's positives (README of ../shared/data): Mass 72 + Nodule 89 overlap into Lung Lesion
    assert {o: int(frame[o].sum()) for o in ("Cardiomegaly", "Edema", "Pleural Effusion", "Lung Opacity")} == {
        "Cardiomegaly": 54, "Edema": 18, "Pleural Effusion": 81, "Lung Opacity": 122}
    source = (external_root() / EXTERNAL_RELEASE / "SOURCE.txt").read_text()
    assert "NIH Clinical Center" in source and "CVPR 2017" in source
    with Image.open(frame["abs_path"].iloc[0]) as image:
        assert image.size == (320, 320)


def test_external_build_is_reproducible(shared_dir: Path | None, tmp_path: Path) -> None:
    from chexcft.demo.data import EXTERNAL_RELEASE, build_external_data, external_root

    nih = shared_dir / "data" / "nih617" if shared_dir is not None else None
    if nih is None or not (nih / "labels.csv").is_file():
        pytest.skip("../shared/data/nih617 is not here, so the committed data/nih617 cannot be rebuilt from it")
    out = build_external_data(nih, tmp_path / "nih617")
    for relative in (f"{EXTERNAL_RELEASE}/test.csv", f"{EXTERNAL_RELEASE}/SOURCE.txt"):
        assert (out / relative).read_bytes() == (external_root() / relative).read_bytes(), relative
    some = sorted((out / EXTERNAL_RELEASE / "test").rglob("*.png"))[:5]
    for path in some:
        assert path.read_bytes() == (external_root() / path.relative_to(out)).read_bytes()
