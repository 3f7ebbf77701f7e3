"""Own label tables (qcxr.data.tables): label policies against numpy and scikit-learn, patient
splits, the CheXpert layout, parquet, and every bad input naming file, line and column."""

from __future__ import annotations

import re
from dataclasses import replace

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from qcxr.config import DataConfig, EvalConfig
from qcxr.data.datasets import file_checksum
from qcxr.data.tables import (
    table_dataset,
    table_label_files,
    table_label_stats,
    table_splits,
)
from qcxr.evaluate.metrics import label_metrics
from qcxr.labels import Task, resolve_task
from qcxr.train.losses import bce, masked_mean

TASK = resolve_task("mine", ["Effusion", "Edema", "Atelectasis"])
SPELLINGS = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": None}


def random_cells(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) label cells in every accepted spelling."""
    return rng.choice(list(SPELLINGS), size=(n, len(TASK)), p=[0.15, 0.15, 0.2, 0.2, 0.1, 0.1, 0.1])


def write_table(tmp_path, cells, *, name="labels.csv", images=True, extra=None) -> DataConfig:
    """labels.csv with path, patient, the labels ("Pleural Effusion" spelling) and `extra`
    columns; empty image files under images/."""
    n = len(cells)
    frame = pd.DataFrame(
        {
            "path": [f"img/{k:04d}.png" for k in range(n)],
            "Sex": "F",  # not a label: ignored
            "pid": [f"p{k // 2:03d}" for k in range(n)],  # two images per patient
        }
    )
    for j, column in enumerate(["Pleural Effusion", "Edema", "Atelectasis"]):
        frame[column] = cells[:, j]
    for column, values in (extra or {}).items():
        frame[column] = values
    csv = tmp_path / name
    if csv.suffix == ".parquet":
        frame.to_parquet(csv)
    else:
        frame.to_csv(csv, index=False)
    if images:
        (tmp_path / "img").mkdir(exist_ok=True)
        for path in frame["path"]:
            (tmp_path / path).write_bytes(b"")
    return DataConfig(format="table", csv=str(csv), images=str(tmp_path), patient_column="pid")


def expected_labels(cells: np.ndarray, uncertain: str, missing: str) -> np.ndarray:
    """The policy, written out independently of the reader."""
    codes = np.vectorize(
        lambda c: np.nan if SPELLINGS[c] is None else SPELLINGS[c], otypes=[float]
    )(cells)
    out = codes.astype(np.float64)
    out[codes == -1] = {"ignore": np.nan, "zeros": 0, "ones": 1}[uncertain]
    out[np.isnan(codes)] = {"ignore": np.nan, "zeros": 0}[missing]
    return out


def all_rows(data: DataConfig, task: Task = TASK):
    """Every image of a table, read as one split (fractions pin everything to train)."""
    parts = [table_dataset(data, task, s, check_files=True) for s in ("train", "val", "test")]
    ids = sum((p.ids for p in parts), [])
    labels = np.concatenate([p.labels for p in parts])
    order = np.argsort(ids)
    return [ids[k] for k in order], labels[order]


@pytest.mark.parametrize("uncertain", ["ignore", "zeros", "ones"])
@pytest.mark.parametrize("missing", ["ignore", "zeros"])
def test_policies_give_masks_losses_and_auroc_of_the_kept_entries(tmp_path, uncertain, missing):
    rng = np.random.default_rng(7)
    cells = random_cells(rng, 120)
    data = replace(write_table(tmp_path, cells), uncertain=uncertain, missing=missing)
    ids, labels = all_rows(data)
    assert ids == [f"img/{k:04d}.png" for k in range(len(cells))]
    want = expected_labels(cells, uncertain, missing)
    np.testing.assert_array_equal(np.isnan(labels), np.isnan(want))
    np.testing.assert_array_equal(labels[~np.isnan(want)], want[~np.isnan(want)])
    assert labels.dtype == np.float32

    logits = rng.normal(size=labels.shape).astype(np.float32)
    loss = masked_mean(bce, jnp.asarray(logits), jnp.asarray(labels), jnp.ones(len(labels)))
    kept = ~np.isnan(want)
    p = 1 / (1 + np.exp(-logits[kept].astype(np.float64)))
    y = want[kept]
    reference = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(float(loss), reference, rtol=1e-5)

    probs = 1 / (1 + np.exp(-logits))
    metrics = label_metrics(probs, labels, list(TASK.labels), config=EvalConfig())
    for j, name in enumerate(TASK.labels):
        rows = kept[:, j]
        assert metrics[name]["n"] == rows.sum()
        sk = roc_auc_score(want[rows, j], probs[rows, j])
        np.testing.assert_allclose(metrics[name]["auroc"], sk, rtol=1e-9)


def test_parquet_reads_as_the_csv(tmp_path):
    cells = random_cells(np.random.default_rng(1), 30)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    csv = write_table(tmp_path / "a", cells)
    parquet = write_table(tmp_path / "b", cells, name="labels.parquet")
    ids_csv, labels_csv = all_rows(csv)
    ids_pq, labels_pq = all_rows(parquet)
    assert ids_csv == ids_pq
    np.testing.assert_array_equal(labels_csv, labels_pq)
    assert table_dataset(parquet, TASK, "train", check_files=False).checksum == file_checksum(
        tmp_path / "b" / "labels.parquet"
    )
    # numbers, as most tools write them: float columns with NaN for blanks
    frame = pd.read_parquet(tmp_path / "b" / "labels.parquet")
    for column in ("Pleural Effusion", "Edema", "Atelectasis"):
        frame[column] = pd.to_numeric(frame[column].replace("", np.nan)).astype(float)
    frame.to_parquet(tmp_path / "b" / "labels.parquet")
    assert frame["Edema"].dtype == np.float64
    ids_num, labels_num = all_rows(parquet)
    assert ids_num == ids_csv
    np.testing.assert_array_equal(labels_num, labels_csv)


def disjoint_and_complete(splits: pd.DataFrame) -> None:
    assert splits.groupby("patient")["split"].nunique().max() == 1
    assert splits["id"].is_unique


def test_patient_splits_are_disjoint_deterministic_and_row_order_free(tmp_path):
    rng = np.random.default_rng(2)
    cells = random_cells(rng, 400)
    data = replace(write_table(tmp_path, cells), split_seed=5)
    splits = table_splits(data)
    disjoint_and_complete(splits)
    assert len(splits) == 400 and set(splits["split"]) == {"train", "val", "test"}
    shares = splits.drop_duplicates("patient")["split"].value_counts() / 200
    np.testing.assert_allclose([shares["train"], shares["val"], shares["test"]], [0.7, 0.1, 0.2])
    # the same file, shuffled: the same split for every image
    frame = pd.read_csv(tmp_path / "labels.csv", dtype=str, keep_default_na=False)
    shuffled = tmp_path / "shuffled.csv"
    frame.sample(frac=1, random_state=0).to_csv(shuffled, index=False)
    again = table_splits(replace(data, csv=str(shuffled))).set_index("id")["split"]
    pd.testing.assert_series_equal(again.loc[splits["id"]], splits.set_index("id")["split"])
    other = table_splits(replace(data, split_seed=6))
    assert not other["split"].equals(splits["split"])
    disjoint_and_complete(other)


def test_each_image_its_own_patient_without_a_patient_column(tmp_path):
    data = replace(
        write_table(tmp_path, random_cells(np.random.default_rng(3), 50)), patient_column=""
    )
    splits = table_splits(data)
    assert (splits["patient"] == splits["id"]).all()
    assert splits["split"].value_counts().to_dict() == {"train": 35, "test": 10, "val": 5}


def test_mapping_without_test_draws_test_from_train_only(tmp_path):
    rng = np.random.default_rng(4)
    train = write_table(tmp_path, random_cells(rng, 100))
    val_dir = tmp_path / "v"
    val_dir.mkdir()
    val = random_cells(rng, 10)
    write_table(val_dir, val, name="val.csv", images=False)
    frame = pd.read_csv(val_dir / "val.csv", dtype=str, keep_default_na=False)
    frame["path"] = [f"img/v{k}.png" for k in range(10)]
    frame["pid"] = [f"q{k}" for k in range(10)]
    frame.to_csv(val_dir / "val.csv", index=False)
    data = replace(train, csv={"train": train.csv, "val": str(val_dir / "val.csv")})
    splits = table_splits(data)
    disjoint_and_complete(splits)
    assert sorted(splits.loc[splits["split"] == "val", "id"]) == sorted(frame["path"])
    # fractions renormalised over train and test: 0.7 / 0.9 of the 50 patients
    drawn = splits[splits["split"] != "val"].drop_duplicates("patient")["split"].value_counts()
    assert drawn.to_dict() == {"train": 39, "test": 11}
    assert table_label_files(data) == [tmp_path / "labels.csv", val_dir / "val.csv"]
    val_set = table_dataset(data, TASK, "val", check_files=False)
    assert val_set.label_file == val_dir / "val.csv"
    assert val_set.checksum == file_checksum(val_dir / "val.csv")


def test_a_patient_in_two_files_is_refused(tmp_path):
    rng = np.random.default_rng(5)
    train = write_table(tmp_path, random_cells(rng, 6))
    (tmp_path / "t").mkdir()
    write_table(tmp_path / "t", random_cells(rng, 2), name="test.csv", images=False)
    frame = pd.read_csv(tmp_path / "t" / "test.csv", dtype=str, keep_default_na=False)
    frame["path"] = ["img/x0.png", "img/x1.png"]
    frame["pid"] = ["zz", "p001"]  # p001 already has training images (rows 3 and 4)
    frame.to_csv(tmp_path / "t" / "test.csv", index=False)
    data = replace(train, csv={"train": train.csv, "test": str(tmp_path / "t" / "test.csv")})
    with pytest.raises(
        ValueError,
        match=r"patient 'p001' is in 2 splits \((train|val) in .*labels.csv line 4; test in .*test.csv line 3\)",
    ):
        table_splits(data)


def test_split_column(tmp_path):
    rng = np.random.default_rng(6)
    split = np.array(["train", "train", "val", "val", "test", "test"] * 3)
    data = replace(
        write_table(tmp_path, random_cells(rng, 18), extra={"fold": split}), split_column="fold"
    )
    for name in ("train", "val", "test"):
        got = table_dataset(data, TASK, name, check_files=True)
        assert got.ids == [f"img/{k:04d}.png" for k in np.flatnonzero(split == name)]
    bad = split.copy()
    bad[7] = "valid"
    data = replace(
        write_table(tmp_path, random_cells(rng, 18), extra={"fold": bad}), split_column="fold"
    )
    with pytest.raises(
        ValueError, match=r"labels.csv: line 9, column 'fold': split 'valid' is not one of"
    ):
        table_dataset(data, TASK, "train", check_files=False)
    mixed = split.copy()
    mixed[1] = "test"  # pid p000: rows 0 (train) and 1 (test)
    data = replace(
        write_table(tmp_path, random_cells(rng, 18), extra={"fold": mixed}), split_column="fold"
    )
    with pytest.raises(ValueError, match=r"patient 'p000' is in 2 splits"):
        table_dataset(data, TASK, "train", check_files=False)


def test_label_stats_count_the_file(tmp_path):
    cells = random_cells(np.random.default_rng(8), 90)
    data = replace(write_table(tmp_path, cells), uncertain="ones")
    stats = table_label_stats(data, TASK)
    splits = table_splits(data).set_index("id")["split"]
    frame = pd.read_csv(tmp_path / "labels.csv", dtype=str, keep_default_na=False)
    frame["split"] = frame["path"].map(splits)
    for column, name in (("Pleural Effusion", "Effusion"), ("Edema", "Edema")):
        value = frame[column].str.strip()
        positive = value.isin(["1", "1.0", "-1", "-1.0"])  # uncertain: ones
        for split in ("train", "val", "test"):
            assert stats.loc[name, split.title()] == (positive & (frame["split"] == split)).sum()
        assert stats.loc[name, "Total"] == positive.sum()
        assert stats.loc[name, "Uncertain"] == value.isin(["-1", "-1.0"]).sum()
        assert stats.loc[name, "Blank"] == (value == "").sum()


def test_one_file_for_two_splits_is_refused(tmp_path):
    data = write_table(tmp_path, random_cells(np.random.default_rng(9), 4))
    with pytest.raises(ValueError, match=r"names one file for two splits"):
        table_splits(replace(data, csv={"train": data.csv, "val": data.csv}))


def set_cell(column: str, row: int, value: str):
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[row, column] = value
        return frame

    return edit


BAD_INPUTS = {  # edit of a good file -> what the error says (file, line, column)
    "no path column": (
        lambda f: f.rename(columns={"path": "file"}),
        r"labels.csv: line 1 \(header\): missing image path column 'path'",
    ),
    "task label absent": (
        lambda f: f.drop(columns=["Edema"]),
        r"labels.csv: lacks task mine label\(s\) \['Edema'\] \(line 1, the header",
    ),
    "absolute path": (
        set_cell("path", 2, "/data/img/0002.png"),
        r"labels.csv: line 4, column 'path': path '/data/img/0002.png' is absolute",
    ),
    "path outside the root": (
        set_cell("path", 3, "img/../../secret.png"),
        r"labels.csv: line 5, column 'path': path 'img/../../secret.png' leaves the images root",
    ),
    "blank path": (
        set_cell("path", 1, " "),
        r"labels.csv: line 3, column 'path': path '' is blank",
    ),
    "bad label": (
        set_cell("Edema", 4, "2"),
        r"labels.csv: line 6, column 'Edema': label '2' is not 1, 0, -1 or blank",
    ),
    "word label": (
        set_cell("Pleural Effusion", 0, "yes"),
        r"labels.csv: line 2, column 'Pleural Effusion': label 'yes' is not 1, 0, -1 or blank",
    ),
    "duplicate path": (
        set_cell("path", 5, "img/0001.png"),
        r"duplicate path 'img/0001.png' in column 'path': .*labels.csv line 3; .*labels.csv line 7",
    ),
    "blank patient": (
        set_cell("pid", 3, ""),
        r"labels.csv: line 5, column 'pid': no patient id",
    ),
    "no patient column": (
        lambda f: f.drop(columns=["pid"]),
        r"labels.csv: line 1 \(header\): missing patient column 'pid'",
    ),
    "header only": (lambda f: f.iloc[:0], r"labels.csv: the file is empty \(a header line and no"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_file_line_and_column(tmp_path, case):
    edit, message = BAD_INPUTS[case]
    data = write_table(tmp_path, random_cells(np.random.default_rng(10), 8))
    csv = tmp_path / "labels.csv"
    edit(pd.read_csv(csv, dtype=str, keep_default_na=False)).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=message):
        table_dataset(data, TASK, "train", check_files=False)


def test_empty_file_and_missing_image(tmp_path):
    data = write_table(tmp_path, random_cells(np.random.default_rng(11), 8))
    (tmp_path / "img" / "0006.png").unlink()
    table_dataset(data, TASK, "train", check_files=False)  # files are checked only when asked
    split = table_splits(data).set_index("id")["split"]["img/0006.png"]
    with pytest.raises(
        FileNotFoundError,
        match=rf"labels.csv: line 8, column 'path': image {re.escape(str(tmp_path))}/img/0006.png "
        r"not found \(1 of",
    ):
        table_dataset(data, TASK, split, check_files=True)
    (tmp_path / "labels.csv").write_text("")
    with pytest.raises(ValueError, match=r"labels.csv: the file is empty \(no header line\)"):
        table_dataset(data, TASK, "train", check_files=False)


def test_parquet_bad_value_names_row_and_column(tmp_path):
    cells = random_cells(np.random.default_rng(12), 6).astype(object)
    cells[3, 1] = "maybe"
    data = write_table(tmp_path, cells, name="labels.parquet")
    with pytest.raises(ValueError, match=r"labels.parquet: row 4, column 'Edema': label 'maybe'"):
        table_dataset(data, TASK, "train", check_files=False)


def test_allow_missing_labels_gives_a_nan_column(tmp_path):
    data = write_table(tmp_path, random_cells(np.random.default_rng(13), 8))
    task = resolve_task("more", [*TASK.labels, "Fracture"])
    for missing in ("ignore", "zeros"):  # an absent column stays unknown under every policy
        got = table_dataset(
            replace(data, missing=missing),
            task,
            "train",
            check_files=True,
            allow_missing_labels=True,
        )
        assert got.missing_labels == ["Fracture"]
        assert np.isnan(got.labels[:, 3]).all()
    with pytest.raises(ValueError, match=r"labels.csv: lacks task more label\(s\) \['Fracture'\]"):
        table_dataset(data, task, "train", check_files=False)


CHEXPERT_ROWS = [  # Path, Frontal/Lateral, Pleural Effusion, Edema, Atelectasis
    (
        "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
        "Frontal",
        "1.0",
        "",
        "-1.0",
    ),
    (
        "CheXpert-v1.0-small/train/patient00001/study1/view2_lateral.jpg",
        "Lateral",
        "1.0",
        "",
        "-1.0",
    ),
    (
        "CheXpert-v1.0-small/train/patient00002/study1/view1_frontal.jpg",
        "Frontal",
        "0.0",
        "1.0",
        "",
    ),
    (
        "CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg",
        "Frontal",
        "",
        "0.0",
        "0.0",
    ),
    (
        "CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg",
        "Frontal",
        "-1.0",
        "",
        "1.0",
    ),
]


def test_chexpert_layout_frontal_filter_and_patients(tmp_path):
    base = tmp_path / "CheXpert-v1.0-small"
    base.mkdir()
    frame = pd.DataFrame(
        CHEXPERT_ROWS,
        columns=["Path", "Frontal/Lateral", "Pleural Effusion", "Edema", "Atelectasis"],
    )
    frame.insert(1, "Sex", "Female")
    frame.insert(2, "Age", "70")
    frame.insert(4, "AP/PA", ["PA", "", "AP", "AP", "PA"])
    frame.to_csv(base / "train.csv", index=False)
    for path in frame["Path"]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(b"")
    data = DataConfig(
        format="chexpert", csv=str(base / "train.csv"), split_fractions=(0.34, 0.33, 0.33)
    )
    splits = table_splits(data)  # images root: the folder holding CheXpert-v1.0-small
    assert sorted(splits["id"]) == sorted(frame["Path"][frame["Frontal/Lateral"] == "Frontal"])
    assert sorted(set(splits["patient"])) == ["patient00001", "patient00002", "patient00003"]
    disjoint_and_complete(splits)
    everything = replace(data, frontal_only=False, uncertain="ones", missing="zeros")
    ids, labels = all_rows(everything)
    assert ids == sorted(frame["Path"])
    rows = frame.set_index("Path").loc[ids]
    want = rows[["Pleural Effusion", "Edema", "Atelectasis"]].replace({"": "0", "-1.0": "1"})
    np.testing.assert_array_equal(labels, want.to_numpy(float))
    dataset = table_dataset(data, TASK, splits["split"].iloc[0], check_files=True)
    assert dataset.paths[0] == tmp_path / dataset.ids[0]
