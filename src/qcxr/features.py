"""Frozen-feature store: pooled ResNet-50 features of every image of a split, computed once.

One safetensors file per split: tensor "features" float32 (N, 2048), or (N, K, 2048) with K
augmented views per image; metadata (strings) "ids" (JSON list, row order), "weights" (identity of
the backbone weights), "views", "seed", "dtype", and "features_sha256": the checksum of the ids
and the rows together (`content_checksum`), checked on every load, so that a row edited,
shifted, dropped or reordered after extraction is found. `qcxr features` adds the store's
provenance: "split", "labels_checksum" and "label_file" (the label file's sha256 and path),
"cache" and the image settings of its cache ("crop", "resize_shortest", "resample"); training
checks them against the study and the config (qcxr.train.data). A store without
"features_sha256" (written before it was recorded) loads as unverified (`FeatureStore.verified`).

Extraction is resumable: finished rows go to chunk files in `<out>.partial/` as they complete; a
rerun skips the ids already there and the chunks are merged into `<out>` at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qcxr.config import changed_settings, describe_changes

FEATURES = "features"
MANIFEST = "manifest.json"
CHECKSUM = "features_sha256"  # metadata: content_checksum of the ids and rows
IMAGE_SETTINGS = ("crop", "resize_shortest", "resample")  # of the image cache (config.data)
DTYPES = ("float32", "bfloat16")  # the backbone's compute dtype (bfloat16 is for GPUs)


@dataclass(frozen=True)
class FeatureStore:
    ids: list[str]
    features: np.ndarray  # float32 (N, 2048) or (N, K, 2048)
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def weights(self) -> str:
        return self.meta.get("weights", "")

    @property
    def views(self) -> int:
        return int(self.meta.get("views", 0))

    @property
    def verified(self) -> bool:
        """True when the store records its content checksum (checked when it was loaded)."""
        return CHECKSUM in self.meta


def content_checksum(ids: Sequence[str], features: np.ndarray) -> str:
    """sha256 of the ids (JSON, row order), the rows' shape and their float32 bytes: any change
    of a row, of the order or of an id changes it."""
    rows = np.ascontiguousarray(features, dtype="<f4")
    digest = hashlib.sha256()
    digest.update(json.dumps(list(ids)).encode())
    digest.update(b"\n" + json.dumps(list(rows.shape)).encode() + b"\n")
    digest.update(rows.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def stamped(store: FeatureStore) -> FeatureStore:
    """The store with its content checksum in the metadata (as extraction writes it)."""
    meta = {**store.meta, CHECKSUM: content_checksum(store.ids, store.features)}
    return FeatureStore(list(store.ids), store.features, meta)


# ----------------------------------------------------------------------------- file format


def ordinary_mode(path: str | Path) -> None:
    """Give a file the mode open() would (0o666 less the umask): safetensors' save_file writes
    0600 whatever the umask (safetensors#782), which shuts out a shared group's readers."""
    mask = os.umask(0o077)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def save_feature_store(path: str | Path, store: FeatureStore) -> None:
    """Write atomically (temp file, then rename): a killed write never leaves a half file.

    The metadata is written as given: a "features_sha256" that does not match the rows makes a
    file that `load_feature_store` refuses (extraction stamps it with `stamped`)."""
    from safetensors.numpy import save_file

    path = Path(path)
    if len(store.ids) != len(store.features):
        raise ValueError(f"{path}: {len(store.ids)} ids for {len(store.features)} feature rows")
    meta = {k: str(v) for k, v in store.meta.items() if k != "ids"}
    meta["ids"] = json.dumps(list(store.ids))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    features = np.ascontiguousarray(store.features, dtype=np.float32)
    save_file({FEATURES: features}, str(temporary), metadata=meta)
    ordinary_mode(temporary)
    temporary.replace(path)


def load_feature_store(path: str | Path) -> FeatureStore:
    """Read a feature store; a malformed file is an error naming it and what is wrong."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no feature store here (make one with `qcxr features`)")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = dict(handle.metadata() or {})
            if FEATURES not in handle.keys():  # noqa: SIM118 - not a dict
                raise ValueError(f"{path}: no tensor {FEATURES!r} in the feature store")
            features = handle.get_tensor(FEATURES)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors feature store ({err})") from None
    if "ids" not in meta:
        raise ValueError(f"{path}: metadata has no 'ids'")
    ids = json.loads(meta.pop("ids"))
    if len(ids) != len(features):
        raise ValueError(f"{path}: {len(ids)} ids in metadata but {len(features)} feature rows")
    if features.dtype != np.float32 or features.ndim not in (2, 3):
        raise ValueError(
            f"{path}: features are {features.dtype} {features.shape}, expected float32"
        )
    if CHECKSUM in meta:
        actual = content_checksum(ids, features)
        if actual != meta[CHECKSUM]:
            split = meta.get("split", "SPLIT")
            raise ValueError(
                f"{path}: field {CHECKSUM} does not match the file's ids and feature rows "
                f"(recorded {meta[CHECKSUM][:12]}..., now {actual[:12]}...): the store was "
                "changed after extraction (rows edited, shifted, dropped or reordered); make "
                f"it again with `qcxr features --split {split} --out {path} --overwrite ...`"
            )
    return FeatureStore(ids=ids, features=features, meta=meta)


# ----------------------------------------------------------------------------- preprocessing


def view_keys(ids: Sequence[str], view: int, seed: int) -> Any:
    """One PRNG key per image and view, from (seed, id, view) only: batch and chunk boundaries,
    and resuming, do not change an image's augmentations."""
    import jax

    base = jax.random.fold_in(jax.random.PRNGKey(seed), view)
    tags = np.array([zlib.crc32(i.encode()) for i in ids], dtype=np.uint32)
    return jax.vmap(lambda tag: jax.random.fold_in(base, tag))(tags)


def default_augment() -> Callable[[Any, Any], Any]:
    """The training augmentation, qcxr.data.augment.augment: uint8 images and a PRNG key ->
    normalised float32 views."""
    from qcxr.data.augment import augment

    return augment


# ----------------------------------------------------------------------------- extraction


def _forward_fn(model: Any, views: int, augment_fn: Callable | None) -> Callable:
    """jit(variables, uint8 images, keys (K, B) or None) -> float32 (B, 2048) or (B, K, 2048)."""
    import jax
    import jax.numpy as jnp

    def pooled(variables, x):
        return model.apply(variables, x, train=False).astype(jnp.float32)

    if views == 0:
        from qcxr.data.augment import normalize

        return jax.jit(lambda variables, images, keys: pooled(variables, normalize(images)))

    def one_view(variables, images, keys):
        # A key per image: vmap augments each image alone, so its view depends on its own key.
        x = jax.vmap(lambda image, key: augment_fn(image[None], key)[0])(images, keys)
        return pooled(variables, x)

    def all_views(variables, images, keys):
        return jnp.stack([one_view(variables, images, keys[k]) for k in range(views)], axis=1)

    return jax.jit(all_views)


def partial_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial")


def done_ids(out: str | Path) -> list[str]:
    """Ids already extracted into `<out>.partial/`, in row order (empty if none)."""
    return [i for chunk in _chunks(partial_dir(out)) for i in load_feature_store(chunk).ids]


def _chunks(directory: Path) -> list[Path]:
    return sorted(directory.glob("chunk-*.safetensors")) if directory.is_dir() else []


def store_settings(weights: str, views: int, seed: int, dtype: str) -> dict[str, str]:
    """What a store's rows are computed with: an extraction resumes, and a store is up to date,
    only when these match. Without views the seed changes nothing, so it is "none"."""
    return {
        "weights": weights,
        "views": str(views),
        "seed": str(seed) if views else "none",
        "dtype": dtype,
    }


def image_settings(meta: dict[str, str]) -> dict[str, str]:
    """The image cache settings a store's metadata records (IMAGE_SETTINGS; none: {})."""
    return {k: str(meta[k]) for k in IMAGE_SETTINGS if k in meta}


def _open_partial(out: Path, settings: dict[str, str]) -> Path:
    directory = partial_dir(out)
    manifest = directory / MANIFEST
    if manifest.is_file():
        before = json.loads(manifest.read_text())
        # a manifest from before image settings were recorded: compare what it has
        now = {k: v for k, v in settings.items() if k in before or k not in IMAGE_SETTINGS}
        changed = changed_settings(before, now)
        if changed:
            raise ValueError(
                f"{directory}: an unfinished extraction with other settings "
                f"({describe_changes(changed)}); "
                "rerun with the same settings to resume it, or delete the directory to restart"
            )
    else:
        directory.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps(settings, indent=2))
    return directory


@dataclass
class _ChunkWriter:
    """Finished rows of an extraction, saved to `<out>.partial/` every `chunk_rows` rows."""

    directory: Path
    settings: dict[str, str]
    chunk_rows: int
    index: int  # the next chunk file's number
    ids: list[str] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)

    def add(self, ids: list[str], rows: np.ndarray) -> None:
        self.ids.extend(ids)
        self.rows.append(rows)
        if len(self.ids) >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        if self.ids:
            chunk = stamped(FeatureStore(self.ids[:], np.concatenate(self.rows), self.settings))
            save_feature_store(self.directory / f"chunk-{self.index:06d}.safetensors", chunk)
            self.index += 1
            self.ids.clear()
            self.rows.clear()


def _new_rows(
    ids: Sequence[str], images: np.ndarray, resumed: set[str], seen: set[str]
) -> tuple[list[str], np.ndarray]:
    """A batch without the ids finished before an interruption; an id seen twice is an error."""
    ids = list(ids)
    keep = [j for j, i in enumerate(ids) if i not in resumed]
    if len(keep) < len(ids):  # part of this batch was done before an interruption
        ids, images = [ids[j] for j in keep], np.asarray(images)[keep]
    duplicates = sorted({i for i in ids if i in seen} | {i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"image ids occur more than once in the input: {duplicates[:5]}")
    seen.update(ids)
    return ids, images


def extract_features(
    batches: Iterable[tuple[Sequence[str], np.ndarray]],
    variables: dict,
    out: str | Path,
    *,
    weights: str,
    views: int = 0,
    seed: int = 0,
    dtype: str = "float32",
    batch_size: int | None = None,
    chunk_rows: int = 1024,
    total: int | None = None,
    augment_fn: Callable[[Any, Any], Any] | None = None,
    model: Any = None,
    progress: bool = True,
    meta: dict[str, str] | None = None,
) -> FeatureStore:
    """Pooled backbone features (eval mode) of every image in `batches`, stored at `out`.

    `batches` yields (ids, uint8 images (B, H, W, 1|3)). Ids already in `<out>.partial/` from an
    interrupted run with the same settings (and image settings in `meta`) are skipped; finished
    rows are written every `chunk_rows`. With `views` = K > 0, each image gets K augmented
    views from `augment_fn` (default qcxr.data.augment.augment), keyed by (seed, id, view).
    `batch_size` pads short batches so that one compiled shape serves all. `meta` is the
    store's provenance (`qcxr features`: split, label file, cache and image settings). Returns
    the merged store, stamped with its content checksum.
    """
    import jax

    out = Path(out)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be {' or '.join(DTYPES)}, not {dtype!r}")
    settings = store_settings(weights, views, seed, dtype)
    directory = _open_partial(out, {**settings, **image_settings(meta or {})})
    if views and augment_fn is None:
        augment_fn = default_augment()
    forward = _forward_fn(model or _backbone(dtype), views, augment_fn)
    variables = jax.device_put(variables)

    finished = done_ids(out)
    resumed, seen = set(finished), set()
    writer = _ChunkWriter(directory, settings, chunk_rows, len(_chunks(directory)))
    bar = _progress(total, len(finished), progress)
    for batch_ids, batch_images in batches:
        ids, images = _new_rows(batch_ids, batch_images, resumed, seen)
        if ids:
            writer.add(
                ids, _run(forward, variables, np.asarray(images), ids, views, seed, batch_size)
            )
            bar.update(len(ids))
    writer.flush()
    bar.close()
    return _merge(out, directory, settings, meta or {})


def _backbone(dtype: str) -> Any:
    import jax.numpy as jnp

    from qcxr.models.resnet import resnet50

    return resnet50(dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)


def _run(forward, variables, images, ids, views, seed, batch_size) -> np.ndarray:
    import jax.numpy as jnp

    n = len(ids)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be uint8 (B, H, W, 1|3), got {images.dtype} {images.shape}")
    padded = images
    if batch_size and n < batch_size:  # pad so that the last, short batch reuses the compilation
        padded = np.concatenate([images, np.zeros((batch_size - n, *images.shape[1:]), np.uint8)])
    keys = None
    if views:
        pad_ids = list(ids) + [""] * (len(padded) - n)
        keys = jnp.stack([view_keys(pad_ids, k, seed) for k in range(views)])
    return np.asarray(forward(variables, jnp.asarray(padded), keys))[:n]


def _merge(out: Path, directory: Path, settings: dict, meta: dict) -> FeatureStore:
    chunks = [load_feature_store(c) for c in _chunks(directory)]
    if not chunks:
        raise ValueError(f"no images to extract features from (nothing written to {out})")
    ids = [i for chunk in chunks for i in chunk.ids]
    store = stamped(
        FeatureStore(
            ids=ids,
            features=np.concatenate([chunk.features for chunk in chunks]),
            meta={k: v for k, v in {**meta, **settings}.items() if k != CHECKSUM},
        )
    )
    save_feature_store(out, store)
    shutil.rmtree(directory)
    return store


def _progress(total: int | None, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="img", desc="features", disable=not enabled)
