"""The data a run trains and predicts on, read from a study (labels, images) or feature stores.

Test sets are named as in predictions-<testset>.parquet: "nih" (the internal NIH-CXR-LT test
split) and "mimic" (the external MIMIC-CXR-LT test set, when the study has one).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qcxr.config import Config

SPLITS = ("train", "val")
TESTSETS = {"nih": "test", "mimic": "mimic"}
FEATURE_NORM_FILE = "feature_norm.safetensors"  # testset name -> feature store split


@dataclass(frozen=True)
class Split:
    """One split in memory: features (frozen) or nothing (images come from the loader)."""

    ids: list[str]
    labels: np.ndarray  # float32 (N, n), NaN where unknown
    label_names: list[str]
    checksum: str  # sha256 of the label file
    inputs: np.ndarray | None = None  # float32 (N, F) or (N, V, F) features


@dataclass(frozen=True)
class FrozenData:
    train: Split
    val: Split
    tests: dict[str, Split]
    weights: str  # identity of the backbone weights that made the features
    norm: tuple[np.ndarray, np.ndarray] | None = None  # (mean, std) applied to every split

    @property
    def feature_dim(self) -> int:
        return int(self.train.inputs.shape[-1])

    def checksums(self) -> dict[str, str]:
        splits = {"train": self.train, "val": self.val, **self.tests}
        return {name: split.checksum for name, split in splits.items()}


def datasets(config: Config, *, check_files: bool) -> dict[str, Any]:
    """LabeledImages for train, val, nih (test) and, if the study has it, mimic."""
    from qcxr.data.datasets import MIMICCXRLT, NIHCXRLT
    from qcxr.data.synthetic import study_paths

    if not config.data.study:
        raise ValueError("no study given: pass --study ROOT (or set data.study in the config)")
    paths = study_paths(config.data.study)
    out = {}
    for name, split in (("train", "train"), ("val", "val"), ("nih", "test")):
        out[name] = NIHCXRLT(
            paths.nih_csv[split], paths.nih_images, config.task, check_files=check_files
        )
    if paths.mimic_csv.is_file():
        metadata = paths.mimic_metadata if paths.mimic_metadata.is_file() else None
        mimic = MIMICCXRLT(
            paths.mimic_csv,
            paths.mimic_root,
            config.task,
            metadata_csv=metadata,
            allow_missing_labels=True,
            check_files=check_files,
        )
        if mimic.missing_labels:
            print(
                f"warning: {paths.mimic_csv} lacks {mimic.missing_labels}; their y: columns are "
                "NaN and metrics skip them",
                file=sys.stderr,
            )
        out["mimic"] = mimic
    else:
        print(f"note: {paths.mimic_csv} not found; no external (mimic) test", file=sys.stderr)
    return out


@dataclass(frozen=True)
class Store:
    ids: list[str]
    features: np.ndarray
    meta: dict[str, Any]


def read_store(path: Path) -> Store:
    """A feature store file (contract B): via qcxr.features when present."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: feature store not found; run `qcxr features` first")
    try:
        from qcxr.features import load_feature_store
    except ModuleNotFoundError:
        load_feature_store = None
    if load_feature_store is not None:
        store = load_feature_store(path)
        return Store(list(store.ids), np.asarray(store.features, np.float32), dict(store.meta))
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as f:
        meta = dict(f.metadata() or {})
        features = f.get_tensor("features").astype(np.float32)
    ids = json.loads(meta.get("ids", "null"))
    if not isinstance(ids, list) or len(ids) != len(features):
        raise ValueError(f"{path}: metadata 'ids' must list one id per feature row")
    return Store(ids, features, meta)


def aligned(store: Store, dataset: Any, path: Path) -> Split:
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
        store.features,
    )


def load_frozen_data(config: Config) -> FrozenData:
    """Features from <data.features>/{train,val,test,mimic}.safetensors, labels from the study."""
    if not config.data.features:
        raise ValueError("frozen mode needs feature stores: pass --features DIR")
    directory = Path(config.data.features)
    labelled = datasets(config, check_files=False)
    splits: dict[str, Split] = {}
    weights = set()
    for name, file in (("train", "train"), ("val", "val"), *TESTSETS.items()):
        path = directory / f"{file}.safetensors"
        if name not in labelled or (name == "mimic" and not path.is_file()):
            continue
        store = read_store(path)
        weights.add(str(store.meta.get("weights", "unknown")))
        splits[name] = aligned(store, labelled[name], path)
    if len(weights) > 1:
        raise ValueError(f"{directory}: feature stores come from different weights {weights}")
    norm = None
    if config.train.standardize_features:
        norm = feature_norm(splits["train"].inputs)
        splits = {name: standardized(split, norm) for name, split in splits.items()}
    tests = {name: splits[name] for name in TESTSETS if name in splits}
    return FrozenData(splits["train"], splits["val"], tests, weights.pop(), norm)


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

    save_file({"mean": norm[0], "std": norm[1]}, str(run_dir / FEATURE_NORM_FILE))


def load_feature_norm(run_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The standardisation a frozen run was trained with, or None."""
    path = Path(run_dir) / FEATURE_NORM_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    tensors = load_file(str(path))
    return tensors["mean"], tensors["std"]


def label_frequency(labels: np.ndarray) -> np.ndarray:
    """Positive fraction per label over known values (for weighted_bce)."""
    return np.nan_to_num(np.nanmean(labels, axis=0)).astype(np.float32)


def train_counts(labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """Positive count per label name (train_counts.json, read by qcxr.evaluate.metrics)."""
    return {name: float(np.nansum(labels[:, i])) for i, name in enumerate(names)}
