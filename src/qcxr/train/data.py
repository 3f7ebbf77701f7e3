"""The data a run trains and predicts on, read from a study (labels, images) or feature stores.

Train and val come from the study's NIH-CXR-LT files or, for labels NIH lacks, its CXR-LT 2023
MIMIC train/val files (data.source; `training_source`). Test sets are named as in
predictions-<testset>.parquet: "nih" (the NIH-CXR-LT test split) and "mimic" (the MIMIC-CXR-LT
test file); the one from the other dataset than train is the external test, where labels its
file lacks are NaN.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qcxr import rundir
from qcxr.config import SOURCES, Config, task_of
from qcxr.labels import Task

SPLITS = ("train", "val")
TESTSETS = {"nih": "test", "mimic": "mimic"}  # testset name -> feature store split
# training source -> feature store split of train and val (`qcxr features --split`)
TRAIN_STORES = {
    "nih": {"train": "train", "val": "val"},
    "mimic": {"train": "mimic-train", "val": "mimic-val"},
}


@dataclass(frozen=True)
class Split:
    """One split in memory: features (frozen) or nothing (images come from the loader)."""

    ids: list[str]
    labels: np.ndarray  # float32 (N, n), NaN where unknown
    label_names: list[str]
    checksum: str  # sha256 of the label file
    inputs: np.ndarray | None = None  # float32 (N, F) or (N, V, F) features


def checksums(train: Any, val: Any, tests: dict[str, Any]) -> dict[str, str]:
    """{split name: sha256 of its label file} for versions.json."""
    splits = {"train": train, "val": val, **tests}
    return {name: split.checksum for name, split in splits.items()}


@dataclass(frozen=True)
class FrozenData:
    train: Split
    val: Split
    tests: dict[str, Split]
    weights: str  # identity of the backbone weights that made the features
    norm: tuple[np.ndarray, np.ndarray] | None = None  # (mean, std) applied to every split
    source: str = "nih"  # where train and val came from (training_source)

    @property
    def feature_dim(self) -> int:
        return int(self.train.inputs.shape[-1])

    def checksums(self) -> dict[str, str]:
        return checksums(self.train, self.val, self.tests)


@dataclass(frozen=True)
class ImageData:
    """Labelled image datasets of a study and the image cache holding their images."""

    train: Any  # qcxr.data.datasets.LabeledImages
    val: Any
    tests: dict[str, Any]
    cache: Any  # qcxr.data.cache.ImageCache
    source: str = "nih"  # where train and val came from (training_source)

    def checksums(self) -> dict[str, str]:
        return checksums(self.train, self.val, self.tests)


def _lacking(path: Path, task: Task) -> list[str] | None:
    """Task labels a label file lacks (None: no such file)."""
    from qcxr.data.datasets import file_labels

    if not path.is_file():
        return None
    present = set(file_labels(path))
    return [name for name in task.labels if name not in present]


def training_source(config: Config) -> str:
    """Where train and val come from, "nih" or "mimic": data.source, or for "auto" nih when the
    study's NIH train file carries every task label, else mimic when its MIMIC train file does;
    else an error naming both files and the labels each lacks."""
    from qcxr.data.datasets import missing_message, study_paths

    setting = config.data.source
    if setting not in SOURCES:
        raise ValueError(f"data.source: unknown source {setting!r}; choose from {SOURCES}")
    if setting != "auto":
        return setting
    if not config.data.study:
        raise ValueError("no study given: pass --study ROOT (or set data.study in the config)")
    paths, task = study_paths(config.data.study), task_of(config)
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


def _warn_missing(dataset: Any) -> None:
    if dataset.missing_labels:
        print(
            f"warning: {dataset.label_file} lacks {dataset.missing_labels}; their y: columns are "
            "NaN and metrics skip them",
            file=sys.stderr,
        )


def datasets(config: Config, *, check_files: bool) -> dict[str, Any]:
    """LabeledImages for train, val, nih (test) and mimic (test), those the study has.

    Train and val come from `training_source`; both must carry every task label, and so must
    the test set of the same dataset. The other dataset's test set is external: labels it lacks
    are NaN (with a warning).
    """
    from qcxr.data.datasets import MIMICCXRLT, NIHCXRLT, study_paths

    if not config.data.study:
        raise ValueError("no study given: pass --study ROOT (or set data.study in the config)")
    source, task = training_source(config), task_of(config)
    paths = study_paths(config.data.study)
    metadata = paths.mimic_metadata if paths.mimic_metadata.is_file() else None

    def nih(split: str) -> Any:
        return NIHCXRLT(
            paths.nih_csv[split], paths.nih_images, task, check_files=check_files,
            allow_missing_labels=source != "nih",
        )  # fmt: skip

    def mimic(split: str) -> Any:
        return MIMICCXRLT(
            paths.mimic_split_csv[split], paths.mimic_root, task, metadata_csv=metadata,
            allow_missing_labels=source != "mimic", check_files=check_files,
        )  # fmt: skip

    reader = nih if source == "nih" else mimic
    out = {"train": reader("train"), "val": reader("val")}
    if source == "nih" or paths.nih_csv["test"].is_file():
        out["nih"] = nih("test")
    if paths.mimic_csv.is_file():
        out["mimic"] = mimic("test")
    else:
        print(f"note: {paths.mimic_csv} not found; no mimic test set", file=sys.stderr)
    for name in ("nih", "mimic"):
        if name in out:
            _warn_missing(out[name])
    return out


def aligned(store: Any, dataset: Any, path: Path) -> Split:
    """Labels of the store's rows, by id; every row must have a label row."""
    row_of = {image_id: i for i, image_id in enumerate(dataset.ids)}
    missing = [i for i in store.ids if i not in row_of]
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} feature row id(s) not in {dataset.label_file}, "
            f"e.g. {missing[:3]}"
        )
    rows = np.asarray([row_of[i] for i in store.ids], np.int64)
    return Split(
        list(store.ids),
        dataset.labels[rows].astype(np.float32),
        list(dataset.label_names),
        dataset.checksum,
        np.asarray(store.features, np.float32),
    )


def load_frozen_data(config: Config) -> FrozenData:
    """Features from <data.features>/{train,val,test,mimic}.safetensors, labels from the study."""
    from qcxr.features import load_feature_store

    if not config.data.features:
        raise ValueError("frozen mode needs feature stores: pass --features DIR")
    directory = Path(config.data.features)
    labelled = datasets(config, check_files=False)
    source = training_source(config)
    splits: dict[str, Split] = {}
    weights = set()
    for name, file in (*TRAIN_STORES[source].items(), *TESTSETS.items()):
        path = directory / f"{file}.safetensors"
        external = name in TESTSETS and name != source  # optional: the other dataset's test
        if name not in labelled or (external and not path.is_file()):
            continue
        store = load_feature_store(path)
        weights.add(str(store.meta.get("weights", "unknown")))
        splits[name] = aligned(store, labelled[name], path)
    if len(weights) > 1:
        raise ValueError(f"{directory}: feature stores come from different weights {weights}")
    norm = None
    if config.train.standardize_features:
        norm = feature_norm(splits["train"].inputs)
        splits = {name: standardized(split, norm) for name, split in splits.items()}
    tests = {name: splits[name] for name in TESTSETS if name in splits}
    return FrozenData(splits["train"], splits["val"], tests, weights.pop(), norm, source)


def feature_norm(inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over the training split (and its views).

    The variance is floored at 1e-3 of the mean variance: a unit that is (almost) constant on
    the training split, such as a dead ReLU, must not blow up where it varies on other splits.
    """
    flat = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
    var = flat.var(0)
    std = np.sqrt(var + 1e-3 * var.mean())
    return flat.mean(0).astype(np.float32), std.astype(np.float32)


def standardized(split: Split, norm: tuple[np.ndarray, np.ndarray]) -> Split:
    mean, std = norm
    return dataclasses.replace(split, inputs=((split.inputs - mean) / std).astype(np.float32))


def save_feature_norm(run_dir: Path, norm: tuple[np.ndarray, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file({"mean": norm[0], "std": norm[1]}, str(run_dir / rundir.FEATURE_NORM))


def load_feature_norm(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The standardisation a frozen run was trained with, or None."""
    path = Path(run_dir) / rundir.FEATURE_NORM
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    return tensors["mean"], tensors["std"]


def label_frequency(labels: np.ndarray) -> np.ndarray:
    """Positive fraction per label over known values (for weighted_bce)."""
    return np.nan_to_num(np.nanmean(labels, axis=0)).astype(np.float32)


def load_image_data(config: Config, cache_dir: str | Path, progress: bool = True) -> ImageData:
    """Datasets of the study and an image cache holding all their images (built if needed)."""
    from qcxr.data.cache import ImageCache

    sets = datasets(config, check_files=True)
    cache = ImageCache(Path(cache_dir))
    paths = [p for split in sets.values() for p in split.paths]
    cache.build(paths, threads=config.data.loader_threads, progress=progress)
    tests = {name: sets[name] for name in TESTSETS if name in sets}
    return ImageData(sets["train"], sets["val"], tests, cache, training_source(config))


def train_counts(labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """Positive count per label name (rundir.TRAIN_COUNTS, for the head/medium/tail groups)."""
    return {name: float(np.nansum(labels[:, i])) for i, name in enumerate(names)}
