"""Content-addressed structured objects: tree nodes, commits, recipes, annotation sets.

An object is (tag, payload): payload is canonical msgpack, the id is
blake3(tag + b"\\0" + payload), and the stored value is exactly that hash input, so reading
verifies by hashing the value and comparing it with the key. A read that fails verification
raises ``CorruptObjectError``; nothing unverified is ever returned.

Writes are staged: ``put`` computes the id and keeps the bytes in a pending batch that the
repository flushes inside its one LMDB write transaction (write order step 2-3, DESIGN §3).
Reads see staged objects first. Two implementations share one contract: ``MemoryObjectStore``
(tests, pure algorithms) and ``LmdbObjectStore``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from dvstore import codec
from dvstore.errors import CorruptObjectError, NotFoundError
from dvstore.hashing import Digest, hash_bytes, object_id, short
from dvstore.storage.db import Database, WriteTxn

TAGS = frozenset({b"leaf", b"node", b"commit", b"recipe", b"annset"})
WRITE_AHEAD_OBJECTS = 16384
"""Within ``writing_ahead``, staged objects are also stored once this many are staged,
whatever their size. LMDB (``writemap`` off) copies each page a transaction changes into
memory it allocates and, once the transaction is over, keeps those pages for the next one.
Object ids are random, so each object of a transaction changes its own leaf page of a big
table: 16 MiB of annotation sets (~50,000 objects) held ~150 MiB. Fewer objects per
transaction cost time instead, each leaf being rewritten by more transactions. Measured,
main process of a 300,000-image COCO add (peak private memory, whole add): 8,192 objects
128 MiB, 32 s; 16,384: 165 MiB, 28.7 s; 32,768: 218 MiB, 27.9 s; no cap: 250 MiB, 27.2 s."""
_CACHE_SIZE = 65536
_CACHE_BYTES = 16 * 1024 * 1024
"""Decoded objects are kept up to this many encoded bytes (decoded, several times that):
bounded by bytes, not count, so that caching the leaves of a million-item tree cannot take
gigabytes."""


class ObjectStore(Protocol):
    """What algorithms (tree, merge, diff) need: typed get and staged put."""

    def get(self, oid: bytes, tag: bytes) -> Any: ...

    def get_any(self, oid: bytes) -> tuple[bytes, Any]: ...

    def put(self, tag: bytes, value: Any) -> Digest: ...

    def put_encoded(self, tag: bytes, payload: bytes) -> Digest: ...

    def has(self, oid: bytes) -> bool: ...


def _split(oid: bytes, raw: bytes) -> tuple[bytes, bytes]:
    if hash_bytes(raw) != oid:
        raise CorruptObjectError(f"object {short(oid)} does not match its id",
                                 hint="run 'dvs fsck' to list damaged objects")
    tag, sep, payload = raw.partition(b"\0")
    if not sep or tag not in TAGS:
        raise CorruptObjectError(f"object {short(oid)} has an unknown type")
    return tag, payload


class _Base:
    def __init__(self) -> None:
        self.pending: dict[bytes, bytes] = {}
        self._pending_bytes = 0
        self._cache: dict[bytes, tuple[bytes, Any]] = {}
        self._cache_sizes: dict[bytes, int] = {}
        self._cache_bytes = 0
        self.write_ahead_at: int | None = None
        """When set, ``put`` stores staged objects ahead of the version once they reach this
        many bytes (unreferenced objects are harmless; gc collects them)."""
        self.write_ahead_to: Callable[[dict[bytes, bytes]], bool] | None = None
        """When set, objects written ahead are offered to it (``{id: stored value}``) to be
        stored elsewhere; it returns whether it took them (``writing_ahead``)."""

    def _load_raw(self, oid: bytes) -> bytes | None:
        raise NotImplementedError

    def get(self, oid: bytes, tag: bytes) -> Any:
        """Return the decoded value of object ``oid``, which must have type ``tag``.

        The value is shared with a cache: callers must not mutate it.
        """
        got, value = self.get_any(oid)
        if got != tag:
            raise CorruptObjectError(f"object {short(oid)} is a {got.decode()}, expected {tag.decode()}")
        return value

    def get_any(self, oid: bytes) -> tuple[bytes, Any]:
        """Return (tag, decoded value) of object ``oid``; the value must not be mutated."""
        hit = self._cache.get(oid)
        if hit is not None:
            return hit
        raw = self.pending.get(oid)
        if raw is None:
            raw = self._load_raw(oid)
            if raw is None:
                raise NotFoundError(f"object {short(oid)} is missing", hint="run 'dvs fsck'")
        got, payload = _split(oid, raw)
        hit = (got, codec.decode(payload))
        self._cache[oid] = hit
        self._cache_sizes[oid] = len(raw)
        self._cache_bytes += len(raw)
        if len(self._cache) > _CACHE_SIZE or self._cache_bytes > _CACHE_BYTES:
            # Evict the oldest quarter; an LRU's per-hit bookkeeping costs more than it saves here.
            for k in list(self._cache)[: len(self._cache) // 4 + 1]:
                del self._cache[k]
                self._cache_bytes -= self._cache_sizes.pop(k)
        return hit

    def put(self, tag: bytes, value: Any) -> Digest:
        return self.put_encoded(tag, codec.encode(value))

    def put_encoded(self, tag: bytes, payload: bytes) -> Digest:
        oid = object_id(tag, payload)
        if oid not in self.pending:
            raw = self.pending[oid] = tag + b"\0" + payload
            self._pending_bytes += len(raw)
            if self.write_ahead_at is not None and (self._pending_bytes >= self.write_ahead_at
                                                    or len(self.pending) >= WRITE_AHEAD_OBJECTS):
                self.write_ahead()
        return oid

    def pending_size(self) -> int:
        """Bytes of staged objects."""
        return self._pending_bytes

    def write_ahead(self) -> None:
        """Store the staged objects now, in a transaction of their own."""
        raise NotImplementedError

    @contextmanager
    def writing_ahead(self, at: int, to: Callable[[dict[bytes, bytes]], bool] | None = None) -> Iterator[None]:
        """Within the block, staged objects are stored whenever they reach ``at`` bytes.

        Only for code that runs outside any write transaction (building a version, bulk
        imports): a write from inside one would wait for itself.

        ``to`` is offered them first (``{id: stored value}``) and returns whether it took
        them: ``dvs add`` hands an import's annotation sets to its storer processes, which
        commit them beside its work. Objects handed over cannot be read here until they are
        committed, so only for objects nothing reads before the version is published, and
        the caller must wait for those commits before publishing it.
        """
        old = self.write_ahead_at, self.write_ahead_to
        self.write_ahead_at, self.write_ahead_to = at, to
        try:
            yield
        finally:
            self.write_ahead_at, self.write_ahead_to = old

    def _forget_pending(self) -> None:
        self.pending.clear()
        self._pending_bytes = 0

    def has(self, oid: bytes) -> bool:
        return oid in self.pending or self._load_raw(oid) is not None


class MemoryObjectStore(_Base):
    """An in-memory object store; ``flush`` moves staged objects into ``data``."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[bytes, bytes] = {}

    def _load_raw(self, oid: bytes) -> bytes | None:
        return self.data.get(oid)

    def flush(self) -> None:
        self.data.update(self.pending)
        self._forget_pending()

    def write_ahead(self) -> None:
        self.flush()


class LmdbObjectStore(_Base):
    """Objects in the ``objects`` database of the store's LMDB environment."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    def _load_raw(self, oid: bytes) -> bytes | None:
        return self.db.get("objects", oid)

    def write_ahead(self) -> None:
        if self.write_ahead_to is not None and self.write_ahead_to(self.pending):
            self.pending, self._pending_bytes = {}, 0
            return
        self.db.ensure_room(self._pending_bytes)
        self.db.write(self.write_pending)
        self._forget_pending()

    def write_pending(self, txn: WriteTxn) -> int:
        """Store staged objects in ``txn`` (idempotent: re-runnable after map growth)."""
        n = 0
        for oid, raw in self.pending.items():
            if txn.put("objects", oid, raw, overwrite=False):
                n += 1
        return n

    def committed(self) -> None:
        """Forget staged objects once the transaction that stored them committed."""
        self._forget_pending()

    def discard(self) -> None:
        self._forget_pending()
