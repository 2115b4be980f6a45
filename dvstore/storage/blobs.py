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
import os
import stat
import uuid
from collections.abc import Iterator
from typing import BinaryIO

from dvstore import testhooks
from dvstore.errors import CorruptObjectError, StorageError
from dvstore.hashing import CHUNK, Digest, hash_bytes, is_hex_digest, new_hasher, short
from dvstore.storage.db import Database, WriteTxn

SMALL_MAX = 256 * 1024


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
        self.pending.clear()
        self._pending_bytes = 0

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
        """Copy a large file into the store while hashing it; return its digest.

        ``head_out`` receives the first chunk (for image sniffing) so the file is read once.
        """
        tmp = self._tmp_name()
        h = new_hasher(size)
        try:
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                buf = bytearray(CHUNK * 4)
                view = memoryview(buf)
                first = True
                while True:
                    n = src.readinto(buf)
                    if not n:
                        break
                    chunk = view[:n]
                    if first and head_out is not None:
                        head_out.append(bytes(chunk[:65536]))
                    first = False
                    h.update(chunk)
                    dst.write(chunk)
                dst.flush()
                os.fsync(dst.fileno())
            testhooks.point("after_blob_tmp_write")
            d = h.digest()
            if os.path.exists(self.path_for(d)):
                os.unlink(tmp)
            else:
                self._publish(tmp, d)
            return d
        except OSError as e:
            _unlink_quiet(tmp)
            if e.filename == path or getattr(e, "filename", None) == path:
                raise
            raise storage_error(e, "cannot write blob") from None

    def _tmp_name(self) -> str:
        return os.path.join(self.tmp, f"{uuid.uuid4().hex}.partial")

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


def _unlink_quiet(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
