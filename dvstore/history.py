"""History operations: diff between versions, tags, restore, the reflog, and snapshots.

It owns what "what changed" means for a dataset (layer by layer: items, annotations per
annotation id, metadata as dotted paths, statuses, label counts, the recipe) and the
rules for naming and going back to versions. Versions are never rewritten: a restore or a
rollback is a new version whose layer roots equal an old one's.

It must not walk a whole dataset where the differences suffice: ``diff_commits`` walks the
four layer tries together through ``tree.diff``, which skips every subtree whose id is equal
on both sides, so its cost follows the number of changed items. The one exception is the
absolute label count (``labels=True``), which reads every annotation set and says so.

Writes go through ``Repository.publish`` and ``Repository.move_ref`` (the write order lives
there). The one transaction of its own is the empty one of ``_see_latest``, which makes a
version left by a killed writer visible before a head is read to act on.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from dvstore import perf, tree
from dvstore.errors import DvsError, UsageError
from dvstore.hashing import Digest, short
from dvstore.model import LAYERS, Commit, default_author, now_iso, validate_dataset_name
from dvstore.repo import ANNSET, HEXLIKE_RE, DatasetRecord, Repository, is_tag_name
from dvstore.storage.objects import ObjectStore

if TYPE_CHECKING:
    from dvstore.api import Dataset

__all__ = [
    "CHEAP_LABEL_ITEMS",
    "Snapshot",
    "delete_tag",
    "diff",
    "diff_commits",
    "differs",
    "label_counts",
    "reflog",
    "reflog_of",
    "resolve",
    "restore",
    "restore_deleted",
    "snapshot",
    "stat",
    "tag",
    "tags",
    "validate_tag",
]

CHEAP_LABEL_ITEMS = 10_000
"""Absolute label counts are "cheap" (given by ``labels=None``) up to this many annotated items
per side: counting reads one annotation set per annotated item, so it is O(dataset)."""

_MAX_SNAPSHOT_SUFFIX = 10_000


# --------------------------------------------------------------------------------------
# diff


@perf.bulk_op
def diff(a: Dataset, b: Dataset, *, labels: bool | None = False) -> dict[str, Any]:
    """What changes from version ``a`` to version ``b``, layer by layer.

    ``a`` and ``b`` are datasets of one store, each at its head or pinned to a version
    (``ds.at(rev)``); they may be two versions of one dataset or of two related datasets (a
    clone and its source share item ids). Unrelated datasets share no item ids, so every
    item shows as removed on one side and added on the other.

    Args:
        a: The "before" side.
        b: The "after" side.
        labels: Also count every label on both sides (reads all annotation sets: O(dataset)).
            None: only when both sides have at most ``CHEAP_LABEL_ITEMS`` annotated items.

    Returns:
        The diff document (docs/history.md): ``{"a", "b", "identical", "items", "annotations",
        "metadata", "status", "labels", "recipe"}``.

    Raises:
        UsageError: The two datasets live in different stores.
    """
    repo = a._repo
    if b._repo.dir != repo.dir:
        raise UsageError("cannot diff datasets of two different stores")
    ida, idb = a.head_id, b.head_id
    ca, cb = repo.commit(ida), repo.commit(idb)
    recipes = None if ca.recipe == cb.recipe else (repo.recipe(ca.recipe), repo.recipe(cb.recipe))
    doc = diff_commits(repo.objects, ca, cb, recipes=recipes, labels=labels)
    doc["a"] = {"dataset": a.name, "version": ida.hex()}
    doc["b"] = {"dataset": b.name, "version": idb.hex()}
    return doc


def diff_commits(
    objects: ObjectStore,
    ca: Commit,
    cb: Commit,
    *,
    recipes: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
    labels: bool | None = False,
) -> dict[str, Any]:
    """The diff document of two commits, without the ``a``/``b`` version names.

    Args:
        objects: Where the layer tries and annotation sets are read from.
        ca: The "before" commit.
        cb: The "after" commit.
        recipes: Both recipe records when the recipe ids differ (None when they are equal).
        labels: As in ``diff``.

    Returns:
        The diff document (see ``diff``).
    """
    names = _Names(objects, ca.layers["items"], cb.layers["items"])
    items = _diff_items(objects, ca.layers["items"], cb.layers["items"], names)
    annotations, change = _diff_annotations(objects, ca.layers["annotations"], cb.layers["annotations"], names)
    doc: dict[str, Any] = {
        "items": items,
        "annotations": annotations,
        "metadata": _diff_metadata(objects, ca.layers["metadata"], cb.layers["metadata"], names),
        "status": _diff_status(objects, ca.layers["status"], cb.layers["status"], names),
        "labels": {"change": {k: change[k] for k in sorted(change) if change[k]}},
        "recipe": _diff_recipe(ca.recipe, cb.recipe, recipes),
    }
    if labels is None:
        labels = all(tree.count(objects, c.layers["annotations"] or tree.EMPTY) <= CHEAP_LABEL_ITEMS for c in (ca, cb))
    if labels:
        la, lb = label_counts(objects, ca.layers["annotations"]), label_counts(objects, cb.layers["annotations"])
        doc["labels"]["counts"] = {k: {"a": la.get(k, 0), "b": lb.get(k, 0)} for k in sorted(set(la) | set(lb))}
    doc["identical"] = not differs(doc)
    return doc


def differs(doc: Mapping[str, Any]) -> bool:
    """Whether a diff document reports any difference (``dvs diff --exit-code``)."""
    counts = stat(doc)
    return counts["recipe"]["changed"] or any(
        n for section in ("items", "annotations", "metadata", "status") for n in counts[section].values()
    )


def stat(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The counts of a diff document: the same sections, with numbers instead of lists."""
    md = doc["metadata"]
    return {
        "items": {k: len(v) for k, v in doc["items"].items()},
        "annotations": {k: len(v) for k, v in doc["annotations"].items()},
        "metadata": {"items": len(md["changed"]), "keys": sum(md["keys"].values())},
        "status": {k: len(v) for k, v in doc["status"].items()},
        "labels": dict(doc["labels"]),
        "recipe": {"changed": doc["recipe"]["changed"]},
    }


def label_counts(objects: ObjectStore, annotations_root: bytes | None) -> Counter[str]:
    """Annotations per label over a whole annotations layer: O(annotated items), not O(diff)."""
    counts: Counter[str] = Counter()
    for _, oid in tree.items(objects, annotations_root or tree.EMPTY):
        counts.update(_labels(objects.get(oid, ANNSET)))
    return counts


class _Names:
    """Item id -> filename for the items a diff reports, looked up once each.

    Items that changed in the items layer are named from the diff itself; an item changed
    only in another layer costs one trie lookup (the "after" side first: its current name).
    """

    def __init__(self, objects: ObjectStore, items_a: bytes | None, items_b: bytes | None) -> None:
        self._objects = objects
        self._roots = [r for r in (items_b, items_a) if r]
        self._known: dict[bytes, str] = {}

    def remember(self, iid: bytes, filename: str) -> None:
        self._known[iid] = filename

    def __call__(self, iid: bytes) -> str:
        fn = self._known.get(iid)
        if fn is None:
            fn = f"<item {iid.hex()}>"  # an item without an items record: a damaged version
            for root in self._roots:
                rec = tree.get(self._objects, root, iid)
                if rec is not None:
                    fn = rec["filename"]
                    break
            self._known[iid] = fn
        return fn


def _diff_items(objects: ObjectStore, ra: bytes | None, rb: bytes | None, names: _Names) -> dict[str, Any]:
    added: list[str] = []
    removed: list[str] = []
    modified: list[str] = []
    renamed: list[dict[str, str]] = []
    hidden: list[dict[str, Any]] = []
    for iid, va, vb in tree.diff(objects, ra, rb):
        if vb is None:
            assert va is not None  # tree.diff never yields a key absent on both sides
            names.remember(iid, va["filename"])
            removed.append(va["filename"])
            continue
        names.remember(iid, vb["filename"])
        if va is None:
            added.append(vb["filename"])
            continue
        if va["filename"] != vb["filename"]:
            renamed.append({"from": va["filename"], "to": vb["filename"]})
        if bool(va.get("hidden")) != bool(vb.get("hidden")):
            hidden.append({"filename": vb["filename"], "hidden": bool(vb.get("hidden"))})
        # Anything else that differs (the binary, or fields that follow it) is a modification:
        # an item whose record differs is never reported as unchanged.
        rest_a = {k: v for k, v in va.items() if k not in ("filename", "hidden")}
        rest_b = {k: v for k, v in vb.items() if k not in ("filename", "hidden")}
        if not tree.same_value(rest_a, rest_b):
            modified.append(vb["filename"])
    return {
        "added": sorted(added),
        "removed": sorted(removed),
        "modified": sorted(modified),
        "renamed": sorted(renamed, key=lambda r: (r["to"], r["from"])),
        "hidden": sorted(hidden, key=lambda r: r["filename"]),
    }


def _labels(annset: Mapping[str, Any] | None) -> Iterator[str]:
    # Annotations without a label (notes, some classifications) are not counted.
    for ann in (annset or {}).values():
        label = ann.get("label") if isinstance(ann, dict) else None
        if isinstance(label, str):
            yield label


def _diff_annotations(
    objects: ObjectStore, ra: bytes | None, rb: bytes | None, names: _Names
) -> tuple[dict[str, Any], Counter[str]]:
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    modified: list[dict[str, Any]] = []
    change: Counter[str] = Counter()
    for iid, oa, ob in tree.diff(objects, ra, rb):
        sa: Mapping[str, Any] = objects.get(oa, ANNSET) if oa else {}
        sb: Mapping[str, Any] = objects.get(ob, ANNSET) if ob else {}
        change.subtract(_labels(sa))
        change.update(_labels(sb))
        fn = names(iid)
        for aid in sorted(set(sa) | set(sb)):
            x, y = sa.get(aid), sb.get(aid)
            if x is None:
                added.append(_ann_ref(fn, aid, y))
            elif y is None:
                removed.append(_ann_ref(fn, aid, x))
            elif not tree.same_value(x, y):
                _, _, mod, fields = _compare(_flatten(x), _flatten(y))
                ref = _ann_ref(fn, aid, y)
                ref["fields"] = fields
                if x.get("label") != y.get("label"):
                    ref["label_from"] = x.get("label")
                modified.append(ref)
    key = _by_filename_then("id")
    return {
        "added": sorted(added, key=key),
        "removed": sorted(removed, key=key),
        "modified": sorted(modified, key=key),
    }, change


def _ann_ref(filename: str, aid: str, ann: Any) -> dict[str, Any]:
    ann = ann if isinstance(ann, dict) else {}
    return {"filename": filename, "id": aid, "type": ann.get("type"), "label": ann.get("label")}


def _by_filename_then(field: str) -> Any:
    return lambda r: (r["filename"], str(r[field]))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted path: leaf value}; lists and empty dicts are leaves."""
    out: dict[str, Any] = {}
    stack = [(prefix, value)]
    while stack:
        path, v = stack.pop()
        if isinstance(v, dict) and v:
            stack.extend((f"{path}.{k}" if path else str(k), sub) for k, sub in v.items())
        elif path:
            out[path] = v
    return out


def _compare(fa: Mapping[str, Any], fb: Mapping[str, Any]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(added, removed, modified, all changed) dotted paths between two flattened records."""
    added = sorted(k for k in fb if k not in fa)
    removed = sorted(k for k in fa if k not in fb)
    modified = sorted(k for k in fa if k in fb and not tree.same_value(fa[k], fb[k]))
    return added, removed, modified, sorted(added + removed + modified)


def _diff_metadata(objects: ObjectStore, ra: bytes | None, rb: bytes | None, names: _Names) -> dict[str, Any]:
    changed: list[dict[str, Any]] = []
    keys: Counter[str] = Counter()
    for iid, va, vb in tree.diff(objects, ra, rb):
        added, removed, modified, every = _compare(_flatten(va or {}), _flatten(vb or {}))
        if not every:
            continue
        keys.update(every)
        changed.append({"filename": names(iid), "added": added, "removed": removed, "modified": modified})
    changed.sort(key=lambda r: r["filename"])
    return {"changed": changed, "keys": {k: keys[k] for k in sorted(keys)}}


def _task_status(t: Any) -> Any:
    return t.get("status") if isinstance(t, dict) else t


def _diff_status(objects: ObjectStore, ra: bytes | None, rb: bytes | None, names: _Names) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    qa: list[dict[str, Any]] = []
    for iid, va, vb in tree.diff(objects, ra, rb):
        fn = names(iid)
        ta, tb = (va or {}).get("tasks") or {}, (vb or {}).get("tasks") or {}
        for tid in sorted(set(ta) | set(tb)):
            if not tree.same_value(ta.get(tid), tb.get(tid)):
                tasks.append(
                    {"filename": fn, "task": tid, "from": _task_status(ta.get(tid)), "to": _task_status(tb.get(tid))}
                )
        qa_a, qa_b = (va or {}).get("annotations") or {}, (vb or {}).get("annotations") or {}
        for aid in sorted(set(qa_a) | set(qa_b)):
            if not tree.same_value(qa_a.get(aid), qa_b.get(aid)):
                qa.append({"filename": fn, "annotation": aid, "from": qa_a.get(aid), "to": qa_b.get(aid)})
    return {
        "tasks": sorted(tasks, key=_by_filename_then("task")),
        "annotations": sorted(qa, key=_by_filename_then("annotation")),
    }


def _diff_recipe(
    ida: bytes,
    idb: bytes,
    recipes: tuple[Mapping[str, Any], Mapping[str, Any]] | None,
) -> dict[str, Any]:
    if ida == idb:
        return {"changed": False}
    if recipes is None:
        raise UsageError("the recipes differ: pass both recipe records")
    from dvstore.recipes_merge import diff_recipes

    return {"changed": True, "a": ida.hex(), "b": idb.hex(), **diff_recipes(recipes[0], recipes[1])}


# --------------------------------------------------------------------------------------
# revisions and tags


def resolve(ds: Dataset, rev: str | bytes) -> Digest:
    """The commit id a revision of ``ds`` names, as ``restore`` and ``tag`` accept it.

    ``rev`` is a commit id (32 bytes), or a string: an id prefix (6+ hex), a tag, ``~N``,
    ``{N}`` (reflog), any of those written ``@REV`` or ``NAME@REV`` with ``ds``'s own name.

    Raises:
        UsageError: A malformed revision, or ``OTHER@REV`` for another dataset.
        NotFoundError: No such version.
    """
    repo = ds._repo
    if isinstance(rev, bytes):
        repo.commit(rev)  # raises NotFoundError / CorruptObjectError for a non-commit
        return Digest(rev)
    spec = rev.strip()
    if "@" in spec:
        name, _, spec = spec.partition("@")
        if name and name != ds.name:
            raise UsageError(
                f"{rev!r} is a version of {name}, not of {ds.name}",
                hint="restore and tag take versions of the same dataset; see 'dvs clone --into'",
            )
    return repo.resolve_rev(ds.record, repo.head(ds.record), spec)


def validate_tag(name: str) -> str:
    """Tag names: letters, digits, '.', '_' and '-' (not first), at most 128; not hex-like."""
    if not isinstance(name, str) or not is_tag_name(name):
        raise UsageError(f"invalid tag name: {name!r}", hint="use letters, digits, '.', '_' and '-'")
    # Spelled like an id prefix, it would shadow that prefix in NAME@REV (tags are looked up
    # first), so such a name is refused rather than silently ambiguous.
    if HEXLIKE_RE.fullmatch(name):
        raise UsageError(
            f"tag name {name!r} looks like a version id",
            hint="a tag must not read as an id prefix; add a letter outside a-f (either case)",
        )
    return name


def tag(ds: Dataset, name: str, rev: str | bytes | None = None, *, force: bool = False) -> Digest:
    """Name a version of ``ds`` (default: the handle's version, i.e. the head unless pinned).

    A tag is a gc root and never moves by itself; ``force`` moves an existing one.

    Returns:
        The tagged commit id.

    Raises:
        UsageError: A malformed name, or the tag exists and ``force`` is not set.
    """
    validate_tag(name)
    repo = ds._repo
    with repo.lock():
        _see_latest(repo)
        # Under the shared store lock so gc (exclusive) cannot drop the commit mid-tagging.
        target = ds.head_id if rev is None else resolve(ds, rev)
        if not force and name in repo.tags(ds.record):
            raise UsageError(f"tag already exists: {ds.name}@{name}", hint="pick another name, or move it with --force")
        repo.move_ref(ds.record, tag=name, new=target, expected=None, op="tag", force=force)
    return target


def delete_tag(ds: Dataset, name: str) -> None:
    """Remove a tag; its version stays until gc finds nothing else keeping it."""
    repo = ds._repo
    with repo.lock():  # shared, like every other ref move: gc (exclusive) never sees it half-done
        _see_latest(repo)
        repo.move_ref(ds.record, tag=name, new=None, expected=None, op="tag")


def tags(ds: Dataset) -> dict[str, Digest]:
    """Tag name -> commit id, sorted by name."""
    t = ds._repo.tags(ds.record)
    return {k: t[k] for k in sorted(t)}


# --------------------------------------------------------------------------------------
# restore and the reflog


def restore(ds: Dataset, rev: str | bytes, *, message: str = "") -> Digest:
    """Make a new head version of ``ds`` equal to the version ``rev`` names.

    The new version has op "restore", the layer roots and recipe of ``rev``, the current
    head as its parent and ``info = {"restored": <rev id hex>}``: history is never
    rewritten, so a restore is itself undone by restoring ``@{1}``. When the head already
    has ``rev``'s content nothing is written and the head id is returned.

    Raises:
        NotFoundError: ``rev`` names no version.
        ConflictError: Another writer moved the head during the restore.
    """
    repo = ds._repo
    with repo.lock():
        _see_latest(repo)
        head = repo.head(ds.record)
        target = resolve(ds, rev)
        old, cur = repo.commit(target), repo.commit(head)
        if _same_content(old, cur):
            return head
        commit = Commit(
            layers=dict(old.layers),
            recipe=old.recipe,
            parents=(head,),
            op="restore",
            info={"restored": target.hex()},
            author=default_author(),
            message=message or f"restore {_describe(rev, target)}",
            time=now_iso(),
        )
        # The derived filename index is keyed by the items root, which the old version
        # already has, so nothing is rebuilt here.
        return repo.publish(ds=ds.record, expected_head=head, commit=commit)


def restore_deleted(repo: Repository, name: str, rev: str | bytes, *, dataset_id: str | None = None,
                    message: str = "") -> tuple[Digest, Digest]:
    """Bring a deleted dataset back as ``name``, its head equal to the version ``rev``.

    The dataset is the most recently deleted one last named ``name``, or with ``dataset_id``
    (a hex prefix, see ``Repository.deleted_datasets``) any deleted one, which then gets
    ``name``. It gets its id back, so its reflog and tags are its own again. ``rev`` is read
    in its history as ``restore`` reads it, with its head at the delete as the head:
    ``@{1}`` (the entry before the delete) is that head, ``~N``, a tag, an id prefix. The
    new head is that head itself when ``rev`` has its content, else a new ``restore``
    version (parent: that head), as ``restore`` does; the reflog entry's op is "restore".
    A head that was lost before the delete (fsck's ``ref-dangling``) is no parent: the new
    head is then the version ``rev`` names itself.

    Returns:
        (the new head, the version ``rev`` named).

    Raises:
        NotFoundError: No such deleted dataset (gc expired it), or no such version.
        UsageError: ``name`` is taken, or ``rev`` names another dataset.
    """
    validate_dataset_name(name)
    with repo.lock():
        _see_latest(repo)
        gone = repo.deleted_dataset(None if dataset_id is not None else name, dataset_id=dataset_id)
        old_name = gone.record.name
        if isinstance(rev, bytes):
            repo.commit(rev)
            target = Digest(rev)
        else:
            spec = rev.strip()
            if "@" in spec:
                ref_name, _, spec = spec.partition("@")
                if ref_name and ref_name not in (name, old_name):
                    raise UsageError(f"{rev!r} is a version of {ref_name}, not of the deleted {old_name}",
                                     hint="restore takes versions of the dataset it brings back")
            if not spec:
                raise UsageError(f"invalid revision: {rev!r}", hint="use an id prefix, a tag, ~N or @{N}")
            target = repo.resolve_rev(gone.record, Digest(gone.head), spec)
        old = repo.commit(target)
        try:
            last: Commit | None = repo.commit(gone.head)
        except DvsError:
            last = None  # deleted because its head was lost: no version to build on
        record = DatasetRecord(name, gone.record.id, gone.record.created, gone.record.info)
        what = f"restore deleted {old_name} to {_describe(rev, target)}"
        if last is None or _same_content(old, last):
            commit = old if last is None else last  # a version it had: no new one
        else:
            commit = Commit(layers=dict(old.layers), recipe=old.recipe, parents=(gone.head,), op="restore",
                            info={"restored": target.hex()}, author=default_author(),
                            message=message or what, time=now_iso())
        new = repo.publish(ds=None, expected_head=None, commit=commit, create=record, op="restore",
                           op_message=message or what)
        return new, target


def _see_latest(repo: Repository) -> None:
    """Make this process see the latest durable version before reading a head to act on.

    A writer killed inside LMDB's commit, after its meta page was written but before the
    shared transaction id was bumped, leaves a commit that is durable but invisible to
    readers of processes that already had the store open, until the next write transaction
    (which finds the dead owner's mutex and recovers). A rollback right after a killed
    processing step is exactly that moment: without this, its head read is stale and the
    compare-and-swap fails with a bogus "dataset moved". An empty write transaction does the
    recovery and writes nothing (LMDB skips the commit of a clean transaction).
    """
    repo.db.write(lambda t: None)


def _same_content(a: Commit, b: Commit) -> bool:
    return a.recipe == b.recipe and all(a.layers[k] == b.layers[k] for k in LAYERS)


def _describe(rev: str | bytes, target: bytes) -> str:
    return short(target) if isinstance(rev, bytes) else f"{rev} ({short(target)})"


def reflog(ds: Dataset) -> list[dict[str, Any]]:
    """Every head move of ``ds``, newest first, each with the ``NAME@{N}`` that names it.

    ``NAME@{0}`` is the current head and ``NAME@{1}`` the head before the last move, so
    ``restore(ds, "@{1}")`` undoes the last operation (a restore included).
    """
    return reflog_of(ds._repo, ds.record)


def reflog_of(repo: Repository, record: DatasetRecord) -> list[dict[str, Any]]:
    """``reflog`` of a dataset record, also of a deleted one (its delete is ``{0}``)."""
    out = []
    for n, r in enumerate(repo.reflog(record)):
        out.append(
            {
                "index": n,
                "ref": f"{record.name}@{{{n}}}",
                "old": _hex(r.get("old")),
                "new": _hex(r.get("new")),
                "op": r.get("op", ""),
                "time": r.get("time", ""),
                "message": r.get("message", ""),
            }
        )
    return out


def _hex(v: Any) -> str | None:
    return v.hex() if isinstance(v, bytes) else None


# --------------------------------------------------------------------------------------
# snapshots


class Snapshot:
    """A tagged version to come back to: ``with ds.snapshot("before dedup") as snap:``.

    The tag is recorded when the snapshot is taken. Changes made in the block (through
    ``ds.edit()``, as many versions as it likes) stay when the block succeeds; when any
    exception leaves the block, the dataset is restored to the snapshot (one "restore"
    version) and the exception propagates. ``rollback()`` restores it at any later time.
    """

    def __init__(self, dataset: Dataset, tag_name: str, commit: Digest) -> None:
        self.dataset = dataset
        self.tag = tag_name
        self.commit = commit
        self.rolled_back: Digest | None = None

    def __repr__(self) -> str:
        return f"Snapshot({self.dataset.name}@{self.tag}, {short(self.commit)})"

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        if exc_type is None:
            return False
        # Any exception, KeyboardInterrupt included, means the processing did not finish.
        try:
            self.rollback(message=f"rollback to snapshot {self.tag} after {exc_type.__name__}")
        except DvsError as err:
            # The rollback error is the one to see (the dataset still holds the partial work);
            # the block's exception stays attached as its __context__.
            err.hint = err.hint or f"the dataset was not rolled back; run 'dvs restore {self.dataset.name} {self.tag}'"
            raise
        return False

    def rollback(self, *, message: str = "") -> Digest:
        """Restore the dataset to this snapshot; returns the head id (new unless already equal)."""
        # By commit id, not tag name: deleting or moving the tag later cannot redirect it.
        self.rolled_back = restore(self.dataset, self.commit, message=message or f"rollback to snapshot {self.tag}")
        return self.rolled_back

    def diff(self) -> dict[str, Any]:
        """What changed since the snapshot (snapshot -> current head)."""
        from dvstore.api import Dataset

        ds = self.dataset
        return diff(Dataset(ds._store, ds.record, self.commit), Dataset(ds._store, ds.record))


def snapshot(ds: Dataset, name: str | None = None) -> Snapshot:
    """Tag the version ``ds`` is at and return a ``Snapshot`` of it.

    ``name`` becomes the tag after replacing characters a tag cannot hold with '-'
    ("before dedup" -> "before-dedup"); without one it is ``snapshot-<UTC time>``. A name
    already taken gets the first free ``-2``, ``-3``... suffix, so a script that snapshots
    under one name on every run keeps every snapshot and never fails on the name.
    """
    repo = ds._repo
    base = _snapshot_tag(name)
    for n in range(1, _MAX_SNAPSHOT_SUFFIX + 1):
        candidate = base if n == 1 else f"{base[:120]}-{n}"
        if candidate in repo.tags(ds.record):
            continue
        try:
            target = tag(ds, candidate)
        except UsageError:
            if candidate in repo.tags(ds.record):  # another process took the name meanwhile
                continue
            raise
        return Snapshot(ds, candidate, target)
    raise UsageError(f"too many snapshots named {base!r}", hint="delete old ones with 'dvs tag --delete'")


def _snapshot_tag(name: str | None) -> str:
    if name is not None:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:128]
        if slug and is_tag_name(slug):
            return f"snapshot-{slug}" if HEXLIKE_RE.fullmatch(slug) else slug
    return "snapshot-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
