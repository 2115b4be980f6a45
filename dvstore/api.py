"""The public Python API, shaped like dtlpy where users would look for it.

    store = Store.init("path")  /  Store("path")  /  Store.find()
    ds = store.datasets.create("pets")            # store.datasets.get(name) / .list() / .delete()
    with ds.edit("label the cats") as e:           # one version per block
        e.add_file("cat.jpg", "/cats/cat.jpg")
        e.add_annotation("/cats/cat.jpg", {"type": "box", "label": "cat", "coordinates": [...]})
    for item in ds.items.list(filters={"filename": "/cats/**"}): ...
    item = ds.items.get(filepath="/cats/cat.jpg"); item.annotations; item.metadata; item.read()

It orchestrates ``repo`` (the write order), ``edit`` (changes) and ``views`` (shapes). It owns
no storage format of its own.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dvstore import perf, tree
from dvstore.edit import Editor
from dvstore.errors import NotFoundError, UsageError
from dvstore.hashing import Digest, from_hex, short
from dvstore.model import Commit, default_author, new_item_id, now_iso, validate_dataset_name
from dvstore.repo import ANNSET, RECIPE, DatasetRecord, Repository, find_store
from dvstore.views import item_json


class Store:
    """An open dvstore store (a ``.dvs`` directory)."""

    def __init__(self, path: str | None = None) -> None:
        self.repo = Repository(find_store(explicit=path) if path else find_store())
        self.datasets = Datasets(self)

    @classmethod
    def init(cls, directory: str = ".") -> Store:
        Repository.init(directory)
        return cls(os.path.join(directory, ".dvs"))

    @classmethod
    def find(cls, start: str | None = None) -> Store:
        s = cls.__new__(cls)
        s.repo = Repository(find_store(start=start))
        s.datasets = Datasets(s)
        return s

    @property
    def path(self) -> str:
        return self.repo.dir

    def gc(self, *, dry_run: bool = False, expire: str | None = None, compact: bool = False) -> Any:
        """Reclaim unreferenced space; ``compact`` also shrinks the database file (see dvstore.gc)."""
        import dvstore.maintenance as maintenance

        return maintenance.gc(self, dry_run=dry_run, expire=expire, compact=compact)

    def fsck(self, *, read_data: bool = False, rebuild: bool = False) -> Any:
        """Verify the store, read-only unless ``rebuild`` (see dvstore.maintenance)."""
        import dvstore.maintenance as maintenance

        return maintenance.fsck(self, read_data=read_data, rebuild=rebuild)

    def read_blob(self, blob: bytes | str) -> bytes:
        d = from_hex(blob) if isinstance(blob, str) else blob
        return self.repo.blobs.read(d)


class Datasets:
    """``store.datasets``: create, get, list, delete."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._repo = store.repo

    def create(self, name: str, *, recipe: dict[str, Any] | None = None) -> Dataset:
        from dvstore import recipes

        validate_dataset_name(name)
        repo = self._repo
        rec = DatasetRecord(name=name, id=new_item_id(), created=now_iso(), info={})
        rcp = recipe if recipe is not None else recipes.default_recipe()
        rid = repo.objects.put(RECIPE, rcp)
        commit = Commit(layers={"items": tree.EMPTY, "annotations": tree.EMPTY, "metadata": tree.EMPTY,
                                "status": tree.EMPTY},
                        recipe=rid, parents=(), op="create", info={}, author=default_author(),
                        message=f"create {name}", time=now_iso())
        with repo.lock():
            repo.publish(ds=None, expected_head=None, commit=commit, create=rec)
        return Dataset(self._store, repo.dataset(name))

    def get(self, dataset_name: str | None = None, *, dataset_id: str | None = None) -> Dataset:
        if dataset_name is None and dataset_id is None:
            raise UsageError("give a dataset name or id")
        if dataset_name is not None:
            validate_dataset_name(dataset_name)
            return Dataset(self._store, self._repo.dataset(dataset_name))
        for d in self._repo.datasets():
            if d.id_hex == dataset_id:
                return Dataset(self._store, d)
        raise NotFoundError(f"Dataset not found. Id: '{dataset_id}'")

    def list(self) -> builtins.list[Dataset]:
        return [Dataset(self._store, d) for d in self._repo.datasets()]

    def merge(self, merge_name: str, datasets: builtins.list[Any], with_items_annotations: bool = True,
              with_metadata: bool = True, with_task_annotations_status: bool = True, strategy: str = "fail",
              **options: Any) -> Dataset:
        """Merge datasets into a new dataset ``merge_name`` (SEMANTICS §3); dtlpy's names.

        Raises MergeConflictError (carrying the conflicts) with strategy "fail".
        """
        import dvstore.merging as merging

        return merging.merge_datasets(self._store, merge_name, datasets,
                                      with_items_annotations=with_items_annotations, with_metadata=with_metadata,
                                      with_task_annotations_status=with_task_annotations_status,
                                      strategy=strategy, **options)

    def delete(self, dataset_name: str) -> None:
        ds = self._repo.dataset(dataset_name)
        with self._repo.lock():
            head = self._repo.head(ds)
            self._repo.move_ref(ds, new=None, expected=head, op="delete", message=f"delete {dataset_name}")


class Dataset:
    """A named dataset. Attribute reads reflect the head at the time of the call."""

    def __init__(self, store: Store, record: DatasetRecord, rev: Digest | None = None) -> None:
        self._store = store
        self._repo = store.repo
        self.record = record
        self._rev = rev
        self.items = Items(self)

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, head={short(self.head_id)})"

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def id(self) -> str:
        return self.record.id_hex

    @property
    def head_id(self) -> Digest:
        return self._rev or self._repo.head(self.record)

    @property
    def version(self) -> Commit:
        return self._repo.commit(self.head_id)

    def at(self, rev: str) -> Dataset:
        """A read-only view of an older version (commit id prefix, tag, ``~N``)."""
        cid = self._repo.resolve_rev(self.record, self._repo.head(self.record), rev)
        return Dataset(self._store, self.record, cid)

    @property
    def recipe(self) -> dict[str, Any]:
        return self._repo.recipe(self.version.recipe)

    @contextmanager
    def edit(self, message: str = "") -> Iterator[Editor]:
        """Gather changes in the block; they become one version when it ends without error."""
        if self._rev is not None:
            raise UsageError("cannot edit an older version; restore it first")
        with self._repo.lock(), perf.bulk():
            e = Editor(self._repo, self.record, message)
            try:
                yield e
            except BaseException:
                self._repo.objects.discard()
                self._repo.blobs.discard()
                e.close()
                raise
            e.commit()

    def clone(self, clone_name: str | None = None, filters: Any = None, with_items_annotations: bool = True,
              with_metadata: bool = True, with_task_annotations_status: bool = True,
              dst_dataset: Dataset | str | None = None, target_directory: str | None = None) -> Dataset:
        """Clone this version (dtlpy's names and defaults); see SEMANTICS §2.3."""
        from dvstore.clone import clone

        return clone(self, clone_name=clone_name, filters=filters, with_items_annotations=with_items_annotations,
                     with_metadata=with_metadata, with_task_annotations_status=with_task_annotations_status,
                     dst_dataset=dst_dataset, target_directory=target_directory)

    def merge(self, sources: list[Any], with_items_annotations: bool = True, with_metadata: bool = True,
              with_task_annotations_status: bool = True, strategy: str = "fail", **options: Any) -> Dataset:
        """Merge ``sources`` into this dataset as a new version of it (SEMANTICS §3.5)."""
        import dvstore.merging as merging

        return merging.merge_into(self, sources, with_items_annotations=with_items_annotations,
                                  with_metadata=with_metadata,
                                  with_task_annotations_status=with_task_annotations_status,
                                  strategy=strategy, **options)

    def diff(self, other: Dataset | None = None) -> dict[str, Any]:
        """What differs between this version and ``other`` (default: this dataset's head)."""
        from dvstore import history

        return history.diff(self, other if other is not None else self._store.datasets.get(self.name))

    def tag(self, tag: str, rev: str | None = None) -> None:
        """Name a version (default: the head); tags are gc roots."""
        from dvstore import history

        history.tag(self, tag, rev)

    def restore(self, rev: str) -> Digest:
        """Make a new head version equal to ``rev``; history is never rewritten."""
        from dvstore import history

        return history.restore(self, rev)

    def snapshot(self, name: str | None = None) -> Any:
        """``with ds.snapshot("before dedup") as snap:`` (see dvstore.history.Snapshot)."""
        from dvstore import history

        return history.snapshot(self, name)

    def reflog(self) -> list[dict[str, Any]]:
        """Every head move of this dataset, newest first."""
        return self._repo.reflog(self.record)

    def log(self, limit: int | None = None) -> list[tuple[Digest, Commit]]:
        return list(self._repo.history(self.head_id, limit))

    def counts(self) -> dict[str, int]:
        c = self.version
        n_items = tree.count(self._repo.objects, c.layers["items"] or tree.EMPTY)
        n_ann = 0
        if c.layers["annotations"]:
            for _, oid in tree.items(self._repo.objects, c.layers["annotations"]):
                n_ann += len(self._repo.objects.get(oid, ANNSET))
        return {"items": n_items, "annotations": n_ann}


class Item:
    """One item of a version, with its annotations, metadata and status joined in."""

    def __init__(self, dataset: Dataset, iid: bytes, view: dict[str, Any]) -> None:
        self.dataset = dataset
        self.item_id = iid
        self._view = view

    def __repr__(self) -> str:
        return f"Item({self.filename!r})"

    @property
    def id(self) -> str:
        return str(self._view["id"])

    @property
    def filename(self) -> str:
        return str(self._view["filename"])

    @property
    def name(self) -> str:
        return str(self._view["name"])

    @property
    def dir(self) -> str:
        return str(self._view["dir"])

    @property
    def binary(self) -> str:
        return str(self._view["binary"])

    @property
    def size(self) -> int:
        return int(self._view["size"])

    @property
    def hidden(self) -> bool:
        return bool(self._view["hidden"])

    @property
    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = self._view["metadata"]
        return md

    @property
    def annotations(self) -> list[dict[str, Any]]:
        anns: list[dict[str, Any]] = self._view["annotations"]
        return anns

    @property
    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = self._view["status"]
        return st

    def to_json(self) -> dict[str, Any]:
        return dict(self._view)

    def read(self) -> bytes:
        """The item's bytes, verified against its hash; nothing is checked out."""
        return self.dataset._repo.blobs.read(bytes.fromhex(self.binary))

    def download(self, path: str) -> str:
        data = self.read()
        with open(path, "wb") as f:
            f.write(data)
        return path


class Items:
    """``dataset.items``: list and get."""

    def __init__(self, dataset: Dataset) -> None:
        self._ds = dataset

    def _layers(self) -> tuple[Commit, Any]:
        c = self._ds.version
        return c, self._ds._repo.objects

    def _view(self, c: Commit, iid: bytes, irec: dict[str, Any]) -> dict[str, Any]:
        objs = self._ds._repo.objects
        ann_oid = tree.get(objs, c.layers["annotations"], iid) if c.layers["annotations"] else None
        annset = objs.get(ann_oid, ANNSET) if ann_oid else None
        meta = tree.get(objs, c.layers["metadata"], iid) if c.layers["metadata"] else None
        status = tree.get(objs, c.layers["status"], iid) if c.layers["status"] else None
        return item_json(iid, irec, annset, meta, status)

    def get(self, filepath: str | None = None, item_id: str | None = None) -> Item:
        from dvstore.model import normalize_filename
        from dvstore.repo import path_key

        c, objs = self._layers()
        items_root = c.layers["items"] or tree.EMPTY
        if item_id is not None:
            try:
                iid = bytes.fromhex(item_id)
            except ValueError:
                raise UsageError(f"invalid item id {item_id!r}") from None
        elif filepath is not None:
            fn = normalize_filename(filepath)
            v = tree.get(objs, self._ds._repo.path_index(items_root), path_key(fn))
            if v is None or v[0] != fn:
                raise NotFoundError(f"Item not found: {fn}")
            iid = v[1]
        else:
            raise UsageError("give filepath or item_id")
        irec = tree.get(objs, items_root, iid)
        if irec is None:
            raise NotFoundError(f"Item not found: {filepath or item_id}")
        return Item(self._ds, iid, self._view(c, iid, irec))

    def iter_records(self) -> Iterator[tuple[bytes, dict[str, Any], Any, Any, Any]]:
        """(id, items record, annset id, metadata, status) for every item, in id order."""
        c, objs = self._layers()
        others = {layer: c.layers[layer] for layer in ("annotations", "metadata", "status")}
        for iid, irec, row in tree.join(objs, c.layers["items"] or tree.EMPTY, others):
            yield iid, irec, row["annotations"], row["metadata"], row["status"]

    def list(self, filters: Any = None) -> list[Item]:
        """Items matching a DQL filter (Filters, dict or JSON), in filename order by default.

        Raises:
            FilterError: The filter is malformed, or selects annotations, not items.
        """
        from dvstore import filters as dql

        q = dql.compile_query(filters, purpose="list")
        if q.resource != "items":  # an annotations query selects annotations, not items
            raise dql.items_query_error(q.resource, "a listing filter")
        objs = self._ds._repo.objects
        out = []
        for iid, irec, ann_oid, meta, status in self.iter_records():
            annset = objs.get(ann_oid, ANNSET) if ann_oid else None
            view = item_json(iid, irec, annset, meta, status)
            if q.match_item(view, view["annotations"]):
                out.append(Item(self._ds, iid, view))
        out.sort(key=lambda it: it.filename)
        if q.sort:
            views = q.sort_items([it._view for it in out])
            by_id = {it.id: it for it in out}
            out = [by_id[v["id"]] for v in views]
        return out
