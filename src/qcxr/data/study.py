"""Where a run's images and labels come from: one `Study` per `data.format`.

A study names its sets: "train" and "val" (what a run trains on) and its test sets, named as in
predictions-<testset>.parquet. Each set is read by its format's reader into LabeledImages and
has a feature-store name (`qcxr features --split`, <features>/<store>.safetensors):

- "nih-cxr-lt": the study layout of `StudyPaths` (data.study). Train and val come from its
  NIH-CXR-LT files or, for labels NIH lacks, its CXR-LT 2023 MIMIC files (data.source, see
  `training_source`); test sets "nih" (NIH-CXR-LT test split) and "mimic" (MIMIC-CXR-LT test
  file), the one of the other dataset than train being external: labels its file lacks are NaN.
- "mimic-cxr-lt": the same layout, trained on its MIMIC files.
- "chexpert", "table": label tables (data.csv, images under data.images; qcxr.data.tables),
  test set "test".
"""

from __future__ import annotations

import sys
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qcxr.config import SOURCES, TABLE_FORMATS, DataConfig
from qcxr.data.datasets import LabeledImages, missing_message, study_paths
from qcxr.labels import Task

# training source -> feature store of train and val
TRAIN_STORES = {
    "nih": {"train": "train", "val": "val"},
    "mimic": {"train": "mimic-train", "val": "mimic-val"},
    "table": {"train": "train", "val": "val"},
}
# test set -> feature store, per kind of study
LAYOUT_TESTSETS = {"nih": "test", "mimic": "mimic"}
TABLE_TESTSETS = {"test": "test"}


def data_settings(config_file: str | Path | None, **given: Any) -> DataConfig:
    """The data: section of a run config file (else the defaults) with the settings `given`
    over it, those not None (paths as strings): what `--config` and the data flags name."""
    from qcxr import config as config_lib

    base = config_lib.load(config_file) if config_file else config_lib.Config()
    updates = {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if v is not None}
    return config_lib.from_dict({"data": updates}, base).data


def has_data(data: DataConfig) -> bool:
    """Whether the settings name any data (a study root, or a label table)."""
    return bool(data.csv if data.format in TABLE_FORMATS else data.study)


def _lacking(path: Path, task: Task) -> list[str] | None:
    """Task labels a label file lacks (None: no such file)."""
    from qcxr.data.datasets import file_labels

    if not path.is_file():
        return None
    present = set(file_labels(path))
    return [name for name in task.labels if name not in present]


def training_source(data: DataConfig, task: Task) -> str:
    """Where train and val come from: "table" for label tables; for the study layout "nih" or
    "mimic": data.source, or for "auto" nih when the study's NIH train file carries every task
    label, else mimic when its MIMIC train file does; else an error naming both files and the
    labels each lacks."""
    if data.format in TABLE_FORMATS:
        return "table"
    if data.format == "mimic-cxr-lt":
        return "mimic"
    if data.source not in SOURCES:
        raise ValueError(f"data.source: unknown source {data.source!r}; choose from {SOURCES}")
    if data.source != "auto":
        return data.source
    if not data.study:
        raise ValueError("no study given: pass --study ROOT (or set data.study in the config)")
    paths = study_paths(data.study)
    nih, mimic = paths.nih_csv["train"], paths.mimic_split_csv["train"]
    lacking = {path: _lacking(path, task) for path in (nih, mimic)}
    for path, absent in lacking.items():
        if absent == []:
            return "nih" if path == nih else "mimic"
    reasons = [
        missing_message(path, task, absent) if absent else f"{path}: not found"
        for path, absent in lacking.items()
    ]
    raise ValueError(
        "; ".join(reasons) + " (data.source auto: no training label file has every task label)"
    )


@dataclass(frozen=True)
class Study:
    """The sets of a run's data: `training` and `testsets` map set name -> feature store."""

    data: DataConfig
    task: Task
    source: str  # "nih", "mimic" or "table" (training_source)
    training: dict[str, str]
    testsets: dict[str, str]

    def stores(self) -> dict[str, str]:
        """Every set this study has -> its feature store name."""
        return {**self.training, **self.testsets}

    def external(self, name: str) -> bool:
        """A test set from another dataset than train: labels its file lacks are NaN."""
        return name in LAYOUT_TESTSETS and self.source in LAYOUT_TESTSETS and name != self.source

    def dataset(
        self, name: str, *, check_files: bool = False, images_only: bool = False
    ) -> LabeledImages:
        """The labelled images of set `name` ("train", "val" or a test set). `images_only`
        (cache builds, feature extraction): task labels the file lacks are NaN, not an error."""
        if name not in self.stores():
            raise ValueError(f"no set {name!r} in this study; its sets are {list(self.stores())}")
        if self.source == "table":
            from qcxr.data.tables import table_dataset

            return table_dataset(
                self.data, self.task, name, check_files=check_files,
                allow_missing_labels=images_only,
            )  # fmt: skip
        kind = self.source if name in self.training else name
        split = name if name in self.training else "test"
        source = "any" if images_only else self.source
        return _layout_dataset(self.data, self.task, kind, split, source, check_files)

    def label_files(self) -> list[Path]:
        """Every label file the study reads (for records and checksums)."""
        if self.source == "table":
            from qcxr.data.tables import table_label_files

            return table_label_files(self.data)
        paths = study_paths(self.data.study)
        files = [*paths.nih_csv.values(), *paths.mimic_split_csv.values(), paths.mimic_metadata]
        return [p for p in files if p.is_file()]


def _layout_dataset(
    data: DataConfig, task: Task, kind: str, split: str, source: str, check_files: bool
) -> LabeledImages:
    """A set of the study layout: `kind` "nih" or "mimic", `split` train/val/test."""
    from qcxr.data.datasets import MIMICCXRLT, NIHCXRLT

    paths = study_paths(data.study)
    if kind == "nih":
        return NIHCXRLT(
            paths.nih_csv[split], paths.nih_images, task, check_files=check_files,
            allow_missing_labels=source != "nih",
        )  # fmt: skip
    metadata = paths.mimic_metadata if paths.mimic_metadata.is_file() else None
    return MIMICCXRLT(
        paths.mimic_split_csv[split], paths.mimic_root, task, metadata_csv=metadata,
        allow_missing_labels=source != "mimic", check_files=check_files,
    )  # fmt: skip


def open_study(data: DataConfig, task: Task) -> Study:
    """The study the data settings name, with the test sets whose files exist (the training
    dataset's own test set always: its absence is an error when it is read)."""
    if not has_data(data):
        if data.format in TABLE_FORMATS:
            raise ValueError(
                f"data.format {data.format}: no label table given: pass --csv FILE (or set "
                "data.csv in the config)"
            )
        raise ValueError("no study given: pass --study ROOT (or set data.study in the config)")
    source = training_source(data, task)
    if source == "table":  # data.images "" = the train file's folder (qcxr.data.tables)
        return Study(data, task, source, TRAIN_STORES[source], dict(TABLE_TESTSETS))
    paths = study_paths(data.study)
    files = {"nih": paths.nih_csv["test"], "mimic": paths.mimic_csv}
    testsets = {
        name: store
        for name, store in LAYOUT_TESTSETS.items()
        if name == source or files[name].is_file()
    }
    return Study(data, task, source, TRAIN_STORES[source], testsets)


def skipped_ids(dataset: LabeledImages, skipped: Collection[str]) -> list[str]:
    """Ids of `dataset` whose image a cache build skipped (`ImageCache.skipped()`: source keys)."""
    from qcxr.data.cache import source_key

    pairs = zip(dataset.ids, dataset.paths, strict=True)
    return [image_id for image_id, path in pairs if source_key(path) in skipped]


def without_skipped(dataset: LabeledImages, skipped: list[str], where: str) -> LabeledImages:
    """`dataset` minus the images of `skipped` ids (bad images skipped at cache build), with a
    note naming how many and where they are listed: never dropped silently."""
    drop = set(skipped)
    if not drop:
        return dataset
    keep = [i for i, image_id in enumerate(dataset.ids) if image_id not in drop]
    gone = len(dataset.ids) - len(keep)
    if gone:
        print(
            f"note: {where}: {gone} image(s) of {dataset.label_file} left out, skipped as bad "
            f"images at cache build (e.g. {sorted(drop)[:3]})",
            file=sys.stderr,
        )
    return dataset.select(keep)
