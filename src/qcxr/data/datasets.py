"""A study's layout, and readers for NIH-CXR-LT (training, internal test) and MIMIC-CXR-LT
(external test; training, for labels NIH lacks).

`StudyPaths` names a study's files (nih/ label CSVs and images, mimic/ label CSVs, metadata and
the MIMIC-CXR-JPG tree), as `qcxr synth` writes them and as a real study is laid out. Both
readers check their label file strictly (required columns, 0/1 values, unique ids) and record
its sha256, so every cache and run says exactly which labels it was computed on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from qcxr.labels import Task, canonical, resolve_task, spellings

FRONTAL_VIEWS = ("PA", "AP")
SPLITS = ("train", "val", "test")  # label files of both datasets (MIMIC test: the external set)


@dataclass(frozen=True)
class StudyPaths:
    """The files of a study: NIH-CXR-LT label files and images under nih/, MIMIC-CXR-LT label
    files, metadata and the MIMIC-CXR-JPG tree under mimic/ (the layout `qcxr synth` writes)."""

    root: Path
    nih_dir: Path
    nih_images: Path
    nih_csv: dict[str, Path]  # split -> label file (train, val, test)
    mimic_root: Path
    mimic_csv: Path  # the test split: the external test set of an NIH-trained study
    mimic_metadata: Path
    mimic_split_csv: dict[str, Path]  # split -> CXR-LT 2023 label file (train, val: when written)
    labels_file: Path  # the study's label set, one per line (`--labels-file` of `qcxr train`)


def study_paths(root: str | Path) -> StudyPaths:
    """The paths of a study at `root` (layout of `StudyPaths`); nothing is checked."""
    root = Path(root)
    nih, mimic = root / "nih", root / "mimic"
    mimic_csv = {s: mimic / f"cxr-lt-2023_mimic_{s}.csv" for s in SPLITS}
    return StudyPaths(
        root=root,
        nih_dir=nih,
        nih_images=nih / "images",
        nih_csv={s: nih / f"miccai2023_nih-cxr-lt_labels_{s}.csv" for s in SPLITS},
        mimic_root=mimic,
        mimic_csv=mimic_csv["test"],
        mimic_metadata=mimic / "mimic-cxr-2.0.0-metadata.csv",
        mimic_split_csv=mimic_csv,
        labels_file=root / "labels.txt",
    )


TESTSETS = ("nih", "mimic")  # test sets, named as in predictions-<testset>.parquet


def test_label_file(paths: StudyPaths, testset: str) -> Path:
    """The label file of a test set: "nih" the NIH-CXR-LT test split, "mimic" the MIMIC-CXR-LT
    test file (the layout of `StudyPaths`)."""
    if testset == "nih":
        return paths.nih_csv["test"]
    if testset == "mimic":
        return paths.mimic_csv
    raise ValueError(f"unknown test set {testset!r}; test sets are {list(TESTSETS)}")


def test_set(
    root: str | Path, testset: str, task: str | Task, *, check_files: bool = False
) -> LabeledImages:
    """A study's test set as training reads it (MIMIC: frontal views when the study has its
    metadata file), with every task label the file lacks as NaN."""
    paths = study_paths(root)
    csv = test_label_file(paths, testset)
    if testset == "nih":
        return NIHCXRLT(
            csv, paths.nih_images, task, check_files=check_files, allow_missing_labels=True
        )
    metadata = paths.mimic_metadata if paths.mimic_metadata.is_file() else None
    return MIMICCXRLT(
        csv, paths.mimic_root, task, metadata_csv=metadata, allow_missing_labels=True,
        check_files=check_files,
    )  # fmt: skip


def nih_label_file(split: str) -> Path:
    """The shipped real NIH-CXR-LT label file of a split ("val" or "test")."""
    root = resources.files("qcxr") / "resources" / "nih-cxr-lt"
    path = Path(str(root / f"miccai2023_nih-cxr-lt_labels_{split}.csv"))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no shipped NIH-CXR-LT label file for split {split!r}")
    return path


def file_checksum(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_header(path: Path) -> list[str]:
    """The column names of a CSV's first line; an empty file is an error naming it."""
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        # the first line with a non-blank cell, as pandas skips blank lines before the header
        header = next((row for row in csv.reader(handle) if any(c.strip() for c in row)), [])
    if not header:
        raise ValueError(
            f"{path}: the file is empty (no header line); a label file needs a header and one "
            "row per image"
        )
    return header


def duplicated_columns(header: list[str]) -> dict[str, list[int]]:
    """canonical name -> 0-based header positions, for names the header holds more than once
    (aliases resolved: "Effusion" and "Pleural Effusion" are one label)."""
    positions: dict[str, list[int]] = {}
    for k, column in enumerate(header):
        if column.strip():
            positions.setdefault(canonical(column), []).append(k)
    return {name: where for name, where in positions.items() if len(where) > 1}


def check_duplicate_columns(
    path: Path, header: list[str], frame: pd.DataFrame | None = None
) -> None:
    """A label (or any column) given twice is an error naming the file and the columns.

    Duplicates are refused even when their values agree: which column is meant cannot be told
    from the file, and agreement is a property of today's values that a later edit of one
    column silently breaks (pandas would keep the first and rename the second "X.1").
    With `frame` (the file read with the header's column positions) the message says whether
    and where the values contradict each other.
    """
    duplicates = duplicated_columns(header)
    if not duplicates:
        return
    problems = []
    for name, where in duplicates.items():
        columns = " and ".join(f"{header[k]!r} (column {k + 1})" for k in where)
        detail = ""
        if frame is not None:
            first = frame.iloc[:, where[0]].str.strip()
            differ = np.zeros(len(frame), bool)
            for k in where[1:]:
                differ |= (frame.iloc[:, k].str.strip() != first).to_numpy()
            if differ.any():
                line = int(np.flatnonzero(differ)[0]) + 2
                detail = (
                    f": their values contradict each other on {int(differ.sum())} row(s), "
                    f"first on line {line}"
                )
            else:
                detail = ": their values agree, but one column per label is required"
        problems.append(f"{columns} both name {name!r}{detail}")
    raise ValueError(f"{path}: duplicated column(s): " + "; ".join(problems) + "; keep one")


def read_label_csv(path: str | Path, required: list[str]) -> pd.DataFrame:
    """The CSV as strings; a missing, empty or header-only file, a duplicated column or a
    missing required column is an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    header = read_header(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    check_duplicate_columns(path, header, frame)
    if frame.empty:
        raise ValueError(
            f"{path}: the file is empty (a header line and no data rows); a label file needs "
            "one row per image"
        )
    missing = [name for name in required if name not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing required column(s) {missing}")
    return frame


def label_columns(frame: pd.DataFrame, path: Path) -> dict[str, str]:
    """canonical label name -> column name, over the label-like columns of a file."""
    mapping: dict[str, str] = {}
    for column in frame.columns:
        name = canonical(column)
        if name in mapping:
            raise ValueError(f"{path}: columns {mapping[name]!r} and {column!r} are the same label")
        mapping[name] = column
    return mapping


def file_labels(path: str | Path) -> list[str]:
    """Canonical names of every column of a label file (its header only; ids included)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: label file not found")
    header = read_header(path)
    check_duplicate_columns(path, header)
    return [canonical(c) for c in header]


def missing_message(path: Path, task: Task, absent: list[str]) -> str:
    """`path` lacks these task labels: the error text every reader and the stats share."""
    shown = ", ".join(spellings(name) for name in absent)
    return f"{path}: lacks task {task.name} label(s) [{shown}]"


def task_label_values(
    frame: pd.DataFrame, path: Path, task: Task, allow_missing: bool, hint: str = ""
) -> tuple[np.ndarray, list[str]]:
    """float32 (N, n) labels in task order and the task labels the file lacks (NaN columns).

    A lacking label is an error naming the file and the labels, unless `allow_missing`.
    """
    names = list(task.labels)
    by_name = label_columns(frame, path)
    absent = [name for name in names if name not in by_name]
    if absent and not allow_missing:
        raise ValueError(missing_message(path, task, absent) + hint)
    present = [n for n in names if n in by_name]
    labels = np.full((len(frame), len(names)), np.nan, np.float32)
    if present:
        values = binary_labels(frame, [by_name[n] for n in present], path)
        labels[:, [names.index(n) for n in present]] = values
    return labels, absent


def binary_labels(frame: pd.DataFrame, columns: list[str], path: Path) -> np.ndarray:
    """float32 (N, len(columns)) of 0/1 values; anything else names its row and column."""
    out = np.empty((len(frame), len(columns)), np.float32)
    for j, column in enumerate(columns):
        text = frame[column].str.strip()
        is_zero, is_one = text.isin(("0", "0.0")), text.isin(("1", "1.0"))
        bad = ~(is_zero | is_one)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}: line {row + 2} (data row {row + 1}), column {column!r}: label "
                f"{frame[column].iloc[row]!r} is not 0 or 1"
            )
        out[:, j] = is_one.to_numpy()
    return out


def unique_ids(ids: pd.Series, path: Path, column: str) -> list[str]:
    """The ids as a list; a duplicate is an error naming both lines."""
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        rows = np.flatnonzero(duplicated)
        value = ids.iloc[rows[0]]
        lines = [int(r) + 2 for r in rows if ids.iloc[r] == value][:5]
        raise ValueError(f"{path}: duplicate {column} {value!r} on lines {lines}")
    return ids.tolist()


def missing_files(paths: list[Path]) -> list[Path]:
    return [p for p in paths if not p.is_file()]


def check_images(paths: list[Path], source: Path) -> None:
    """FileNotFoundError naming the first missing images and how many there are."""
    missing = missing_files(paths)
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        raise FileNotFoundError(
            f"{source}: {len(missing)} image file(s) not found, e.g. {shown} "
            "(`qcxr cache build --on-bad-image skip` skips and lists them; features and training "
            "then leave them out)"
        )


@dataclass(frozen=True)
class LabeledImages:
    """Image ids, their files and their labels for one task, with the label file's identity."""

    ids: list[str]
    paths: list[Path]
    labels: np.ndarray  # float32 (N, n); NaN only where a label is absent and that was allowed
    label_names: list[str]  # canonical names, task order
    label_file: Path
    checksum: str  # sha256 of the label file
    missing_labels: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, indices: np.ndarray | list[int]) -> LabeledImages:
        """The same dataset restricted to `indices` (e.g. without images a cache build skipped)."""
        indices = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            ids=[self.ids[i] for i in indices],
            paths=[self.paths[i] for i in indices],
            labels=self.labels[indices],
        )

    def without(self, paths: list[str | Path]) -> LabeledImages:
        """The dataset minus the given image files."""
        drop = {str(Path(p)) for p in paths}
        keep = [i for i, p in enumerate(self.paths) if str(p) not in drop]
        return self.select(keep)


def labeled_images(
    frame: pd.DataFrame,
    ids: list[str],
    paths: list[Path],
    csv_path: Path,
    task: Task,
    allow_missing_labels: bool,
    check_files: bool,
) -> LabeledImages:
    """The LabeledImages of a label file's rows (ids and image paths already read)."""
    labels, absent = task_label_values(frame, csv_path, task, allow_missing_labels)
    if check_files:
        check_images(paths, csv_path)
    return LabeledImages(
        ids, paths, labels, list(task.labels), csv_path, file_checksum(csv_path), absent
    )


def NIHCXRLT(
    csv_path: str | Path,
    image_dir: str | Path,
    task: str | Task,
    *,
    check_files: bool = True,
    allow_missing_labels: bool = False,
) -> LabeledImages:
    """An NIH-CXR-LT split: `id` column + label columns (any alias) + images in `image_dir`.

    `task` is a built-in set name or a `qcxr.labels.Task`. A task label the file lacks (cxr26's
    MIMIC-only labels, say) is an error naming it, unless `allow_missing_labels` (external
    test sets, feature extraction), which keeps it as NaN.
    """
    csv_path, image_dir = Path(csv_path), Path(image_dir)
    task = resolve_task(task)
    frame = read_label_csv(csv_path, ["id"])
    ids = unique_ids(frame["id"].str.strip(), csv_path, "id")
    paths = [image_dir / i for i in ids]
    return labeled_images(frame, ids, paths, csv_path, task, allow_missing_labels, check_files)


def frontal_dicom_ids(metadata_csv: str | Path) -> set[str]:
    """dicom_ids whose ViewPosition is PA or AP in a MIMIC-CXR-JPG metadata CSV."""
    path = Path(metadata_csv)
    frame = read_label_csv(path, ["dicom_id", "ViewPosition"])
    keep = frame["ViewPosition"].str.strip().str.upper().isin(FRONTAL_VIEWS)
    return set(frame.loc[keep, "dicom_id"].str.strip())


def MIMICCXRLT(
    csv_path: str | Path,
    image_root: str | Path,
    task: str | Task,
    metadata_csv: str | Path | None = None,
    allow_missing_labels: bool = False,
    *,
    check_files: bool = True,
) -> LabeledImages:
    """A MIMIC-CXR-LT label file (`path` or `fpath` relative to the MIMIC-CXR-JPG root).

    With `metadata_csv`, only frontal views (ViewPosition PA or AP) are kept, as the paper did.
    A task label the file lacks is an error naming it, unless `allow_missing_labels`, which
    keeps the label as NaN (to be skipped by the metrics).
    """
    csv_path, image_root = Path(csv_path), Path(image_root)
    task = resolve_task(task)
    frame = read_label_csv(csv_path, [])
    path_column = next((c for c in ("path", "fpath") if c in frame.columns), None)
    if path_column is None:
        raise ValueError(f"{csv_path}: missing required column 'path' (or 'fpath')")
    hint = (
        "; pass allow_missing_labels (--allow-missing-labels) to evaluate on the labels the "
        "file has"
    )
    task_label_values(frame.iloc[:0], csv_path, task, allow_missing_labels, hint)
    rel = frame[path_column].str.strip()
    dicom = (
        frame["dicom_id"].str.strip() if "dicom_id" in frame else rel.map(lambda p: Path(p).stem)
    )
    if metadata_csv is not None:
        keep = dicom.isin(frontal_dicom_ids(metadata_csv)).to_numpy()
        frame, rel, dicom = frame[keep], rel[keep], dicom[keep]
    ids = unique_ids(dicom.reset_index(drop=True), csv_path, "dicom_id")
    frame = frame.reset_index(drop=True)
    paths = [image_root / p for p in rel]
    return labeled_images(frame, ids, paths, csv_path, task, True, check_files)


def split_name(path: str | Path) -> str:
    """Table I's header ("Val") for miccai2023_nih-cxr-lt_labels_val.csv; else the stem."""
    stem = Path(path).stem
    for split in SPLITS:
        if stem.endswith(f"_{split}") or stem == split:
            return split.title()
    return stem


def label_stats(csv_paths: list[str | Path], task: str | Task = "cxr19") -> pd.DataFrame:
    """Positive counts per label (rows, by occurrence) and file (columns), plus Total; Table I."""
    task = resolve_task(task)
    names = list(task.labels)
    counts: dict[str, list[int]] = {}
    for path in csv_paths:
        path = Path(path)
        frame = read_label_csv(path, [])
        values, _ = task_label_values(frame, path, task, allow_missing=False)
        column = split_name(path)
        if column in counts:
            column = str(path)
        counts[column] = values.sum(axis=0).astype(int).tolist()
    table = pd.DataFrame(counts, index=pd.Index(names, name="Label"))
    table["Total"] = table.sum(axis=1)
    rank = {name: i for i, name in enumerate(names)}
    order = sorted(names, key=lambda n: (-int(table.loc[n, "Total"]), rank[n]))
    return table.loc[order]
