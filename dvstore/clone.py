"""Clone: a new dataset (or new items in an existing one) from a version of another.

It owns SEMANTICS §2.3: selection by an item query (no hidden default, paging and sort
ignored), projection by the three flags, and the clone ancestry (the source head is a parent).
An unfiltered clone reuses the source's layer roots, minus the dropped layers: O(1) whatever
the size. A filtered clone builds new trees holding the subset; ids and binaries never change
and no blob is ever written.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dvstore import perf, tree
from dvstore.edit import holds_items_error, inside_item_error
from dvstore.errors import NotFoundError, UsageError
from dvstore.model import (
    Commit,
    count_folders,
    default_author,
    new_item_id,
    normalize_dir,
    normalize_filename,
    now_iso,
)
from dvstore.repo import ANNSET, DatasetRecord, apply_folder_delta, folder_count, path_key
from dvstore.storage.objects import ObjectStore
from dvstore.views import LazyItemView, annotations_json

if TYPE_CHECKING:
    from dvstore.api import Dataset, Store


def select(store: Store, c: Commit, query: Any) -> set[bytes] | None:
    """Item ids of ``c`` that ``query`` selects for a clone; None means all of them.

    Only the layers the query can look at are read: a filename query walks the items layer
    alone, and item views are built lazily, field by field.
    """
    from dvstore import filters as dql

    if query is None:
        return None
    q = dql.compile_query(query, purpose="clone")
    if q.resource != "items":
        raise dql.FilterError("clone takes an item query (resource 'items')")
    objs = store.repo.objects
    tops = {f.split(".", 1)[0] for f in q.fields()}
    need_meta = "metadata" in tops
    need_ann = q.needs_annotations or bool(tops & {"annotated", "annotationsCount"})
    wanted = {"annotations": need_ann, "metadata": need_meta, "status": need_meta or q.needs_annotations}
    roots = {layer: c.layers[layer] for layer, on in wanted.items() if on and c.layers[layer]}
    chosen: set[bytes] = set()
    items_root = c.layers["items"] or tree.EMPTY
    if not roots and not q.needs_annotations:
        # The common case (filename, name, dir, ... queries): one pass over the items leaves.
        match = q.match_item
        for entries in tree.leaves(objs, items_root):
            chosen.update(e[0] for e in entries if match(LazyItemView(e[0], e[1], None, None, 0), None))
        return chosen
    for iid, irec, found in tree.join(objs, items_root, roots):
        row = {"annotations": None, "metadata": None, "status": None, **found}
        annset = objs.get(row["annotations"], ANNSET) if row["annotations"] else None
        view = LazyItemView(iid, irec, row["metadata"], row["status"], len(annset) if annset else 0)
        anns = annotations_json(annset, row["status"], iid.hex()) if q.needs_annotations else None
        if q.match_item(view, anns):
            chosen.add(iid)
    return chosen


def _subset(store: Store, root: bytes | None, keep: set[bytes]) -> bytes | None:
    if root is None:
        return None
    objs = store.repo.objects
    kept = [e for entries in tree.leaves(objs, root) for e in entries if e[0] in keep]
    # Entries come in key order and values read from a tree are canonical already.
    return tree.build_sorted(objs, kept)


def clone(src: Dataset, *, clone_name: str | None = None, filters: Any = None,
          with_items_annotations: bool = True, with_metadata: bool = True,
          with_task_annotations_status: bool = True, dst_dataset: Dataset | str | None = None,
          target_directory: str | None = None, message: str = "") -> Dataset:
    """Clone ``src``'s version into a new dataset, or into ``dst_dataset``."""
    from dvstore import filters as dql

    store = src._store
    repo = store.repo
    if clone_name is None and dst_dataset is None:
        raise UsageError("Must provide clone name or destination dataset id")
    if clone_name is not None and dst_dataset is not None:
        raise UsageError("give either a clone name or a destination dataset, not both")
    if filters is not None and not isinstance(filters, (dict, str, dql.Filters)):
        raise UsageError(f'"filters" must be a Filters entity or a DQL dict. got: {type(filters).__name__}')
    with repo.lock(), perf.bulk():
        # Read the source under the store lock: gc (exclusive) cannot collect it meanwhile.
        return _clone_locked(src, clone_name=clone_name, filters=filters,
                             with_items_annotations=with_items_annotations, with_metadata=with_metadata,
                             with_task_annotations_status=with_task_annotations_status,
                             dst_dataset=dst_dataset, target_directory=target_directory, message=message)


def _clone_locked(src: Dataset, *, clone_name: str | None, filters: Any, with_items_annotations: bool,
                  with_metadata: bool, with_task_annotations_status: bool, dst_dataset: Dataset | str | None,
                  target_directory: str | None, message: str) -> Dataset:
    from dvstore import filters as dql
    from dvstore.api import Dataset

    store = src._store
    repo = store.repo
    src_head = src.head_id
    c = repo.commit(src_head)
    canonical = dql.compile_query(filters, purpose="clone").canonical() if filters is not None else None
    info = {"clone": {
        "src_dataset": src.id, "src_commit": src_head.hex(), "filter": canonical,
        "with_items_annotations": bool(with_items_annotations), "with_metadata": bool(with_metadata),
        "with_task_annotations_status": bool(with_task_annotations_status),
        "target_directory": None,
    }}
    if dst_dataset is None:
        assert clone_name is not None
        from dvstore.model import validate_dataset_name

        validate_dataset_name(clone_name)
        try:
            repo.dataset(clone_name)
            raise UsageError(f"Dataset already exists: {clone_name}")
        except NotFoundError:
            pass
        chosen = select(store, c, filters)
        layers = dict(c.layers)
        if chosen is not None:
            layers = {k: _subset(store, v, chosen) for k, v in layers.items()}
        if not with_items_annotations:
            layers["annotations"] = None
        if not with_metadata:
            layers["metadata"] = None
        if not with_task_annotations_status:
            layers["status"] = None
        new = Commit(layers=layers, recipe=c.recipe, parents=(src_head,), op="clone", info=info,
                     author=default_author(), message=message or f"clone {src.name} -> {clone_name}",
                     time=now_iso())
        rec = DatasetRecord(name=clone_name, id=new_item_id(), created=now_iso(),
                            info={"src_dataset": src.id})
        repo.publish(ds=None, expected_head=None, commit=new, create=rec)
        return Dataset(store, repo.dataset(clone_name))
    return _clone_into(src, c, src_head, filters, info, dst_dataset, target_directory,
                       with_items_annotations, with_metadata, with_task_annotations_status, message)


class _FolderCheck:
    """Refuses a cloned item name that would clash with the destination's items: an item
    inside one of them (``/x/b`` into a dataset holding ``/x``) or one that is a folder of
    them. The source's names are one consistent version under one prefix, so they cannot
    clash among themselves; only the destination's names need checking. Also counts the
    cloned names per folder, to carry the destination's folder index forward."""

    def __init__(self, objs: ObjectStore, dst_paths: bytes, dst_folders: bytes) -> None:
        self.objs = objs
        self.dst_paths = dst_paths
        self.dst_folders = dst_folders
        self.not_items: set[str] = set()
        self.delta: dict[str, int] = {}

    def check(self, fn: str) -> None:
        i = fn.rfind("/")
        count_folders(self.delta, fn, 1)
        while i > 0:
            d = fn[:i]
            if d not in self.not_items:
                v = tree.get(self.objs, self.dst_paths, path_key(d))
                if v is not None and v[0] == d:
                    raise inside_item_error(fn, d)
                self.not_items.add(d)
            i = fn.rfind("/", 0, i)
        if folder_count(self.objs, self.dst_folders, fn):
            inner = next(name for _, (name, _iid) in tree.items(self.objs, self.dst_paths)
                         if name.startswith(fn + "/"))
            raise holds_items_error(fn, inner)

    def new_root(self) -> bytes:
        return apply_folder_delta(self.objs, self.dst_folders, self.delta)


def _clone_into(src: Dataset, c: Commit, src_head: bytes, filters: Any, info: dict[str, Any],
                dst_dataset: Any, target_directory: str | None, with_ann: bool, with_meta: bool,
                with_status: bool, message: str) -> Dataset:
    from dvstore.api import Dataset

    store = src._store
    repo = store.repo
    objs = repo.objects
    dst = dst_dataset if isinstance(dst_dataset, Dataset) else store.datasets.get(str(dst_dataset))
    if dst.record.id == src.record.id:
        raise UsageError("cannot clone a dataset into itself")
    tdir = normalize_dir(target_directory or "/")
    info["clone"]["target_directory"] = tdir
    prefix = "" if tdir == "/" else tdir
    chosen = select(store, c, filters)
    # The caller holds the store lock.
    dst_head = repo.head(dst.record)
    d = repo.commit(dst_head)
    dst_items = d.layers["items"] or tree.EMPTY
    dst_paths = repo.path_index(dst_items)
    layers: dict[str, Any] = dict(d.layers)
    changes: dict[str, dict[bytes, Any]] = {k: {} for k in layers}
    path_changes: dict[bytes, Any] = {}
    clash = _FolderCheck(objs, dst_paths, repo.folder_index(dst_items))
    for iid, irec in tree.items(objs, c.layers["items"] or tree.EMPTY):
        if chosen is not None and iid not in chosen:
            continue
        if tree.get(objs, dst_items, iid) is not None:
            raise UsageError(f"{dst.name} already holds item {irec['filename']} (id {iid.hex()})",
                             hint="this item was cloned into it before")
        fn = normalize_filename(prefix + irec["filename"])
        pk = path_key(fn)
        if tree.get(objs, dst_paths, pk) is not None or pk in path_changes:
            raise UsageError(f"Item already exists at {fn}")
        clash.check(fn)
        path_changes[pk] = [fn, iid]
        changes["items"][iid] = dict(irec, filename=fn)
        for layer, flag in (("annotations", with_ann), ("metadata", with_meta), ("status", with_status)):
            src_root = c.layers[layer]
            if flag and src_root:
                v = tree.get(objs, src_root, iid)
                if v is not None:
                    changes[layer][iid] = v
    for layer, ch in changes.items():
        if ch:
            layers[layer] = tree.apply(objs, layers[layer] or tree.EMPTY, ch)
    new = Commit(layers=layers, recipe=d.recipe, parents=(dst_head, src_head), op="clone", info=info,
                 author=default_author(), message=message or f"clone {src.name} into {dst.name}{prefix}",
                 time=now_iso())
    new_paths = tree.apply(objs, dst_paths, path_changes)
    repo.publish(ds=dst.record, expected_head=dst_head, commit=new,
                 path_index=(layers["items"], new_paths), folders=clash.new_root())
    return Dataset(store, dst.record)
