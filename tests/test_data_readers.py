"""Readers, label statistics (Table I) and every bad label-file input, with its message."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from qcxr.data import cli as data_cli
from qcxr.data.datasets import MIMICCXRLT, NIHCXRLT, file_checksum, label_stats, nih_label_file
from qcxr.labels import TASKS

# Table I of the paper, NIH Val and Test columns, typed from the paper.
PAPER_TABLE1_VAL_TEST = {
    "Infiltration": (1996, 5159),
    "Effusion": (1663, 3735),
    "Atelectasis": (1272, 2700),
    "Nodule": (667, 1305),
    "Mass": (764, 1329),
    "Pneumothorax": (764, 2106),
    "Consolidation": (544, 1497),
    "Pleural Thickening": (485, 902),
    "Cardiomegaly": (318, 868),
    "Emphysema": (272, 917),
    "Edema": (269, 751),
    "Subcutaneous Emphysema": (221, 813),
    "Fibrosis": (183, 365),
    "Pneumonia": (173, 452),
    "Tortuous Aorta": (49, 95),
    "Calcification of the Aorta": (32, 55),
    "Pneumoperitoneum": (33, 69),
    "Pneumomediastinum": (22, 143),
    "Hernia": (35, 62),
}


def test_label_stats_reproduce_table1_val_and_test():
    table = label_stats([nih_label_file("val"), nih_label_file("test")], "cxr19")
    assert set(table.index) == set(PAPER_TABLE1_VAL_TEST)
    for label, (val, test) in PAPER_TABLE1_VAL_TEST.items():
        assert (table.loc[label, "Val"], table.loc[label, "Test"]) == (val, test), label
    totals = table["Total"].to_numpy()
    assert np.all(totals[:-1] >= totals[1:])  # sorted by occurrence


def test_labels_stats_cli_json(capsys):
    paths = [str(nih_label_file("val")), str(nih_label_file("test"))]
    assert data_cli.main(["labels", "stats", *paths, "--task", "cxr8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["counts"]) == set(TASKS["cxr8"])
    assert out["counts"]["Effusion"] == {"Val": 1663, "Test": 3735, "Total": 5398}
    assert out["files"][paths[0]] == file_checksum(paths[0])


def write_nih(tmp_path, rows, columns=None, images=True):
    columns = columns or ["id", *TASKS["cxr8"], "No Finding", "subj_id"]
    frame = pd.DataFrame(rows, columns=columns)
    csv = tmp_path / "miccai2023_nih-cxr-lt_labels_train.csv"
    frame.to_csv(csv, index=False)
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    if images:
        for image_id in frame["id"]:
            (image_dir / image_id).write_bytes(b"")
    return csv, image_dir


def row(image_id, labels, subject="00000001"):
    return [image_id, *labels, int(not any(labels)), subject]


def test_nih_reader_reads_task_columns_in_task_order(tmp_path):
    labels = [[1, 0, 0, 0, 0, 0, 0, 1], [0, 1, 1, 0, 0, 0, 0, 0]]
    csv, images = write_nih(
        tmp_path, [row("00000001_000.png", labels[0]), row("00000001_001.png", labels[1])]
    )
    data = NIHCXRLT(csv, images, "cxr8")
    assert data.ids == ["00000001_000.png", "00000001_001.png"]
    assert data.paths == [images / "00000001_000.png", images / "00000001_001.png"]
    assert data.label_names == TASKS["cxr8"]
    np.testing.assert_array_equal(data.labels, np.array(labels, np.float32))
    assert data.labels.dtype == np.float32
    assert data.checksum == file_checksum(csv)
    assert data.without([images / "00000001_000.png"]).ids == ["00000001_001.png"]


def test_nih_reader_accepts_aliases(tmp_path):
    columns = ["id", *TASKS["cxr8"], "No Finding", "subj_id"]
    columns[columns.index("Effusion")] = "Pleural Effusion"
    csv, images = write_nih(tmp_path, [row("00000001_000.png", [0, 0, 1, 0, 0, 0, 0, 0])], columns)
    assert NIHCXRLT(csv, images, "cxr8").labels[0, TASKS["cxr8"].index("Effusion")] == 1


def test_missing_column_names_file_and_column(tmp_path):
    columns = ["id", *TASKS["cxr8"], "No Finding", "subj_id"]
    csv, images = write_nih(tmp_path, [row("00000001_000.png", [0] * 8)], columns)
    frame = pd.read_csv(csv).drop(columns=["Mass"])
    frame.to_csv(csv, index=False)
    with pytest.raises(
        ValueError, match=rf"{re.escape(str(csv))}: lacks task cxr8 label\(s\) \['Mass'\]"
    ):
        NIHCXRLT(csv, images, "cxr8")
    frame.drop(columns=["id"]).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['id'\]"):
        NIHCXRLT(csv, images, "cxr8")


@pytest.mark.parametrize("bad", ["2", "-1", "yes", ""])
def test_label_not_zero_or_one_names_line_and_column(tmp_path, bad):
    rows = [row("00000001_000.png", [0] * 8), row("00000001_001.png", [0] * 8)]
    rows[1][TASKS["cxr8"].index("Nodule") + 1] = bad
    csv, images = write_nih(tmp_path, rows)
    with pytest.raises(ValueError, match=rf"line 3 .*column 'Nodule': label '{bad}' is not 0 or 1"):
        NIHCXRLT(csv, images, "cxr8")


def test_duplicate_id_names_the_lines(tmp_path):
    rows = [row("00000001_000.png", [0] * 8), row("00000002_000.png", [0] * 8)]
    rows.append(row("00000001_000.png", [1] + [0] * 7))
    csv, images = write_nih(tmp_path, rows)
    with pytest.raises(ValueError, match=r"duplicate id '00000001_000.png' on lines \[2, 4\]"):
        NIHCXRLT(csv, images, "cxr8")


def test_missing_image_names_the_file(tmp_path):
    csv, images = write_nih(tmp_path, [row("00000001_000.png", [0] * 8)], images=False)
    with pytest.raises(
        FileNotFoundError, match=r"1 image file\(s\) not found, e.g. .*00000001_000.png"
    ):
        NIHCXRLT(csv, images, "cxr8")


def write_mimic(tmp_path, label_names, laterals=("d2",)):
    rows, meta = [], []
    for k, dicom in enumerate(["d1", "d2", "d3"]):
        rel = f"files/p10/p1000000{k}/s5000000{k}/{dicom}.jpg"
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
        rows.append(
            {"dicom_id": dicom, **{n: (k + j) % 2 for j, n in enumerate(label_names)}, "path": rel}
        )
        meta.append({"dicom_id": dicom, "ViewPosition": "LATERAL" if dicom in laterals else "PA"})
    csv, metadata = tmp_path / "mimic.csv", tmp_path / "meta.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    pd.DataFrame(meta).to_csv(metadata, index=False)
    return csv, metadata


def mimic_names(task):
    return ["Pleural Effusion" if n == "Effusion" else n for n in TASKS[task]] + ["No Finding"]


def test_mimic_reader_maps_names_and_keeps_frontal_views(tmp_path):
    csv, metadata = write_mimic(tmp_path, mimic_names("cxr14"))
    data = MIMICCXRLT(csv, tmp_path, "cxr14", metadata_csv=metadata)
    assert data.ids == ["d1", "d3"]  # d2 is a lateral view
    frame = pd.read_csv(csv).set_index("dicom_id")
    np.testing.assert_array_equal(
        data.labels[:, TASKS["cxr14"].index("Effusion")],
        frame.loc[["d1", "d3"], "Pleural Effusion"],
    )
    assert data.paths[0] == tmp_path / frame.loc["d1", "path"]
    assert len(MIMICCXRLT(csv, tmp_path, "cxr14").ids) == 3


def test_mimic_file_missing_task_labels_is_an_error_unless_allowed(tmp_path):
    # The MICCAI-2023 MIMIC-CXR-LT file lacks these seven of the paper's labels.
    lacking = [
        "Infiltration",
        "Nodule",
        "Mass",
        "Emphysema",
        "Fibrosis",
        "Pleural Thickening",
        "Hernia",
    ]
    names = [n for n in mimic_names("cxr19") if n not in lacking]
    csv, metadata = write_mimic(tmp_path, names)
    with pytest.raises(
        ValueError, match=r"lacks task cxr19 label\(s\) \[.*'Infiltration'.*'Hernia'\]"
    ):
        MIMICCXRLT(csv, tmp_path, "cxr19", metadata_csv=metadata)
    data = MIMICCXRLT(csv, tmp_path, "cxr19", metadata_csv=metadata, allow_missing_labels=True)
    missing = [TASKS["cxr19"].index(n) for n in lacking]
    assert np.isnan(data.labels[:, missing]).all()
    assert not np.isnan(np.delete(data.labels, missing, axis=1)).any()
    assert sorted(data.missing_labels) == sorted(lacking)


def test_mimic_without_path_column_is_an_error(tmp_path):
    csv, _ = write_mimic(tmp_path, mimic_names("cxr8"))
    pd.read_csv(csv).drop(columns=["path"]).to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"mimic.csv: missing required column 'path'"):
        MIMICCXRLT(csv, tmp_path, "cxr8")
