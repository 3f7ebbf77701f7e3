"""Faults injected into the image cache: bit flips in entries, old entries without checksums,
a damaged database file. Each is found, and repaired to PIL's own preprocessing of the source,
or stops with one line naming the file and the repair; never wrong pixels."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zstandard
from PIL import Image
from safetensors.numpy import save as st_save

from qcxr.data.cache import CONFIG_KEY, ImageCache, source_signature
from qcxr.data.cache_damage import CacheDamagedError
from qcxr.data.cache_entry import (
    TRAILER_SIZE,
    UnverifiedEntry,
    decode_entry,
    encode_entry,
    has_checksum,
)
from qcxr.data.cache_salvage import recover_database
from qcxr.data.cli import main as data_cli
from qcxr.data.loader import Loader
from qcxr.labels import TASKS

SMALL = {"resize_shortest": 64, "crop": 56}
SIZES = ["--resize", "64", "--crop", "56"]


def image(size: int, seed: int, rgb: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 120 + 80 * np.sin(9 * x + seed) * np.cos(4 * y) + rng.normal(0, 10, (size, size))
    if rgb:
        base = np.stack([base, base[::-1], base.T], axis=-1)
    return np.clip(base, 0, 255).astype(np.uint8)


def pil_reference(path, shortest=64, crop=56) -> np.ndarray:
    """Independent reference: PIL opens, converts to RGB, resizes bicubic, crops the center."""
    with Image.open(path) as opened:
        rgb = opened.convert("RGB")
        w, h = rgb.size
        scale = shortest / min(w, h)
        size = (shortest, int(h * scale)) if w <= h else (int(w * scale), shortest)
        rgb = rgb.resize(size, Image.Resampling.BICUBIC)
        left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
        return np.asarray(rgb.crop((left, top, left + crop, top + crop)))


def assert_pixels_are_pils(cached: np.ndarray, path) -> None:
    reference = pil_reference(path)
    np.testing.assert_array_equal(np.broadcast_to(cached, reference.shape), reference)


@pytest.fixture()
def pngs(tmp_path):
    directory = tmp_path / "images"
    directory.mkdir()
    paths = []
    for k in range(8):
        path = directory / f"{k:08d}_000.png"
        Image.fromarray(image(80 + 4 * k, k, rgb=k == 3)).save(path)
        paths.append(path)
    return paths


def flip(value: bytes, bit: int) -> bytes:
    flipped = bytearray(value)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def test_every_single_bit_flip_of_an_entry_is_caught():
    """Exhaustive: each bit of a whole entry (zstd frame header, blocks, content checksum,
    trailer magic, length, name and sha256) flipped in turn; every one is refused."""
    pixels = image(24, 5)[..., None]
    value = encode_entry(pixels, {"source": "/x.png", "size": "1", "mtime_ns": "2"})
    np.testing.assert_array_equal(decode_entry(value)[0], pixels)
    assert has_checksum(value) and value[:4] == b"\x28\xb5\x2f\xfd"
    missed = []
    for bit in range(8 * len(value)):
        try:
            decode_entry(flip(value, bit))
            missed.append(bit)
        except UnverifiedEntry:
            missed.append(bit)  # a flip must read as corrupt, not as an old entry
        except ValueError:
            pass
    assert missed == [] and 8 * len(value) > 2000
    # The standard zstd reader still reads an entry (the trailer is a skippable frame).
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(value), read_across_frames=True)
    assert reader.read() == zstandard.ZstdDecompressor().decompress(value[:-TRAILER_SIZE])


def test_300_random_bit_flips_are_each_found_by_verify_and_repaired_to_pils_pixels(tmp_path, pngs):
    rng = np.random.default_rng(13)
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        cache.build(pngs, threads=2, progress=False)
        keys = [str(p) for p in pngs[:6]]
        flips = 0
        for _ in range(50):  # 50 rounds x 6 entries = 300 flips
            for key in keys:
                value, tag = cache.store.get(key, tag=True)
                n = 8 * len(value)
                # Half anywhere in the blob, half in its fixed fields: the zstd frame header
                # (first 16 bytes), the content checksum and the whole trailer (last 52 bytes).
                if rng.random() < 0.5:
                    bit = int(rng.integers(n))
                elif rng.random() < 0.5:
                    bit = int(rng.integers(16 * 8))
                else:
                    bit = n - int(rng.integers(1, (TRAILER_SIZE + 4) * 8 + 1))
                cache.store.set(key, flip(value, bit), tag=tag)
                flips += 1
            found = cache.verify(progress=False)
            assert sorted(found.corrupt) == sorted(keys), "a flipped entry passed verify"
            assert found.unverified == [] and not found.whole
            repaired = cache.verify(repair=True, progress=False)
            assert sorted(repaired.repaired) == sorted(keys) and repaired.whole
            for path in pngs[:6]:
                assert_pixels_are_pils(cache.get(path), path)
        assert flips == 300
        clean = cache.verify(progress=False)
        assert clean.whole and clean.corrupt == [] and clean.checked == len(pngs)


def test_cli_verify_lists_flipped_entries_and_repair_restores_them(tmp_path, pngs, capsys):
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        cache.build(pngs, threads=2, progress=False)
        for k, path in enumerate(pngs[:4]):
            value, tag = cache.store.get(str(path), tag=True)
            cache.store.set(str(path), flip(value, [0, 40, 8 * len(value) - 1, 333][k]), tag=tag)
    cache_dir = str(tmp_path / "cache")
    assert data_cli(["cache", "verify", "--cache", cache_dir, "--json", "--no-progress"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert sorted(summary["corrupt"]) == sorted(str(p) for p in pngs[:4])
    assert data_cli(["cache", "verify", "--cache", cache_dir, "--repair", "--no-progress"]) == 0
    assert "4 corrupt" in capsys.readouterr().out
    assert data_cli(["cache", "verify", "--cache", cache_dir, "--no-progress"]) == 0
    with ImageCache(cache_dir) as cache:
        for path in pngs:
            assert_pixels_are_pils(cache.get(path), path)


@dataclass
class Files:
    ids: list[str]
    paths: list[Path]
    labels: np.ndarray


def test_a_flipped_entry_read_by_the_loader_is_read_again_from_its_source(tmp_path, pngs):
    data = Files([p.stem for p in pngs], pngs, np.zeros((len(pngs), 2), np.float32))
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        cache.build(pngs, progress=False)
        value, tag = cache.store.get(str(pngs[2]), tag=True)
        cache.store.set(str(pngs[2]), flip(value, 8 * len(value) // 2), tag=tag)
        loader = Loader(data, cache, batch_size=4, seed=0, shuffle=False, threads=2)
        with pytest.warns(UserWarning, match=rf"{pngs[2].name}: not a valid cache entry"):
            batches = list(loader.epoch(0))
        loader.close()
        assert [len(b.ids) for b in batches] == [4, 4]
        for batch in batches:
            for k, name in enumerate(batch.ids):
                assert_pixels_are_pils(batch.images[k], pngs[int(name[:8])])
        assert cache.verify(progress=False).corrupt == []  # and the entry was written again


def test_a_flipped_entry_without_its_source_is_an_error_naming_cache_entry_and_repair(
    tmp_path, pngs
):
    data = Files([p.stem for p in pngs], pngs, np.zeros((len(pngs), 2), np.float32))
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        cache.build(pngs, progress=False)
        value, tag = cache.store.get(str(pngs[5]), tag=True)
        cache.store.set(str(pngs[5]), flip(value, 8 * 20 + 3), tag=tag)
        pngs[5].unlink()
        loader = Loader(data, cache, batch_size=4, seed=0, shuffle=False, threads=2)
        pattern = (
            rf"{tmp_path / 'cache'}: entry {pngs[5]}: not a valid cache entry .*"
            rf"qcxr cache verify --cache {tmp_path / 'cache'} --repair"
        )
        with pytest.raises(ValueError, match=pattern):
            list(loader.epoch(0))
        loader.close()
        repaired = cache.verify(repair=True, progress=False)
        assert repaired.removed == [str(pngs[5])] and repaired.whole


def old_format_value(pixels: np.ndarray, key: str) -> bytes:
    """An entry as qcxr wrote it before checksums (qcxr-image-v1)."""
    size, mtime = source_signature(key).split(":")
    metadata = {"format": "qcxr-image-v1", "source": key, "size": size, "mtime_ns": mtime}
    return zstandard.ZstdCompressor(level=3).compress(st_save({"image": pixels}, metadata=metadata))


def make_old_cache(directory: Path, pngs: list[Path]) -> None:
    """A cache of the old format; entry 1 holds wrong pixels (a flip the old format missed)."""
    with ImageCache(directory, **SMALL) as cache:
        cache.build(pngs, progress=False)
        config = json.dumps({"format": "qcxr-image-v1", **cache.params}, sort_keys=True)
        cache.store.set(CONFIG_KEY, config.encode())
        for k, path in enumerate(pngs):
            pixels = cache.get(path)
            if k == 1:
                pixels = pixels ^ 4  # wrong pixels that decode without complaint
            value = old_format_value(pixels, str(path))
            cache.store.set(str(path), value, tag=source_signature(path))


def test_old_entries_without_checksum_are_never_trusted(tmp_path, pngs):
    make_old_cache(tmp_path / "cache", pngs)
    with ImageCache(tmp_path / "cache") as cache:  # the same preprocessing: opens
        assert cache.params == {**SMALL, "resample": "bicubic"}
        result = cache.verify(progress=False)
        assert sorted(result.unverified) == sorted(str(p) for p in pngs)
        assert result.corrupt == [] and not result.whole
        assert not cache.is_fresh(pngs[0])
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for path in pngs[:3]:  # read again from the source, wrong pixels included
                assert_pixels_are_pils(cache.get(path), path)
        assert len(caught) == 1 and "without a checksum" in str(caught[0].message)
        assert has_checksum(cache.store.get(str(pngs[1])))
        built = cache.build(pngs, progress=False)  # a normal build rewrites the rest
        assert (built.added, built.fresh) == (len(pngs) - 3, 3)
        assert cache.verify(progress=False).whole


def test_repair_rewrites_old_entries_and_removes_those_without_source(tmp_path, pngs):
    make_old_cache(tmp_path / "cache", pngs)
    pngs[6].unlink()
    with ImageCache(tmp_path / "cache") as cache:
        with pytest.raises(ValueError, match=rf"{pngs[6].name}: entry written without a checksum"):
            cache.get(pngs[6])
        result = cache.verify(repair=True, progress=False)
        assert result.removed == [str(pngs[6])] and len(result.repaired) == len(pngs) - 1
        assert result.whole
        for path in pngs[:6]:
            assert_pixels_are_pils(cache.get(path), path)


def test_salvage_copies_only_entries_that_pass_their_checks(tmp_path, pngs):
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        cache.build(pngs, progress=False)
        cache.record_label_file(tmp_path / "labels.csv", "ab" * 32)
        value, tag = cache.store.get(str(pngs[4]), tag=True)
        cache.store.set(str(pngs[4]), flip(value, 77), tag=tag)
    recovery = recover_database(tmp_path / "cache", progress=False)
    assert [p.name.split("-")[0] for p in recovery.moved][0] == "cache.db.damaged"
    assert (recovery.kept, recovery.dropped, recovery.label_files) == (len(pngs) - 1, 1, 1)
    with ImageCache(tmp_path / "cache") as cache:
        assert cache.params["crop"] == 56 and cache.label_files()
        assert cache.verify(progress=False).whole
        assert cache.build(pngs, progress=False).added == 1  # the one left behind
        for path in pngs:
            assert_pixels_are_pils(cache.get(path), path)


# ------------------------------------------------------------ a damaged cache.db


def write_csv(tmp_path, ids):
    columns = ["id", *TASKS["cxr19"], "No Finding", "subj_id"]
    rows = [[i, *([0] * 19), 1, i[:8]] for i in ids]
    csv = tmp_path / "miccai2023_nih-cxr-lt_labels_train.csv"
    pd.DataFrame(rows, columns=columns).to_csv(csv, index=False)
    return csv


def damage(db: Path, how: str) -> bytes:
    with sqlite3.connect(db) as con:  # everything into the main file first
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    if how == "truncated":
        os.truncate(db, size // 2)
    else:
        db.write_bytes(np.random.default_rng(0).bytes(size))
    return db.read_bytes()


@pytest.mark.parametrize("how", ["truncated", "random-bytes"])
def test_damaged_database_is_one_line_and_the_offered_rebuild_works(tmp_path, how, capsys):
    directory = tmp_path / "images"
    directory.mkdir()
    pngs = []
    for k in range(40):  # enough rows that half the file holds some of them
        path = directory / f"{k:08d}_000.png"
        Image.fromarray(image(72, k)).save(path)
        pngs.append(path)
    csv = write_csv(tmp_path, [p.name for p in pngs])
    cache_dir = tmp_path / "cache"
    build = ["cache", "build", "--cache", str(cache_dir), "--csv", str(csv)]
    build += ["--images", str(directory), *SIZES, "--no-progress"]
    verify = ["cache", "verify", "--cache", str(cache_dir), "--no-progress"]
    assert data_cli(build) == 0
    capsys.readouterr()
    damaged = damage(cache_dir / "cache.db", how)

    # Every way in stops with one line naming the file and the repair; no traceback.
    for argv in (verify, build):
        assert data_cli(argv) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, err
        assert f"{cache_dir / 'cache.db'}: the cache database is damaged" in err
        assert f"qcxr cache verify --cache {cache_dir} --repair" in err
    with (
        pytest.raises(CacheDamagedError, match="cache.db: the cache database is damaged"),
        ImageCache(cache_dir) as cache,
    ):
        cache.verify(progress=False)

    # The offered repair: moved aside (kept byte for byte), a new start, a build refills it.
    assert data_cli([*verify, "--repair", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["damaged_database"]
    aside = Path(summary["moved_to"][0])
    assert aside.name.startswith("cache.db.damaged-") and aside.read_bytes() == damaged
    kept = summary["entries_kept"]
    if how == "truncated":
        # The rows still readable, each checked, are kept. Which rows the first half of the
        # file holds depends on when SQLite last moved its write-ahead log into it (the build's
        # reader threads hold connections), so the settings row may be among the lost ones:
        # then nothing is kept and the build starts a new database.
        assert 0 <= kept < 40 and (summary["preprocessing_recovered"] or kept == 0)
    else:  # nothing readable: nothing kept, and the build starts a new database
        assert not summary["preprocessing_recovered"] and kept == 0
    assert data_cli([*build, "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert (built["added"], built["already_cached"]) == (40 - kept, kept)
    assert data_cli([*verify, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == 40
    with ImageCache(cache_dir) as cache:
        assert cache.params["crop"] == 56
        for path in pngs:
            assert_pixels_are_pils(cache.get(path), path)


def test_damaged_database_from_the_command_line_is_one_line_without_traceback(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    (cache_dir / "cache.db").write_bytes(b"\x00garbage" * 4096)
    done = subprocess.run(
        [sys.executable, "-m", "qcxr.data.cli", "cache", "verify", "--cache", str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"qcxr cache verify: error: {cache_dir / 'cache.db'}: the cache database is damaged (SQLite: "
        f"file is not a database); run `qcxr cache verify --cache {cache_dir} --repair` to move "
        "it aside and start a new one (entries that still pass their checksums are kept; "
        "`qcxr cache build` refills the rest)"
    ]
