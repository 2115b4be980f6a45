"""The LMDB layer: the only module that imports ``lmdb``.

It owns the environment's settings and lifecycle and turns LMDB's failure modes into dvstore
errors. Domain code sees two things: ``Database.write(fn)``, which runs ``fn(txn)`` as one
atomic write transaction (one closure = one commit), and read helpers that copy their results
out. It knows nothing about datasets, commits or trees.

Process-wide state (the one exception to "no global state"): py-lmdb refuses to open one
environment twice in a process, and an environment must not be used across ``fork()``. So
environments live in a private registry keyed by (real path, pid). A child process that
inherited a parent's environment opens its own on first use; the inherited handle is parked
in ``_ORPHANED`` and closed only then, because py-lmdb refuses to open files that are still
open in the process. Closing in the child is safe: ``mdb_env_close`` clears only reader slots
of the caller's own pid and the parent's fcntl locks are not inherited.

Settings: ``writemap=False`` (a full disk is an error, not SIGBUS), ``sync=True``,
``metasync=True``; the map grows by doubling on ``MapFullError`` (the whole transaction is
re-run, so write closures must be re-runnable) and ``MapResizedError`` (another process grew
it) is answered with ``set_mapsize(0)`` and a retry.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import lmdb

from dvstore.errors import CorruptionError, StorageError

T = TypeVar("T")

DB_NAMES = ("objects", "blobs", "refs", "datasets", "reflog", "stat_cache", "index", "ops", "meta")
INITIAL_MAP_SIZE = 256 * 1024 * 1024
MAX_READERS = 512

_REGISTRY: dict[tuple[str, int], lmdb.Environment] = {}
_ORPHANED: list[lmdb.Environment] = []
_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    # Park, never close, environments inherited from the parent.
    _ORPHANED.extend(_REGISTRY.values())
    _REGISTRY.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _open_env(path: str, map_size: int) -> lmdb.Environment:
    key = (path, os.getpid())
    with _LOCK:
        env = _REGISTRY.get(key)
        if env is None:
            for old in [e for e in _ORPHANED if e.path() == path]:
                _ORPHANED.remove(old)
                old.close()
            os.makedirs(path, mode=0o700, exist_ok=True)
            try:
                env = lmdb.open(
                    path,
                    map_size=map_size,
                    max_dbs=len(DB_NAMES) + 4,
                    max_readers=MAX_READERS,
                    subdir=True,
                    writemap=False,
                    sync=True,
                    metasync=True,
                    readahead=False,
                    meminit=False,
                    mode=0o600,
                )
                env.reader_check()
            except lmdb.Error as e:
                raise CorruptionError(f"cannot open the store database at {path}: {e}",
                                      hint="run 'dvs fsck' to diagnose") from None
            _REGISTRY[key] = env
        return env


class Database:
    """One store's LMDB environment and its named databases."""

    def __init__(self, path: str, *, map_size: int = INITIAL_MAP_SIZE) -> None:
        self.path = os.path.realpath(path)
        self._map_size = map_size
        self._pid = -1
        self._env: lmdb.Environment | None = None
        self._dbs: dict[str, Any] = {}

    # -- environment ---------------------------------------------------------------

    @property
    def env(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():
            env = _open_env(self.path, self._map_size)
            dbs = {}
            with env.begin(write=True) as txn:
                for name in DB_NAMES:
                    dbs[name] = env.open_db(name.encode(), txn=txn, create=True)
            self._env, self._dbs, self._pid = env, dbs, os.getpid()
        return self._env

    def _db(self, name: str) -> Any:
        self.env  # noqa: B018 -- (re)opens after fork
        return self._dbs[name]

    def map_size(self) -> int:
        return int(self.env.info()["map_size"])

    def _grow(self, at_least: int = 0) -> None:
        env = self.env
        info = env.info()
        new = max(info["map_size"] * 2, at_least)
        env.set_mapsize(new)

    def ensure_room(self, nbytes: int) -> None:
        """Grow the map before a large write so the transaction is not re-run."""
        env = self.env
        stat = env.stat()
        used = env.info()["last_pgno"] * stat["psize"]
        size = env.info()["map_size"]
        need = used + nbytes * 2 + 16 * 1024 * 1024
        if need > size:
            new = size
            while new < need:
                new *= 2
            env.set_mapsize(new)

    # -- transactions --------------------------------------------------------------

    def write(self, fn: Callable[[WriteTxn], T]) -> T:
        """Run ``fn`` in one write transaction and commit it; re-run on map growth."""
        for _ in range(64):
            env = self.env
            try:
                with env.begin(write=True) as raw:
                    result = fn(WriteTxn(raw, self._dbs))
                return result
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                env.set_mapsize(0)
            except lmdb.Error as e:
                raise StorageError(f"store write failed: {e}",
                                   hint="check free disk space; the previous state is intact") from None
        raise StorageError("store write failed: the database map could not grow")

    def read(self, fn: Callable[[ReadTxn], T]) -> T:
        """Run ``fn`` in one read transaction; results must be copied out (they are)."""
        for _ in range(8):
            env = self.env
            try:
                with env.begin(write=False) as raw:
                    return fn(ReadTxn(raw, self._dbs))
            except lmdb.MapResizedError:
                env.set_mapsize(0)
            except lmdb.ReadersFullError:
                raise StorageError("too many concurrent readers of the store") from None
            except lmdb.Error as e:
                raise CorruptionError(f"store read failed: {e}", hint="run 'dvs fsck'") from None
        raise CorruptionError("store read failed: the database map keeps changing")

    def get(self, db: str, key: bytes) -> bytes | None:
        return self.read(lambda t: t.get(db, key))

    def scan(self, db: str, prefix: bytes = b"", limit: int | None = None) -> list[tuple[bytes, bytes]]:
        return self.read(lambda t: list(t.scan(db, prefix, limit)))

    def iter_batches(self, db: str, prefix: bytes = b"", batch: int = 10_000) -> Iterator[list[tuple[bytes, bytes]]]:
        """Iterate a database in batches, each read in its own short transaction."""
        start, skip = prefix, False
        while True:
            n = batch + (1 if skip else 0)
            def page(t: ReadTxn, s: bytes = start, n: int = n) -> list[tuple[bytes, bytes]]:
                return list(t.scan_from(db, s, prefix, n))

            rows = self.read(page)
            if skip and rows and rows[0][0] == start:
                rows = rows[1:]
            if not rows:
                return
            yield rows
            if len(rows) < batch:
                return
            start, skip = rows[-1][0], True

    def reader_check(self) -> int:
        return int(self.env.reader_check())


class ReadTxn:
    """A read transaction that returns copies."""

    __slots__ = ("_t", "_dbs")

    def __init__(self, raw: Any, dbs: dict[str, Any]) -> None:
        self._t = raw
        self._dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        v = self._t.get(key, db=self._dbs[db])
        return None if v is None else bytes(v)

    def exists(self, db: str, key: bytes) -> bool:
        return self._t.get(key, db=self._dbs[db]) is not None

    def scan(self, db: str, prefix: bytes = b"", limit: int | None = None) -> Iterator[tuple[bytes, bytes]]:
        cur = self._t.cursor(db=self._dbs[db])
        if not cur.set_range(prefix):
            return
        n = 0
        for k, v in cur:
            if not k.startswith(prefix):
                break
            yield bytes(k), bytes(v)
            n += 1
            if limit is not None and n >= limit:
                break

    def scan_from(self, db: str, start: bytes, prefix: bytes, limit: int) -> Iterator[tuple[bytes, bytes]]:
        cur = self._t.cursor(db=self._dbs[db])
        if not cur.set_range(start):
            return
        n = 0
        for k, v in cur:
            if not k.startswith(prefix):
                break
            yield bytes(k), bytes(v)
            n += 1
            if n >= limit:
                break

    def last_key(self, db: str, prefix: bytes) -> bytes | None:
        """The largest key starting with ``prefix``, or None."""
        cur = self._t.cursor(db=self._dbs[db])
        if cur.set_range(prefix + b"\xff" * 16):
            ok = cur.prev()
        else:
            ok = cur.last()
        if ok and cur.key().startswith(prefix):
            return bytes(cur.key())
        return None

    def count(self, db: str) -> int:
        return int(self._t.stat(self._dbs[db])["entries"])


class WriteTxn(ReadTxn):
    """A write transaction; committed by ``Database.write`` when the closure returns."""

    __slots__ = ()

    def put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        return bool(self._t.put(key, value, db=self._dbs[db], overwrite=overwrite))

    def delete(self, db: str, key: bytes) -> bool:
        return bool(self._t.delete(key, db=self._dbs[db]))
