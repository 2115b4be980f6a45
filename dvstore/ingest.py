"""Ingest: turning local files and folders (and their annotation files) into one version.

It owns walking the user's paths (read only: user files are never moved or changed), the
loop that records every file as an item (skipping the read of a file the stat cache,
``statcache``, knows unchanged), and mapping COCO or Dataloop-JSON annotations onto items.
Small files are read, hashed and stored by ``storer`` (two helper processes), large ones copied
by ``_Copier`` (two threads); the version itself is published by ``Editor.commit``.
"""

from __future__ import annotations

import collections
import os
import stat as statmod
import sys
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dvstore import codec, recipes, storer, tree
from dvstore.edit import Editor
from dvstore.errors import ImportFormatError, InvalidNameError, UsageError
from dvstore.hashing import Digest, hash_hex
from dvstore.io import imageinfo
from dvstore.model import normalize_dir, normalize_filename
from dvstore.statcache import cache_hit, cache_key, lookup_stat, stat_entry
from dvstore.storage.blobs import SMALL_MAX
from dvstore.storage.db import WriteTxn

if TYPE_CHECKING:  # concurrent.futures imports logging: loaded only to copy large files
    from concurrent.futures import Future, ThreadPoolExecutor

WINDOW = 16384
PROGRESS_EVERY = 512
APPLY_STEP = 16  # annotation keys per slice of work while the storers are busy (_Applier.step)
FLUSH_BYTES = int(os.environ.get("DVS_WRITE_AHEAD_BYTES", 16 * 1024 * 1024))
"""Annotation sets are stored ahead of the version in batches of this size (the variable is
for tests: a small one makes a small import hand its sets to the storers)."""

Progress = Callable[[int, int], None]


@dataclass
class IngestStats:
    files: int = 0
    bytes: int = 0
    hashed: int = 0
    cached: int = 0
    annotated: int = 0
    skipped: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    """Files of the added folders not added as items: the annotation file."""


class Files:
    """The files to add, in item-name order, at about one string per file.

    A million-file ``add`` keeps this list for the whole run, so it is not a list of
    (local path, item name) tuples: the local path is rebuilt from the item name and the
    input it came from (``bases[i] + name[cut:]``), except for the few names that
    normalisation changed (``odd``).
    """

    def __init__(self, names: list[str], roots: array[int], bases: list[str], cut: int,
                 odd: dict[str, str], excluded: list[str] | None = None) -> None:
        self.names = names
        self.roots = roots
        self.bases = bases
        self.cut = cut
        self.odd = odd
        self.excluded = excluded or []
        """Paths the walk left out of the folders it went through (the annotation file)."""

    def __len__(self) -> int:
        return len(self.names)

    def local(self, i: int) -> str:
        name = self.names[i]
        return self.odd.get(name) or self.bases[self.roots[i]] + name[self.cut:]

    def window(self, lo: int, hi: int) -> list[tuple[str, str]]:
        """(local path, item name) of files ``lo`` to ``hi``."""
        return [(self.local(i), self.names[i]) for i in range(lo, min(hi, len(self.names)))]


def walk(paths: list[str], to: str = "/", *, store: str | None = None, annotations: str | None = None) -> Files:
    """The files of ``paths`` (files and folders, recursively), sorted by item name.

    A folder's contents are taken relative to the folder (dtlpy's upload); a plain file
    becomes ``<to>/<name>``. Symlinked folders are not followed; hostile names are refused
    before anything is read.

    Left out of the folders walked: the store folder in use (``store``, whatever its name)
    and working-folder metadata files (``.dvs-checkout``), silently; the annotation file or
    folder (``annotations``), listed in ``Files.excluded``. A path inside the store is refused.
    """
    base = normalize_dir(to)
    prefix = "" if base == "/" else base
    bases: list[str] = []
    odd: dict[str, str] = {}
    owner: dict[str, int] = {}  # item name -> index of the input it came from
    skip = _Skip(store, annotations)

    def claim(root: int, rel: str) -> None:
        name = prefix + "/" + rel
        try:
            fn = normalize_filename(name)
        except InvalidNameError as e:
            raise InvalidNameError(f"{bases[root] + '/' + rel}: {e.message}") from None
        local = bases[root] + "/" + rel
        if fn in owner:
            first = odd.get(fn) or bases[owner[fn]] + fn[len(prefix):]
            if first != local:
                raise UsageError(f"two files map to the same item {fn}: {first} and {local}")
        if fn != name:
            odd[fn] = local
        owner[fn] = root

    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise UsageError(f"no such file or folder: {p}") from None
        except OSError as e:
            raise UsageError(f"cannot read {p}: {e.strerror}") from None
        skip.refuse_store(p)
        if statmod.S_ISDIR(st.st_mode):
            top = os.path.abspath(p)
            bases.append(top.rstrip("/"))  # "/" itself: "" + "/" + rel
            for rel in _walk_dir(top, skip):
                claim(len(bases) - 1, rel)
        elif statmod.S_ISREG(st.st_mode):
            local = os.path.abspath(p)
            bases.append(os.path.dirname(local).rstrip("/"))
            claim(len(bases) - 1, os.path.basename(local))
        else:
            raise UsageError(f"not a regular file or folder: {p}")
    names = sorted(owner)
    roots = array("I", (owner[fn] for fn in names))
    owner.clear()
    return Files(names, roots, bases, len(prefix), odd, skip.excluded)


CHECKOUT_FILE = ".dvs-checkout"  # a working folder's record (workdir); never an item


class _Skip:
    """What ``walk`` leaves out of the folders it goes through, known by (device, inode):
    the store folder in use (adding it would store the store in itself, and its usual name,
    ``.dvs``, is reserved, so ``dvs add NAME .`` beside it failed) and the annotation file
    (``dvs add pets photos/ --annotations photos/annotations.coco.json`` made it an item)."""

    def __init__(self, store: str | None, annotations: str | None) -> None:
        self.store_real = os.path.realpath(store) if store else None
        self.store = _file_id(store) if store else None
        self.annotations = _file_id(annotations) if annotations else None
        self.annotations_path = annotations or ""
        self.inodes = {fid[1] for fid in (self.store, self.annotations) if fid is not None}
        self.excluded: list[str] = []

    def refuse_store(self, path: str) -> None:
        real = os.path.realpath(path)
        if self.store_real and (real == self.store_real or real.startswith(self.store_real + os.sep)):
            where = "is the store" if real == self.store_real else f"is inside the store ({self.store_real})"
            raise UsageError(f"{path} {where}: its files are not items",
                             hint="add folders and files outside the store")

    def leave_out(self, entry: os.DirEntry[str]) -> bool:
        """Whether ``entry`` (of a folder being walked) is left out."""
        if entry.name == CHECKOUT_FILE and not entry.is_dir(follow_symlinks=False):
            return True
        try:
            if entry.is_symlink():  # a link to the annotation file is that file too
                if self.annotations is None or not entry.is_file():
                    return False
                st = entry.stat()
            elif entry.inode() in self.inodes:  # cheap first: no stat for other entries
                st = entry.stat(follow_symlinks=False)
            else:
                return False
        except OSError:
            return False
        fid = (st.st_dev, st.st_ino)
        if fid == self.store and not entry.is_symlink():
            return True
        if fid == self.annotations:
            if self.annotations_path not in self.excluded:  # a folder given twice
                self.excluded.append(self.annotations_path)
            return True
        return False


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _walk_dir(root: str, skip: _Skip) -> Iterator[str]:
    """Paths of the files below ``root``, relative to it (without what ``skip`` leaves out)."""
    stack = [("", root)]
    inodes, links = skip.inodes, skip.annotations is not None
    while stack:
        rel, d = stack.pop()
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as err:
            raise UsageError(f"cannot read folder {d}: {err.strerror}") from None
        for entry in entries:
            r = f"{rel}/{entry.name}" if rel else entry.name
            # A first check without a call or a stat: almost no entry is one of these.
            if (entry.inode() in inodes or entry.name == CHECKOUT_FILE or (links and entry.is_symlink())) \
                    and skip.leave_out(entry):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append((r, entry.path))
            elif entry.is_file(follow_symlinks=True):
                yield r


def ingest(editor: Editor, paths: list[str], *, to: str = "/", annotations: str | None = None,
           fmt: str | None = None, progress: Progress | None = None,
           annotating: Progress | None = None) -> IngestStats:
    """Add files and folders (and annotations) to the editor's pending version.

    ``progress`` is called with (files recorded, files), ``annotating`` with (names whose
    annotations are set, names in the annotation file) once the files are recorded, and
    first with (0, -1) if it then has to wait for the file to be read.
    """
    # The helpers are forked before the walk: a child keeps (as its own memory, once the
    # parent writes to them) the pages of the parent's heap at the fork, and the walk's file
    # list grows with the number of files.
    with _Annotations(annotations, fmt, to, editor.repo.blobs.tmp) as source, storer.start(editor.repo) as small:
        files = walk(paths, to, store=editor.repo.dir, annotations=annotations)
        source.load()  # a Dataloop json/ folder, once the paths are known good
        return _ingest(editor, files, source, small, progress, annotating)


def _ingest(editor: Editor, files: Files, source: _Annotations, small: storer.Storer,
            progress: Progress | None, annotating: Progress | None = None) -> IngestStats:
    stats = IngestStats(excluded=list(files.excluded))
    if len(files) * 4 >= tree.count(editor.objects, editor.base.layers["items"] or tree.EMPTY):
        editor.prefetch()
    new_cache: dict[bytes, bytes] = {}  # rows of large files: they ride with the version
    blobs = editor.repo.blobs
    total = len(files)
    applier = _Applier(editor, source, stats, files.names, annotating)
    prev = ""  # the last name recorded
    # A store whose stat cache is empty (a first add) has nothing to look up for any file.
    known = editor.repo.db.read(lambda t: t.count("stat_cache")) > 0
    with editor.repo.objects.writing_ahead(FLUSH_BYTES):
        for lo in range(0, total, WINDOW):
            # A window at a time: stat results are not kept for the whole walk.
            source.poll()  # a bad annotation file fails the command now, not after every file
            window = files.window(lo, lo + WINDOW)
            sts: list[os.stat_result] = []
            for local, _ in window:
                try:
                    sts.append(os.stat(local))
                except OSError as e:
                    raise UsageError(f"cannot read {local}: {e.strerror}") from None
            hits: list[list[Any] | None] = [None] * len(window)
            if known:
                wkeys = [cache_key(local) for local, _ in window]
                cache = lookup_stat(editor.repo, wkeys)
                hits = [rec if cache_hit(rec := cache.get(key), st) else None for key, st in zip(wkeys, sts)]
            misses = [(local, st) for (local, _), st, hit in zip(window, sts, hits) if hit is None]
            # Small files go to the storers (helper processes that read, hash and store them
            # ahead of this loop), large ones to the copier's threads.
            small.submit([local for local, st in misses if st.st_size <= SMALL_MAX])
            with _Copier(blobs, [m for m in misses if m[1].st_size > SMALL_MAX]) as copies:
                for i, ((local, fn), st, hit) in enumerate(zip(window, sts, hits), lo + 1):
                    if hit is not None:
                        blob, size, mimetype, system = Digest(hit[5]), st.st_size, hit[6], hit[7]
                        stats.cached += 1
                    elif st.st_size <= SMALL_MAX:
                        while not small.ready() and applier.step(prev):
                            pass  # annotation work instead of waiting for the storers
                        blob, size, mimetype, system = small.next()
                        stats.hashed += 1
                    else:
                        blob, size, mimetype, system = _copied(local, st, copies)
                        stats.hashed += 1
                        new_cache[cache_key(local)] = stat_entry(st, time.time_ns(), blob, mimetype, system)
                    editor.put_blob_item(fn, blob, size, mimetype, system, normalized=True)
                    prev = fn
                    stats.files += 1
                    stats.bytes += size
                    if progress is not None and (i % PROGRESS_EVERY == 0 or i == total):
                        progress(i, total)
        small.end()  # the storers commit their last blobs while the annotations are finished
    editor.build_items_ahead(with_paths=applier.pending())  # and the items tree on the other core
    applier.finish(small.store_objects)  # annotation sets written ahead go to the storers
    small.wait()  # every small blob (and object given to them) durable before the version names it

    def write_cache(t: WriteTxn) -> None:
        for k, v in new_cache.items():
            t.put("stat_cache", k, v)

    editor.extra_txn.append(write_cache)
    return stats


class _Copier:
    """Copies large files into the store on two threads, ahead of the loop that records them.

    ``BlobStore.add_file`` copies in the kernel, then hashes the copy: both release the GIL,
    so with two threads one file is being copied while another is hashed, on two cores
    (measured on 20 x 50 MiB: 0.91 s one file at a time, 0.67 s with two threads).
    """

    AHEAD = 3

    def __init__(self, blobs: Any, files: list[tuple[str, os.stat_result]]) -> None:
        self.blobs = blobs
        self.files = files
        self.pos = 0
        self.running: collections.deque[tuple[Future[Digest], list[bytes]]] = collections.deque()
        self.pool: ThreadPoolExecutor | None = None
        if files:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dvs-copy")

    def __enter__(self) -> _Copier:
        self._fill()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            # Copies already made become blobs nothing names yet: harmless, gc collects them.
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self) -> None:
        while self.pool is not None and len(self.running) < self.AHEAD and self.pos < len(self.files):
            local, st = self.files[self.pos]
            head: list[bytes] = []
            self.running.append((self.pool.submit(self.blobs.add_file, local, st.st_size, head), head))
            self.pos += 1

    def next(self) -> tuple[Digest, bytes]:
        """(blob, first bytes) of the next large file, in order."""
        fut, head = self.running.popleft()
        blob = fut.result()
        self._fill()
        return blob, head[0] if head else b""


def _copied(local: str, st: os.stat_result, copies: _Copier) -> tuple[Digest, int, str, dict[str, Any]]:
    """The next large file, as the copier stored it: (blob, size, mimetype, system)."""
    try:
        blob, head = copies.next()
    except (PermissionError, FileNotFoundError, IsADirectoryError) as e:
        raise UsageError(f"cannot read {local}: {e.strerror}") from None
    mimetype, system = imageinfo.sniff(head, local)
    return blob, st.st_size, mimetype, system


class _Applier:
    """Sets the annotations of the added items, starting while the files are still recorded.

    The main loop mostly waits for the storers; once the annotation file's result is in, it
    spends those waits here, a slice at a time, on the annotations of the items recorded so
    far. Names come in sorted order, and so do the annotations (``_Annotations.result``), so
    only the annotations not yet applied are held, and a COCO reader's are read from its pipe
    as the loop gets to them. A key that names no item (a Dataloop stem match, or no item at
    all) is set aside for ``finish``, which knows every added name.
    """

    def __init__(self, editor: Editor, source: _Annotations, stats: IngestStats, names: list[str],
                 progress: Progress | None = None) -> None:
        self.editor, self.source, self.stats, self.names = editor, source, stats, names
        self.progress = progress  # (names applied, names in the annotation file), in finish
        self.applied = 0
        self.stream: Iterator[tuple[str, list[Any]]] | None = None
        self.head: tuple[str, list[Any]] | None = None
        self.extras: dict[str, dict[str, Any]] = {}
        self.labels: list[str] = []
        self.encoded = False
        self.left: dict[str, list[Any]] = {}

    def _take(self) -> None:
        self.stream, self.labels, self.extras, self.encoded = self.source.result()
        self.head = next(self.stream, None)

    def _apply_next(self) -> None:
        assert self.stream is not None and self.head is not None
        key, anns = self.head
        self.head = next(self.stream, None)
        self.applied += 1
        iid = self.editor.item_id(key, normalized=True)
        if iid is None:
            self.left[key] = anns
        else:
            _apply_one(self.editor, key, anns, self.extras, {}, self.stats, self.encoded, iid=iid)

    def pending(self) -> bool:
        """Are there annotations left to apply (or not read yet)?"""
        return self.source.path is not None and (self.stream is None or self.head is not None or bool(self.left))

    def step(self, upto: str) -> bool:
        """Apply the annotations of a few items named ``upto`` or before; False: none to do."""
        if self.stream is None:
            if not self.source.ready():
                return False
            self._take()
        if self.head is None or self.head[0] > upto:
            return False
        for _ in range(APPLY_STEP):
            self._apply_next()
            if self.head is None or self.head[0] > upto:
                break
        return True

    def finish(self, store: Callable[[dict[bytes, bytes]], None] | None = None) -> None:
        """Apply what is left, and add the annotation file's labels to the recipe.

        ``store`` takes the annotation sets written ahead meanwhile (the storers: a big
        import's sets are most of what it writes, ~1 GB for a train2017-shaped file, and
        committing them took 6.2 of the 13 s the main process then worked alone).
        """
        progress = self.progress
        if self.stream is None:
            if progress is not None and not self.source.ready():
                progress(0, -1)  # reading the file: a big one takes most of the add
            self._take()
        total = self.source.count
        batches = 0

        def hand_over(objects: dict[bytes, bytes]) -> bool:
            # The first batch is committed here: a small import's only one would otherwise
            # be waited for at the end (+25 ms on the 20,000-file benchmark).
            nonlocal batches
            batches += 1
            if store is None or batches == 1:
                return False
            store(objects)
            return True

        # Only a COCO file's sets (``encoded``): setting them reads no annotation set, so
        # none handed over is read before the storers commit it.
        with self.editor.repo.objects.writing_ahead(FLUSH_BYTES, to=hand_over if self.encoded else None):
            while self.head is not None:
                self._apply_next()
                if progress is not None and self.applied % PROGRESS_EVERY == 0:
                    progress(self.applied, total)
        if progress is not None and total:
            progress(total, total)
        _apply_annotations(self.editor, self.left, self.extras, self.stats, self.names, encoded=self.encoded)
        if self.labels:
            editor = self.editor
            cur = editor.recipe or editor.repo.recipe(editor.base.recipe)
            new = recipes.add_labels(cur, self.labels)
            if new != cur:
                editor.set_recipe(new)


class _Annotations:
    """The annotation file of an ``add``: a COCO file is read by a child process while the
    files are stored (``coco_child``; a big one's records wait in ``tmpdir``), a Dataloop
    json/ folder at once."""

    def __init__(self, annotations: str | None, fmt: str | None, to: str, tmpdir: str | None = None) -> None:
        self.path = annotations
        base = normalize_dir(to)
        self.prefix = "" if base == "/" else base
        self.reader: Any = None
        self.count = 0
        self.loaded: tuple[dict[str, list[Any]], list[str], dict[str, dict[str, Any]], bool] = ({}, [], {}, False)
        if annotations is not None and fmt is None:
            fmt = "dataloop" if os.path.isdir(annotations) else "coco"
        self.fmt = fmt
        if annotations is not None and fmt == "coco":
            from dvstore.io.coco_child import CocoReader

            self.reader = CocoReader(annotations, self.prefix, tmpdir)

    def load(self) -> None:
        """Read annotations that are not read in the background (a Dataloop json/ folder)."""
        if self.path is not None and self.fmt != "coco":
            self.loaded = _load_annotations(self.path, self.fmt or "dataloop", self.prefix)

    def __enter__(self) -> _Annotations:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.reader is not None:
            self.reader.close()

    def poll(self) -> None:
        if self.reader is not None:
            self.reader.poll()

    def ready(self) -> bool:
        """Can ``result`` answer without waiting? (Polls a COCO reader.)"""
        if self.reader is None:
            return True
        self.reader.poll()
        return bool(self.reader.ready)

    def result(self) -> tuple[Iterator[tuple[str, list[Any]]], list[str], dict[str, dict[str, Any]], bool]:
        """((item filename, annotations) in filename order, labels for the recipe, {filename:
        Dataloop extras}, whether the annotations are encoded COCO ones, ``[coco_id, head,
        tail]``). A COCO reader's annotations come off its pipe as they are iterated.
        ``count`` then says how many filenames the iterator gives."""
        if self.reader is None:
            by_file, labels, extras, encoded = self.loaded
            self.count = len(by_file)
            # Popped as they are handed out, so applied annotations are freed as the loop goes.
            return ((k, by_file.pop(k)) for k in sorted(by_file)), labels, extras, encoded
        entries, labels = self.reader.entries(), self.reader.labels()
        self.count = self.reader.count
        return entries, labels, {}, True


def _load_annotations(annotations: str, fmt: str, prefix: str
                      ) -> tuple[dict[str, list[Any]], list[str], dict[str, dict[str, Any]], bool]:
    """A Dataloop json/ folder's annotations, as ``_Annotations.result``."""
    if fmt == "dataloop":
        from dvstore.io import dataloop

        out = {}
        extras: dict[str, dict[str, Any]] = {}
        labels: set[str] = set()
        for fn, jpath in dataloop.walk_json_folder(annotations).items():
            rec = dataloop.load_item_json(str(jpath), check_coordinates=True)
            qa = rec.get("annotation_status") or {}
            anns = []
            for a in rec["annotations"]:
                if isinstance(a.get("label"), str):
                    labels.add(a["label"])
                if a["id"] in qa:  # back into the annotation; Editor moves it to the status layer
                    md = dict(a.get("metadata") or {})
                    md["system"] = dict(md.get("system") or {}, status=qa[a["id"]])
                    a = dict(a, metadata=md)
                anns.append(a)
            target = normalize_filename(prefix + fn)
            out[target] = anns
            extras[target] = rec
        return out, sorted(labels), extras, False
    raise UsageError(f"unknown annotation format {fmt!r}", hint="use --format coco or --format dataloop")


def _apply_annotations(editor: Editor, by_file: dict[str, list[Any]],
                       extras: dict[str, dict[str, Any]], stats: IngestStats,
                       added: list[str] | None = None, *, encoded: bool = False) -> None:
    """Set the annotations (and Dataloop extras) of the added items; consumes ``by_file``."""
    # Dataloop's own exports name a json after the item's stem (json/a/1.json for items/a/1.jpg);
    # dvs checkouts use the full name (json/a/1.jpg.json). Accept both.
    # Only the stems some annotation file names are kept: a million added files must not
    # cost a second index of their names (measured: +150 MiB at 1,000,000 files).
    stems: dict[str, list[str]] = {}
    if by_file:
        for fn in added or []:
            stem = fn.rsplit(".", 1)[0] if "." in fn.rsplit("/", 1)[-1] else fn
            if stem in by_file:
                stems.setdefault(stem, []).append(fn)
    # Annotation sets are final objects: like blobs, they are stored ahead of the version
    # (harmless garbage if it never comes) instead of waiting in memory.
    with editor.repo.objects.writing_ahead(FLUSH_BYTES):
        for key in sorted(by_file):  # keys and stems are normalised filenames already
            _apply_one(editor, key, by_file.pop(key), extras, stems, stats, encoded)  # freed as we go


def _apply_one(editor: Editor, key: str, anns: list[Any],
               extras: dict[str, dict[str, Any]], stems: dict[str, list[str]], stats: IngestStats,
               encoded: bool, *, iid: bytes | None = None) -> None:
    """Set the annotations (and Dataloop extras) ``anns`` of file ``key`` on the item they
    name (``iid``, when the caller looked it up already)."""
    fn = key
    if iid is None:
        iid = editor.item_id(fn, normalized=True)
    if iid is None and len(stems.get(key, [])) == 1:
        fn = stems[key][0]
        iid = editor.item_id(fn, normalized=True)
    if iid is None:
        stats.skipped.append(key)
        return
    if encoded:
        editor.set_item_annset(iid, _encoded_annset(editor, iid, anns))
    else:
        editor.set_item_annotations(iid, anns)
    extra = extras.get(key)  # the json's extras, whichever way it named the item
    if extra:
        md = extra.get("metadata") or {}
        if md.get("user") or md.get("system"):
            editor.update_metadata(fn, user=md.get("user"), system=md.get("system"))
        for tid, t in (extra.get("tasks") or {}).items():
            t = dict(t)
            editor.set_task_status(fn, tid, t.pop("status", None), **t)
        if extra.get("hidden"):
            editor.set_hidden(fn, True)
    if anns:
        stats.annotated += 1


def _encoded_annset(editor: Editor, iid: bytes, anns: list[Any]) -> bytes | None:
    """The encoded annotation set of COCO annotations given as ``[coco_id, head, tail]``
    (``coco.EncodedAnnotation.split``)."""
    if not anns:
        return None
    # Re-importing the same COCO file must not mint new ids (it would look like a change):
    # an annotation's id is the first 12 bytes of blake3(item id + "coco:" + COCO id), in hex,
    # here encoded at once (a 24-character string: fixstr header 0xb8).
    seed = iid + b"coco:"
    if len(anns) == 1:
        [(coco_id, head, tail)] = anns
        key = _ID_STR24 + hash_hex(seed + str(coco_id).encode(), 12).encode()
        one: bytes = _ONE + key + head + key + tail
        return one
    by_key: dict[bytes, bytes] = {}  # each annotation's encoded id -> the rest of its entry
    for coco_id, head, tail in anns:
        key = _ID_STR24 + hash_hex(seed + str(coco_id).encode(), 12).encode()
        if key in by_key:
            raise ImportFormatError(f"two COCO annotations with id {coco_id!r} on {editor._name_of(iid)}")
        by_key[key] = head + key + tail
    # A map's canonical encoding: its header, then each key and value in key order (the key
    # is the annotation's id, which it also holds; keys of one length sort as their strings do).
    return codec.map_header(len(by_key)) + b"".join([k + by_key[k] for k in sorted(by_key)])


_ID_STR24 = codec.encode_canonical("0" * 24)[:1]
_ONE = codec.map_header(1)


def progress_bar(label: str, waiting: str = "") -> Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal, or DVS_PROGRESS=1);
    ``(0, -1)`` prints ``label: waiting`` instead, for a wait of unknown length. The rate
    counts from the bar's creation, or from the end of such a wait."""
    show = sys.stderr.isatty() or os.environ.get("DVS_PROGRESS") == "1"
    since = [time.monotonic(), 0]  # (time, done) the rate counts from

    def cb(done: int, total: int) -> None:
        if not show:
            return
        if total == -1:
            sys.stderr.write(f"{label}: {waiting}\n")
            sys.stderr.flush()
            since[:] = [time.monotonic(), -1]  # the next call sets the count
            return
        if since[1] == -1:
            since[:] = [time.monotonic(), done]
        if total < 500:
            return
        el = time.monotonic() - since[0]
        rate = (done - since[1]) / el if el > 0 else 0
        w = 30
        filled = int(w * done / total)
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (w - filled)}] {done}/{total} {rate:,.0f}/s")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return cb
