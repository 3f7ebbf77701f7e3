"""Image-cache checksums (not a test): read overhead, and every single-bit flip of one entry.

Read overhead: one realistic entry (a 1024 x 1024 synthetic chest PNG, preprocessed to
224 x 224 x 1 uint8 as the cache stores it), decoded many times in one thread by
  - "v1": the old format and its reader (one zstd frame, no checksum: decompress, parse),
  - "v2": this format (`decode_entry`: sha256 of the frame, decompress with zstd's content
    checksum, parse), and its parts (sha256 alone; decompress with/without content checksum).
and the loader's read path (`ImageCache.get`: SQLite fetch + decode, old vs new). Each figure
is CPU time of the calling thread (time.thread_time, so other processes' load is left out),
the best of --repeats rounds of --number calls, the rounds alternating between the variants.

Flips (--flips): every bit of one entry (--flip-size crop, so the sweep stays short) flipped in
turn; counted per outcome for the new format (must all be detected) and, for comparison, for
the same bytes read as the old format would read them (decode error / same pixels / WRONG
pixels accepted), and for the new frame read with zstd's content checksum only (no sha256).
"Harmless" = the flipped value still decompresses to exactly the bytes written (so the same
pixels); the new format reports these as corrupt too (the stored bytes changed), and verify
--repair rewrites them, which costs one re-read and loses nothing.

    .venv/bin/python benchmarks/cache_checksum.py            # overhead + flip sweep
Record results in benchmarks/cache_checksum.md with the date and machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import struct
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np
import zstandard
from PIL import Image
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from qcxr.data.cache import ImageCache
from qcxr.data.cache_entry import TRAILER_SIZE, ZSTD_LEVEL, decode_entry, encode_entry
from qcxr.data.preprocess import preprocess
from qcxr.data.render import Renderer


def realistic_image(directory: Path, crop: int, resize: int) -> np.ndarray:
    path = directory / "00000000_000.png"
    image = Renderer(1024, 1024, seed=0).render(["Effusion"], np.random.default_rng(0))
    Image.fromarray(image, "L").save(path)
    return preprocess(path, resize_shortest=resize, crop=crop)


def best_us(fns: dict, number: int, repeats: int) -> dict[str, float]:
    """Best time per call of each function, in microseconds; the rounds alternate between the
    functions, so that a busy spell of the (shared) machine falls on all of them alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            timer = timeit.Timer(fn, timer=time.thread_time)  # CPU time: others' load left out
            best[name] = min(best[name], timer.timeit(number) / number * 1e6)
    return best


def old_decode_entry(value: bytes, d: zstandard.ZstdDecompressor) -> tuple:
    """The old format's reader (qcxr-image-v1, before checksums), for the comparison."""
    raw = d.decompress(value)
    (header_len,) = struct.unpack("<Q", raw[:8])
    metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
    image = st_load(raw)["image"]
    if metadata.get("format") != "qcxr-image-v1" or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError("not a valid cache entry")
    return image, metadata


def overhead(image: np.ndarray, number: int, repeats: int, directory: Path) -> dict:
    metadata = {"source": "/data/nih/images/00000000_000.png", "size": "1", "mtime_ns": "1"}
    raw_v1 = st_save({"image": image}, metadata={"format": "qcxr-image-v1", **metadata})
    v1 = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw_v1)
    v2 = encode_entry(image, metadata)
    frame = memoryview(v2)[:-TRAILER_SIZE]
    d = zstandard.ZstdDecompressor()
    np.testing.assert_array_equal(decode_entry(v2)[0], image)
    # The loader's read path: one SQLite fetch and decode (`ImageCache.get`), the old entry
    # read as the old `get` read it, the new one through this `get`.
    source = directory / "00000000_000.png"
    cache = ImageCache(directory / "cache", resize_shortest=256, crop=224)
    cache.build([source], progress=False)
    key = str(source.resolve())
    cache.store.set(key + ".v1", v1)
    out = {
        "entry": list(image.shape),
        "raw_bytes": len(raw_v1),
        "v1_bytes": len(v1),
        "v2_bytes": len(v2),
        "us": best_us(
            {
                "v1_decode": lambda: old_decode_entry(v1, d),
                "v2_decode_entry": lambda: decode_entry(v2),
                "sha256_of_frame": lambda: hashlib.sha256(frame).digest(),
                "decompress_no_checksum": lambda: d.decompress(v1),
                "decompress_with_checksum": lambda: d.decompress(frame),
                "v1_get": lambda: old_decode_entry(cache.store.get(key + ".v1"), d),
                "v2_get": lambda: cache.get(key),
            },
            number,
            repeats,
        ),
    }
    cache.close()
    us = out["us"]
    out["overhead_us"] = us["v2_decode_entry"] - us["v1_decode"]
    out["overhead_pct"] = 100 * out["overhead_us"] / us["v1_decode"]
    out["get_overhead_us"] = us["v2_get"] - us["v1_get"]
    out["get_overhead_pct"] = 100 * out["get_overhead_us"] / us["v1_get"]
    return out


def _outcome(read, flipped: bytes, written: bytes, image: np.ndarray) -> str:
    try:
        raw = read(flipped)
        pixels = st_load(raw)["image"]
    except Exception:
        return "error"
    if raw == written:
        return "same_bytes"  # harmless: decodes to exactly what was written
    return "same_pixels" if np.array_equal(pixels, image) else "wrong_pixels_accepted"


def _sweep(value: bytes, read, written: bytes, image: np.ndarray) -> dict:
    counts = {"bits": 8 * len(value)}
    for bit in range(8 * len(value)):
        flipped = bytearray(value)
        flipped[bit // 8] ^= 1 << (bit % 8)
        outcome = _outcome(read, bytes(flipped), written, image)
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def flips(image: np.ndarray) -> dict:
    metadata = {"source": "/x.png", "size": "1", "mtime_ns": "1"}
    d = zstandard.ZstdDecompressor()
    # The old format as the old reader read it (no checksum anywhere).
    # (What was written is taken back from the unflipped value: safetensors orders metadata
    # keys differently from one call to the next.)
    old_value = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(
        st_save({"image": image}, metadata={"format": "qcxr-image-v1", **metadata})
    )
    old_written = d.decompress(old_value)
    # This format: in full (`decode_entry`), and its frame read with zstd's checksum only.
    value = encode_entry(image, metadata)
    frame = value[:-TRAILER_SIZE]
    written = d.decompress(frame)
    full = {"bits": 8 * len(value), "detected": 0, "missed": 0, "detected_in_trailer": 0}
    for bit in range(8 * len(value)):
        flipped = bytearray(value)
        flipped[bit // 8] ^= 1 << (bit % 8)
        try:
            decode_entry(bytes(flipped))
            full["missed"] += 1
        except ValueError:
            full["detected"] += 1
            full["detected_in_trailer"] += bit // 8 >= len(frame)
    return {
        "entry": list(image.shape),
        "v2_decode_entry": full,
        "v2_frame_zstd_checksum_only": _sweep(frame, d.decompress, written, image),
        "v1_no_checksum": _sweep(old_value, d.decompress, old_written, image),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--flip-size", type=int, default=32, help="crop of the flipped entry")
    parser.add_argument("--no-flips", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = realistic_image(Path(tmp), 224, 256)
        out = {
            "machine": platform.processor() or platform.machine(),
            "versions": {"zstandard": zstandard.__version__, "python": platform.python_version()},
            "overhead": overhead(image, args.number, args.repeats, Path(tmp)),
        }
        small = realistic_image(Path(tmp), args.flip_size, args.flip_size + args.flip_size // 7)
    if not args.no_flips:
        out["flips"] = flips(small)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
