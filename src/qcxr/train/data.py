"""The data a run trains and predicts on, read from its study (labels, images; qcxr.data.study)
or feature stores.

Train and val come from the study's training files (data.format, data.source); test sets are
named as in predictions-<testset>.parquet ("nih" and "mimic" for the NIH-CXR-LT study layout,
"test" for a label table). A test set from another dataset than train is external: labels its
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
from qcxr.config import Config, task_of
from qcxr.data.study import skipped_ids, without_skipped

SPLITS = ("train", "val")


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


def training_source(config: Config) -> str:
    """Where train and val come from: "nih", "mimic" or "table" (qcxr.data.study)."""
    from qcxr.data.study import training_source as source_of

    return source_of(config.data, task_of(config))


def study_of(config: Config) -> Any:
    """The run's qcxr.data.study.Study."""
    from qcxr.data.study import open_study

    return open_study(config.data, task_of(config))


def _warn_missing(dataset: Any) -> None:
    if dataset.missing_labels:
        print(
            f"warning: {dataset.label_file} lacks {dataset.missing_labels}; their y: columns are "
            "NaN and metrics skip them",
            file=sys.stderr,
        )


def datasets(config: Config, *, check_files: bool, study: Any = None) -> dict[str, Any]:
    """LabeledImages of train, val and every test set the study has (qcxr.data.study; `study`:
    the config's, when already open).

    Train and val must carry every task label, and so must the test set of the same dataset;
    an external test set's missing labels are NaN (with a warning).
    """
    study = study or study_of(config)
    out = {name: study.dataset(name, check_files=check_files) for name in study.stores()}
    if study.source in ("nih", "mimic") and "mimic" not in out:
        from qcxr.data.datasets import study_paths

        missing = study_paths(config.data.study).mimic_csv
        print(f"note: {missing} not found; no mimic test set", file=sys.stderr)
    for name in study.testsets:
        _warn_missing(out[name])
    return out


def _redo(path: Path, split: str, config: Config | None, meta: dict[str, str]) -> str:
    """The command that makes a feature store again."""
    study = (config.data.study if config is not None else "") or "STUDY"
    cache = meta.get("cache") or "CACHE"
    return (
        f"`qcxr features --study {study} --split {split} --cache {cache} --out {path} "
        "--overwrite` (with the run's --weights and task)"
    )


def _shown(ids: list[str], k: int = 3) -> str:
    return ", ".join(repr(i) for i in ids[:k]) + (", ..." if len(ids) > k else "")


def check_ids(store: Any, dataset: Any, path: Path, redo: str = "") -> None:
    """A store's ids must be its label file's ids, each once (in any order): duplicated,
    missing and extra ids are one error naming the store, the label file and examples."""
    wanted = set(dataset.ids)
    rows: dict[str, list[int]] = {}
    for row, image_id in enumerate(store.ids):
        rows.setdefault(image_id, []).append(row)
    extra = [i for i in rows if i not in wanted]
    duplicated = [i for i, where in rows.items() if len(where) > 1]
    missing = [i for i in dataset.ids if i not in rows]
    problems = []
    if extra:
        problems.append(
            f"{len(extra)} feature row id(s) not in {dataset.label_file}, e.g. [{_shown(extra)}]"
        )
    if duplicated:
        shown = ", ".join(f"{i!r} (rows {rows[i][:4]})" for i in duplicated[:3])
        problems.append(f"{len(duplicated)} id(s) on more than one row: {shown}")
    if missing:
        problems.append(
            f"{len(missing)} of the {len(dataset.ids)} images of {dataset.label_file} have no "
            f"feature row, e.g. [{_shown(missing)}]"
        )
    if problems:
        again = f"; make it again: {redo}" if redo else ""
        raise ValueError(
            f"{path}: the store's ids are not those of its label file: "
            + "; ".join(problems)
            + again
        )


def check_provenance(
    store: Any, dataset: Any, path: Path, split: str, config: Config | None = None
) -> None:
    """What `qcxr features` recorded must hold now: the store is this split's ("split"), made
    with this label file ("labels_checksum" = its sha256) and with the config's image settings
    ("crop", "resize_shortest", "resample" of its cache). Fields a store lacks are not checked
    (the caller warns of a store without its content checksum)."""
    meta = store.meta
    redo = _redo(path, split, config, meta)
    if "split" in meta and meta["split"] != split:
        raise ValueError(
            f"{path}: field split is {meta['split']!r}, but this file holds the {split!r} "
            f"split; make it again: {redo}"
        )
    check_ids(store, dataset, path, redo)
    recorded = meta.get("labels_checksum")
    if recorded and recorded != dataset.checksum:
        raise ValueError(
            f"{path}: field labels_checksum {recorded[:12]}... is not the sha256 "
            f"{dataset.checksum[:12]}... of {dataset.label_file}: labels changed since "
            f"extraction; re-run `qcxr features --split {split} --out {path} ...` with the "
            "same settings (it updates the field when the images are unchanged, else add "
            "--overwrite)"
        )
    if config is None:
        return
    from qcxr.features import image_settings

    changed = {
        k: (v, str(getattr(config.data, k)))
        for k, v in image_settings(meta).items()
        if v != str(getattr(config.data, k))
    }
    if changed:
        fields = ", ".join(f"{k} {a} in the store, data.{k} = {b}" for k, (a, b) in changed.items())
        raise ValueError(
            f"{path}: the store's images were preprocessed otherwise than the config says "
            f"({fields}); set the config's data.* to the store's values, or extract from a "
            f"cache built with the config's: {redo}"
        )


def aligned(store: Any, dataset: Any, path: Path) -> Split:
    """Labels of the store's rows, by id; the ids must be the label file's, each once."""
    check_ids(store, dataset, path)
    row_of = {image_id: i for i, image_id in enumerate(dataset.ids)}
    rows = np.asarray([row_of[i] for i in store.ids], np.int64)
    return Split(
        list(store.ids),
        dataset.labels[rows].astype(np.float32),
        list(dataset.label_names),
        dataset.checksum,
        np.asarray(store.features, np.float32),
    )


def _missing_external(
    path: Path, name: str, store: str, dataset: Any, config: Config, required: bool
) -> None:
    redo = _redo(path, store, config, {}).replace(" --overwrite", "")
    if required:
        raise ValueError(
            f"{path}: no feature store for the external test set {name!r} "
            f"({dataset.label_file} exists); make it with {redo}, or set "
            "train.require_external_test: false to train without it"
        )
    print(
        f"note: {path} not found; no {name} (external) test set "
        "(train.require_external_test is false)",
        file=sys.stderr,
    )


def load_frozen_data(config: Config, *, require_external_test: bool | None = None) -> FrozenData:
    """Features from <data.features>/{train,val,test,mimic}.safetensors, labels from the study.

    Each store must hold exactly its split's images, once each, and match what it recorded at
    extraction (content checksum on load; split, label file checksum, image settings:
    `check_provenance`); all must come from the same backbone weights. A store without a
    content checksum (written before it was recorded) loads with one warning line.
    The external test set's store (the other dataset's test set, when the study has its label
    file) is required unless `require_external_test` is False; None: the config's
    train.require_external_test (required when the config has no such setting).
    """
    from qcxr.features import load_feature_store

    if not config.data.features:
        raise ValueError("frozen mode needs feature stores: pass --features DIR")
    if require_external_test is None:
        require_external_test = bool(getattr(config.train, "require_external_test", True))
    directory = Path(config.data.features)
    study = study_of(config)
    labelled = datasets(config, check_files=False, study=study)
    splits: dict[str, Split] = {}
    weights: dict[str, str] = {}
    unverified: list[str] = []
    for name, file in study.stores().items():
        path = directory / f"{file}.safetensors"
        if study.external(name) and not path.is_file():
            _missing_external(path, name, file, labelled[name], config, require_external_test)
            continue
        store = load_feature_store(path)  # checks the content checksum, when recorded
        dataset = without_skipped(labelled[name], store_skipped(store), str(path))
        check_provenance(store, dataset, path, file, config)
        if not store.verified:
            unverified.append(path.name)
        weights[path.name] = str(store.meta.get("weights", "unknown"))
        splits[name] = aligned(store, dataset, path)
    if len(set(weights.values())) > 1:
        named = ", ".join(f"{k}: {v!r}" for k, v in weights.items())
        raise ValueError(
            f"{directory}: feature stores come from different backbone weights (field "
            f"weights: {named}); extract every split with the same --weights"
        )
    if unverified:
        print(
            f"warning: {directory}: {', '.join(unverified)} carry no features_sha256 (written "
            "before stores recorded it): their rows are unverified; re-run `qcxr features ... "
            "--overwrite` to record it",
            file=sys.stderr,
        )
    norm = None
    if config.train.standardize_features:
        norm = feature_norm(splits["train"].inputs)
        splits = {name: standardized(split, norm) for name, split in splits.items()}
    tests = {name: splits[name] for name in study.testsets if name in splits}
    return FrozenData(
        splits["train"], splits["val"], tests, next(iter(weights.values())), norm, study.source
    )


def store_skipped(store: Any) -> list[str]:
    """Ids a feature store has no row for because `qcxr cache build --on-bad-image skip`
    skipped their images (its field skipped_ids)."""
    import json

    return list(json.loads(store.meta.get("skipped_ids", "[]")))


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

    from qcxr.features import ordinary_mode

    save_file({"mean": norm[0], "std": norm[1]}, str(run_dir / rundir.FEATURE_NORM))
    ordinary_mode(run_dir / rundir.FEATURE_NORM)


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
    from qcxr.data.datasets import check_images

    study = study_of(config)
    cache = ImageCache(Path(cache_dir))
    skipped = cache.skipped()  # images `qcxr cache build --on-bad-image skip` left out
    # Without skips, the readers check the files (a missing one named by file, row, column).
    sets = datasets(config, check_files=not skipped, study=study)
    if skipped:
        for name, dataset in sets.items():
            ids = skipped_ids(dataset, skipped)
            sets[name] = without_skipped(dataset, ids, str(cache.directory))
            check_images(sets[name].paths, sets[name].label_file)
    paths = [p for split in sets.values() for p in split.paths]
    cache.build(paths, threads=config.data.loader_threads, progress=progress)
    tests = {name: sets[name] for name in study.testsets if name in sets}
    return ImageData(sets["train"], sets["val"], tests, cache, study.source)


def train_counts(labels: np.ndarray, names: list[str]) -> dict[str, float]:
    """Positive count per label name (rundir.TRAIN_COUNTS, for the head/medium/tail groups)."""
    return {name: float(np.nansum(labels[:, i])) for i, name in enumerate(names)}
