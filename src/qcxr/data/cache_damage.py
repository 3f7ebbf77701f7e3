"""Telling a damaged cache database from other SQLite errors, and saying so in one line.

A damaged cache.db (SQLite "malformed" or "not a database") would otherwise surface as a
bare sqlite3 traceback from deep inside diskcache, at whichever read first hit the bad page.
Every database access of `qcxr.data.cache.ImageCache` runs under `guarded`, so that such an
error is `CacheDamagedError`: one line naming the file and the repair command
(`qcxr cache verify --repair`, which is `qcxr.data.cache_salvage.recover_database`).
Kept apart from the store so that the salvage can use it without importing the store's
internals, and the store without importing the salvage.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

DB_NAME = "cache.db"
# SQLite's result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
_DAMAGED_CODES = (11, 26)


class CacheDamagedError(ValueError):
    """The cache's SQLite file is damaged; the message names it and the repair command."""


def repair_command(directory: str | Path) -> str:
    return f"qcxr cache verify --cache {directory} --repair"


def is_damage(err: sqlite3.DatabaseError) -> bool:
    """Whether an sqlite3 error says the file is damaged (not busy, locked, read-only...)."""
    code = getattr(err, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGED_CODES
    text = str(err)
    return "malformed" in text or "not a database" in text


def damage_message(directory: Path, reason: object) -> str:
    return (
        f"{directory / DB_NAME}: the cache database is damaged (SQLite: {reason}); run "
        f"`{repair_command(directory)}` to move it aside and start a new one (entries that "
        "still pass their checksums are kept; `qcxr cache build` refills the rest)"
    )


@contextlib.contextmanager
def guarded(directory: Path) -> Iterator[None]:
    """sqlite3's "malformed" / "not a database" errors as one CacheDamagedError naming the file."""
    try:
        yield
    except sqlite3.DatabaseError as err:
        if not is_damage(err):
            raise
        raise CacheDamagedError(damage_message(directory, err)) from None


def quick_check(directory: Path) -> None:
    """SQLite's quick_check of the database file; CacheDamagedError if it finds damage."""
    with guarded(directory):
        con = sqlite3.connect(directory / DB_NAME, timeout=120)
        try:
            rows = con.execute("PRAGMA quick_check").fetchall()
        finally:
            con.close()
    if rows != [("ok",)]:
        raise CacheDamagedError(damage_message(directory, "; ".join(r[0] for r in rows[:3])))


def check_file(directory: Path) -> None:
    """CacheDamagedError when cache.db is plainly damaged, found from its header alone and
    before SQLite opens it for writing: opening a damaged file read-write lets SQLite write
    into it, and the file kept aside by the repair would no longer be the one that broke.

    Not an SQLite file (no "SQLite format 3" header), or shorter than the size its header
    records (a truncated file).
    """
    path = directory / DB_NAME
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        header = f.read(100)
    if not header.startswith(b"SQLite format 3\x00") or len(header) < 100:
        raise CacheDamagedError(damage_message(directory, "file is not a database"))
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    valid = pages > 0 and header[24:28] == header[92:96]  # SQLite's rule for this field
    if valid and path.stat().st_size < pages * page_size:
        size = path.stat().st_size
        reason = f"file is {size} bytes, its header records {pages} pages of {page_size}"
        raise CacheDamagedError(damage_message(directory, reason))
