"""Blob storage: the bytes of item binaries, named by their blake3 digest.

Placement (decided with benchmarks/ingest.py, see docs/design.md): a blob of at most
``SMALL_MAX`` bytes is a value in the ``blobs`` LMDB database, written in the same
transaction as the version that first references it (one fsync for a whole ingest); a
larger blob is a read-only file ``blobs/<2 hex>/<62 hex>``, written to ``tmp/``, fsynced,
linked into place without replacing anything, and its directory fsynced, all before the
transaction that references it (write order step 1).

Reads verify: ``read`` and ``open_verified`` hash what they return and raise
``CorruptObjectError`` on a mismatch; a caller never sees wrong bytes.
"""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from dvstore import testhooks
from dvstore.errors import CorruptObjectError, StorageError
from dvstore.hashing import CHUNK, Digest, hash_bytes, hash_file, hash_path, is_hex_digest, new_hasher, short
from dvstore.storage.db import Database, WriteTxn

if TYPE_CHECKING:  # concurrent.futures imports logging: ~4 ms of every command's start
    from concurrent.futures import Future, ThreadPoolExecutor

SMALL_MAX = 256 * 1024
QUARANTINE = "quarantine"
"""Directory of the store holding blob copies that did not match their names (``quarantine``)."""


def fsync_dir(path: str) -> None:
    """fsync a directory, so a rename or link in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def storage_error(e: OSError, what: str) -> StorageError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageError(f"{what}: no space left ({os.strerror(e.errno)})",
                            hint="free some disk space and run the command again; nothing was changed")
    return StorageError(f"{what}: {e.strerror or e}", hint="the previous state of the store is intact")


class BlobStore:
    """Blobs of one store: small ones in LMDB, large ones as files."""

    def __init__(self, dvs_dir: str, db: Database) -> None:
        self.root = os.path.join(dvs_dir, "blobs")
        self.tmp = os.path.join(dvs_dir, "tmp")
        self.db = db
        self.pending: dict[bytes, bytes] = {}
        self._pending_bytes = 0
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = -1
        self._inflight: list[Future[None]] = []
        self._pool_lock = threading.Lock()  # add_file may run on several threads (ingest)

    # -- naming ----------------------------------------------------------------------

    def path_for(self, digest: bytes) -> str:
        h = digest.hex()
        return os.path.join(self.root, h[:2], h[2:])

    @staticmethod
    def digest_from_path(rel: str) -> Digest | None:
        """Parse "ab/cdef..." back into a digest; None for anything else (dulwich's rule)."""
        parts = rel.split(os.sep)
        if len(parts) != 2 or len(parts[0]) != 2:
            return None
        h = parts[0] + parts[1]
        return Digest(bytes.fromhex(h)) if is_hex_digest(h) else None

    # -- presence --------------------------------------------------------------------

    def has(self, digest: bytes) -> bool:
        if digest in self.pending:
            return True
        if self.db.get("blobs", digest) is not None:
            return True
        return os.path.exists(self.path_for(digest))

    def has_small(self, digest: bytes) -> bool:
        return digest in self.pending or self.db.get("blobs", digest) is not None

    # -- writing ---------------------------------------------------------------------

    def stage_small(self, digest: bytes, data: bytes) -> None:
        """Keep a small blob for the next write transaction (stored only if absent)."""
        if digest not in self.pending:
            self.pending[digest] = data
            self._pending_bytes += len(data)

    def pending_size(self) -> int:
        return self._pending_bytes

    def write_pending(self, txn: WriteTxn) -> None:
        for d, data in self.pending.items():
            txn.put("blobs", d, data, overwrite=False)

    def committed(self) -> None:
        """Forget staged small blobs once a transaction stored them."""
        self.pending.clear()
        self._pending_bytes = 0

    def discard(self) -> None:
        """Abandon an edit: forget staged blobs and let blob files in flight land (or not)."""
        self.committed()
        try:
            self.wait_durable()
        except BaseException:  # a blob file that failed to land is simply absent; nothing uses it
            pass

    def add_bytes(self, data: bytes) -> Digest:
        """Store bytes; small ones are staged, large ones written durably now."""
        d = hash_bytes(data)
        if len(data) <= SMALL_MAX:
            if not self.has_small(d):
                self.stage_small(d, data)
            return d
        if not os.path.exists(self.path_for(d)):
            tmp = self._tmp_name()
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                testhooks.point("after_blob_tmp_write")
                self._publish(tmp, d)
            except OSError as e:
                _unlink_quiet(tmp)
                raise storage_error(e, "cannot write blob") from None
        return d

    def add_file(self, path: str, size: int, head_out: list[bytes] | None = None) -> Digest:
        """Copy a large file into the store; return the digest of the bytes stored.

        The copy is made first (``copy_file_range``: in the kernel, no trip through Python)
        and the digest is taken of the copy, so a file changing under us cannot leave a blob
        that does not match its name. Its fsync and link into place run on a helper thread,
        overlapping the next file; ``wait_durable`` (called before any version is published)
        waits for them. ``head_out`` receives the first 64 KiB, for image sniffing.
        """
        tmp = self._tmp_name()
        fd = -1
        try:
            with open(path, "rb") as src:
                fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                if not _copy_in_kernel(src.fileno(), fd):
                    _copy_in_python(src, fd)
            testhooks.point("after_blob_tmp_write")
            copied = os.fstat(fd).st_size
            d = hash_path(tmp, copied)
            if head_out is not None:
                head_out.append(os.pread(fd, 65536, 0))
        except OSError as e:
            if fd >= 0:
                os.close(fd)
            _unlink_quiet(tmp)
            if getattr(e, "filename", None) == path:
                raise
            raise storage_error(e, "cannot write blob") from None
        self._later(self._finish, fd, tmp, d)
        return d

    def _finish(self, fd: int, tmp: str, d: Digest) -> None:
        """fsync a copied blob and link it into place (on the helper thread)."""
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if os.path.exists(self.path_for(d)):
                os.unlink(tmp)
            else:
                self._publish(tmp, d)
        except OSError as e:
            _unlink_quiet(tmp)
            raise storage_error(e, "cannot write blob") from None

    def _later(self, fn: Callable[..., None], *args: Any) -> None:
        with self._pool_lock:
            if self._pool is None or self._pool_pid != os.getpid():  # a forked child makes its own
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dvs-blob-sync")
                self._pool_pid = os.getpid()
                self._inflight = []
            self._inflight.append(self._pool.submit(fn, *args))

    def wait_durable(self) -> None:
        """Wait until every blob file written so far is fsynced and in place; raise its error."""
        with self._pool_lock:
            inflight, self._inflight = self._inflight, []
        first: BaseException | None = None
        for fut in inflight:
            try:
                fut.result()
            except BaseException as e:  # wait for all before reporting the first failure
                first = first or e
        if first is not None:
            raise first

    def _tmp_name(self) -> str:
        return os.path.join(self.tmp, f"{os.urandom(16).hex()}.partial")

    def _publish(self, tmp: str, digest: bytes) -> None:
        os.chmod(tmp, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        final = self.path_for(digest)
        parent = os.path.dirname(final)
        new_dir = not os.path.isdir(parent)
        if new_dir:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        try:
            os.link(tmp, final)  # never replaces an existing blob
        except FileExistsError:
            pass
        os.unlink(tmp)
        fsync_dir(parent)
        if new_dir:
            fsync_dir(self.root)
        testhooks.point("after_blob_rename")

    # -- reading ---------------------------------------------------------------------

    def size(self, digest: bytes) -> int | None:
        v = self.pending.get(digest) or self.db.get("blobs", digest)
        if v is not None:
            return len(v)
        try:
            return os.stat(self.path_for(digest)).st_size
        except FileNotFoundError:
            return None

    def read(self, digest: bytes) -> bytes:
        """Return the verified bytes of a blob."""
        v = self.pending.get(digest)
        if v is None:
            v = self.db.get("blobs", digest)
        if v is None:
            try:
                with open(self.path_for(digest), "rb") as f:
                    v = f.read()
            except FileNotFoundError:
                raise CorruptObjectError(f"blob {short(digest)} is missing from the store",
                                         hint="run 'dvs fsck'; re-adding the file restores the blob") from None
        if hash_bytes(v) != digest:
            raise CorruptObjectError(f"blob {short(digest)} is corrupt (its bytes do not match its hash)",
                                     hint="run 'dvs fsck --read-data'")
        return v

    def iter_verified(self, digest: bytes) -> Iterator[bytes]:
        """Yield the blob's bytes in chunks; raise CorruptObjectError at the end on mismatch.

        Callers writing the chunks somewhere must discard what they wrote on that error.
        """
        v = self.pending.get(digest) or self.db.get("blobs", digest)
        if v is not None:
            if hash_bytes(v) != digest:
                raise CorruptObjectError(f"blob {short(digest)} is corrupt", hint="run 'dvs fsck --read-data'")
            yield v
            return
        try:
            f: BinaryIO = open(self.path_for(digest), "rb")
        except FileNotFoundError:
            raise CorruptObjectError(f"blob {short(digest)} is missing from the store",
                                     hint="run 'dvs fsck'; re-adding the file restores the blob") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            h = new_hasher(size)
            while True:
                chunk = f.read(CHUNK * 4)
                if not chunk:
                    break
                h.update(chunk)
                yield chunk
        if h.digest() != digest:
            raise CorruptObjectError(f"blob {short(digest)} is corrupt", hint="run 'dvs fsck --read-data'")

    # -- repair (fsck --rebuild) --------------------------------------------------------

    def quarantine(self, digest: bytes) -> list[dict[str, str]]:
        """Move every stored copy of ``digest`` whose bytes do not hash to it into
        ``quarantine/``; return one ``{"blob", "from", "kept"}`` per copy moved.

        Blobs are write-once: a damaged copy is never overwritten, so it must leave its
        place before the right bytes can be added again (``dvs add`` of the original then
        stores them like a missing blob). Nothing is deleted before its bytes are durable in
        ``quarantine/<name hex>.<content hex>`` (a name taken already holds the same bytes),
        so a kill at any point leaves the blob in place, or in both places, or moved:
        running it again finishes the job. A copy that hashes right, or cannot be read, is
        left alone. The caller holds the store lock exclusively (no writer is running).
        """
        moved: list[dict[str, str]] = []
        value = self.db.get("blobs", digest)
        if value is not None and hash_bytes(value) != digest:
            kept = self._keep_aside(digest, hash_bytes(value), value=value)

            def drop(t: WriteTxn) -> None:
                if t.get("blobs", digest) == value:
                    t.delete("blobs", digest)

            testhooks.point("quarantine_after_copy")
            self.db.write(drop)
            moved.append({"blob": digest.hex(), "from": "database", "kept": kept})
        path = self.path_for(digest)
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return moved  # not a blob file (fsck notes it as a stray)
            actual, _ = hash_file(path)  # streamed: an I/O error is an OSError, not a signal
        except OSError:
            return moved  # absent, or unreadable: nothing to move aside (fsck reports it)
        if actual != digest:
            kept = self._keep_aside(digest, actual, path=path)
            testhooks.point("quarantine_after_copy")
            os.unlink(path)
            fsync_dir(os.path.dirname(path))
            moved.append({"blob": digest.hex(), "from": "file", "kept": kept})
        return moved

    def _keep_aside(self, digest: bytes, actual: bytes, *, value: bytes | None = None,
                    path: str | None = None) -> str:
        """Make the bytes durable under ``quarantine/``: a hard link to a blob file, or a
        new file for a database value. Returns the path relative to the store."""
        qdir = os.path.join(os.path.dirname(self.root), QUARANTINE)
        if not os.path.isdir(qdir):
            os.makedirs(qdir, mode=0o700, exist_ok=True)
            fsync_dir(os.path.dirname(qdir))
        name = f"{digest.hex()}.{actual.hex()}"
        final = os.path.join(qdir, name)
        src = path
        if value is not None:
            src = self._tmp_name()
            with open(src, "wb") as f:
                f.write(value)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(src, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
        assert src is not None
        try:
            os.link(src, final)
        except FileExistsError:
            pass  # named by its content: a copy kept by an earlier, interrupted run
        if value is not None:
            os.unlink(src)
        fsync_dir(qdir)
        return os.path.join(QUARANTINE, name)

    def file_digests(self) -> Iterator[tuple[str, Digest | None]]:
        """Yield (path, digest or None for a stray name) of every blob file."""
        if not os.path.isdir(self.root):
            return
        for sub in sorted(os.listdir(self.root)):
            p = os.path.join(self.root, sub)
            if not os.path.isdir(p):
                yield p, None
                continue
            for name in sorted(os.listdir(p)):
                yield os.path.join(p, name), self.digest_from_path(os.path.join(sub, name))


def _copy_in_kernel(src: int, dst: int) -> bool:
    """Copy all of ``src`` to ``dst`` inside the kernel: copy_file_range, else (another file
    system) sendfile. False, with nothing written, when the kernel can do neither here."""
    steps: list[Callable[[], int]] = []
    if hasattr(os, "copy_file_range"):
        steps.append(lambda: os.copy_file_range(src, dst, 1 << 30))
    if hasattr(os, "sendfile"):
        steps.append(lambda: os.sendfile(dst, src, None, 1 << 30))
    for step in steps:
        try:
            while step():
                pass
            return True
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF):
                raise
            os.lseek(src, 0, os.SEEK_SET)
            os.ftruncate(dst, 0)
            os.lseek(dst, 0, os.SEEK_SET)
    return False


def _copy_in_python(src: io.BufferedReader, dst: int) -> None:
    buf = bytearray(CHUNK * 4)
    view = memoryview(buf)
    while n := src.readinto(buf):
        pos = 0
        while pos < n:
            pos += os.write(dst, view[pos:n])


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
