"""A researcher's own label tables: the generic `table` format and the CheXpert layout.

A table is a CSV (or parquet) file with an image-path column (relative to `data.images`), one
column per label (matched through qcxr.labels aliases; other columns ignored) and optional
patient, view and split columns; or one such file per split. Label values are 1, 0, -1
(uncertain) and blank (not mentioned), also spelled "1.0", "0.0", "-1.0"; `data.uncertain` and
`data.missing` say what -1 and blank become, NaN ("ignore") leaving the entry out of the loss
and of every metric. Splits come from the split column, from one file per split, or are drawn
by patient from the train file (qcxr.data.splits). Every bad input is one error naming the
file, the line (the header is line 1) and the column.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from qcxr.config import TABLE_FORMATS, DataConfig
from qcxr.data.datasets import (
    LabeledImages,
    check_duplicate_columns,
    file_checksum,
    label_columns,
    missing_message,
    read_label_csv,
)
from qcxr.data.splits import SPLITS, check_disjoint, draw_splits, drawn_shares
from qcxr.labels import Task, resolve_task

DEFAULT_PATH_COLUMN = {"table": "path", "chexpert": "Path"}
DEFAULT_VIEW_COLUMN = {"table": "", "chexpert": "Frontal/Lateral"}
CHEXPERT_PATIENT = re.compile(r"patient\d+")
FRONTAL = ("PA", "AP", "FRONTAL")
VALUES = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0, "": np.nan}
UNCERTAIN_VALUE = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}
MISSING_VALUE = {"ignore": np.nan, "zeros": 0.0}


@dataclass(frozen=True)
class Columns:
    """The columns a table is read by ("" = the table has none)."""

    path: str
    patient: str
    view: str
    split: str


@dataclass(frozen=True)
class Part:
    """One label file as read: every data row (index = 0-based data row), the kept rows and
    the split of each kept row (None for a dropped row)."""

    file: Path
    frame: pd.DataFrame
    ids: np.ndarray  # the path column as written (stripped)
    patients: np.ndarray
    keep: np.ndarray  # bool: a frontal view, or every row without a view filter
    splits: np.ndarray  # object: "train" / "val" / "test" / None
    checksum: str  # sha256 of the file, as read


def table_columns(data: DataConfig) -> Columns:
    """The configured columns, the format's defaults filled in."""
    view = data.view_column or DEFAULT_VIEW_COLUMN[data.format]
    return Columns(
        path=data.path_column or DEFAULT_PATH_COLUMN[data.format],
        patient=data.patient_column,
        view=view if data.frontal_only else "",
        split=data.split_column,
    )


def source_files(data: DataConfig) -> dict[str, Path]:
    """split -> the file it is read from (a single file counts as the train file)."""
    if data.format not in TABLE_FORMATS:
        raise ValueError(f"data.format {data.format!r} is not a table format {TABLE_FORMATS}")
    files = {"train": data.csv} if isinstance(data.csv, str) else dict(data.csv)
    files = {s: str(f).strip() for s, f in files.items() if str(f).strip()}
    if not files:
        raise ValueError(f"data.csv: no label file given for data.format {data.format!r}")
    if "train" not in files:
        raise ValueError(f"data.csv: {files} names no train file; splits are drawn from it")
    if data.split_column and len(files) > 1:
        raise ValueError(
            f"data.split_column {data.split_column!r} with one file per split in data.csv "
            f"{files}: give one file (its split column says each row's split) or drop the column"
        )
    named = pd.Series(files)
    if named.duplicated().any():
        raise ValueError(f"data.csv: {files} names one file for two splits; a file is one split")
    return {s: Path(files[s]) for s in SPLITS if s in files}


def table_label_files(data: DataConfig) -> list[Path]:
    """Every label file the config reads, once each."""
    return list(dict.fromkeys(source_files(data).values()))


def images_root(data: DataConfig) -> Path:
    """data.images; by default the train file's directory (chexpert: the one above it, which
    holds CheXpert-v1.0-small/ that the Path column starts with)."""
    if data.images:
        return Path(data.images)
    train = source_files(data)["train"]
    return train.parent.parent if data.format == "chexpert" else train.parent


def line_of(file: Path, row: int) -> str:
    """Where data row `row` (0-based) is: its line in a CSV (the header is line 1)."""
    return f"row {row + 1}" if file.suffix == ".parquet" else f"line {row + 2}"


def read_table(file: Path) -> pd.DataFrame:
    """A CSV or parquet label file as stripped-able strings, blanks as ""."""
    if file.suffix != ".parquet":
        return read_label_csv(file, [])
    if not file.is_file():
        raise FileNotFoundError(f"{file}: label file not found")
    frame = pd.read_parquet(file)
    check_duplicate_columns(file, [str(c) for c in frame.columns])
    if frame.empty:
        raise ValueError(f"{file}: the file has no data rows; a label file needs one per image")
    return pd.DataFrame(
        {str(c): ["" if pd.isna(v) else str(v) for v in frame[c]] for c in frame.columns}
    )


def require_column(frame: pd.DataFrame, file: Path, column: str, what: str) -> pd.Series:
    """A column's stripped values; its absence is an error naming file, header line, column."""
    if column not in frame.columns:
        raise ValueError(
            f"{file}: line 1 (header): missing {what} column {column!r}; the header has "
            f"{list(frame.columns)}"
        )
    return frame[column].astype(str).str.strip()


def bad_paths(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Rows whose image path cannot be used, and why (vectorised: a table may hold 10^6 rows)."""
    blank = (values == "").to_numpy()
    absolute = values.str.match(r"^([/\\]|[A-Za-z]:)").to_numpy()
    maybe = np.flatnonzero(values.str.contains("..", regex=False).to_numpy())
    escapes = np.zeros(len(values), bool)
    escapes[maybe] = [
        os.path.normpath(values.iloc[k].replace("\\", "/")).split("/")[0] == ".." for k in maybe
    ]
    why = np.select(
        [blank, absolute, escapes],
        [
            "is blank",
            "is absolute; it must be relative to the images root (data.images)",
            "leaves the images root (..); it must be relative to data.images and stay in it",
        ],
        "",
    )
    return np.flatnonzero(why != ""), why.tolist()


def checked_paths(frame: pd.DataFrame, file: Path, column: str) -> np.ndarray:
    """The path column, stripped; a blank, absolute or escaping path names line and column."""
    values = require_column(frame, file, column, "image path")
    bad, why = bad_paths(values)
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"{file}: {line_of(file, row)}, column {column!r}: path {values.iloc[row]!r} "
            f"{why[row]} ({len(bad)} such row(s))"
        )
    return values.to_numpy(dtype=object)


def patient_ids(data: DataConfig, frame: pd.DataFrame, file: Path, ids: np.ndarray) -> np.ndarray:
    """Each row's patient: data.patient_column; by default chexpert's patientNNNNN in Path
    and, for a table, the image itself (every image its own patient)."""
    if data.patient_column:
        values = require_column(frame, file, data.patient_column, "patient").to_numpy(object)
        column = data.patient_column
    elif data.format == "chexpert":
        found = [CHEXPERT_PATIENT.search(p) for p in ids]
        values = np.array([m.group(0) if m else "" for m in found], dtype=object)
        column = table_columns(data).path
    else:
        return ids.copy()
    blank = np.flatnonzero(values == "")
    if len(blank):
        row = int(blank[0])
        raise ValueError(
            f"{file}: {line_of(file, row)}, column {column!r}: no patient id "
            f"(value {frame[column].iloc[row]!r}; chexpert paths hold patientNNNNN)"
        )
    return values


def frontal_rows(frame: pd.DataFrame, file: Path, column: str) -> np.ndarray:
    """True for the rows to keep: every row without a view column, else PA, AP or Frontal."""
    if not column:
        return np.ones(len(frame), bool)
    views = require_column(frame, file, column, "view").str.upper()
    return views.isin(FRONTAL).to_numpy()


def split_values(frame: pd.DataFrame, file: Path, column: str) -> np.ndarray:
    """The split column; a value other than train/val/test names line and column."""
    values = require_column(frame, file, column, "split")
    bad = ~values.isin(SPLITS).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{file}: {line_of(file, row)}, column {column!r}: split {values.iloc[row]!r} is "
            f"not one of {list(SPLITS)} ({int(bad.sum())} such row(s))"
        )
    return values.to_numpy(dtype=object)


def read_part(data: DataConfig, file: Path, split: str, checksum: str) -> Part:
    """One label file: its checked paths, patients and views; rows of `split` (or of the split
    column), to be drawn ("") when the split is left to patient splits."""
    columns = table_columns(data)
    frame = read_table(file)
    ids = checked_paths(frame, file, columns.path)
    patients = patient_ids(data, frame, file, ids)
    keep = frontal_rows(frame, file, columns.view)
    if columns.split:
        splits = split_values(frame, file, columns.split)
    else:
        splits = np.full(len(frame), split, dtype=object)
    splits = np.where(keep, splits, None)
    return Part(file, frame, ids, patients, keep, splits, checksum)


def check_unique_paths(parts: list[Part], column: str) -> None:
    """An image named twice (in one file or two) is an error naming both places."""
    ids = pd.Series(np.concatenate([p.ids for p in parts]))
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        value = ids.iloc[int(np.flatnonzero(dup)[0])]
        places = [
            f"{p.file} {line_of(p.file, int(r))}"
            for p in parts
            for r in np.flatnonzero(p.ids == value)
        ]
        raise ValueError(f"duplicate path {value!r} in column {column!r}: {'; '.join(places[:5])}")


def with_drawn_splits(data: DataConfig, parts: list[Part], given: list[str]) -> list[Part]:
    """Splits without a file drawn by patient from the train file's kept rows."""
    missing = [s for s in SPLITS if s not in given]
    if data.split_column or not missing:
        return parts
    train = parts[0]
    names = ["train", *missing]
    shares = drawn_shares(data.split_fractions, names)
    kept = np.flatnonzero(train.keep)
    where = f"{train.file} (patient splits of {names})"
    drawn = draw_splits(train.patients[kept], names, shares, data.split_seed, where)
    splits = train.splits.copy()
    splits[kept] = drawn
    return [replace(train, splits=splits), *parts[1:]]


def split_rows(parts: list[Part]) -> pd.DataFrame:
    """id, patient, split, file, row (0-based data row) of every kept image."""
    frames = []
    for p in parts:
        kept = np.flatnonzero(p.keep)
        frames.append(
            pd.DataFrame(
                {
                    "id": p.ids[kept],
                    "patient": p.patients[kept],
                    "split": p.splits[kept],
                    "file": str(p.file),
                    "row": kept,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


_CACHE: dict[tuple, list[Part]] = {}


def cache_key(data: DataConfig) -> tuple:
    """The settings a table is read by and each file's content (sha256: an mtime can miss a
    rewrite within its granularity)."""
    files = tuple(
        (str(f), file_checksum(f) if f.is_file() else "") for f in table_label_files(data)
    )
    settings = (data.format, data.path_column, data.patient_column, data.split_column)
    settings += (data.view_column, data.frontal_only, tuple(data.split_fractions), data.split_seed)
    return (*settings, files)


def table_parts(data: DataConfig) -> list[Part]:
    """Every label file of the config read, checked and split (cached while files are unchanged)."""
    key = cache_key(data)
    if key not in _CACHE:
        files, sums = source_files(data), dict(key[-1])  # the key holds each file's sha256
        parts = [read_part(data, f, split, sums[str(f)]) for split, f in files.items()]
        check_unique_paths(parts, table_columns(data).path)
        parts = with_drawn_splits(data, parts, list(files))
        check_disjoint(split_rows(parts), lambda file, row: line_of(Path(file), row))
        _CACHE.clear()  # one table at a time: a config's three splits share it
        _CACHE[key] = parts
    return _CACHE[key]


def table_splits(data: DataConfig) -> pd.DataFrame:
    """id, patient, split of every kept image (written to a run's splits.csv)."""
    return split_rows(table_parts(data))[["id", "patient", "split"]]


def raw_label_values(
    part: Part, task: Task, allow_missing: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """float32 (N, n) file values of every row (1, 0, -1, NaN = blank) in task order, which
    task labels the file has (bool n), and the absent ones. A bad value names line, column."""
    by_name = label_columns(part.frame, part.file)
    names = list(task.labels)
    absent = [n for n in names if n not in by_name]
    if absent and not allow_missing:
        header = " (line 1, the header, has no such column)"
        raise ValueError(missing_message(part.file, task, absent) + header)
    raw = np.full((len(part.frame), len(names)), np.nan, np.float32)
    for j, name in enumerate(names):
        if name in by_name:
            raw[:, j] = label_column_values(part, by_name[name])
    present = np.array([n in by_name for n in names], bool)
    return raw, present, absent


def label_column_values(part: Part, column: str) -> np.ndarray:
    """One label column as 1, 0, -1 or NaN (blank); anything else names its line."""
    text = part.frame[column].astype(str).str.strip()
    values = text.map(VALUES)
    bad = values.isna().to_numpy() & (text != "").to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{part.file}: {line_of(part.file, row)}, column {column!r}: label "
            f"{part.frame[column].iloc[row]!r} is not 1, 0, -1 or blank "
            f"({int(bad.sum())} such value(s) in the column)"
        )
    return values.to_numpy(dtype=np.float32)


def apply_policy(raw: np.ndarray, present: np.ndarray, uncertain: str, missing: str) -> np.ndarray:
    """Labels the model sees: -1 -> data.uncertain, blank -> data.missing (NaN = ignored). A
    label the file lacks stays NaN whatever the policy: a blank says "not mentioned", an
    absent column says nothing."""
    out = raw.copy()
    out[raw == -1] = UNCERTAIN_VALUE[uncertain]
    blank = np.isnan(raw) & present[None, :]
    out[blank] = MISSING_VALUE[missing]
    return out


def part_of_split(parts: list[Part], split: str) -> tuple[Part, np.ndarray]:
    """The file a split is read from and its row indices (at least one)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {list(SPLITS)}")
    for part in parts:
        rows = np.flatnonzero(part.splits == split)
        if len(rows):
            return part, rows
    raise ValueError(f"{parts[0].file}: no image is in split {split!r}")


def check_image_files(part: Part, rows: np.ndarray, paths: list[Path], column: str) -> None:
    """A missing image is an error naming the file, the line and the column of its row."""
    missing = [k for k, p in enumerate(paths) if not p.is_file()]
    if missing:
        row = int(rows[missing[0]])
        raise FileNotFoundError(
            f"{part.file}: {line_of(part.file, row)}, column {column!r}: image "
            f"{paths[missing[0]]} not found ({len(missing)} of {len(paths)} image(s) of this "
            "split are missing; is data.images (--images) the directory the paths start from? "
            "`qcxr cache build --on-bad-image skip` skips and lists bad images)"
        )


def table_dataset(
    data: DataConfig,
    task: Task,
    split: str,
    *,
    check_files: bool,
    allow_missing_labels: bool = False,
) -> LabeledImages:
    """One split of a label table: ids (the path column as written), image paths under the
    images root, float32 labels after data.uncertain / data.missing (NaN = left out)."""
    task = resolve_task(task)
    part, rows = part_of_split(table_parts(data), split)
    raw, present, absent = raw_label_values(part, task, allow_missing_labels)
    labels = apply_policy(raw[rows], present, data.uncertain, data.missing)
    ids = part.ids[rows].tolist()
    root = images_root(data)
    paths = [root / i for i in ids]
    if check_files:
        check_image_files(part, rows, paths, table_columns(data).path)
    return LabeledImages(ids, paths, labels, list(task.labels), part.file, part.checksum, absent)


def table_label_stats(data: DataConfig, task: Task) -> pd.DataFrame:
    """Per label (rows, by total): positives per split after the policy, their Total, and the
    Uncertain (-1) and Blank entries of the kept images before it."""
    task = resolve_task(task)
    names = list(task.labels)
    parts = table_parts(data)
    counts: dict[str, np.ndarray] = {}
    uncertain = blank = np.zeros(len(names), int)
    for split in SPLITS:
        part = next((p for p in parts if (p.splits == split).any()), parts[0])
        raw, present, _ = raw_label_values(part, task, allow_missing=False)
        raw = raw[part.splits == split]  # a split column may leave a split empty: zeros
        labels = apply_policy(raw, present, data.uncertain, data.missing)
        counts[split.title()] = (labels == 1).sum(axis=0)
        uncertain = uncertain + (raw == -1).sum(axis=0)
        blank = blank + np.isnan(raw).sum(axis=0)
    table = pd.DataFrame(counts, index=pd.Index(names, name="Label"))
    table["Total"] = table.sum(axis=1)
    table["Uncertain"], table["Blank"] = uncertain, blank
    rank = {name: i for i, name in enumerate(names)}
    order = sorted(names, key=lambda n: (-int(table.loc[n, "Total"]), rank[n]))
    return table.loc[order].astype(int)
