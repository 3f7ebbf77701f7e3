"""The image cache: raw-bytes entries, freshness, verify/repair, concurrent and killed builders."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import diskcache
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from qcxr.data.cache import ImageCache
from qcxr.data.cache_entry import decode_entry
from qcxr.data.preprocess import BadImageError, preprocess
from qcxr.labels import TASKS

SMALL = {"resize_shortest": 64, "crop": 56}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def image(size: int, seed: int, rgb: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = 120 + 80 * np.sin(9 * x + seed) * np.cos(4 * y) + rng.normal(0, 10, (size, size))
    if rgb:
        base = np.stack([base, base[::-1], base.T], axis=-1)
    return np.clip(base, 0, 255).astype(np.uint8)


@pytest.fixture()
def pngs(tmp_path):
    directory = tmp_path / "images"
    directory.mkdir()
    paths = []
    for k in range(12):
        path = directory / f"{k:08d}_000.png"
        Image.fromarray(image(96, k, rgb=k == 3)).save(path)
        paths.append(path)
    return paths


def test_entries_are_raw_zstd_bytes_in_sqlite_and_round_trip(tmp_path, pngs):
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        result = cache.build(pngs, threads=2, progress=False)
        assert (result.added, result.fresh, result.skipped) == (12, 0, [])
        for path in pngs:
            cached = cache.get(path)
            np.testing.assert_array_equal(cached, preprocess(path, **SMALL))
        assert cache.get(pngs[0]).shape == (56, 56, 1) and cache.get(pngs[3]).shape == (56, 56, 3)
    with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
        rows = db.execute("SELECT key, mode, filename, value FROM Cache").fetchall()
    image_rows = [r for r in rows if not r[0].startswith("qcxr:")]
    assert len(image_rows) == 12
    for key, mode, filename, value in image_rows:
        assert mode == diskcache.core.MODE_RAW and filename is None  # bytes, not a pickle
        assert bytes(value[:4]) == ZSTD_MAGIC
        assert os.path.isabs(key)


def test_cached_bytes_are_under_a_quarter_of_float32_safetensors(tmp_path):
    from safetensors.numpy import save

    path = tmp_path / "00000001_000.png"
    Image.fromarray(image(1024, 1)).save(path)
    with ImageCache(tmp_path / "cache") as cache:
        cache.build([path], progress=False)
        stored = cache.store.get(str(path))
    float32 = save({"image": (np.zeros((224, 224, 3), np.float32))})
    assert len(stored) <= len(float32) / 4


def test_changed_source_is_processed_again(tmp_path, pngs):
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        cache.build(pngs, progress=False)
        Image.fromarray(image(96, 99)).save(pngs[5])
        os.utime(pngs[5], ns=(1, 10**18))
        assert not cache.is_fresh(pngs[5])
        result = cache.build(pngs, progress=False)
        assert (result.added, result.fresh) == (1, 11)
        np.testing.assert_array_equal(cache.get(pngs[5]), preprocess(pngs[5], **SMALL))


def test_other_preprocessing_parameters_are_refused(tmp_path, pngs):
    ImageCache(tmp_path / "cache", **SMALL).close()
    with pytest.raises(ValueError, match=r"cache was built with .*\"crop\": 56"):
        ImageCache(tmp_path / "cache", resize_shortest=64, crop=48)


def test_verify_finds_and_repairs_corrupt_entries(tmp_path, pngs):
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        cache.build(pngs, progress=False)
        good = cache.store.get(str(pngs[1]))
        cache.store.set(str(pngs[1]), good[: len(good) // 2])  # truncated value
        cache.store.set(str(pngs[2]), b"not zstd at all")
        result = cache.verify(progress=False)
        assert result.checked == 12 and sorted(result.corrupt) == [str(pngs[1]), str(pngs[2])]
        assert not result.whole
        pngs[2].unlink()  # no source: removed rather than repaired
        result = cache.verify(repair=True, progress=False)
        assert result.repaired == [str(pngs[1])] and result.removed == [str(pngs[2])]
        again = cache.verify(progress=False)
        assert again.whole and again.corrupt == [] and again.checked == 11
        np.testing.assert_array_equal(cache.get(pngs[1]), preprocess(pngs[1], **SMALL))


def test_build_error_names_the_bad_file(tmp_path, pngs):
    pngs[4].write_bytes(pngs[4].read_bytes()[:200])
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        with pytest.raises(BadImageError, match=rf"{pngs[4].name}: cannot decode image"):
            cache.build(pngs, threads=1, progress=False)
        result = cache.build(pngs, threads=2, progress=False, on_bad_image="skip")
        assert [p for p, _ in result.skipped] == [str(pngs[4])]


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qcxr.data.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def write_csv(tmp_path, ids):
    columns = ["id", *TASKS["cxr19"], "No Finding", "subj_id"]
    rows = [[i, *([0] * 19), 1, i[:8]] for i in ids]
    csv = tmp_path / "miccai2023_nih-cxr-lt_labels_train.csv"
    pd.DataFrame(rows, columns=columns).to_csv(csv, index=False)
    return csv


def test_cli_skip_reports_bad_images_and_error_names_them(tmp_path, pngs):
    csv = write_csv(tmp_path, [p.name for p in pngs] + ["00000077_000.png"])  # one missing
    pngs[6].write_bytes(pngs[6].read_bytes()[:150])  # one truncated
    common = ["cache", "build", "--cache", str(tmp_path / "c"), "--csv", str(csv)]
    common += ["--images", str(pngs[0].parent), "--resize", "64", "--crop", "56", "--no-progress"]
    failed = run_cli(*common)
    assert failed.returncode == 1
    assert "image file not found" in failed.stderr or "cannot decode image" in failed.stderr
    assert "00000077_000.png" in failed.stderr or pngs[6].name in failed.stderr
    report = tmp_path / "skipped.tsv"
    done = run_cli(*common, "--on-bad-image", "skip", "--report", str(report))
    assert done.returncode == 0, done.stderr
    assert f"skipped 2 bad image(s); listed in {report}" in done.stdout
    lines = report.read_text().splitlines()[1:]
    assert sorted(line.split("\t")[0].rsplit("/", 1)[1] for line in lines) == sorted(
        ["00000077_000.png", pngs[6].name]
    )
    verified = run_cli(
        "cache",
        "verify",
        "--cache",
        str(tmp_path / "c"),
        "--resize",
        "64",
        "--crop",
        "56",
        "--json",
        "--no-progress",
    )
    assert verified.returncode == 0 and '"checked": 11' in verified.stdout
    assert str(csv) in verified.stdout  # the label file's checksum is recorded with the cache


def test_two_concurrent_builders_leave_a_whole_cache(tmp_path, pngs):
    for k in range(12, 60):
        shutil.copy(pngs[k % 12], pngs[0].parent / f"{k:08d}_000.png")
    csv = write_csv(tmp_path, sorted(p.name for p in pngs[0].parent.iterdir()))
    args = [sys.executable, "-m", "qcxr.data.cli", "cache", "build", "--cache", str(tmp_path / "c")]
    args += ["--csv", str(csv), "--images", str(pngs[0].parent), "--resize", "64", "--crop", "56"]
    args += ["--threads", "2", "--no-progress"]
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    with ImageCache(tmp_path / "c", **SMALL) as cache:
        result = cache.verify(progress=False)
        assert result.whole and result.checked == 60 and result.stale == []
        for path in list(pngs[0].parent.iterdir())[::7]:
            np.testing.assert_array_equal(cache.get(path), preprocess(path, **SMALL))


def test_builder_killed_mid_build_leaves_a_whole_resumable_cache(tmp_path):
    source = tmp_path / "src.png"
    Image.fromarray(image(1024, 7)).save(source)  # NIH-sized: slow enough to kill mid-build
    directory = tmp_path / "images"
    directory.mkdir()
    for k in range(80):
        shutil.copy(source, directory / f"{k:08d}_000.png")
    csv = write_csv(tmp_path, sorted(p.name for p in directory.iterdir()))
    args = [sys.executable, "-m", "qcxr.data.cli", "cache", "build", "--cache", str(tmp_path / "c")]
    args += ["--csv", str(csv), "--images", str(directory), "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    count, deadline = 0, time.monotonic() + 60
    while count < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
        try:
            with sqlite3.connect(tmp_path / "c" / "cache.db", timeout=1) as db:
                count = db.execute(
                    "SELECT COUNT(*) FROM Cache WHERE key NOT LIKE 'qcxr:%'"
                ).fetchone()[0]
        except sqlite3.OperationalError:
            count = 0  # database not created yet
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with ImageCache(tmp_path / "c") as cache:
        partial = cache.verify(progress=False)
        assert partial.whole and partial.corrupt == []
        assert 3 <= partial.checked < 80
        result = cache.build(sorted(directory.iterdir()), threads=2, progress=False)
        assert result.fresh == partial.checked and result.added == 80 - partial.checked
        assert cache.verify(progress=False).checked == 80
    value = diskcache.Cache(str(tmp_path / "c")).get(str(directory / "00000000_000.png"))
    assert decode_entry(value)[1]["source"] == str(directory / "00000000_000.png")


def test_get_rebuilds_a_corrupt_entry_and_names_it_when_the_source_is_gone(tmp_path, pngs):
    with ImageCache(tmp_path / "cache", **SMALL) as cache:
        cache.build(pngs[:2], progress=False)
        cache.store.set(str(pngs[0]), b"garbage")
        with pytest.warns(UserWarning, match=rf"{pngs[0].name}: not a valid cache entry"):
            np.testing.assert_array_equal(cache.get(pngs[0]), preprocess(pngs[0], **SMALL))
        cache.store.set(str(pngs[1]), b"garbage")
        pngs[1].unlink()
        with pytest.raises(ValueError, match=rf"{pngs[1].name}: not a valid cache entry"):
            cache.get(pngs[1])
