"""Recovering from a damaged cache database: move it aside, copy over what still checks.

`qcxr cache verify --repair` calls `recover_database` when the database file itself is
damaged (`CacheDamagedError`), where rewriting entries one by one cannot help. Nothing is
deleted: cache.db (with its -wal and -shm) is renamed to cache.db.damaged-<time>, a new one is
started, and every entry that can still be read and passes its checksums is copied into it;
`qcxr cache build` refills the rest. Separate from the store (`qcxr.data.cache`) because it
reads the damaged file directly with sqlite3, row by row, around diskcache, and only runs on
repair.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import diskcache
from tqdm import tqdm

from qcxr.data.cache import CONFIG_KEY, LABEL_PREFIX, ImageCache
from qcxr.data.cache_damage import DB_NAME, guarded
from qcxr.data.cache_entry import FORMAT, OLD_FORMATS


@dataclass
class Recovery:
    """What `recover_database` did with a damaged cache database."""

    moved: list[Path]  # the damaged files, kept under their new names
    params: dict | None = None  # the damaged database's preprocessing; None: unreadable, and
    # then nothing is copied and no new database is made (the next build makes one)
    kept: int = 0  # image entries copied into the new database, each one checked
    dropped: int = 0  # rows that could not be read, or entries that failed their checks
    label_files: int = 0  # label-file records copied


def _connect_read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=120)


def _recorded_params(db: Path) -> dict | None:
    """The preprocessing a (possibly damaged) cache database records, or None if unreadable."""
    try:
        con = _connect_read_only(db)
    except sqlite3.Error:
        return None
    try:
        row = con.execute(
            "SELECT value FROM Cache WHERE key = ? AND raw = 1", (CONFIG_KEY,)
        ).fetchone()
        config = json.loads(row[0])
        if config.get("format") not in (FORMAT, *OLD_FORMATS):
            return None
        return {k: config[k] for k in ("resize_shortest", "crop", "resample")}
    except (sqlite3.Error, ValueError, KeyError, TypeError, AttributeError):
        return None
    finally:
        con.close()


def _rowids(con: sqlite3.Connection) -> list[int]:
    """Every row id that can be found: a scan up to the first damaged page, and the whole
    range up to the largest id (each row is then read alone, so one bad page loses only its
    own rows)."""
    ids: set[int] = set()
    with contextlib.suppress(sqlite3.Error):
        for (rowid,) in con.execute("SELECT rowid FROM Cache"):
            ids.add(rowid)
    with contextlib.suppress(sqlite3.Error, TypeError):
        (top,) = con.execute("SELECT max(rowid) FROM Cache").fetchone()
        ids.update(range(1, int(top) + 1))
    return sorted(ids)


def _move_aside(directory: Path) -> tuple[Path, list[Path]]:
    """Rename cache.db (and its -wal, -shm) to a name not yet taken; (new name, files moved)."""
    db = directory / DB_NAME
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = directory / f"{DB_NAME}.damaged-{stamp}", 1
    while any(Path(f"{aside}{s}").exists() for s in ("", "-wal", "-shm")):
        aside, n = directory / f"{DB_NAME}.damaged-{stamp}-{n}", n + 1
    moved = []
    for suffix in ("", "-wal", "-shm"):  # SQLite finds the moved WAL next to the moved file
        if Path(f"{db}{suffix}").exists():
            os.rename(f"{db}{suffix}", f"{aside}{suffix}")
            moved.append(Path(f"{aside}{suffix}"))
    return aside, moved


def recover_database(
    directory: str | Path,
    *,
    resize_shortest: int | None = None,
    crop: int | None = None,
    resample: str | None = None,
    progress: bool = True,
) -> Recovery:
    """Move a damaged cache database aside and start a new one, copying over what survives.

    cache.db (and its -wal and -shm) become cache.db.damaged-<time>[-wal, -shm]; nothing is
    deleted. When the damaged file's preprocessing record can be read (given sizes must match
    it), a new database gets it, then every image entry that can be read and passes its
    checksums (its tag taken from its own checked metadata) and every label-file record.
    Otherwise no entry can be trusted to match (the resize is unknown) and no new database is
    made here: the next `qcxr cache build` starts one with its own sizes and fills it.
    """
    directory = Path(directory)
    db = directory / DB_NAME
    params = _recorded_params(db)
    requested = {"resize_shortest": resize_shortest, "crop": crop, "resample": resample}
    if params is not None:
        clash = {k: v for k, v in requested.items() if v is not None and params[k] != v}
        if clash:
            raise ValueError(
                f"{db}: the damaged cache was built with {params}, not {clash}; leave out "
                "--resize/--crop or use another cache directory"
            )
    aside, moved = _move_aside(directory)
    recovery = Recovery(moved=moved, params=params)
    if params is not None:
        with ImageCache(directory, **params) as cache:
            _salvage(aside, cache, recovery, progress)
    return recovery


def _salvage(aside: Path, cache: ImageCache, recovery: Recovery, progress: bool) -> None:
    """Copy into `cache` every row of the moved-aside file that reads and passes its checks."""
    try:
        con = _connect_read_only(aside)
        rowids = _rowids(con)
    except sqlite3.Error:
        return
    crop = cache.params["crop"]
    select = "SELECT key, raw, mode, value FROM Cache WHERE rowid = ?"
    try:
        for rowid in tqdm(rowids, desc="cache salvage", unit="row", disable=not progress):
            try:
                row = con.execute(select, (rowid,)).fetchone()
            except sqlite3.Error:
                recovery.dropped += 1
                continue
            if row is None:
                continue
            key, raw, mode, value = row
            if not (raw and isinstance(key, str)) or key == CONFIG_KEY:
                continue
            if key.startswith(LABEL_PREFIX):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    record = json.loads(value)
                    cache.record_label_file(record["path"], str(record["sha256"]))
                    recovery.label_files += 1
                continue
            if key.startswith("qcxr:"):
                continue
            try:
                if mode != diskcache.core.MODE_RAW:
                    raise ValueError("not raw bytes")
                image, metadata = cache.check(key, value)
                if image.shape[:2] != (crop, crop):
                    raise ValueError("wrong shape")
                tag = f"{int(metadata['size'])}:{int(metadata['mtime_ns'])}"
            except (ValueError, KeyError):
                recovery.dropped += 1
                continue
            with guarded(cache.directory):
                cache.store.set(key, value, tag=tag)
            recovery.kept += 1
    finally:
        con.close()
