"""Synthetic `table` and `chexpert` studies: their files, read back through qcxr.data.tables."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qcxr.config import DataConfig
from qcxr.data.synthetic_labels import StudyLabels, real_label_rows, study_labels
from qcxr.data.synthetic_tables import (
    CHEXPERT_HEADER,
    CHEXPERT_TASK,
    image_labels,
    write_table_study,
)
from qcxr.data.tables import table_dataset, table_splits
from qcxr.labels import TASKS, resolve_task

COUNTS = {"n_train": 24, "n_val": 8, "n_test": 10}


def data_config(settings: dict) -> DataConfig:
    """The DataConfig of a writer's settings (as the CLI passes them on)."""
    values = {k.removeprefix("data."): v for k, v in settings.items() if k.startswith("data.")}
    values["split_fractions"] = tuple(values["split_fractions"])
    return DataConfig(**values)


def read_back(settings: dict) -> dict:
    task = resolve_task(settings["task"], settings["labels"])
    data = data_config(settings)
    return {s: table_dataset(data, task, s, check_files=True) for s in ("train", "val", "test")}


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("table")
    return root, write_table_study(
        root, fmt="table", image_size=48, seed=1, progress=False, **COUNTS
    )


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory):
    root = tmp_path_factory.mktemp("chexpert")
    settings = write_table_study(
        root, fmt="chexpert", image_size=48, seed=2, progress=False, **COUNTS
    )
    return root, settings


def test_table_study_reads_back(table):
    root, settings = table
    assert settings["task"] == "cxr8" and settings["labels"] == []
    frame = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["path", "patient_id", "view", *TASKS["cxr8"]]
    assert "split" not in frame.columns
    per_patient = frame.groupby("patient_id").size()
    assert per_patient.between(1, 3).all() and per_patient.max() > 1
    labels = frame[TASKS["cxr8"]]
    assert labels.isin(["0", "1", ""]).all().all()
    assert 0 < (labels == "").to_numpy().mean() < 0.1  # a few blanks
    sets = read_back(settings)
    assert sum(len(s) for s in sets.values()) == sum(COUNTS.values())
    splits = table_splits(data_config(settings))
    assert splits.groupby("patient")["split"].nunique().max() == 1
    nan = np.concatenate([s.labels for s in sets.values()])
    assert np.isnan(nan).sum() == (labels == "").to_numpy().sum()  # blanks ignored by default
    with Image.open(sets["train"].paths[0]) as image:
        assert image.size == (48, 48) and image.mode == "L"
    marker = json.loads((root / "synthetic.json").read_text())
    assert marker == {
        "synthetic": True,
        "format": "table",
        "seed": 1,
        "counts": {"train": 24, "val": 8, "test": 10},
    }


def test_chexpert_study_reads_back(chexpert):
    root, settings = chexpert
    base = root / "CheXpert-v1.0-small"
    train = pd.read_csv(base / "train.csv", dtype=str, keep_default_na=False)
    valid = pd.read_csv(base / "valid.csv", dtype=str, keep_default_na=False)
    assert list(train.columns) == list(valid.columns) == list(CHEXPERT_HEADER)
    observations = list(CHEXPERT_HEADER[5:])
    values = train[observations].to_numpy()
    assert set(np.unique(values)) == {"1.0", "0.0", "-1.0", ""}
    assert 0.02 < (values == "-1.0").mean() < 0.2 and 0.2 < (values == "").mean() < 0.7
    assert set(np.unique(valid[observations].to_numpy())) <= {"1.0", "0.0"}
    for frame in (train, valid):
        assert (frame["Frontal/Lateral"] == "Lateral").any() or frame is valid
        frontal = frame["Frontal/Lateral"] == "Frontal"
        assert frame.loc[frontal, "Path"].str.endswith("_frontal.jpg").all()
        assert frame.loc[~frontal, "Path"].str.endswith("_lateral.jpg").all()
    sets = read_back(settings)
    assert len(sets["val"]) == COUNTS["n_val"]
    assert len(sets["train"]) + len(sets["test"]) == COUNTS["n_train"] + COUNTS["n_test"]
    assert all(i.startswith("CheXpert-v1.0-small/train/") for i in sets["test"].ids)
    assert settings["task"] == "chexpert" and len(settings["labels"]) == 14
    with Image.open(sets["val"].paths[0]) as image:
        assert image.format == "JPEG" and image.size == (41, 48)
    assert json.loads((root / "synthetic.json").read_text())["format"] == "chexpert"


def test_chexpert_study_keeps_a_chexpert_task(tmp_path):
    settings = write_table_study(
        tmp_path, fmt="chexpert", task=resolve_task("mine", ["Edema", "Pleural Effusion"]),
        n_train=3, n_val=2, n_test=2, image_size=32, progress=False,
    )  # fmt: skip
    assert (settings["task"], settings["labels"]) == ("mine", ["Edema", "Effusion"])
    assert len(read_back(settings)["val"]) == 2


def digest(root) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


@pytest.mark.parametrize("fmt", ["table", "chexpert"])
def test_deterministic_for_a_seed(tmp_path, fmt):
    for name, seed in (("a", 4), ("b", 4), ("c", 5)):
        write_table_study(
            tmp_path / name, fmt=fmt, n_train=6, n_val=3, n_test=3, image_size=32, seed=seed,
            progress=False,
        )  # fmt: skip
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


@pytest.mark.parametrize("task", ["cxr8", "chexpert"])
def test_every_positive_label_is_rendered(task):
    """The writers render each image with a texture for every positive label of its study (the
    renderer's tests show that textures are learnable), so a model can learn every label."""
    labels = StudyLabels(CHEXPERT_TASK.labels, {}) if task == "chexpert" else study_labels(task)
    pool = real_label_rows().iloc[:400]
    rng = np.random.default_rng(0)
    seen = set()
    for k in range(len(pool)):
        values, findings = image_labels(pool.iloc[k], labels, rng)
        positive = {n for n in labels.labels if values[n] and n != "No Finding"}
        assert positive <= set(findings), k
        seen |= positive
    assert len(seen) >= len(labels.labels) - 3  # most labels occur in 400 rows
