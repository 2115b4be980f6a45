"""Reading a COCO file in a forked child while the parent stores the files it describes.

``dvs add --annotations coco.json`` has two CPU-bound jobs that do not depend on each other
until the end: parsing the COCO file, and reading, hashing and recording every file. Python
threads would take turns on one core (both are mostly interpreter work), so the COCO file
is read by a child process (``childproc``) that sends its result back over a pipe as
frames:

* first, once the whole file is parsed and checked and every ``file_name`` made an item
  name: ``["ok", labels, number of images]`` or ``["error", error class name, message,
  hint]``;
* then frames of up to ``BATCH`` images in item-name order: ``[[item name, [[coco_id, head,
  tail], ...]], ...]``, each annotation as ``coco.EncodedAnnotation.split`` gives it: all
  the parent adds is the annotation id, which depends on the item's id;
* then ``"end"``. A pipe that ends without it is a reader that died (killed, out of
  memory): an error, never the end of the annotations, or the version would be published
  without the ones not sent.

The parent reads those frames only as its loop reaches their names (``entries``), so it
holds one frame, not the file's annotations; the reader waits on the pipe meanwhile.

The reader's own memory is bounded too: it reads the file a chunk at a time, and past
``coco_spill.LIMIT`` images and annotations it moves them to a scratch table in the store's
``tmp/`` (given as ``tmpdir``; without one they stay in memory) and walks that table for
the frames. The table is deleted once the frames are sent, or on an error; a reader killed
by ``close`` leaves it, and ``close`` deletes it then.

The parent calls ``poll`` between batches of files, so a malformed COCO file still fails
the command early. Where ``fork`` is missing (or ``DVS_NO_FORK=1``) the file is read and
checked in the parent, at once, and the frames are made as they are iterated.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any, BinaryIO

from dvstore import childproc
from dvstore.errors import ImportFormatError, InvalidNameError
from dvstore.io import coco
from dvstore.io.coco_masks import MaskRenderer
from dvstore.io.coco_spill import CocoSpill
from dvstore.model import normalize_filename
from dvstore.storage.db import drop_scratch_of

BATCH = 1024

Entry = tuple[str, list[Any]]  # (item name, [[coco_id, head, tail], ...])


class CocoReader:
    """A COCO file being read in the background, for files added under ``prefix`` ("" or
    "/dir"): ``labels()`` once it is read, then ``entries()``. A big file's records go to a
    scratch table in ``tmpdir`` (the store's ``tmp/``) while it is read."""

    def __init__(self, path: str, prefix: str = "", tmpdir: str | None = None) -> None:
        self.path = path
        self.tmpdir = tmpdir
        self._child: childproc.Child | None = None
        self._labels: list[str] | None = None
        self.count = 0  # images in the file (the entries ``entries`` gives), once read
        self._frames: Generator[Any, None, None] | None = None  # read in this process
        if not childproc.can_fork():
            self._frames = _frames(path, prefix, tmpdir)
            _, labels, self.count = next(self._frames)
            self._labels = list(labels)
            return
        self._child = childproc.Child(lambda _inp, out: _child(path, prefix, tmpdir, out))

    @property
    def _pid(self) -> int:
        return self._child.pid if self._child is not None else 0

    def __enter__(self) -> CocoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self) -> None:
        """If the reader has finished the file: raise its error, or take its labels."""
        if self._labels is None and self._child is not None and self._child.ready():
            self._status()

    @property
    def ready(self) -> bool:
        """Has the whole file been read and checked (``poll``)?"""
        return self._labels is not None

    def labels(self) -> list[str]:
        """The labels (category names in id order); waits for the reader."""
        if self._labels is None:
            self._status()
        assert self._labels is not None
        return self._labels

    def entries(self) -> Iterator[Entry]:
        """Each image's (item name, annotations), in item-name order, read as iterated."""
        self.labels()
        if self._frames is not None:
            for frame in self._frames:
                yield from frame
            return
        while (frame := self._read()) != "end":
            if frame is None:
                self.close()
                raise ImportFormatError(f"{self.path}: the COCO reader stopped before its last answer",
                                        hint="nothing was changed; try again")
            yield from ((name, anns) for name, anns in frame)
        self.close()

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
        self._labels, self.count = list(frame[1]), frame[2]

    def close(self) -> None:
        """Stop the child if it still runs and reap it; delete its scratch table if it was
        stopped before it could."""
        if self._frames is not None:
            self._frames.close()  # (its scratch table deleted)
        if self._child is not None:
            pid = self._child.pid
            self._child.close()
            self._child = None
            if self.tmpdir is not None and pid:
                drop_scratch_of(self.tmpdir, pid)


def _entries(imp: coco.CocoImport, prefix: str, path: str) -> list[Entry | None]:
    """The import's annotations under item names, sorted (the order ``dvs add`` records
    files in); empties ``imp.by_file``."""
    out: dict[str, list[Any]] = {}
    by_file = imp.by_file
    parts = {label: coco.label_part(label) for label in imp.labels}  # encoded once per label
    while by_file:
        rel, anns = by_file.popitem()
        try:
            name = normalize_filename(prefix + "/" + rel.lstrip("/"))
        except InvalidNameError as e:
            raise ImportFormatError(f"{path}: {e.message}") from None
        if name in out:  # file_names differing only in Unicode normalisation
            raise ImportFormatError(f"{path}: two images name the same item {name} (file_name {rel!r})")
        out[name] = [[a.coco_id, *a.split(parts[a.label])] for a in anns]
    entries: list[Entry | None] = list(sorted(out.items()))
    return entries


def _frames(path: str, prefix: str, tmpdir: str | None, helper: bool = False) -> Generator[Any, None, None]:
    """The reader's frames: ``["ok", labels]`` once the file is read and checked, then the
    entries in lists of up to ``BATCH``. Errors are raised before the first frame. With
    ``helper``, masks are rendered by a helper process while the file is read on."""
    spill = None if tmpdir is None else CocoSpill(tmpdir, prefix, path)
    masks = MaskRenderer() if helper else None
    try:
        try:
            imp = coco.load_coco(path, encoded=True, spill=spill, masks=masks)
        except (MemoryError, RecursionError) as e:
            raise ImportFormatError(f"{path}: cannot read: {type(e).__name__}") from None
        finally:
            if masks is not None:
                masks.close()
        if spill is None or not spill.active:
            entries = _entries(imp, prefix, path)
            yield ["ok", imp.labels, imp.image_count]
            for lo in range(0, len(entries), BATCH):
                frame = entries[lo:lo + BATCH]
                entries[lo:lo + BATCH] = [None] * len(frame)  # handed out: freed here
                yield frame
            return
        spill.check_names()
        yield ["ok", imp.labels, imp.image_count]
        labels = {c["id"]: c["name"] for c in imp.categories}
        frame = []
        for entry in spill.entries(labels):
            frame.append(entry)
            if len(frame) == BATCH:
                yield frame
                frame = []
        if frame:
            yield frame
    finally:
        if spill is not None:
            spill.close()


def _child(path: str, prefix: str, tmpdir: str | None, out: BinaryIO) -> None:
    frames = _frames(path, prefix, tmpdir, helper=True)
    try:
        childproc.write_frame(out, next(frames))
        out.flush()  # the parent learns the file is good now, and reads the rest as it needs it
        for frame in frames:
            childproc.write_frame(out, frame)
        childproc.write_frame(out, "end")
    finally:
        frames.close()  # the scratch table deleted before the parent sees the pipe's end
