"""The image cache: preprocessed uint8 images as zstd-compressed safetensors bytes in a diskcache.

Keys are absolute source paths (str); values are raw bytes, which diskcache stores as SQLite
BLOBs without pickling. Every value sits inside the SQLite database (`disk_min_file_size` is
raised above any entry), so an entry is written in one transaction: two builders at once, or a
builder killed mid-way, leave only whole entries. Each entry's diskcache tag is the source's
"size:mtime_ns", so a changed source is processed again. The preprocessing parameters and the
checksums of the label files the cache was built for are stored under "qcxr:" keys.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import diskcache
import numpy as np
import zstandard
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from tqdm import tqdm

from qcxr.config import DataConfig
from qcxr.data import ON_BAD_IMAGE
from qcxr.data.preprocess import BadImageError, preprocess

FORMAT = "qcxr-image-v1"
CONFIG_KEY = "qcxr:config"
LABEL_PREFIX = "qcxr:label-file:"
ZSTD_LEVEL = 3
_DEFAULTS = DataConfig()
_local = threading.local()


def source_key(path: str | Path) -> str:
    return os.path.abspath(os.fspath(path))


def source_signature(path: str | Path) -> str:
    """ "size:mtime_ns" of a file (FileNotFoundError if it is gone)."""
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _compressor() -> zstandard.ZstdCompressor:
    # zstandard (de)compressor objects are not thread-safe: one per thread.
    if not hasattr(_local, "c"):
        _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        _local.d = zstandard.ZstdDecompressor()
    return _local.c


def _decompressor() -> zstandard.ZstdDecompressor:
    _compressor()
    return _local.d


def encode_entry(image: np.ndarray, metadata: dict[str, str]) -> bytes:
    """zstd(safetensors({"image": uint8 (H, W, C)}, metadata))."""
    return _compressor().compress(
        st_save({"image": image}, metadata={"format": FORMAT, **metadata})
    )


def decode_entry(value: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """(image, metadata) of one cache value; ValueError if it is not a whole entry."""
    try:
        raw = _decompressor().decompress(value)
        (header_len,) = struct.unpack("<Q", raw[:8])
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
        image = st_load(raw)["image"]
    except Exception as err:  # zstd, struct, json and safetensors each raise their own
        raise ValueError(f"not a valid cache entry ({type(err).__name__}: {err})") from None
    if metadata.get("format") != FORMAT or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"not a valid cache entry (format {metadata.get('format')!r})")
    return image, metadata


@dataclass
class BuildResult:
    added: int = 0
    fresh: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class VerifyResult:
    checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # source changed or gone since caching
    repaired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # corrupt, and no source to rebuild from

    @property
    def whole(self) -> bool:
        return not self.corrupt or len(self.repaired) + len(self.removed) == len(self.corrupt)


class ImageCache:
    """Preprocessed images keyed by source path; `get` fills a missing entry on the way."""

    def __init__(
        self,
        directory: str | Path,
        *,
        resize_shortest: int | None = None,
        crop: int | None = None,
        resample: str | None = None,
    ):
        """Open or create a cache. Sizes left as None take the existing cache's own settings
        (or the paper's defaults for a new cache); given ones must match an existing cache."""
        self.directory = Path(directory)
        self.store = diskcache.Cache(
            str(self.directory),
            size_limit=2**62,
            eviction_policy="none",
            disk_min_file_size=2**30,  # keep every value in SQLite: one transaction per entry
            cull_limit=0,
            timeout=120,
        )
        stored = self.store.get(CONFIG_KEY)
        existing = json.loads(stored) if stored is not None else {}
        requested = {"resize_shortest": resize_shortest, "crop": crop, "resample": resample}
        defaults = {
            "resize_shortest": _DEFAULTS.resize_shortest,
            "crop": _DEFAULTS.crop,
            "resample": _DEFAULTS.resample,
        }
        self.params = {
            k: v if v is not None else existing.get(k, defaults[k]) for k, v in requested.items()
        }
        config = json.dumps({"format": FORMAT, **self.params}, sort_keys=True).encode()
        if stored is None:
            self.store.add(CONFIG_KEY, config)  # add: the first of two concurrent builders wins
            stored = self.store.get(CONFIG_KEY)
        if stored != config:
            raise ValueError(
                f"{self.directory}: cache was built with {stored.decode()}, "
                f"not {config.decode()}; use another cache directory"
            )

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return sum(1 for _ in self.image_keys())

    def image_keys(self) -> Iterable[str]:
        return (k for k in self.store.iterkeys() if not str(k).startswith("qcxr:"))

    # ------------------------------------------------------------ entries

    def put(self, path: str | Path) -> np.ndarray:
        """Preprocess one source and store it; BadImageError names the file."""
        key = source_key(path)
        try:
            signature = source_signature(key)
        except FileNotFoundError:
            raise BadImageError(f"{key}: image file not found") from None
        image = preprocess(key, **self.params)
        size, mtime = signature.split(":")
        value = encode_entry(image, {"source": key, "size": size, "mtime_ns": mtime})
        self.store.set(key, value, tag=signature)
        return image

    def get(self, path: str | Path) -> np.ndarray:
        """uint8 (crop, crop, C), C = 1 for grayscale sources; preprocessed now if not cached."""
        key = source_key(path)
        value = self.store.get(key)
        if value is None:
            return self.put(key)
        try:
            return decode_entry(value)[0]
        except ValueError as err:
            if not os.path.isfile(key):
                raise ValueError(f"{self.directory}: entry {key}: {err}; source gone") from None
            warnings.warn(
                f"{self.directory}: entry {key}: {err}; rebuilt from source", stacklevel=2
            )
            return self.put(key)

    def is_fresh(self, path: str | Path) -> bool:
        """Whether a cached entry exists for the file as it is now."""
        key = source_key(path)
        _, tag = self.store.get(key, default=None, tag=True)
        try:
            return tag is not None and tag == source_signature(key)
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------ label files

    def record_label_file(self, path: str | Path, checksum: str) -> None:
        key = LABEL_PREFIX + source_key(path)
        self.store.set(key, json.dumps({"path": source_key(path), "sha256": checksum}).encode())

    def label_files(self) -> dict[str, str]:
        """path -> sha256 of every label file this cache was built for."""
        out = {}
        for key in self.store.iterkeys():
            if str(key).startswith(LABEL_PREFIX):
                record = json.loads(self.store.get(key))
                out[record["path"]] = record["sha256"]
        return out

    # ------------------------------------------------------------ build and verify

    def build(
        self,
        paths: Iterable[str | Path],
        threads: int = _DEFAULTS.loader_threads,
        progress: bool = True,
        on_bad_image: str = "error",
    ) -> BuildResult:
        """Cache every path not cached as it is now (resumable; safe with concurrent builders).

        on_bad_image="error" raises BadImageError naming the first missing or undecodable file;
        "skip" lists them in `BuildResult.skipped` and goes on.
        """
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"on_bad_image must be 'error' or 'skip', not {on_bad_image!r}")
        from joblib import Parallel, delayed

        paths = list(dict.fromkeys(source_key(p) for p in paths))
        result = BuildResult()

        def one(path: str) -> tuple[str, str, str]:
            try:
                if self.is_fresh(path):
                    return "fresh", path, ""
                self.put(path)
                return "added", path, ""
            except BadImageError as err:
                if on_bad_image == "error":
                    raise
                return "skipped", path, str(err)

        run = Parallel(n_jobs=max(1, threads), prefer="threads", return_as="generator_unordered")
        bar = tqdm(total=len(paths), desc="cache build", unit="img", disable=not progress)
        with bar:
            for status, path, reason in run(delayed(one)(p) for p in paths):
                if status == "fresh":
                    result.fresh += 1
                elif status == "added":
                    result.added += 1
                else:
                    result.skipped.append((path, reason))
                bar.update()
        result.skipped.sort()
        return result

    def verify(self, repair: bool = False, progress: bool = True) -> VerifyResult:
        """Decode every entry; with `repair`, rebuild corrupt or stale ones from their sources
        (and delete corrupt ones whose source is gone)."""
        result = VerifyResult()
        keys = list(self.image_keys())
        for key in tqdm(keys, desc="cache verify", unit="img", disable=not progress):
            value, tag = self.store.get(key, default=None, tag=True)
            if value is None:  # deleted meanwhile by another process
                continue
            result.checked += 1
            try:
                if not isinstance(value, bytes):
                    raise ValueError(f"value of type {type(value).__name__}, not bytes")
                image, _ = decode_entry(value)
                crop = self.params["crop"]
                if image.shape[:2] != (crop, crop):
                    raise ValueError(f"shape {image.shape}, expected ({crop}, {crop}, C)")
            except ValueError:
                result.corrupt.append(key)
                if repair:
                    self._repair(key, result)
                continue
            try:
                stale = tag != source_signature(key)
            except FileNotFoundError:
                stale = True
            if stale:
                result.stale.append(key)
                if repair and os.path.isfile(key):
                    self.put(key)
        return result

    def _repair(self, key: str, result: VerifyResult) -> None:
        try:
            self.put(key)
            result.repaired.append(key)
        except BadImageError:
            self.store.delete(key)
            result.removed.append(key)
