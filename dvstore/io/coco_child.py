"""Reading a COCO file in a forked child while the parent stores the files it describes.

``dvs add --annotations coco.json`` has two CPU-bound jobs that do not depend on each other
until the end: parsing the COCO file, and reading, hashing and recording every file. Python
threads would take turns on one core (both are mostly interpreter work), so the COCO file
is read by a child process (``fork``: nothing to pickle, nothing to import again) that sends
its result back over a pipe as length-prefixed frames of canonical msgpack:

* first, once the whole file is parsed and checked: ``["ok", labels]`` or
  ``["error", error class name, message, hint]``;
* then frames of up to ``BATCH`` images: ``[[file_name, [[coco_id, head, tail], ...]],
  ...]``, each annotation as ``coco.EncodedAnnotation.split`` gives it: all the parent
  adds is the annotation id, which depends on the item's id.

The parent calls ``poll`` between batches of files, so a malformed COCO file still fails
the command early, and ``result`` at the end. Where ``fork`` is missing (or
``DVS_NO_FORK=1``) the file is read in the parent, at once.
"""

from __future__ import annotations

import os
import select
import signal
import struct
from typing import Any, BinaryIO

from dvstore import codec, errors
from dvstore.errors import DvsError, ImportFormatError
from dvstore.io import coco

_LEN = struct.Struct(">I")
_MAX_FRAME = 1 << 30
BATCH = 1024


class CocoReader:
    """A COCO file being read in the background.

    ``result()`` gives a ``CocoImport`` whose ``by_file`` maps each image's file name to its
    annotations as ``[coco_id, head, tail]`` (``coco.EncodedAnnotation.split``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._pid = 0
        self._pipe: BinaryIO | None = None
        self._labels: list[str] | None = None
        self._done: coco.CocoImport | None = None
        if not hasattr(os, "fork") or os.environ.get("DVS_NO_FORK") == "1":
            imp = coco.load_coco(path, encoded=True)
            self._done = coco.CocoImport(labels=imp.labels, by_file={
                name: [[a.coco_id, *a.split()] for a in anns] for name, anns in imp.by_file.items()})
            return
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(r)
            _child(path, w)
        os.close(w)
        self._pid = pid
        self._pipe = os.fdopen(r, "rb", buffering=1 << 20)

    def __enter__(self) -> CocoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self) -> None:
        """If the child has finished: raise its error, or take its result now.

        Taking it as soon as it is ready lets the child exit: otherwise it would hold its
        copy of the result (and the file's text) until the parent's last file.
        """
        if self._pipe is not None and self._labels is None:
            poller = select.poll()  # not select(): descriptors past 1024 are fine
            poller.register(self._pipe.fileno(), select.POLLIN | select.POLLHUP)
            if poller.poll(0):
                self.result()

    def result(self) -> coco.CocoImport:
        """The import (waits for the child)."""
        if self._done is None:
            if self._labels is None:
                self._status()
            assert self._pipe is not None and self._labels is not None
            by_file: dict[str, list[Any]] = {}
            while (frame := _read_frame(self._pipe, self.path)) is not None:
                by_file.update(frame)
            self.close()
            self._done = coco.CocoImport(labels=self._labels, by_file=by_file)
        return self._done

    def _status(self) -> None:
        assert self._pipe is not None
        frame = _read_frame(self._pipe, self.path)
        if frame is None:
            self.close()
            raise ImportFormatError(f"{self.path}: the COCO reader stopped without an answer",
                                    hint="try again with DVS_NO_FORK=1 to read it in the main process")
        if frame[0] == "error":
            _, name, message, hint = frame
            self.close()
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, DvsError)):
                cls = ImportFormatError
            raise cls(message, hint=hint)
        self._labels = list(frame[1])

    def close(self) -> None:
        """Stop the child if it still runs and reap it."""
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._pid:
            try:
                os.kill(self._pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self._pid, 0)
            self._pid = 0


def _child(path: str, fd: int) -> None:
    code = 0
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as out:
            try:
                imp = coco.load_coco(path, encoded=True)
            except DvsError as e:
                _write_frame(out, ["error", type(e).__name__, e.message, e.hint])
                return
            except (MemoryError, RecursionError) as e:
                _write_frame(out, ["error", "ImportFormatError", f"{path}: cannot read: {type(e).__name__}", None])
                return
            _write_frame(out, ["ok", imp.labels])
            batch: list[Any] = []
            for name, anns in imp.by_file.items():
                batch.append([name, [[a.coco_id, *a.split()] for a in anns]])
                if len(batch) == BATCH:
                    _write_frame(out, batch)
                    batch = []
            if batch:
                _write_frame(out, batch)
    except BaseException:  # the parent went away (EPIPE) or a signal: nothing to report
        code = 1
    finally:
        os._exit(code)


def _write_frame(out: BinaryIO, value: Any) -> None:
    data = codec.encode_canonical(value)
    out.write(_LEN.pack(len(data)))
    out.write(data)


def _read_frame(pipe: BinaryIO, path: str) -> Any:
    head = pipe.read(_LEN.size)
    if not head:
        return None
    (n,) = _LEN.unpack(head)
    data = pipe.read(n) if n <= _MAX_FRAME else b""
    if len(head) != _LEN.size or len(data) != n:
        raise ImportFormatError(f"{path}: the COCO reader's answer was cut short")
    return codec.decode(data, max_len=1 << 31)
