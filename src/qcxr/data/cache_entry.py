"""One image-cache entry on disk: encoding, decoding and checking its bytes.

Kept apart from the store (`qcxr.data.cache`) because the format is what other readers rely
on (the benchmark in benchmarks/cache_checksum.py, `zstd -d` by hand), and its checks must be
the same wherever an entry is read. An entry (format "qcxr-image-v2") is two zstd frames, so
`zstd -d` still reads it:

    zstd frame (content checksum on) of safetensors({"image": uint8 (H, W, C)}, metadata)
    zstd skippable frame: magic 0x184D2A5C, length 40, b"sha256\\0\\0", sha256 of the first frame

The sha256 covers every byte of the first frame, and the trailer's own bytes are compared
exactly, so any change to a stored value (a single flipped bit anywhere included) fails the
check before anything is decompressed; zstd's content checksum then checks the decoded bytes
against what the compressor was given. Entries of the old format ("qcxr-image-v1", no
checksum) are recognised, so that they can be re-read rather than trusted: `decode_entry`
raises `UnverifiedEntry` for them.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading

import numpy as np
import zstandard
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

FORMAT = "qcxr-image-v2"
# Formats written without a checksum: read as "unverified", re-read from the source, rewritten.
OLD_FORMATS = ("qcxr-image-v1",)
ZSTD_LEVEL = 3
_DIGEST_SIZE = 32  # sha256: hashlib's OpenSSL sha256 (SHA-NI) measured fastest of sha256/blake2
_TRAILER_HEAD = struct.pack("<II", 0x184D2A5C, 8 + _DIGEST_SIZE) + b"sha256\0\0"
TRAILER_SIZE = len(_TRAILER_HEAD) + _DIGEST_SIZE
# Largest decoded entry a value without a checksum may claim (a flipped size field must not
# make the decompressor allocate gigabytes): 1024 x 1024 x 3 uint8 plus a header, with room.
_MAX_LEGACY_CONTENT = 16 * 2**20
_local = threading.local()


class UnverifiedEntry(ValueError):
    """A whole entry of an old format, written without a checksum: it cannot be trusted."""


def _compressor() -> zstandard.ZstdCompressor:
    # zstandard (de)compressor objects are not thread-safe: one per thread.
    if not hasattr(_local, "c"):
        _local.c = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True)
        _local.d = zstandard.ZstdDecompressor()
    return _local.c


def _decompressor() -> zstandard.ZstdDecompressor:
    _compressor()
    return _local.d


def encode_entry(image: np.ndarray, metadata: dict[str, str]) -> bytes:
    """zstd(safetensors({"image": uint8 (H, W, C)}, metadata)) + a sha256 trailer frame."""
    frame = _compressor().compress(
        st_save({"image": image}, metadata={"format": FORMAT, **metadata})
    )
    return frame + _TRAILER_HEAD + hashlib.sha256(frame).digest()


def has_checksum(value: object) -> bool:
    """Whether a value ends in this format's checksum trailer (not whether it checks out)."""
    return (
        isinstance(value, bytes)
        and len(value) > TRAILER_SIZE
        and value[-TRAILER_SIZE:-_DIGEST_SIZE] == _TRAILER_HEAD
    )


def _parse(raw: bytes) -> tuple[np.ndarray, dict[str, str]]:
    (header_len,) = struct.unpack("<Q", raw[:8])
    metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__", {})
    return st_load(raw)["image"], metadata


def decode_entry(value: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """(image, metadata) of one cache value, its checksums checked.

    ValueError if it is not a whole, intact entry of this format; `UnverifiedEntry` (also a
    ValueError) if it is a whole entry of an old format without a checksum.
    """
    if not isinstance(value, bytes):
        raise ValueError(f"not a valid cache entry (a {type(value).__name__}, not bytes)")
    if not has_checksum(value):
        return _decode_legacy(value)
    frame = memoryview(value)[:-TRAILER_SIZE]
    if hashlib.sha256(frame).digest() != value[-_DIGEST_SIZE:]:
        raise ValueError("not a valid cache entry (sha256 checksum mismatch: the bytes changed)")
    try:  # zstd checks its own content checksum here
        image, metadata = _parse(_decompressor().decompress(frame, allow_extra_data=False))
    except Exception as err:  # zstd, struct, json and safetensors each raise their own
        raise ValueError(f"not a valid cache entry ({type(err).__name__}: {err})") from None
    if metadata.get("format") != FORMAT or image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"not a valid cache entry (format {metadata.get('format')!r})")
    return image, metadata


def _decode_legacy(value: bytes) -> tuple[np.ndarray, dict[str, str]]:
    """A value without the checksum trailer: `UnverifiedEntry` if it is a whole old-format
    entry, else ValueError. Never returns: such an entry is not to be trusted."""
    try:
        params = zstandard.get_frame_parameters(value)
        if not 0 < params.content_size <= _MAX_LEGACY_CONTENT:
            raise ValueError(f"content size {params.content_size}")
        raw = _decompressor().decompress(value, allow_extra_data=False)
        image, metadata = _parse(raw)
    except Exception as err:
        raise ValueError(f"not a valid cache entry ({type(err).__name__}: {err})") from None
    fmt = metadata.get("format")
    if fmt in OLD_FORMATS and image.dtype == np.uint8 and image.ndim == 3:
        raise UnverifiedEntry(f"entry written without a checksum (format {fmt})")
    raise ValueError(f"not a valid cache entry (no checksum trailer; format {fmt!r})")
