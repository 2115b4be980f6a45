"""Reading a COCO file in a forked child while the parent stores the files it describes.

``dvs add --annotations coco.json`` has two CPU-bound jobs that do not depend on each other
until the end: parsing the COCO file, and reading, hashing and recording every file. Python
threads would take turns on one core (both are mostly interpreter work), so the COCO file
is read by a child process (``childproc``) that sends its result back over a pipe as
frames:

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

from typing import Any, BinaryIO

from dvstore import childproc
from dvstore.errors import ImportFormatError
from dvstore.io import coco

BATCH = 1024


class CocoReader:
    """A COCO file being read in the background.

    ``result()`` gives a ``CocoImport`` whose ``by_file`` maps each image's file name to its
    annotations as ``[coco_id, head, tail]`` (``coco.EncodedAnnotation.split``).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._child: childproc.Child | None = None
        self._labels: list[str] | None = None
        self._done: coco.CocoImport | None = None
        if not childproc.can_fork():
            imp = coco.load_coco(path, encoded=True)
            self._done = coco.CocoImport(labels=imp.labels, by_file={
                name: [[a.coco_id, *a.split()] for a in anns] for name, anns in imp.by_file.items()})
            return
        self._child = childproc.Child(lambda _inp, out: _child(path, out))

    @property
    def _pid(self) -> int:
        return self._child.pid if self._child is not None else 0

    def __enter__(self) -> CocoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self) -> None:
        """If the child has finished: raise its error, or take its result now.

        Taking it as soon as it is ready lets the child exit: otherwise it would hold its
        copy of the result (and the file's text) until the parent's last file.
        """
        if self._child is not None and self._labels is None and self._child.ready():
            self.result()

    @property
    def ready(self) -> bool:
        """Has the result been taken (``poll`` or ``result``)?"""
        return self._done is not None

    def result(self) -> coco.CocoImport:
        """The import (waits for the child)."""
        if self._done is None:
            if self._labels is None:
                self._status()
            assert self._child is not None and self._child.out is not None and self._labels is not None
            by_file: dict[str, list[Any]] = {}
            while (frame := self._read()) is not None:
                by_file.update(frame)
            self.close()
            self._done = coco.CocoImport(labels=self._labels, by_file=by_file)
        return self._done

    def _read(self) -> Any:
        assert self._child is not None and self._child.out is not None
        return childproc.read_frame(self._child.out, lambda: ImportFormatError(
            f"{self.path}: the COCO reader's answer was cut short"))

    def _status(self) -> None:
        frame = self._read()
        if frame is None:
            self.close()
            raise ImportFormatError(f"{self.path}: the COCO reader stopped without an answer",
                                    hint="try again with DVS_NO_FORK=1 to read it in the main process")
        if frame[0] == "error":
            self.close()
            childproc.raise_error(frame, ImportFormatError)
        self._labels = list(frame[1])

    def close(self) -> None:
        """Stop the child if it still runs and reap it."""
        if self._child is not None:
            self._child.close()
            self._child = None


def _child(path: str, out: BinaryIO) -> None:
    try:
        imp = coco.load_coco(path, encoded=True)
    except (MemoryError, RecursionError) as e:
        raise ImportFormatError(f"{path}: cannot read: {type(e).__name__}") from None
    childproc.write_frame(out, ["ok", imp.labels])
    batch: list[Any] = []
    for name, anns in imp.by_file.items():
        batch.append([name, [[a.coco_id, *a.split()] for a in anns]])
        if len(batch) == BATCH:
            childproc.write_frame(out, batch)
            batch = []
    if batch:
        childproc.write_frame(out, batch)
