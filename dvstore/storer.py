"""Reading, hashing and storing an ingest's small files, in forked helper processes.

``dvs add`` records each file as an item in the main process. Reading, hashing and storing
its bytes is the other half of the work, and it does not need the editor: only the file's
blob id, size, mimetype and image size come back. Measured on 20,000 files of 2-8 KiB, the
main loop took 0.55 s with a reader thread and 0.37 s of its own work: the thread's Python
parts and the interpreter lock they share cost the rest, and an LMDB commit (with its
fsync) holds that lock too. In child processes (``childproc``; two of them, ``Pair``) the
two halves run on two cores.

The child stores what it reads: small blobs and their stat-cache rows go into the store in
transactions of 16 MiB, like any blobs written ahead of a version (harmless garbage until a
version names them; gc collects them after its grace period). ``wait`` returns once the
last of those transactions is committed, so the version, published after it, only ever
names blobs that are durable (write order step 1).

Frames (``childproc``):

* parent to child: ``["files", [local path, ...]]``, one per window of files; ``["end"]``
  once there are no more (``end``: it commits its last blobs while the caller finishes the
  annotations); then, maybe, ``["objects", [[id, stored value], ...]]``: structured objects
  to store (``store_objects``: the annotation sets of a big import, so that their commits
  too run beside the main process's work). The end of the pipe lets the child go.
* child to parent: ``["ok", [[blob, size, mimetype, system], ...]]`` for each chunk of up to
  ``CHUNK`` files, in the order asked; ``["done"]`` after ``["end"]`` once everything is
  committed, and ``["stored"]`` after each ``["objects"]`` once it is committed (``wait``
  reads them all); ``["error", ...]`` (a file that cannot be read, a full disk) instead.

Where ``fork`` is missing, or ``DVS_NO_FORK=1``, ``Inline`` does the same work in the main
process as each result is asked for.
"""

from __future__ import annotations

import os
import time
from typing import Any, BinaryIO

from dvstore import childproc
from dvstore.errors import StorageError, UsageError
from dvstore.hashing import Digest, hash_bytes
from dvstore.io import imageinfo
from dvstore.repo import Repository
from dvstore.statcache import cache_key, stat_entry
from dvstore.storage.blobs import SMALL_MAX
from dvstore.storage.db import WriteTxn

CHUNK = 64
FLUSH_BYTES = 16 * 1024 * 1024

Stored = tuple[Digest, int, str, dict[str, Any]]  # blob, size, mimetype, intrinsic system metadata


class _Batch:
    """Small blobs, stat-cache rows and objects waiting for their transaction."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.rows: dict[bytes, bytes] = {}
        self.objects: dict[bytes, bytes] = {}
        self.objects_size = 0

    def store(self, local: str) -> Stored:
        """Read, hash, sniff and stage one file."""
        blobs = self.repo.blobs
        try:
            fd = os.open(local, os.O_RDONLY | os.O_CLOEXEC)
            try:
                st = os.fstat(fd)
                # Exact size (+1 to see growth): os.read(fd, 1 MiB) would allocate 1 MiB per file.
                data = os.read(fd, st.st_size + 1)
                if len(data) > st.st_size:
                    data += _read_rest(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise UsageError(f"cannot read {local}: {e.strerror}") from None
        if len(data) > SMALL_MAX:  # grew since the caller's stat: store what was read, as a file
            blob = blobs.add_bytes(data)
        else:
            blob = hash_bytes(data)
            blobs.stage_small(blob, data)  # a blob already stored is not written again
        mimetype, system = imageinfo.sniff(data[: imageinfo.HEAD_BYTES], local)
        self.rows[cache_key(local)] = stat_entry(st, time.time_ns(), blob, mimetype, system)
        if blobs.pending_size() >= FLUSH_BYTES:
            self.commit()
        return blob, len(data), mimetype, system

    def store_objects(self, objects: list[list[bytes]]) -> None:
        """Store structured objects (``[id, stored value]``, made by the parent) with what
        is staged, in one transaction: each batch is a write-ahead batch already."""
        for oid, raw in objects:
            self.objects[oid] = raw
            self.objects_size += len(raw)
        self.commit()

    def commit(self) -> None:
        """Store what is staged, in one transaction."""
        blobs, db = self.repo.blobs, self.repo.db
        if not blobs.pending and not self.rows and not self.objects:
            return

        def put(t: WriteTxn) -> None:
            # Stat-cache rows ride with the blobs they name (lookup_stat ignores a row whose
            # blob is gone), so neither waits in memory for the version.
            blobs.write_pending(t)
            for k, v in self.rows.items():
                t.put("stat_cache", k, v)
            for oid, raw in self.objects.items():
                t.put("objects", oid, raw, overwrite=False)

        db.ensure_room(blobs.pending_size() + len(self.rows) * 256 + self.objects_size)
        db.write(put)
        blobs.committed()
        self.rows.clear()
        self.objects.clear()
        self.objects_size = 0


def _read_rest(fd: int) -> bytes:
    parts = []
    while chunk := os.read(fd, 1 << 20):
        parts.append(chunk)
    return b"".join(parts)


class Storer:
    """What ``dvs add`` asks of a storer: ``submit`` a window's small files, ``next`` for each
    one's (blob, size, mimetype, system) in that order, ``end`` and ``wait`` once there are no
    more; ``close`` (or leaving the ``with``) stops it whatever state it is in."""

    def __enter__(self) -> Storer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, paths: list[str]) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        """Would ``next`` answer without waiting?"""
        raise NotImplementedError

    def next(self) -> Stored:
        raise NotImplementedError

    def store_objects(self, objects: dict[bytes, bytes]) -> None:
        """After ``end``: store structured objects (``{id: stored value}``), durable once
        ``wait`` returns, unreadable before (``ObjectStore.writing_ahead``'s ``to``)."""
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class Inline(Storer):
    """The storer's work done in the calling process, a file at a time."""

    def __init__(self, repo: Repository) -> None:
        self._batch = _Batch(repo)
        self._todo: list[str] = []
        self._pos = 0

    def submit(self, paths: list[str]) -> None:
        """Queue files to store; ``next`` gives their results in this order."""
        self._todo, self._pos = self._todo[self._pos:] + paths, 0

    def ready(self) -> bool:
        return True  # the work is done when asked for

    def next(self) -> Stored:
        self._pos += 1
        return self._batch.store(self._todo[self._pos - 1])

    def store_objects(self, objects: dict[bytes, bytes]) -> None:
        self._batch.store_objects([[oid, raw] for oid, raw in objects.items()])

    def end(self) -> None:
        """Commit everything stored so far."""
        self._batch.commit()

    def wait(self) -> None:
        """Nothing to wait for: ``end`` committed."""

    def close(self) -> None:
        self._todo = []


class Forked(Storer):
    """The storer's work done in a child process, running ahead of the caller."""

    def __init__(self, repo: Repository) -> None:
        self._child = childproc.Child(lambda inp, out: _serve(repo, inp, out), talk_back=True)
        self._chunk: list[Any] = []
        self._pos = 0
        self._batches = 0  # of objects sent: one ["stored"] each to read

    def submit(self, paths: list[str]) -> None:
        """Ask for files to be stored; ``next`` gives their results in this order.

        Call it again only once ``next`` has given every result asked for before: the child
        waits for this frame while nothing else is in flight, so neither side blocks the other.
        """
        assert self._child.inp is not None
        try:
            childproc.write_frame(self._child.inp, ["files", paths])
            self._child.inp.flush()
        except BrokenPipeError:
            self._answer()  # the child stopped: its error, if it left one
            raise self._stopped() from None

    def ready(self) -> bool:
        """Would ``next`` answer without waiting for the child?"""
        return self._pos < len(self._chunk) or self._child.ready()

    def next(self) -> Stored:
        if self._pos == len(self._chunk):
            frame = self._answer()
            if frame is None or frame[0] != "ok":
                raise self._stopped()
            self._chunk, self._pos = frame[1], 0
        self._pos += 1
        blob, size, mimetype, system = self._chunk[self._pos - 1]
        return Digest(blob), size, mimetype, system

    def store_objects(self, objects: dict[bytes, bytes]) -> None:
        """Send objects to store (after ``end``: the child is then reading, and its answers
        are a few bytes each, so this never waits on a child waiting on this process)."""
        self._send(["objects", [[oid, raw] for oid, raw in objects.items()]])
        self._batches += 1

    def end(self) -> None:
        """Tell the child there are no more files: it commits what it stored (``wait``)."""
        self._send(["end"])

    def _send(self, frame: list[Any]) -> None:
        assert self._child.inp is not None
        try:
            childproc.write_frame(self._child.inp, frame)
            self._child.inp.flush()
        except BrokenPipeError:
            pass  # the child stopped: the answer ``wait`` reads says why

    def wait(self) -> None:
        """Wait until the child has committed everything it stored, then let it go."""
        frame = self._answer()
        if frame != ["done"]:
            raise self._stopped()
        for _ in range(self._batches):
            if self._answer() != ["stored"]:
                raise self._stopped()
        self._child.release()  # the end of its input lets it go; its exit overlaps our work

    def close(self) -> None:
        self._child.close()

    def _answer(self) -> Any:
        """The child's next frame (None: it is gone); raises the error it reported."""
        out = self._child.out
        if out is None:
            return None
        frame = childproc.read_frame(out, self._stopped)
        if frame is not None and frame[0] == "error":
            self.close()
            childproc.raise_error(frame, StorageError)
        return frame

    @staticmethod
    def _stopped() -> StorageError:
        return StorageError("the process storing the files stopped without an answer",
                            hint="nothing was changed; try again, or with DVS_NO_FORK=1 to store them "
                                 "in the main process")


def _serve(repo: Repository, inp: BinaryIO | None, out: BinaryIO) -> None:
    """The child: store the files each frame names until ``["end"]``."""
    assert inp is not None
    batch = _Batch(repo)
    cut = lambda: StorageError("the list of files to store was cut short")  # noqa: E731
    while (frame := childproc.read_frame(inp, cut, own=True)) is not None:
        if frame[0] == "end":
            batch.commit()
            childproc.write_frame(out, ["done"])
            out.flush()
            continue  # objects may follow; the end of the pipe ends it
        if frame[0] == "objects":  # a batch the parent wrote ahead: committed at once
            batch.store_objects(frame[1])
            childproc.write_frame(out, ["stored"])
            out.flush()
            continue
        done: list[Stored] = []
        for local in frame[1]:
            done.append(batch.store(local))
            if len(done) == CHUNK:
                childproc.write_frame(out, ["ok", done])
                out.flush()
                done = []
        if done:
            childproc.write_frame(out, ["ok", done])
            out.flush()
    # The parent went away without "end": nothing of ours is named by any version.


class Pair(Storer):
    """Two forked storers taking turns, a chunk of files each.

    One storer alone is the slower half of an ingest: an LMDB commit (its fsync included)
    holds the storer's interpreter lock, so it reads nothing meanwhile. Two storers overlap
    one's commit with the other's reading; their transactions take turns on LMDB's writer
    lock. Chunk ``c`` of the files asked for goes to storer ``c % 2``, and each answers
    in chunks of ``CHUNK`` files, so their answers interleave back in order.
    """

    def __init__(self, repo: Repository) -> None:
        self._pair: list[Forked] = []
        try:
            for _ in range(2):
                self._pair.append(Forked(repo))
        except BaseException:
            self.close()
            raise
        self._pos = 0
        self._turn = 0

    def submit(self, paths: list[str]) -> None:
        chunks = [paths[i:i + CHUNK] for i in range(0, len(paths), CHUNK)]
        for k, child in enumerate(self._pair):
            child.submit([p for chunk in chunks[k::2] for p in chunk])
        self._pos = 0

    def ready(self) -> bool:
        """Would ``next`` answer without waiting?"""
        return self._pair[(self._pos // CHUNK) % 2].ready()

    def next(self) -> Stored:
        child = self._pair[(self._pos // CHUNK) % 2]
        self._pos += 1
        return child.next()

    def store_objects(self, objects: dict[bytes, bytes]) -> None:
        """Each batch to the storer whose turn it is: their commits take turns too."""
        self._pair[self._turn].store_objects(objects)
        self._turn ^= 1

    def end(self) -> None:
        """No more files: each storer commits what it stored (``wait`` for them)."""
        for child in self._pair:
            child.end()

    def wait(self) -> None:
        """Wait until both storers have committed everything they stored."""
        for child in self._pair:
            child.wait()

    def close(self) -> None:
        for child in self._pair:
            child.close()


def start(repo: Repository) -> Storer:
    """A storer for ``repo``: two child processes where ``fork`` is there, else ``Inline``."""
    return Pair(repo) if childproc.can_fork() else Inline(repo)
