"""The image cache: preprocessed uint8 images as zstd-compressed safetensors bytes in a diskcache.

Keys are absolute source paths (str); values are raw bytes, which diskcache stores as SQLite
BLOBs without pickling. Every value sits inside the SQLite database (`disk_min_file_size` is
raised above any entry), so an entry is written in one transaction: two builders at once, or a
builder killed mid-way, leave only whole entries. Each entry's diskcache tag is the source's
"size:mtime_ns", so a changed source is processed again. The preprocessing parameters and the
checksums of the label files the cache was built for are stored under "qcxr:" keys.

Every read checks the entry's checksums (`qcxr.data.cache_entry`, the on-disk format). A
corrupt entry is re-read from its source image when that exists (with a warning naming the
entry); otherwise it is an error naming the cache, the entry and the repair command.
Entries of the old format ("qcxr-image-v1", no checksum) are never trusted: `get` re-reads
them from their sources, `build` treats them as not cached, `verify` lists them as unverified
and `--repair` rewrites them. A damaged database file is `CacheDamagedError`
(`qcxr.data.cache_damage`); `qcxr.data.cache_salvage.recover_database` is its repair.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import diskcache
import numpy as np
from tqdm import tqdm

from qcxr.config import DataConfig
from qcxr.data import ON_BAD_IMAGE
from qcxr.data.cache_damage import check_file, guarded, quick_check, repair_command
from qcxr.data.cache_entry import (
    FORMAT,
    OLD_FORMATS,
    UnverifiedEntry,
    decode_entry,
    encode_entry,
    has_checksum,
)
from qcxr.data.preprocess import BadImageError, preprocess

CONFIG_KEY = "qcxr:config"
LABEL_PREFIX = "qcxr:label-file:"
SKIPPED_PREFIX = (
    "qcxr:skipped:"  # images a build skipped as bad: features and training leave them out
)
_DEFAULTS = DataConfig()


def source_key(path: str | Path) -> str:
    return os.path.abspath(os.fspath(path))


def source_signature(path: str | Path) -> str:
    """ "size:mtime_ns" of a file (FileNotFoundError if it is gone)."""
    stat = os.stat(path)
    return f"{stat.st_size}:{stat.st_mtime_ns}"


@dataclass
class BuildResult:
    added: int = 0
    fresh: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class VerifyResult:
    checked: int = 0
    corrupt: list[str] = field(default_factory=list)
    # whole entries of an old format without a checksum: not trusted, rewritten by repair
    unverified: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)  # source changed or gone since caching
    repaired: list[str] = field(default_factory=list)  # corrupt or unverified, rebuilt
    removed: list[str] = field(default_factory=list)  # corrupt or unverified, no source

    @property
    def whole(self) -> bool:
        fixed = set(self.repaired) | set(self.removed)
        return all(key in fixed for key in (*self.corrupt, *self.unverified))


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
        (or the paper's defaults for a new cache); given ones must match an existing cache.
        CacheDamagedError if its database file is damaged."""
        self.directory = Path(directory)
        self._warned_unverified = False
        check_file(self.directory)  # before SQLite may write into a damaged file
        with self._guard():
            self.store = diskcache.Cache(
                str(self.directory),
                size_limit=2**62,
                eviction_policy="none",
                disk_min_file_size=2**30,  # keep every value in SQLite: one transaction per entry
                cull_limit=0,
                timeout=120,
            )
            try:
                self._open_config(resize_shortest, crop, resample)
            except BaseException:
                self.store.close()
                raise

    def _open_config(self, resize_shortest, crop, resample) -> None:
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
        if stored == config:
            return
        old = json.loads(stored)
        if old.get("format") in OLD_FORMATS and {k: old.get(k) for k in self.params} == self.params:
            # The same preprocessing, entries of an old format: each is checked as it is read
            # (unverified ones are re-read from their sources), so the record moves on.
            self.store.set(CONFIG_KEY, config)
            return
        raise ValueError(
            f"{self.directory}: cache was built with {stored.decode()}, "
            f"not {config.decode()}; use another cache directory"
        )

    def _guard(self) -> contextlib.AbstractContextManager[None]:
        return guarded(self.directory)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return sum(1 for _ in self.image_keys())

    def image_keys(self) -> Iterable[str]:
        with self._guard():
            for key in self.store.iterkeys():
                if not str(key).startswith("qcxr:"):
                    yield key

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
        with self._guard():
            self.store.set(key, value, tag=signature)
        return image

    def check(self, key: str, value: object) -> tuple[np.ndarray, dict[str, str]]:
        """`decode_entry`, and the entry must be the one of `key`."""
        image, metadata = decode_entry(value)  # type: ignore[arg-type]
        if metadata.get("source") != key:
            raise ValueError(f"not a valid cache entry (it holds {metadata.get('source')!r})")
        return image, metadata

    def get(self, path: str | Path) -> np.ndarray:
        """uint8 (crop, crop, C), C = 1 for grayscale sources; preprocessed now if not cached.

        Every entry's checksums are checked. One that fails, or one written without a checksum,
        is re-read from its source (the same preprocessing a build runs, so the same pixels as
        a fresh entry) and rewritten; without the source it is a ValueError naming the cache,
        the entry and the repair command. Never returns pixels that failed a check."""
        key = source_key(path)
        with self._guard():
            value = self.store.get(key)
        if value is None:
            return self.put(key)
        try:
            return self.check(key, value)[0]
        except UnverifiedEntry as err:
            if not os.path.isfile(key):
                raise ValueError(self._cannot_reread(key, err)) from None
            if not self._warned_unverified:  # once per cache: an old cache has many
                self._warned_unverified = True
                warnings.warn(
                    f"{self.directory}: entries written without a checksum (e.g. {key}) are "
                    "re-read from their sources as they are used; `qcxr cache build` or "
                    f"`{repair_command(self.directory)}` rewrites them all now",
                    stacklevel=2,
                )
            return self.put(key)
        except ValueError as err:
            if not os.path.isfile(key):
                raise ValueError(self._cannot_reread(key, err)) from None
            warnings.warn(
                f"{self.directory}: entry {key}: {err}; rebuilt from source", stacklevel=2
            )
            return self.put(key)

    def _cannot_reread(self, key: str, err: ValueError) -> str:
        return (
            f"{self.directory}: entry {key}: {err}; its source is gone, so it cannot be read "
            f"again: restore the image, or run `{repair_command(self.directory)}` "
            "(which removes the entry)"
        )

    def is_fresh(self, path: str | Path) -> bool:
        """Whether a cached entry of this format exists for the file as it is now."""
        key = source_key(path)
        with self._guard():
            value, tag = self.store.get(key, default=None, tag=True)
        try:
            return tag is not None and tag == source_signature(key) and has_checksum(value)
        except FileNotFoundError:
            return False

    # ------------------------------------------------------------ label files

    def record_label_file(self, path: str | Path, checksum: str) -> None:
        key = LABEL_PREFIX + source_key(path)
        value = json.dumps({"path": source_key(path), "sha256": checksum}).encode()
        with self._guard():
            self.store.set(key, value)

    def label_files(self) -> dict[str, str]:
        """path -> sha256 of every label file this cache was built for."""
        out = {}
        with self._guard():
            for key in self.store.iterkeys():
                if str(key).startswith(LABEL_PREFIX):
                    record = json.loads(self.store.get(key))
                    out[record["path"]] = record["sha256"]
        return out

    def skipped(self) -> dict[str, str]:
        """source path -> reason, for every image a `build(on_bad_image="skip")` skipped and no
        later build cached."""
        out = {}
        with self._guard():
            for key in self.store.iterkeys():
                if str(key).startswith(SKIPPED_PREFIX):
                    out[str(key)[len(SKIPPED_PREFIX) :]] = self.store.get(key).decode()
        return out

    def _record_skip(self, path: str, reason: str | None) -> None:
        """Remember a skipped image (reason), or forget it once it is cached (None)."""
        with self._guard():
            if reason is None:
                self.store.delete(SKIPPED_PREFIX + path)
            else:
                self.store.set(SKIPPED_PREFIX + path, reason.encode())

    # ------------------------------------------------------------ build and verify

    def build(
        self,
        paths: Iterable[str | Path],
        threads: int = _DEFAULTS.loader_threads,
        progress: bool = True,
        on_bad_image: str = "error",
    ) -> BuildResult:
        """Cache every path not cached as it is now (resumable; safe with concurrent builders).

        An entry of an old format (no checksum) counts as not cached and is written again.
        on_bad_image="error" raises BadImageError naming the first missing or undecodable file;
        "skip" lists them in `BuildResult.skipped` and goes on.
        """
        if on_bad_image not in ON_BAD_IMAGE:
            raise ValueError(f"on_bad_image must be 'error' or 'skip', not {on_bad_image!r}")
        from joblib import Parallel, delayed

        paths = list(dict.fromkeys(source_key(p) for p in paths))
        result = BuildResult()
        before = self.skipped()

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
                if reason or path in before:
                    self._record_skip(path, reason or None)
                bar.update()
        result.skipped.sort()
        return result

    def check_database(self) -> None:
        """SQLite's quick_check of the database file; CacheDamagedError if it finds damage."""
        quick_check(self.directory)

    def verify(self, repair: bool = False, progress: bool = True) -> VerifyResult:
        """Check the database file, then every entry's checksums and shape; with `repair`,
        rebuild corrupt, unverified (old format) or stale entries from their sources (and
        delete corrupt or unverified ones whose source is gone). CacheDamagedError if the
        database file is damaged (`recover_database` is the repair for that)."""
        self.check_database()
        result = VerifyResult()
        keys = list(self.image_keys())
        for key in tqdm(keys, desc="cache verify", unit="img", disable=not progress):
            with self._guard():
                value, tag = self.store.get(key, default=None, tag=True)
            if value is None:  # deleted meanwhile by another process
                continue
            result.checked += 1
            try:
                image, _ = self.check(key, value)
                crop = self.params["crop"]
                if image.shape[:2] != (crop, crop):
                    raise ValueError(f"shape {image.shape}, expected ({crop}, {crop}, C)")
            except ValueError as err:
                bad = result.unverified if isinstance(err, UnverifiedEntry) else result.corrupt
                bad.append(key)
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
            with self._guard():
                self.store.delete(key)
            result.removed.append(key)
