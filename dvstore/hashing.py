"""Content hashing: the only module that imports ``blake3``.

It owns the id types (32-byte digests, hex only at the edges) and how bytes, files and
typed objects are hashed. It does no I/O beyond reading the file it is asked to hash.
"""

from __future__ import annotations

import os
import re
from typing import NewType

from blake3 import blake3

from dvstore.errors import UsageError

Digest = NewType("Digest", bytes)
"""A 32-byte blake3 digest: a blob id or an object id."""

SHORT_HEX = 12
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
# Files above this size are hashed with blake3's own threads (it releases the GIL).
_THREADED_MIN = 8 * 1024 * 1024
CHUNK = 1024 * 1024


def hash_bytes(data: bytes | memoryview) -> Digest:
    """Return the blake3 digest of ``data``; equals ``b3sum`` of a file holding it."""
    return Digest(blake3(data).digest())


def hash_prefix(data: bytes, length: int) -> bytes:
    """The first ``length`` bytes of ``data``'s blake3 digest (blake3's output of that length)."""
    out: bytes = blake3(data).digest(length)
    return out


def hash_hex(data: bytes, length: int) -> str:
    """The first ``length`` bytes of ``data``'s blake3 digest, in hex."""
    return blake3(data).hexdigest(length)


def object_id(tag: bytes, payload: bytes) -> Digest:
    """Return the id of a typed object: blake3(tag + b"\\0" + payload)."""
    h = blake3(tag)
    h.update(b"\0")
    h.update(payload)
    return Digest(h.digest())


class Hasher:
    """Incremental hasher for streamed data."""

    __slots__ = ("_h",)

    def __init__(self, *, threaded: bool = False) -> None:
        self._h = blake3(max_threads=blake3.AUTO) if threaded else blake3()

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)

    def digest(self) -> Digest:
        return Digest(self._h.digest())


def new_hasher(size_hint: int = 0) -> Hasher:
    """A hasher that uses threads when ``size_hint`` makes it worthwhile."""
    return Hasher(threaded=size_hint >= _THREADED_MIN)


def hash_file(path: str | os.PathLike[str]) -> tuple[Digest, int]:
    """Hash a file by streaming it; return (digest, size)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h = new_hasher(size)
        total = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            total += n
    return h.digest(), total


def hash_path(path: str, size: int) -> Digest:
    """Hash a file through a memory map (no copies; threads for big files)."""
    if size == 0:
        return hash_bytes(b"")
    h = blake3(max_threads=blake3.AUTO) if size >= _THREADED_MIN else blake3()
    h.update_mmap(path)
    return Digest(h.digest())


def short(d: bytes) -> str:
    """The short display form of an id."""
    return d.hex()[:SHORT_HEX]


def is_hex_digest(s: str) -> bool:
    return bool(_HEX_RE.match(s))


def from_hex(s: str) -> Digest:
    """Parse a full 64-character lowercase hex id; anything else is a UsageError."""
    if not isinstance(s, str) or not _HEX_RE.match(s):
        raise UsageError(f"not a blake3 hex id: {s!r}")
    return Digest(bytes.fromhex(s))
