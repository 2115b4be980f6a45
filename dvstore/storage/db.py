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

Compaction (``Database.compact``) replaces ``data.mdb`` by a compacted copy while no other
process has the environment open; see its docstring for the locking argument.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import lmdb

from dvstore import testhooks
from dvstore.errors import CorruptionError, StorageError

T = TypeVar("T")

DB_NAMES = ("objects", "blobs", "refs", "datasets", "reflog", "stat_cache", "index", "ops", "meta")
INITIAL_MAP_SIZE = 256 * 1024 * 1024
MAX_READERS = 512

_REGISTRY: dict[tuple[str, int], lmdb.Environment] = {}
_ORPHANED: list[lmdb.Environment] = []
_LOCK = threading.Lock()
_HELD: dict[tuple[str, int], int] = {}
"""Descriptors of ``lock.mdb`` a compaction locked and must keep open: POSIX record locks
belong to the process, and closing any descriptor of the file drops all of them, LMDB's own
lock included. Closed only once the environment they were taken for is closed."""
_EPOCH = [0]
"""Bumped when a compaction closes an environment, so every ``Database`` reopens it."""


def _after_fork_in_child() -> None:
    # Park, never close, environments inherited from the parent.
    _ORPHANED.extend(_REGISTRY.values())
    _REGISTRY.clear()
    # The child holds no record locks (they are not inherited): closing these now is
    # harmless, closing them later would drop the child's own environment's lock.
    for fd in _HELD.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


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
            for attempt in range(_OPEN_ATTEMPTS):
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
                    break
                except lmdb.InvalidParameterError as e:
                    # An empty lock file: a compaction died after emptying it while another
                    # process was waiting to open (Database.compact). Once the waiters have let
                    # go, the next open is alone and re-initialises it.
                    if attempt + 1 < _OPEN_ATTEMPTS:
                        time.sleep(0.05 * (attempt + 1))
                        continue
                    raise CorruptionError(f"cannot open the store database at {path}: {e}",
                                          hint="if a 'dvs gc --compact' was just interrupted, run the command "
                                               "again; otherwise run 'dvs fsck' to diagnose") from None
                except lmdb.Error as e:
                    raise CorruptionError(f"cannot open the store database at {path}: {e}",
                                          hint="run 'dvs fsck' to diagnose") from None
            assert env is not None
            _REGISTRY[key] = env
        return env


_OPEN_ATTEMPTS = 6


def _close_env(key: tuple[str, int]) -> None:
    """Close this process's environment for ``key`` (it drops LMDB's record lock with it)."""
    with _LOCK:
        env = _REGISTRY.pop(key, None)
        if env is not None:
            env.close()
        fd = _HELD.pop(key, None)
        if fd is not None:
            os.close(fd)  # after the close: no lock of this process is left to drop
        _EPOCH[0] += 1


def _lock_lockfile(fd: int) -> bool:
    """Take LMDB's lock-file byte exclusively for this process, without waiting.

    Every process with the environment open holds that byte shared for as long as it has it
    open, and a process opening it waits for it while another holds it exclusively.
    """
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0, os.SEEK_SET)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EAGAIN):
            return False
        raise
    return True


def _pages(page: Callable[[bytes, int], list[tuple[bytes, bytes]]], prefix: bytes,
           batch: int) -> Iterator[list[tuple[bytes, bytes]]]:
    """Rows under ``prefix`` in batches; ``page(start, n)`` reads up to n rows from ``start``
    in a transaction of its own (each batch after the first starts at the last row again)."""
    start, skip = prefix, False
    while True:
        rows = page(start, batch + (1 if skip else 0))
        if skip and rows and rows[0][0] == start:
            rows = rows[1:]
        if not rows:
            return
        yield rows
        if len(rows) < batch:
            return
        start, skip = rows[-1][0], True


def _read_head(path: str, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _fsync_path(path: str, *, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY) if directory else os.O_RDWR)
    try:
        if not directory:
            os.fchmod(fd, 0o600)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class CompactResult:
    """What ``Database.compact`` did: ``data.mdb`` sizes, and why it did nothing if it did not."""

    compacted: bool
    bytes_before: int
    bytes_after: int
    skipped: str | None = None


COMPACT_PREFIX = "compact-"
"""Work directories of ``Database.compact`` under the caller's temp directory."""


class Database:
    """One store's LMDB environment and its named databases."""

    def __init__(self, path: str, *, map_size: int = INITIAL_MAP_SIZE) -> None:
        self.path = os.path.realpath(path)
        self._map_size = map_size
        self._pid = -1
        self._epoch = -1
        self._env: lmdb.Environment | None = None
        self._dbs: dict[str, Any] = {}

    # -- environment ---------------------------------------------------------------

    @property
    def env(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid() or self._epoch != _EPOCH[0]:
            epoch = _EPOCH[0]
            env = _open_env(self.path, self._map_size)
            dbs = {}
            with env.begin(write=True) as txn:
                for name in DB_NAMES:
                    dbs[name] = env.open_db(name.encode(), txn=txn, create=True)
            self._env, self._dbs, self._pid, self._epoch = env, dbs, os.getpid(), epoch
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
        def page(start: bytes, n: int) -> list[tuple[bytes, bytes]]:
            return self.read(lambda t: list(t.scan_from(db, start, prefix, n)))

        return _pages(page, prefix, batch)

    def reader_check(self) -> int:
        return int(self.env.reader_check())

    def close(self) -> None:
        """Close this process's environment of the path (every handle reopens it on use)."""
        _close_env((self.path, os.getpid()))
        self._env = None

    def file_size(self) -> int:
        """Bytes of ``data.mdb`` (LMDB never shrinks it; ``compact`` does)."""
        try:
            return os.stat(os.path.join(self.path, "data.mdb")).st_size
        except FileNotFoundError:
            return 0

    # -- compaction ------------------------------------------------------------------

    def compact(self, tmp_root: str) -> CompactResult:
        """Replace ``data.mdb`` by a compacted copy, or skip when another process has it open.

        Why: LMDB never returns pages to the file system; after a big delete its free-page
        list is rewritten by every commit (measured: a small write costs ~1.1 ms instead of
        ~0.15 ms after a 1,000,000-item build). A compacted copy has no free pages.

        The caller must hold the store lock *exclusive* (no dvstore writer runs). Readers
        (``dvs ls``, ``show``, ...) take no store lock, so exclusivity against every process
        comes from LMDB's own lock file: each process holds byte 0 of ``lock.mdb`` shared
        (an fcntl record lock) from opening the environment until closing it, and an opener
        waits while another process holds it exclusive. Steps:

        1. Take that byte exclusive (this process's shared lock is upgraded). If another
           process holds it, skip: nothing was done. Now nobody else has the environment
           open or can open it.
        2. ``env.copy(tmp_root/compact-<uuid>/, compact=True)``; fsync the copy (mode 0600)
           and its directory; check every database's entry count against the live one.
        3. Close the environment (closing drops all of this process's locks on the file),
           take the byte exclusive again and check that the meta pages of ``data.mdb`` are
           unchanged (nobody committed in between); else skip.
        4. Truncate ``lock.mdb`` to zero, ``os.replace`` the copy over ``data.mdb``, fsync
           ``db/``.
        5. Reopen while still holding the byte: LMDB finds itself alone and re-initialises
           the lock file from the new meta pages before sharing it. The descriptor is kept
           open (closing it would drop LMDB's lock) until the environment is next closed.

        Crash safety: before step 4's rename the old ``data.mdb`` is untouched; after it the
        new one is complete and durable (fsynced before the rename). The reader table and
        transaction id in ``lock.mdb`` describe the old file, which is why it is emptied
        first: a process that was waiting to open when this one died then fails to open
        (``_open_env`` retries), instead of using stale state with the new file; the first
        process to open alone re-initialises it. ``compact-*`` directories left by a crash
        are the caller's to remove (gc does).
        """
        data = os.path.join(self.path, "data.mdb")
        key = (self.path, os.getpid())
        env = self.env
        before = self.file_size()

        def skipped(why: str) -> CompactResult:
            return CompactResult(False, before, self.file_size(), why)

        busy = "another process has the store database open (a running dvs command); try again when it has finished"
        os.makedirs(tmp_root, mode=0o700, exist_ok=True)
        if os.stat(tmp_root).st_dev != os.stat(self.path).st_dev:
            return skipped(f"{tmp_root} is not on the file system of {self.path}: the copy could not be renamed")
        fd = os.open(os.path.join(self.path, "lock.mdb"), os.O_RDWR | os.O_CLOEXEC)
        if not _lock_lockfile(fd):
            _close_env(key)  # first: closing fd while the environment is open would drop its lock
            os.close(fd)
            return skipped(busy)
        work = os.path.join(tmp_root, f"{COMPACT_PREFIX}{os.urandom(16).hex()}")
        try:
            counts = self.read(lambda t: {n: t.count(n) for n in DB_NAMES})
            psize = int(env.stat()["psize"])
            metas = _read_head(data, 2 * psize)
            ino = os.stat(data).st_ino
            os.makedirs(work, mode=0o700)
            try:
                env.copy(work, compact=True)
            except lmdb.Error as e:
                raise StorageError(f"compacting the store database failed: {e}",
                                   hint="check free disk space; the database was not replaced") from None
            copy = os.path.join(work, "data.mdb")
            _fsync_path(copy)
            _fsync_path(work, directory=True)
            _check_copy(work, counts)
            testhooks.point("compact_after_copy")
        except BaseException:
            _close_env(key)
            os.close(fd)
            shutil.rmtree(work, ignore_errors=True)
            raise
        _close_env(key)
        if not _lock_lockfile(fd) or os.stat(data).st_ino != ino or _read_head(data, 2 * psize) != metas:
            os.close(fd)
            shutil.rmtree(work, ignore_errors=True)
            return skipped(busy)
        try:
            os.ftruncate(fd, 0)
            testhooks.point("compact_after_truncate")
            os.replace(copy, data)
            _fsync_path(self.path, directory=True)
            testhooks.point("compact_after_replace")
            self.env  # noqa: B018 -- reopens alone: LMDB re-initialises the lock file
        except BaseException:
            os.close(fd)  # the lock file is empty: the next process alone re-initialises it
            raise
        with _LOCK:
            _HELD[key] = fd
        testhooks.point("compact_after_reopen")
        shutil.rmtree(work, ignore_errors=True)
        return CompactResult(True, before, self.file_size())


def _check_copy(path: str, counts: dict[str, int]) -> None:
    """The compacted copy at ``path`` opens and has the live databases' entry counts."""
    try:
        c = lmdb.open(path, readonly=True, lock=False, subdir=True, max_dbs=len(DB_NAMES) + 4)
    except lmdb.Error as e:
        raise StorageError(f"the compacted copy does not open: {e}", hint="the database was not replaced") from None
    try:
        got = {}
        for name in DB_NAMES:
            db = c.open_db(name.encode(), create=False)
            with c.begin() as t:
                got[name] = int(t.stat(db)["entries"])
    except lmdb.Error as e:
        raise StorageError(f"the compacted copy is unreadable: {e}", hint="the database was not replaced") from None
    finally:
        c.close()
    if got != counts:
        raise StorageError(f"the compacted copy differs from the database ({got} != {counts})",
                           hint="the database was not replaced")


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


SCRATCH_PREFIX = "scratch-"
_SCRATCH_DBS: dict[str, Any] = {"": None}  # a scratch file has only LMDB's main database


class Scratch:
    """A private, throwaway key-value table on disk, for work too big to keep in memory.

    One LMDB file in the store's ``tmp/`` that only this object uses: no lock file, no
    fsync (nothing in it must survive a crash; gc removes a killed process's file from
    ``tmp/``), and it is deleted by ``close``. Created on the first write. Not for use across
    ``fork()``.

    Unlike the store, it writes through the map (``writemap``): random-key inserts dirty
    pages all over the tree, and without it LMDB would keep each transaction's dirty pages
    in private memory (and reuse that memory only for later transactions), which grows
    with the table. The file is fully allocated (``posix_fallocate``) before the map may
    touch it, so a full disk is an error here, never a SIGBUS.
    """

    def __init__(self, tmpdir: str) -> None:
        self.tmpdir = tmpdir
        self.path: str | None = None
        self._env: lmdb.Environment | None = None
        self._drop: weakref.finalize | None = None  # type: ignore[type-arg]
        # One read transaction serves every read between two writes (a COCO spill reads
        # once or twice per image): opening one per read cost more than the read. Ended
        # before each write, which must not run beside a reader (no lock file).
        self._reader: ReadTxn | None = None

    def _open(self) -> lmdb.Environment:
        if self._env is None:
            os.makedirs(self.tmpdir, exist_ok=True)
            self.path = os.path.join(self.tmpdir, f"{SCRATCH_PREFIX}{os.getpid()}-{os.urandom(16).hex()}.mdb")
            size = 64 * 1024 * 1024
            try:
                # LMDB writes its header with write(2); the map touches nothing before _reserve.
                env = lmdb.open(self.path, subdir=False, lock=False, sync=False, metasync=False,
                                map_size=size, max_dbs=0, readahead=False,
                                writemap=True, meminit=False, mode=0o600)
            except lmdb.Error as e:
                _unlink(self.path)
                raise StorageError(f"cannot create a scratch file in {self.tmpdir}: {e}",
                                   hint="check free disk space") from None
            # Deleted by close(), or when this object is collected, or at exit.
            self._drop = weakref.finalize(self, _drop_scratch, env, self.path, os.getpid())
            self._reserve(size)
            self._env = env
        return self._env

    def _reserve(self, size: int) -> None:
        assert self.path is not None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)
        except OSError as e:
            raise StorageError(f"cannot grow a scratch file in {self.tmpdir}: {e.strerror}",
                               hint="check free disk space") from None

    def _read(self) -> ReadTxn:
        if self._reader is None:
            assert self._env is not None
            self._reader = ReadTxn(self._env.begin(), _SCRATCH_DBS)
        return self._reader

    def _end_read(self) -> None:
        if self._reader is not None:
            self._reader._t.abort()
            self._reader = None

    def put_many(self, rows: list[tuple[bytes, bytes]]) -> None:
        """Store ``rows`` (best sorted by key) in one transaction, replacing equal keys."""
        env = self._open()
        self._end_read()
        for _ in range(64):
            try:
                with env.begin(write=True) as t:
                    for k, v in rows:
                        t.put(k, v)
                return
            except lmdb.MapFullError:
                size = env.info()["map_size"] * 2
                self._reserve(size)
                env.set_mapsize(size)
            except lmdb.Error as e:
                raise StorageError(f"scratch write failed: {e}", hint="check free disk space") from None
        raise StorageError("scratch write failed: its map could not grow")

    def get(self, key: bytes) -> bytes | None:
        if self._env is None:
            return None
        return self._read().get("", key)

    def scan(self, prefix: bytes, batch: int = 4096) -> Iterator[tuple[bytes, bytes]]:
        """Rows whose key starts with ``prefix``, in key order (read in short batches, so
        that writes may come between them)."""
        if self._env is None:
            return

        def page(start: bytes, n: int) -> list[tuple[bytes, bytes]]:
            return list(self._read().scan_from("", start, prefix, n))

        for rows in _pages(page, prefix, batch):
            yield from rows

    def close(self) -> None:
        """Close and delete the file."""
        self._end_read()
        if self._drop is not None:
            self._drop()
        self._env = self._drop = None
        self.path = None


def drop_scratch_of(tmpdir: str, pid: int) -> None:
    """Delete the scratch tables a process left in ``tmpdir`` (one killed before its
    ``Scratch.close``); one already gone (gc) is fine."""
    for left in glob.glob(os.path.join(glob.escape(tmpdir), f"{SCRATCH_PREFIX}{pid}-*.mdb")):
        _unlink(left)


def _drop_scratch(env: lmdb.Environment, path: str, pid: int) -> None:
    if os.getpid() != pid:
        return  # a forked child: the file is its parent's
    env.close()
    _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
