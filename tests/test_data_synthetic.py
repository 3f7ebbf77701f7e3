"""The synthetic study: real formats, real label vectors by whole patients, readable by the readers."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qcxr.data import cli as data_cli
from qcxr.data.datasets import MIMICCXRLT, NIHCXRLT, nih_label_file, study_paths
from qcxr.data.synthetic import generate_study
from qcxr.data.synthetic_labels import EXTRA_RATE, MIMIC_26, study_labels
from qcxr.labels import TASKS, resolve_task

SIZES = {"n_train": 40, "n_val": 15, "n_test": 20, "n_mimic": 30, "image_size": 96}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return generate_study(tmp_path_factory.mktemp("study"), seed=3, progress=False, **SIZES)


def real_columns() -> list[str]:
    return list(pd.read_csv(nih_label_file("val"), nrows=0).columns)


def test_nih_layout_columns_ids_and_images(study):
    total = 0
    for split, n in (("train", 40), ("val", 15), ("test", 20)):
        frame = pd.read_csv(study.nih_csv[split], dtype={"subj_id": str})
        assert list(frame.columns) == real_columns() and len(frame) == n
        assert frame["id"].str.fullmatch(r"\d{8}_\d{3}\.png").all()
        assert (frame["id"].str[:8] == frame["subj_id"]).all()
        data = NIHCXRLT(study.nih_csv[split], study.nih_images, "cxr19")
        total += len(data)
        with Image.open(data.paths[0]) as image:
            assert image.mode == "L" and image.size == (96, 96)
    assert len(list(study.nih_images.iterdir())) == total


def test_label_vectors_are_real_rows_drawn_by_whole_patients(study):
    real = pd.concat(
        [pd.read_csv(nih_label_file(s), dtype={"subj_id": str}) for s in ("val", "test")]
    )
    labels = real.columns[1:-1]
    real_rows = {tuple(r) for r in real[labels].to_numpy()}
    subjects = {}
    for split in ("train", "val", "test"):
        frame = pd.read_csv(study.nih_csv[split], dtype={"subj_id": str})
        assert all(tuple(r) in real_rows for r in frame[labels].to_numpy())
        for subject in frame["subj_id"].unique():
            assert subject not in subjects, "a patient is in two splits"
            subjects[subject] = split
    train = pd.read_csv(study.nih_csv["train"], dtype={"subj_id": str})
    assert train["subj_id"].nunique() < len(train) or len(train) < 5  # patients with several images


def test_mimic_external_set_layout_and_lateral_filter(study):
    frame = pd.read_csv(study.mimic_csv)
    assert set(MIMIC_26) <= set(frame.columns) and "path" in frame.columns
    assert frame["path"].str.fullmatch(r"files/p1\d/p1\d{7}/s\d{8}/[0-9a-f-]+\.jpg").all()
    meta = pd.read_csv(study.mimic_metadata)
    assert {"dicom_id", "subject_id", "study_id", "ViewPosition", "Rows", "Columns"} <= set(
        meta.columns
    )
    lateral = meta["ViewPosition"].isin(["LATERAL", "LL"])
    assert lateral.any() and (~lateral).sum() == 30
    data = MIMICCXRLT(study.mimic_csv, study.mimic_root, "cxr19", metadata_csv=study.mimic_metadata)
    assert len(data) == 30 and not np.isnan(data.labels).any()
    assert set(data.ids).isdisjoint(meta.loc[lateral, "dicom_id"])
    with Image.open(data.paths[0]) as image:
        assert image.format == "JPEG" and image.size[0] > image.size[1]  # wider field of view


def test_findings_leave_a_trace(study):
    data = NIHCXRLT(study.nih_csv["train"], study.nih_images, "cxr8")

    # Same anatomy bank, so textured patches show up as extra high-frequency energy.
    def energy(path):
        image = np.asarray(Image.open(path), np.float32)
        return np.abs(np.diff(image, axis=1)).mean()

    positive = data.labels.any(axis=1)
    energies = np.array([energy(p) for p in data.paths])
    assert energies[positive].mean() > energies[~positive].mean()


def test_deterministic_for_a_seed(tmp_path, study):
    again = generate_study(tmp_path / "again", seed=3, progress=False, **SIZES)

    def digest(paths):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(paths))).hexdigest()

    assert digest(again.nih_images.iterdir()) == digest(study.nih_images.iterdir())
    assert again.mimic_csv.read_text() == study.mimic_csv.read_text()
    assert again.nih_csv["train"].read_text() == study.nih_csv["train"].read_text()


def test_synth_cli(tmp_path, capsys):
    args = ["synth", str(tmp_path / "s"), "--n-train", "6", "--n-val", "3", "--n-test", "3"]
    args += ["--n-external", "4", "--size", "64", "--seed", "1", "--no-progress"]
    assert data_cli.main(args) == 0
    assert "wrote synthetic study" in capsys.readouterr().out
    assert (
        len(
            NIHCXRLT(
                tmp_path / "s/nih/miccai2023_nih-cxr-lt_labels_val.csv",
                tmp_path / "s/nih/images",
                "cxr8",
            )
        )
        == 3
    )
    assert set(TASKS["cxr19"]) <= {c if c != "Pleural Effusion" else "Effusion" for c in MIMIC_26}


def test_study_cache_build_then_loader(study, capsys):
    from qcxr.data.cache import ImageCache
    from qcxr.data.loader import Loader

    cache_dir = study.root / "cache"
    args = ["cache", "build", "--study", str(study.root), "--threads", "2", "--no-progress"]
    assert data_cli.main(args) == 0
    out = capsys.readouterr().out
    assert "105 added" in out and "0 skipped" in out  # NIH 75 + frontal MIMIC 30
    data = NIHCXRLT(study.nih_csv["val"], study.nih_images, "cxr8")
    with ImageCache(cache_dir) as cache:
        assert str(study.nih_csv["val"]) in cache.label_files()
        assert cache.label_files()[str(study.nih_csv["val"])] == data.checksum
        batches = list(Loader(data, cache, batch_size=4, seed=0).epoch(0))
    assert sum(len(b.ids) for b in batches) == 15
    assert batches[0].images.shape == (4, 224, 224, 1)


def test_cxr26_study_with_extra_labels_writes_mimic_training_files(tmp_path, capsys):
    from qcxr.labels import LABEL_SETS, canonical

    args = ["synth", str(tmp_path / "s"), "--n-train", "12", "--n-val", "6", "--n-test", "4"]
    args += ["--n-external", "6", "--size", "32", "--no-progress", "--task", "cxr26"]
    assert data_cli.main([*args, "--extra-labels", "19"]) == 0
    assert "labels (45)" in capsys.readouterr().out
    paths = study_paths(tmp_path / "s")
    names = paths.labels_file.read_text().splitlines()
    assert names == LABEL_SETS["cxr26"] + [f"Finding {k:02d}" for k in range(1, 20)]
    assert sorted(canonical(n) for n in MIMIC_26) == sorted(LABEL_SETS["cxr26"])
    subjects = {}
    for split, n in (("train", 12), ("val", 6), ("test", 6)):
        frame = pd.read_csv(paths.mimic_split_csv[split])
        assert list(frame.columns) == [
            "dicom_id", "subject_id", "study_id", *MIMIC_26, *names[26:], "path"
        ]  # fmt: skip
        data = MIMICCXRLT(
            paths.mimic_split_csv[split], paths.mimic_root, resolve_task("l45", names),
            metadata_csv=paths.mimic_metadata,
        )  # fmt: skip
        assert len(data) == n and data.labels.shape == (n, 45) and not data.missing_labels
        assert all(p.is_file() for p in data.paths)
        for subject in frame["subject_id"].unique():
            assert subjects.setdefault(subject, split) == split, "a patient is in two splits"
    # NIH files keep the real 22-column layout; the study cannot train cxr26 on them.
    assert list(pd.read_csv(paths.nih_csv["train"], nrows=0).columns) == real_columns()
    rates = study_labels("cxr26", 19).extra_rates
    assert list(rates) == names[26:] and rates["Finding 01"] == EXTRA_RATE
    assert all(a > b for a, b in zip(list(rates.values()), list(rates.values())[1:], strict=False))


def test_nih_label_sets_need_no_mimic_training_files(study):
    assert study.labels_file.read_text().splitlines()[-1] == "No Finding"
    assert not study.mimic_split_csv["train"].exists()
    assert study.mimic_split_csv["test"] == study.mimic_csv


def test_nih_label_set_with_extra_labels_trains_on_mimic(tmp_path):
    """nih20 + extra labels: MIMIC train/val files; MIMIC-only positives outside the set (Lung
    Opacity, ...) leave no texture (this study once failed on them)."""
    sizes = {"n_train": 8, "n_val": 4, "n_test": 4, "n_mimic": 6, "image_size": 32}
    paths = generate_study(tmp_path, seed=2, progress=False, task="nih20", extra_labels=2, **sizes)
    names = paths.labels_file.read_text().splitlines()
    assert names == [*resolve_task("nih20").labels, "Finding 1", "Finding 2"]
    frame = pd.read_csv(paths.mimic_split_csv["train"])
    assert len(frame) >= 8 and {"Lung Opacity", "Finding 1", "Finding 2"} <= set(frame.columns)


def test_study_root_is_marked_synthetic(study):
    marker = json.loads((study.root / "synthetic.json").read_text())
    sizes = {k.removeprefix("n_"): v for k, v in SIZES.items() if k != "image_size"}
    counts = {**{s: sizes[s] for s in ("train", "val", "test")}, "mimic_test": sizes["mimic"]}
    assert marker == {"synthetic": True, "format": "nih-cxr-lt", "seed": 3, "counts": counts}
