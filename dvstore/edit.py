"""Editing a dataset: one ``Editor`` gathers changes to the four layers and publishes them as
one version. It owns how user-level edits (add a file, set annotations, update metadata,
set a status, rename, delete) become layer changes, keeps filenames unique and never lets an
item name also be a folder of other items (``/a`` beside ``/a/b``: no checkout could hold
both), and keeps the derived filename index in step. The write itself is ``Repository.publish``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from dvstore import childproc, codec, tree
from dvstore.errors import InvalidNameError, NotFoundError, StorageError, UsageError
from dvstore.hashing import Digest
from dvstore.io import imageinfo
from dvstore.model import (
    ANNOTATION_STATUSES,
    INTRINSIC_SYSTEM,
    LAYERS,
    VOLATILE_ANNOTATION_FIELDS,
    Commit,
    count_folders,
    default_author,
    new_annotation_id,
    new_item_id,
    normalize_filename,
    now_iso,
)
from dvstore.repo import (
    ANNSET,
    RECIPE,
    DatasetRecord,
    Repository,
    apply_folder_delta,
    folder_count,
    path_key,
)
from dvstore.spill import MISSING, Spill
from dvstore.storage.blobs import SMALL_MAX
from dvstore.tree import DELETE

WRITE_AHEAD_BYTES = 16 * 1024 * 1024
"""Building a version stores new tree nodes ahead of it once they reach this size."""

_NAMES = {"items": b"i", "annotations": b"a", "metadata": b"m", "status": b"s"}
_PATHS = b"p"
AHEAD_MIN = int(os.environ.get("DVS_AHEAD_MIN", "4096"))
"""Item changes from which ``build_items_ahead`` builds in a helper process (fewer are not
worth a fork). The variable is for tests."""


def inside_item_error(name: str, item: str) -> InvalidNameError:
    """``name`` would sit in folder ``item``, which is an item: a version must not hold both."""
    return InvalidNameError(f"item {name} would be inside {item}, which is an item",
                            hint="an item and a folder cannot share a name; rename one of them")


def holds_items_error(name: str, inner: str) -> InvalidNameError:
    """``name`` is a folder (``inner`` is an item in it): it cannot also be an item."""
    return InvalidNameError(f"item {name} would be a folder too: {inner} is an item inside it",
                            hint="an item and a folder cannot share a name; rename one of them")


def normalize_annotation(a: Any) -> tuple[dict[str, Any], Any]:
    """Return (stored annotation, QA status or None) for a user-supplied annotation dict."""
    if not isinstance(a, dict):
        raise UsageError(f"an annotation must be a JSON object, got {type(a).__name__}")
    out = {k: v for k, v in a.items() if k not in VOLATILE_ANNOTATION_FIELDS}
    aid = out.get("id") or new_annotation_id()
    if not isinstance(aid, str) or not aid or len(aid) > 128:
        raise UsageError(f"invalid annotation id: {aid!r}")
    out["id"] = aid
    if not isinstance(out.get("type", ""), str):
        raise UsageError(f"annotation {aid}: 'type' must be a string")
    out.setdefault("type", "class")
    if "label" in out and out["label"] is not None and not isinstance(out["label"], str):
        raise UsageError(f"annotation {aid}: 'label' must be a string")
    md = out.get("metadata") or {}
    if not isinstance(md, dict):
        raise UsageError(f"annotation {aid}: 'metadata' must be an object")
    md = dict(md)
    system = dict(md.get("system") or {})
    status = system.pop("status", None)
    system.pop("clientId", None)
    if status is not None and status not in ANNOTATION_STATUSES:
        raise UsageError(f"annotation {aid}: unknown status {status!r}",
                         hint=f"use one of {', '.join(ANNOTATION_STATUSES)} or null")
    md["system"] = system
    md.setdefault("user", {})
    out["metadata"] = md
    return codec.canonical(out), status


class Editor:
    """Changes to one dataset that become one version on ``commit``."""

    def __init__(self, repo: Repository, ds: DatasetRecord, message: str = "", *, op: str = "commit",
                 author: str | None = None, base: bytes | None = None) -> None:
        self.repo = repo
        self.objects = repo.objects
        self.ds = ds
        self.message = message
        self.op = op
        self.author = author or default_author()
        # ``base`` builds on an older version (a working folder behind a moved head).
        self.base_id = Digest(base) if base is not None else repo.head(ds)
        self.base = repo.commit(self.base_id)
        # Changes since the base, per layer: item id -> new value or DELETE. A dict that
        # grows past spill.LIMIT entries moves to a scratch table (``_spill``), so a bulk edit
        # keeps at most that many records in memory.
        self.changes: dict[str, dict[bytes, Any]] = {layer: {} for layer in LAYERS}
        # Changed names: path_key(name) -> [name, item id or None (no item by that name)].
        self._paths: dict[bytes, list[Any]] = {}
        self._spill = Spill(repo.blobs.tmp)
        self._path_root = repo.path_index(self.base.layers["items"] or tree.EMPTY)
        self.recipe: dict[str, Any] | None = None
        self.committed: Digest | None = None
        self.extra_txn: list[Any] = []
        self._now = now_iso()
        self._path_all: dict[str, bytes] | None = None
        self._items_all: dict[bytes, Any] | None = None
        # Folders: the base version's folder index (loaded when a new name first needs it)
        # plus this edit's changes to the item count below each folder. "Is this name a
        # folder?" is then one dict lookup and at most one trie lookup.
        self._dir_root: Digest | None = tree.EMPTY if self._path_root == tree.EMPTY else None
        self._dir_delta: dict[str, int] = {}
        self.folders_root: Digest | None = None  # set by prepare(); None: not known
        self._ahead: childproc.Child | None = None  # build_items_ahead's helper
        self._ahead_paths = False  # does it build the filename index too?

    def prefetch(self) -> None:
        """Load the filename index and the items layer into memory for a bulk edit.

        Worth it when an edit touches a good part of the dataset: one walk instead of a
        trie lookup per item.
        """
        self._path_all = {v[0]: v[1] for _, v in tree.items(self.objects, self._path_root)}
        root = self.base.layers["items"]
        self._items_all = dict(tree.items(self.objects, root)) if root else {}

    # -- lookups ---------------------------------------------------------------------

    def item_id(self, filename: str, *, normalized: bool = False) -> bytes | None:
        if not normalized:
            filename = normalize_filename(filename)
        return self._item_at(filename, path_key(filename))

    def _item_at(self, filename: str, pk: bytes) -> bytes | None:
        """``item_id`` of a normalised ``filename`` whose path key is ``pk``."""
        v = self._spill.get(_PATHS, self._paths, pk)
        if v is MISSING:
            if self._path_all is not None:
                return self._path_all.get(filename)
            if self._path_root == tree.EMPTY:  # a first add: no name to find
                return None
            v = tree.get(self.objects, self._path_root, pk)
        if v is None or v[0] != filename:
            return None
        iid: bytes | None = v[1]
        return iid

    def _set_path(self, filename: str, iid: bytes | None, pk: bytes | None = None) -> None:
        if self._ahead is not None:
            self._drop_ahead()
        self._paths[pk or path_key(filename)] = [filename, iid]
        self._spill.check(_PATHS, self._paths)

    def _set(self, layer: str, iid: bytes, value: Any) -> None:
        """Stage ``value`` (canonical, or DELETE) for ``iid`` in ``layer``."""
        if layer == "items" and self._ahead is not None:
            self._drop_ahead()
        ch = self.changes[layer]
        ch[iid] = value
        self._spill.check(_NAMES[layer], ch)

    def _require(self, filename: str) -> bytes:
        iid = self.item_id(filename)
        if iid is None:
            raise NotFoundError(f"Item not found: {filename}")
        return iid

    def current(self, layer: str, iid: bytes) -> Any | None:
        v = self._spill.get(_NAMES[layer], self.changes[layer], iid)
        if v is not MISSING:
            return None if v is DELETE else v
        if layer == "items" and self._items_all is not None:
            return self._items_all.get(iid)
        root = self.base.layers[layer]
        return tree.get(self.objects, root, iid) if root and root != tree.EMPTY else None

    def current_annotations(self, iid: bytes) -> dict[str, Any]:
        oid = self.current("annotations", iid)
        return dict(self.objects.get(oid, ANNSET)) if oid else {}

    # -- binaries --------------------------------------------------------------------

    def put_blob_item(self, filename: str, blob: bytes, size: int, mimetype: str,
                      system: dict[str, Any] | None = None, *, normalized: bool = False) -> bytes:
        """Point ``filename`` at a stored blob: a new item, or a new binary for an existing one."""
        if not normalized:
            filename = normalize_filename(filename)
        pk = path_key(filename)
        iid = self._item_at(filename, pk)
        system = {k: system[k] for k in sorted(system) if k in INTRINSIC_SYSTEM} if system else {}
        if iid is None:
            self._add_name(filename)
            iid = new_item_id()
            rec = {"blob": blob, "createdAt": self._now, "filename": filename, "hidden": False,
                   "mimetype": mimetype, "size": size, "system": system}
            self._set_path(filename, iid, pk)
        else:
            old = self.current("items", iid)
            assert old is not None
            if old["blob"] == blob and old.get("mimetype") == mimetype and old.get("system") == system:
                return iid
            rec = dict(old, blob=blob, size=size, mimetype=mimetype, system=system)
        self._set("items", iid, rec)
        return iid

    def add_bytes(self, filename: str, data: bytes, mimetype: str | None = None) -> bytes:
        blob = self.repo.blobs.add_bytes(data)
        mt, system = imageinfo.sniff(data[: imageinfo.HEAD_BYTES], filename)
        return self.put_blob_item(filename, blob, len(data), mimetype or mt, system)

    def add_file(self, path: str, filename: str | None = None) -> bytes:
        """Ingest one local file (read, never moved) as ``filename`` (default /<basename>)."""
        filename = normalize_filename(filename or "/" + os.path.basename(path))
        try:
            size = os.stat(path).st_size
            if size <= SMALL_MAX:
                with open(path, "rb") as f:
                    data = f.read()
                return self.add_bytes(filename, data)
            head: list[bytes] = []
            blob = self.repo.blobs.add_file(path, size, head)
        except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
            raise UsageError(f"cannot read {path}: {e.strerror}") from None
        mt, system = imageinfo.sniff(head[0] if head else b"", filename)
        return self.put_blob_item(filename, blob, size, mt, system)

    # -- structure -------------------------------------------------------------------

    def delete(self, filename: str) -> None:
        iid = self._require(filename)
        for layer in LAYERS:
            self._set(layer, iid, DELETE)
        filename = normalize_filename(filename)
        self._set_path(filename, None)
        self._unlink(filename)

    def rename(self, old: str, new: str) -> None:
        iid = self._require(old)
        old = normalize_filename(old)
        new = normalize_filename(new)
        if self.item_id(new, normalized=True) is not None:
            raise UsageError(f"Item already exists at {new}")
        rec = self.current("items", iid)
        assert rec is not None
        # The old name goes first: /a/b -> /a leaves no folder /a behind, /a -> /a/b no item /a.
        self._set_path(old, None)
        self._unlink(old)
        try:
            self._add_name(new)
        except InvalidNameError:
            self._set_path(old, iid)
            self._link(old)
            raise
        self._set("items", iid, dict(rec, filename=new))
        self._set_path(new, iid)

    # -- item names and folders ----------------------------------------------------------
    #
    # Rule: no name of the pending version is both an item and a folder of other items.
    # The base version keeps it (every version the store makes does), so only a name that
    # becomes an item can break it, in two ways: one of its folders is an item, or it is a
    # folder already.

    def _base_folders(self) -> Digest:
        if self._dir_root is None:
            self._dir_root = self.repo.folder_index(self.base.layers["items"] or tree.EMPTY)
        return self._dir_root

    def _folder_count(self, folder: str) -> int:
        """Items below ``folder`` in the pending version (0: not a folder)."""
        n = self._dir_delta.get(folder, 0)
        base = self._base_folders()
        return n if base == tree.EMPTY else n + folder_count(self.objects, base, folder)

    def _add_name(self, filename: str) -> None:
        """Record ``filename`` (normalised, not an item now) as an item, or raise InvalidNameError."""
        if self._folder_count(filename):
            raise holds_items_error(filename, self._some_item_in(filename))
        node = filename
        while (i := node.rfind("/")) > 0:
            node = node[:i]
            if self._folder_count(node):
                break  # an existing folder: it is no item, nor is any folder above it
            if self.item_id(node, normalized=True) is not None:
                raise inside_item_error(filename, node)
        self._link(filename)

    def _link(self, filename: str) -> None:
        count_folders(self._dir_delta, filename, 1)

    def _unlink(self, filename: str) -> None:
        count_folders(self._dir_delta, filename, -1)

    def _prepare_folders(self) -> Digest | None:
        """The pending version's folder index root, or None when the base has none recorded
        and this edit did not need it (it is rebuilt when some later edit does)."""
        base = self._dir_root
        if base is None:
            base = self.repo.stored_folder_index(self.base.layers["items"] or tree.EMPTY)
            if base is None:
                return None
        return apply_folder_delta(self.objects, base, self._dir_delta)

    def _live_names(self) -> list[str]:
        """Every item name of the pending version (reads the whole filename index)."""
        changed = {v[0]: v[1] for _, v in self._spill.merged(_PATHS, self._paths)}
        base: Iterable[str] = self._path_all if self._path_all is not None else (
            v[0] for _, v in tree.items(self.objects, self._path_root))
        names = [fn for fn in base if fn not in changed]
        names.extend(fn for fn, iid in changed.items() if iid is not None)
        return names

    def _some_item_in(self, folder: str) -> str:
        """An item inside ``folder`` (for an error message): the first by name."""
        prefix = folder + "/"
        return min((fn for fn in self._live_names() if fn.startswith(prefix)), default=prefix + "...")

    def set_hidden(self, filename: str, hidden: bool) -> None:
        iid = self._require(filename)
        rec = self.current("items", iid)
        assert rec is not None
        self._set("items", iid, dict(rec, hidden=bool(hidden)))

    # -- annotations -----------------------------------------------------------------

    def set_annotations(self, filename: str, annotations: list[Any]) -> list[str]:
        """Replace the item's annotations; returns their ids. QA statuses go to the status layer."""
        return self.set_item_annotations(self._require(filename), annotations)

    def set_item_annotations(self, iid: bytes, annotations: list[Any]) -> list[str]:
        """``set_annotations`` for an item id the caller looked up (bulk importers)."""
        if not isinstance(annotations, list):
            raise UsageError("annotations must be a list")
        annset: dict[str, Any] = {}
        qa: dict[str, Any] = {}
        for a in annotations:
            stored, status = normalize_annotation(a)
            if stored["id"] in annset:
                raise UsageError(f"duplicate annotation id {stored['id']} on {self._name_of(iid)}")
            annset[stored["id"]] = stored
            if status is not None:
                qa[stored["id"]] = status
        payload = codec.encode_canonical({k: annset[k] for k in sorted(annset)}) if annset else None
        self.set_item_annset(iid, payload, qa)
        return list(annset)

    def set_item_annset(self, iid: bytes, payload: bytes | None, qa: dict[str, Any] | None = None) -> None:
        """Replace the item's annotations by an encoded annotation set (None: no annotations).

        For bulk importers: ``payload`` must be the canonical encoding of {id: annotation}
        with every annotation in stored form. ``qa`` gives QA statuses by annotation id.
        """
        cur = self.current("annotations", iid)
        if payload is not None:
            oid = self.objects.put_encoded(ANNSET, payload)
            if oid != cur:  # an unchanged set hashes to the same object
                self._set("annotations", iid, oid)
        elif cur is not None:
            self._set("annotations", iid, DELETE)
        st = self.current("status", iid) or {}
        if qa or st.get("annotations"):
            st = dict(st)
            st["annotations"] = qa or {}
            self._put_status(iid, st)

    def _name_of(self, iid: bytes) -> str:
        rec = self.current("items", iid)
        return str(rec["filename"]) if rec else iid.hex()

    def add_annotation(self, filename: str, annotation: dict[str, Any]) -> str:
        iid = self._require(filename)
        annset = self.current_annotations(iid)
        stored, status = normalize_annotation(annotation)
        annset[stored["id"]] = stored
        self._put_annset(iid, annset)
        if status is not None:
            self.set_annotation_status(filename, stored["id"], status)
        aid: str = stored["id"]
        return aid

    def remove_annotation(self, filename: str, annotation_id: str) -> None:
        iid = self._require(filename)
        annset = self.current_annotations(iid)
        if annset.pop(annotation_id, None) is None:
            raise NotFoundError(f"annotation {annotation_id} not found on {filename}")
        self._put_annset(iid, annset)
        st = self.current("status", iid)
        if st and annotation_id in st.get("annotations", {}):
            st = dict(st, annotations={k: v for k, v in st["annotations"].items() if k != annotation_id})
            self._put_status(iid, st)

    def _put_annset(self, iid: bytes, annset: dict[str, Any]) -> None:
        self._set("annotations", iid, self.objects.put(ANNSET, annset) if annset else DELETE)

    # -- metadata and status -----------------------------------------------------------

    def update_metadata(self, filename: str, user: dict[str, Any] | None = None,
                        system: dict[str, Any] | None = None, *, replace: bool = False) -> None:
        """Merge (or with ``replace``, set) user and non-intrinsic system metadata."""
        iid = self._require(filename)
        cur = self.current("metadata", iid) or {}
        new_user = {} if replace else dict(cur.get("user") or {})
        new_sys = {} if replace else dict(cur.get("system") or {})
        for name, val, dest in (("user", user, new_user), ("system", system, new_sys)):
            if val is None:
                continue
            if not isinstance(val, dict):
                raise UsageError(f"metadata.{name} must be an object")
            dest.update(val)
        for k in list(new_sys):
            if k in INTRINSIC_SYSTEM or k in ("refs", "taskStatusLog"):
                new_sys.pop(k)
        rec = {}
        if new_user:
            rec["user"] = new_user
        if new_sys:
            rec["system"] = new_sys
        self._set("metadata", iid, codec.canonical(rec) if rec else DELETE)

    def set_task_status(self, filename: str, task_id: str, status: str | None, **extra: Any) -> None:
        iid = self._require(filename)
        if not isinstance(task_id, str) or not task_id:
            raise UsageError("task id must be a non-empty string")
        st = dict(self.current("status", iid) or {})
        tasks = dict(st.get("tasks") or {})
        if status is None:
            tasks.pop(task_id, None)
        else:
            tasks[task_id] = {"status": status, **extra}
        st["tasks"] = tasks
        self._put_status(iid, st)

    def set_annotation_status(self, filename: str, annotation_id: str, status: str | None) -> None:
        iid = self._require(filename)
        if status is not None and status not in ANNOTATION_STATUSES:
            raise UsageError(f"unknown annotation status {status!r}")
        if annotation_id not in self.current_annotations(iid):
            raise NotFoundError(f"annotation {annotation_id} not found on {filename}")
        st = dict(self.current("status", iid) or {})
        qa = dict(st.get("annotations") or {})
        if status is None:
            qa.pop(annotation_id, None)
        else:
            qa[annotation_id] = status
        st["annotations"] = qa
        self._put_status(iid, st)

    def _put_status(self, iid: bytes, st: dict[str, Any]) -> None:
        st = {k: v for k, v in st.items() if v}
        self._set("status", iid, codec.canonical(st) if st else DELETE)

    def set_recipe(self, recipe: dict[str, Any]) -> None:
        self.recipe = recipe

    # -- publishing ------------------------------------------------------------------

    def prepare(self) -> tuple[Commit, bytes] | None:
        """Build (but do not publish) the version: (commit, path-index root), or None if unchanged.

        New objects stay staged in the object store until a ``publish`` writes them, except
        that a large edit stores its tree nodes ahead (harmless garbage should it never be
        published) instead of holding them all in memory.
        """
        with self.objects.writing_ahead(WRITE_AHEAD_BYTES):
            return self._prepare()

    def _prepare(self) -> tuple[Commit, bytes] | None:
        layers: dict[str, bytes | None] = dict(self.base.layers)
        helped = self._ahead is not None  # the items layer comes from its helper: built last
        # The filename index too, unless the helper left it to this process (built meanwhile).
        new_path_root = self._build_paths() if helped and not self._ahead_paths else None
        for layer in LAYERS:
            if self._spill.any(_NAMES[layer], self.changes[layer]) and not (helped and layer == "items"):
                layers[layer] = self._build_layer(layer)
        recipe_id = self.base.recipe
        if self.recipe is not None:
            recipe_id = self.objects.put(RECIPE, self.recipe)
        ahead = self._ahead_roots()
        if ahead is not None:
            layers["items"] = ahead[0]
        elif helped:  # it stopped without an answer
            layers["items"] = self._build_layer("items")
        if layers == self.base.layers and recipe_id == self.base.recipe:
            return None
        if new_path_root is None:
            new_path_root = ahead[1] if ahead is not None and ahead[1] is not None else self._build_paths()
        self.folders_root = self._prepare_folders()
        c = Commit(layers=layers, recipe=recipe_id, parents=(self.base_id,), op=self.op,
                   info={}, author=self.author, message=self.message, time=now_iso())
        return c, new_path_root

    def _build_layer(self, layer: str) -> Digest:
        """The pending version's root of ``layer`` (base layer plus this edit's changes)."""
        # Every value the editor stages is canonical by construction (sorted keys).
        return tree.apply_sorted(self.objects, self.base.layers[layer] or tree.EMPTY,
                                 self._spill.merged(_NAMES[layer], self.changes[layer]))

    def _build_paths(self) -> Digest:
        """The pending version's filename index root (path key -> [name, item id])."""
        merged = self._spill.merged(_PATHS, self._paths)
        path_changes = ((pk, DELETE if v[1] is None else v) for pk, v in merged)
        # (A list, when the changes are all in memory: a new index is then built faster.)
        return tree.apply_sorted(self.objects, self._path_root,
                                 list(path_changes) if isinstance(merged, list) else path_changes)

    def build_items_ahead(self, with_paths: bool = True) -> None:
        """Start building the items layer (and the filename index, ``with_paths``) in a
        helper process.

        For a bulk ingest: its last serial steps are setting annotations and building the
        layer trees, so the items tree and the filename index (about half of that work) are
        built on the other core meanwhile; with no annotations left to set, this process
        builds the filename index while the helper builds the items tree. The helper stores
        its tree nodes itself, ahead of the version like any write-ahead (harmless should
        the version never come), and answers with the roots, which ``prepare`` takes once
        it has built the other layers. Any later change to an item or a name makes it
        stale: it is stopped and ``prepare`` builds them here again. Only for edits whose
        changes are all in memory (a scratch table is not for use across fork) and big
        enough to be worth a process.
        """
        on_disk = self._spill.any(_NAMES["items"], {}) or self._spill.any(_PATHS, {})
        if (self._ahead is not None or not childproc.can_fork() or on_disk
                or len(self.changes["items"]) < AHEAD_MIN):
            return
        self._ahead_paths = with_paths
        self._ahead = childproc.Child(lambda _inp, out: self._build_in_child(out, with_paths))

    def _build_in_child(self, out: Any, with_paths: bool) -> None:
        objects = self.objects
        objects.discard()  # the parent's staged objects are the parent's to store
        with objects.writing_ahead(WRITE_AHEAD_BYTES):
            items = self._build_layer("items")
            paths = self._build_paths() if with_paths else None
        objects.write_ahead()
        childproc.write_frame(out, [items, paths])

    def _ahead_roots(self) -> tuple[Digest, Digest | None] | None:
        """``build_items_ahead``'s (items root, filename index root or None if it left that
        here); None when there is no helper or it stopped without an answer (then they are
        built here)."""
        child, self._ahead = self._ahead, None
        if child is None:
            return None
        try:
            assert child.out is not None
            frame = childproc.read_frame(child.out, lambda: StorageError("cut short"))
        except StorageError:
            frame = None
        finally:
            child.close()
        if frame is None:
            return None
        if frame[0] == "error":
            childproc.raise_error(frame, StorageError)
        return Digest(frame[0]), None if frame[1] is None else Digest(frame[1])

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None

    def run_extra(self, t: Any) -> None:
        """Derived-data writes (stat cache) that ride in the version's transaction."""
        for fn in self.extra_txn:
            fn(t)

    def commit(self) -> Digest | None:
        """Publish the changes as one version; None when nothing changed."""
        try:
            prepared = self.prepare()
            if prepared is None:
                self.objects.discard()
                self.repo.blobs.discard()
                return None
            c, new_path_root = prepared
            items_root = c.layers["items"]
            assert items_root is not None
            self.committed = self.repo.publish(ds=self.ds, expected_head=self.base_id, commit=c,
                                               extra=self.run_extra, path_index=(items_root, new_path_root),
                                               folders=self.folders_root)
            return self.committed
        finally:
            self.close()

    def close(self) -> None:
        """Let go of the scratch file of a large edit and of a helper (also done by ``commit``)."""
        self._drop_ahead()
        self._spill.close()
