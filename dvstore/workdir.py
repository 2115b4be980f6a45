"""Working folders: ``checkout`` a version into a folder, ``status`` of the folder against it,
and ``commit`` of the folder's changes as the next version (CLI.md "The working folder").

Layout::

    DIR/items/<filename>          a copy of the binary (mode 0644, never a link into the store)
    DIR/json/<filename>.json      views.item_json of the item, pretty, sorted keys
    DIR/.dvs-checkout             {"format", "store", "store_id", "dataset", "dataset_id",
                                   "commit", "time"}: where the folder came from

This module owns materialisation (RELIABILITY §3.1: every item name is re-validated, and all
file access goes through ``dvstore.safefs``, which never opens, writes or walks through a
symlink), reading the folder back, and turning what changed into Editor calls (what an
edited json file changes is worked out by ``workdir_json``). It must not touch the store's
write order (``Editor.commit`` / ``Repository.publish`` own it) or trust a name it did not check.

Fast status: every file checkout or commit writes, and every file status had to read, is
recorded in the store's stat cache (``statcache``; key = the file's real path). An
item file whose stat matches a trusted entry naming the item's blob is unchanged without
being read. A json file's entry carries ``{"itemJson": K}`` in its ``system`` slot, where K
hashes the item's four layer records (``_json_key``): the file is unchanged, unread, when K
equals the key of the checked-out version's records.

Rules decided here where the spec is silent (also in the ``commit`` docstring):

* A json file left out (or deleted) changes nothing, and so does a top-level field left out
  of a json file: ``annotations``, ``metadata``, ``status`` / ``metadata.system.refs``,
  ``hidden`` are each applied only when present.
* ``id`` in a json file must be the id of the item at that path; a new item's json has no
  ``id``. ``filename``, when present, must name the item the file's path names.
* Task status can be edited in the ``status`` map or in ``metadata.system.refs``; when both
  are edited they must agree. A task whose status is null is removed.
* An annotation a json file adds, or whose ``type`` or coordinates it edits, must have
  coordinates of its type's shape (``dataloop.coordinates_problem``); coordinates a file
  leaves as checked out are not checked again (an older version may have stored others).
* Moving a file under ``items/`` is a delete plus an add (the new path is a new item).
* After a commit the json of every item the commit touched is rewritten from the new version
  (so minted annotation ids appear), and the json of removed items is deleted.
"""

from __future__ import annotations

import json
import os
import stat as statmod
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from dvstore import codec, perf, tree
from dvstore.api import Dataset, Store
from dvstore.edit import Editor
from dvstore.errors import (
    ConflictError,
    DvsError,
    InvalidNameError,
    NotFoundError,
    StorageError,
    UsageError,
)
from dvstore.hashing import Digest, hash_bytes, short
from dvstore.ingest import CHECKOUT_FILE, Progress
from dvstore.io import dataloop, imageinfo
from dvstore.model import Commit, normalize_filename, now_iso
from dvstore.repo import DatasetRecord, Repository, path_key
from dvstore.safefs import (
    DIR_MODE,
    DirChain,
    DiskFile,
    hash_in,
    open_dir,
    open_in,
    prune,
    read_all,
    read_chunks,
    remove_tree,
    walk_files,
    write_file,
)
from dvstore.statcache import RACY_NS, cache_hit, cache_key, lookup_stat, stat_entry
from dvstore.storage.blobs import SMALL_MAX, storage_error
from dvstore.workdir_json import JsonEdit, VItem, apply_edit, json_edit, render_json, view

CHECKOUT_FORMAT = 1
ITEMS_DIR = "items"
JSON_DIR = "json"
JSON_SUFFIX = ".json"
_JSON_KEY_TAG = b"dvs-item-json:1\0"
_CACHE_MARK = "itemJson"
_CACHE_BATCH = 20_000
JSON_PARTS = ("annotations", "metadata", "status", "hidden")


# -- results -----------------------------------------------------------------------------


@dataclass
class CheckoutStats:
    """What ``checkout`` wrote."""

    dir: str
    dataset: str
    version: str
    items: int = 0
    bytes: int = 0
    json_files: int = 0
    skipped_json: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"dir": self.dir, "dataset": self.dataset, "version": self.version, "items": self.items,
                "bytes": self.bytes, "json_files": self.json_files, "skipped_json": list(self.skipped_json)}


@dataclass
class Status:
    """How a working folder differs from the version it was checked out from.

    ``json_changed`` maps an existing item's filename to the parts its json file changes
    (``annotations``, ``metadata``, ``status``, ``hidden``). ``ignored`` lists json files
    (relative to the folder) that describe no item. ``read`` counts the files whose
    contents had to be read (0 for an unchanged folder whose stat cache is warm).
    """

    dir: str
    dataset: str
    version: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    json_changed: dict[str, list[str]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    read: int = 0

    @property
    def clean(self) -> bool:
        return not (self.added or self.removed or self.modified or self.json_changed)

    def to_json(self) -> dict[str, Any]:
        return {"dir": self.dir, "dataset": self.dataset, "version": self.version, "clean": self.clean,
                "added": list(self.added), "removed": list(self.removed), "modified": list(self.modified),
                "json_changed": {k: list(v) for k, v in self.json_changed.items()},
                "ignored": list(self.ignored)}


@dataclass
class CommitResult:
    """What ``commit_folder`` did: the new version (None when nothing changed) and the changes."""

    version: Digest | None
    parent: Digest
    status: Status
    warnings: list[str] = field(default_factory=list)
    merged_onto: Digest | None = None
    """The head the folder's version was merged into, when the head had moved."""
    folder_version: Digest | None = None
    """The version equal to the folder's content (the merge's second parent after a merge)."""


# -- small helpers -----------------------------------------------------------------------


def _filename_of(top: str, rel: str) -> str:
    try:
        return normalize_filename("/" + rel)
    except InvalidNameError as e:
        raise InvalidNameError(f"hostile file name in the working folder: {top}/{rel!r}: {e.message}",
                               hint=f"rename or remove that file under {top}/") from None


def _cache_key(root: str, top: str, rel: str) -> bytes:
    return cache_key(f"{root}/{top}/{rel}")


def _settle(max_mtime_ns: int) -> int:
    """Wait until files written up to now are no longer "racily clean"; return verified_ns."""
    deadline = time.monotonic() + 1.0
    while True:
        now = time.time_ns()
        if max_mtime_ns < now - RACY_NS - 1_000_000 or time.monotonic() > deadline:
            return now
        time.sleep(max(0.001, min(0.05, (max_mtime_ns + RACY_NS + 2_000_000 - now) / 1e9)))


_CacheRow = tuple[bytes, os.stat_result, bytes, str, dict[str, Any]]
"""(stat-cache key, stat, blob, mimetype, system) of one file, before ``stat_entry``."""


def _store_stat_cache(repo: Repository, pending: list[_CacheRow]) -> None:
    """Record (key, stat, blob, mimetype, system) entries after the racy window; best effort."""
    if not pending:
        return
    verified = _settle(max(p[1].st_mtime_ns for p in pending))
    rows = [(k, stat_entry(st, verified, blob, mt, system)) for k, st, blob, mt, system in pending]
    try:
        for i in range(0, len(rows), _CACHE_BATCH):
            batch = rows[i: i + _CACHE_BATCH]

            def put(t: Any, batch: list[tuple[bytes, bytes]] = batch) -> None:
                for k, v in batch:
                    t.put("stat_cache", k, v)

            repo.db.write(put)
    except DvsError:
        pass  # derived data: a later status hashes instead


# -- the checked-out version -----------------------------------------------------------------


def _json_key(v: VItem) -> str:
    """Hash of the records an item's json is made from: equal keys, equal json."""
    # Layer values come out of the trees in canonical form already.
    return hash_bytes(_JSON_KEY_TAG + codec.encode_canonical([v.iid, v.irec, v.ann_oid, v.meta, v.status])).hex()


def _records(repo: Repository, cid: bytes, filenames: Iterable[str]) -> dict[str, VItem]:
    """The records of some items of a version, by filename (missing names are left out)."""
    c = repo.commit(cid)
    objs = repo.objects
    items_root = c.layers["items"] or tree.EMPTY
    path_root = repo.path_index(items_root)
    out: dict[str, VItem] = {}
    for fn in filenames:
        hit = tree.get(objs, path_root, path_key(fn))
        if hit is None or hit[0] != fn:
            continue
        iid = bytes(hit[1])
        irec = tree.get(objs, items_root, iid)
        if irec is None:
            continue
        vals = []
        for layer in ("annotations", "metadata", "status"):
            root = c.layers[layer]
            vals.append(tree.get(objs, root, iid) if root else None)
        out[fn] = VItem(iid, irec, vals[0], vals[1], vals[2])
    return out


def _version_items(store: Store, rec: DatasetRecord, cid: Digest) -> dict[str, VItem]:
    """Every item of a version by filename, each name checked again (a hand-crafted tree
    can bypass ingest): canonical as ``normalize_filename`` returns it, and unique."""
    ds = Dataset(store, rec, cid)
    out: dict[str, VItem] = {}
    for iid, irec, ann, meta, st in ds.items.iter_records():
        fn: Any = irec.get("filename")
        try:
            canon = normalize_filename(fn)
        except InvalidNameError as e:
            raise InvalidNameError(f"the version holds a hostile item name: {e.message}",
                                   hint="the version was not made by dvs; run 'dvs fsck'") from None
        if canon != fn:
            raise InvalidNameError(f"the version holds an item name not in canonical form: {fn!r} ({canon!r})",
                                   hint="the version was not made by dvs; run 'dvs fsck'")
        if fn in out:
            raise InvalidNameError(f"the version holds two items named {fn!r}",
                                   hint="the version was not made by dvs; run 'dvs fsck'")
        out[fn] = VItem(iid, irec, ann, meta, st)
    return out


def _folders_of(names: Iterable[str]) -> set[str]:
    """Every folder the items need; an item that is also a folder cannot be materialised."""
    names = set(names)
    folders: set[str] = set()
    for fn in names:
        i = fn.find("/", 1)
        while i != -1:
            folders.add(fn[:i])
            i = fn.find("/", i + 1)
    clash = names & folders
    if clash:
        fn = min(clash)
        raise InvalidNameError(f"cannot check out: {fn!r} is both an item and a folder of other items",
                               hint="rename one of them in the dataset")
    return folders


# -- checkout --------------------------------------------------------------------------------


def _resolve(store: Store, dataset: Dataset | str, commit_id: bytes | str | None) -> tuple[DatasetRecord, Digest]:
    repo = store.repo
    if isinstance(dataset, Dataset):
        rec = dataset.record
        default = dataset.head_id
    else:
        rec, default = repo.resolve(dataset)
    if commit_id is None:
        return rec, default
    if isinstance(commit_id, str):
        return rec, repo.resolve_rev(rec, repo.head(rec), commit_id)
    if len(commit_id) != 32:
        raise UsageError(f"invalid commit id {bytes(commit_id).hex()!r}")
    repo.commit(commit_id)  # exists and decodes
    return rec, Digest(bytes(commit_id))


@dataclass
class _Target:
    """The checkout's folder as found: ``fresh`` if it was missing or empty (a failed
    checkout then removes what it wrote), ``made`` the topmost folder created for it."""

    fresh: bool
    made: str | None


def _prepare_target(dest: str, store: Store, force: bool) -> _Target:
    real = os.path.realpath(dest)
    store_real = os.path.realpath(store.path)
    if real == store_real or real.startswith(store_real + os.sep):
        raise UsageError(f"cannot check out inside the store ({store.path})", hint="choose another folder")
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        made = dest
        while not os.path.lexists(os.path.dirname(made)):
            made = os.path.dirname(made)
        try:
            os.makedirs(dest, mode=DIR_MODE, exist_ok=True)
        except OSError as e:
            raise storage_error(e, f"cannot create {dest}") from None
        return _Target(fresh=True, made=made)
    if not statmod.S_ISDIR(st.st_mode):
        raise UsageError(f"{dest} exists and is not a folder")
    if not os.listdir(dest):
        return _Target(fresh=True, made=None)
    if not force:
        raise UsageError(f"{dest} is not empty",
                         hint="check out into an empty folder, or pass --force (in a working folder, --force "
                              "deletes the files under items/ and json/ that the version does not have)")
    for top in (ITEMS_DIR, JSON_DIR):
        inner = os.path.join(real, top)
        if store_real == inner or store_real.startswith(inner + os.sep):
            raise UsageError(f"the store ({store.path}) is inside {dest}/{top}", hint="choose another folder")
    return _Target(fresh=False, made=None)


def _leave_working_folder(root_fd: int) -> bool:
    """Remove ``.dvs-checkout`` before a working folder is overwritten, so that a checkout
    that fails midway is not taken for one of either version. Whether it was one (the file
    was a regular file: a symlink in its place is removed, never followed)."""
    try:
        st = os.stat(CHECKOUT_FILE, dir_fd=root_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if statmod.S_ISDIR(st.st_mode):
        return False  # in the way: writing it at the end says so
    remove_tree(root_fd, CHECKOUT_FILE, CHECKOUT_FILE)
    return statmod.S_ISREG(st.st_mode)


def _remove_unfinished(dest: str, target: _Target) -> None:
    """After a checkout into a missing or empty folder failed: remove what it wrote (items/,
    json/, .dvs-checkout) and the folders it created. Best effort: the error that stopped
    the checkout is the one reported."""
    try:
        root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for name in (ITEMS_DIR, JSON_DIR, CHECKOUT_FILE):
            remove_tree(root_fd, name, name)
    except DvsError:
        return
    finally:
        os.close(root_fd)
    if target.made is not None:
        d = dest
        while True:
            try:
                os.rmdir(d)  # only ever an empty folder
            except OSError:
                return
            if d == target.made:
                return
            d = os.path.dirname(d)


@perf.bulk_op
def checkout(store: Store, dataset: Dataset | str, commit_id: bytes | str | None, dest_dir: str, *,
             force: bool = False, progress: Progress | None = None) -> CheckoutStats:
    """Materialise a version as a working folder (CLI.md "The working folder").

    Args:
        store: The open store.
        dataset: A Dataset, or a name (``NAME`` or ``NAME@REV``).
        commit_id: The version (32-byte id or a revision string); None for ``dataset``'s
            own version (its head, or the revision it was opened at).
        dest_dir: The folder; created when missing. It must be empty unless ``force``.
        force: Write into a non-empty folder. If it is a working folder already (it has a
            ``.dvs-checkout``), its items/ and json/ are made exactly the version's: what the
            version does not have there is deleted (uncommitted changes are lost). Any other
            folder loses nothing: files in the way are replaced, other files are left alone
            (``status`` then shows them as added). Either way nothing outside items/,
            json/ and ``.dvs-checkout`` is touched, and symlinks are removed, never followed.
        progress: Called with (done, total).

    Returns:
        What was written. Every blob is verified while it streams; a corrupt or missing blob
        fails the checkout (CorruptObjectError / NotFoundError) and leaves no file for it.
        A checkout that fails into a missing or empty folder removes everything it wrote
        (and the folders it made); one that fails into a non-empty folder leaves it without
        ``.dvs-checkout`` (not a working folder), and running it again with ``force``
        finishes it.

    Raises:
        InvalidNameError: The version holds a hostile or clashing item name; nothing written.
        UsageError: The folder is not empty (without ``force``), or is inside the store.
    """
    repo = store.repo
    rec, cid = _resolve(store, dataset, commit_id)
    dest = os.path.abspath(dest_dir)
    stats = CheckoutStats(dir=dest, dataset=rec.name, version=cid.hex())
    records = sorted(_version_items(store, rec, cid).items())
    folders = _folders_of(fn for fn, _ in records)
    target = _prepare_target(dest, store, force)
    try:
        pending = _materialise(repo, rec, cid, dest, records, folders, force, stats, progress)
    except BaseException:
        if target.fresh:
            _remove_unfinished(dest, target)
        raise
    _store_stat_cache(repo, pending)
    return stats


def _materialise(repo: Repository, rec: DatasetRecord, cid: Digest, dest: str, records: list[tuple[str, VItem]],
                 folders: set[str], force: bool, stats: CheckoutStats,
                 progress: Progress | None) -> list[_CacheRow]:
    """Write the folder; return the stat-cache rows of what was written."""
    root = os.path.realpath(dest)
    pending: list[_CacheRow] = []
    with ExitStack() as fds:
        root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds.callback(os.close, root_fd)
        with repo.lock():
            was_working_folder = force and _leave_working_folder(root_fd)
            items_fd = open_dir(root_fd, ITEMS_DIR, ITEMS_DIR, create=True, replace_links=force)
            fds.callback(os.close, items_fd)
            json_fd = open_dir(root_fd, JSON_DIR, JSON_DIR, create=True, replace_links=force)
            fds.callback(os.close, json_fd)
            if was_working_folder:
                keep_dirs = {d[1:] for d in folders}
                prune(items_fd, ITEMS_DIR, {fn[1:] for fn, _ in records}, keep_dirs)
                prune(json_fd, JSON_DIR, {fn[1:] + JSON_SUFFIX for fn, _ in records
                                          if fn + JSON_SUFFIX not in folders}, keep_dirs)
            items_chain = DirChain(items_fd, ITEMS_DIR, create=True, replace_links=force)
            fds.callback(items_chain.close)
            json_chain = DirChain(json_fd, JSON_DIR, create=True, replace_links=force)
            fds.callback(json_chain.close)
            total = len(records)
            for i, (fn, v) in enumerate(records):
                rel = fn[1:]
                parts = rel.split("/")
                dfd = items_chain.fd(parts[:-1])
                st = write_file(dfd, parts[-1], repo.blobs.iter_verified(v.irec["blob"]), f"{ITEMS_DIR}/{rel}",
                                 exclusive=not force)
                pending.append((_cache_key(root, ITEMS_DIR, rel), st, bytes(v.irec["blob"]),
                                v.irec.get("mimetype", imageinfo.OCTET_STREAM), v.irec.get("system") or {}))
                stats.items += 1
                stats.bytes += st.st_size
                if fn + JSON_SUFFIX in folders:
                    stats.skipped_json.append(fn)  # json/<fn>.json is a folder of other items' json
                else:
                    data = render_json(view(repo, v))
                    jfd = json_chain.fd(parts[:-1])
                    jst = write_file(jfd, parts[-1] + JSON_SUFFIX, (data,), f"{JSON_DIR}/{rel}{JSON_SUFFIX}",
                                      exclusive=not force)
                    pending.append((_cache_key(root, JSON_DIR, rel + JSON_SUFFIX), jst, hash_bytes(data),
                                    "application/json", {_CACHE_MARK: _json_key(v)}))
                    stats.json_files += 1
                if progress is not None and (i % 256 == 0 or i == total - 1):
                    progress(i + 1, total)
        # Last: a folder without it is not a working folder, so a failed checkout is never
        # mistaken for a complete one.
        _write_checkout_file(root_fd, repo, rec, cid)
    return pending


def _write_checkout_file(root_fd: int, repo: Repository, rec: DatasetRecord, cid: bytes) -> None:
    doc = {"format": CHECKOUT_FORMAT, "store": repo.dir, "store_id": repo.config.get("store_id"),
           "dataset": rec.name, "dataset_id": rec.id_hex, "commit": cid.hex(), "time": now_iso()}
    data = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    write_file(root_fd, CHECKOUT_FILE, (data,), CHECKOUT_FILE)


# -- opening a working folder -------------------------------------------------------------------


@dataclass
class _Workdir:
    root: str
    store: Store
    record: DatasetRecord
    commit: Digest


def find_workdir(start: str = ".") -> str:
    """The working folder holding ``start``: the nearest folder at or above it with a .dvs-checkout."""
    d = os.path.abspath(start)
    if not os.path.isdir(d):
        raise NotFoundError(f"no such folder: {start}")
    while True:
        if os.path.lexists(os.path.join(d, CHECKOUT_FILE)):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            raise NotFoundError(f"{start} is not a dvs working folder (no {CHECKOUT_FILE} here or above)",
                                hint="make one with 'dvs checkout NAME DIR'")
        d = parent


def _open_workdir(directory: str, store_path: str | None) -> _Workdir:
    root = os.path.realpath(find_workdir(directory))
    where = os.path.join(root, CHECKOUT_FILE)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        raw, _ = read_all(root_fd, [CHECKOUT_FILE], where)
    finally:
        os.close(root_fd)
    hint = "check the version out again with 'dvs checkout --force'"
    try:
        doc = dataloop.parse_json_bytes(raw, where, error=UsageError)
    except UsageError as e:
        raise UsageError(f"{where} is malformed: {e.message.removeprefix(where + ': ')}", hint=hint) from None
    try:
        if not isinstance(doc, dict) or doc.get("format") != CHECKOUT_FORMAT:
            raise ValueError("not a checkout record")
        path, name = doc["store"], doc["dataset"]
        dsid, cid = bytes.fromhex(doc["dataset_id"]), bytes.fromhex(doc["commit"])
        if not isinstance(path, str) or not isinstance(name, str) or len(dsid) != 16 or len(cid) != 32:
            raise ValueError("bad field")
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{where} is malformed", hint=hint) from None
    try:
        store = Store(store_path or path)
    except NotFoundError:
        if store_path:
            raise
        raise NotFoundError(f"no dvs store at {path}, where this working folder was checked out from",
                            hint="if the store has moved, name it: dvs --store PATH status|commit") from None
    want = doc.get("store_id")
    if want and store.repo.config.get("store_id") not in (None, want):
        raise UsageError(f"the store at {store.path} is not the store this folder was checked out from",
                         hint=f"that was {path}")
    rec = store.repo.dataset_by_id(dsid)
    if rec is None:
        raise NotFoundError(f"dataset {name!r} (id {dsid.hex()}) no longer exists in the store at {store.path}",
                            hint="see 'dvs datasets'")
    store.repo.commit(cid)
    return _Workdir(root, store, rec, Digest(cid))


# -- status -----------------------------------------------------------------------------------------


@dataclass
class _Scan:
    wd: _Workdir
    status: Status
    version: dict[str, VItem]
    items: dict[str, DiskFile]
    jsons: dict[str, DiskFile]
    edits: dict[str, JsonEdit]
    new_edits: dict[str, JsonEdit]
    cache: list[_CacheRow]


def _index(root_fd: int, top: str) -> dict[str, DiskFile]:
    out: dict[str, DiskFile] = {}
    for f in walk_files(root_fd, top):
        if top == JSON_DIR:
            if not f.rel.endswith(JSON_SUFFIX):
                continue
            fn = _filename_of(top, f.rel[: -len(JSON_SUFFIX)])
        else:
            fn = _filename_of(top, f.rel)
        if fn in out:
            raise UsageError(f"{top}/{f.rel!r} and {top}/{out[fn].rel!r} name the same item {fn!r}",
                             hint="remove one of them")
        out[fn] = f
    return out


def _scan(wd: _Workdir) -> _Scan:
    repo = wd.store.repo
    version = _version_items(wd.store, wd.record, wd.commit)
    st = Status(dir=wd.root, dataset=wd.record.name, version=wd.commit.hex())
    root_fd = os.open(wd.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        items = _index(root_fd, ITEMS_DIR)
        jsons = _index(root_fd, JSON_DIR)
        keys = [_cache_key(wd.root, ITEMS_DIR, f.rel) for f in items.values()]
        keys += [_cache_key(wd.root, JSON_DIR, f.rel) for f in jsons.values()]
        cached = lookup_stat(repo, keys, require_blob=False)
        pending: list[_CacheRow] = []
        edits: dict[str, JsonEdit] = {}
        new_edits: dict[str, JsonEdit] = {}
        for fn in sorted(version):
            v = version[fn]
            f = items.get(fn)
            if f is None:
                st.removed.append(fn)
                continue
            key = _cache_key(wd.root, ITEMS_DIR, f.rel)
            rec = cached.get(key)
            if cache_hit(rec, f.st) and rec is not None:
                if rec[5] != v.irec["blob"]:  # known content, not the item's: modified, unread
                    st.modified.append(fn)
            else:
                parts = [ITEMS_DIR, *f.rel.split("/")]
                digest, head, fst = hash_in(root_fd, parts, f"{ITEMS_DIR}/{f.rel}")
                st.read += 1
                if digest == v.irec["blob"]:
                    mt, system = v.irec.get("mimetype", imageinfo.OCTET_STREAM), v.irec.get("system") or {}
                else:
                    mt, system = imageinfo.sniff(head, fn)
                    st.modified.append(fn)
                pending.append((key, fst, digest, mt, system))
        for fn in sorted(version):
            j = jsons.get(fn)
            if j is None:
                continue
            display = f"{JSON_DIR}/{j.rel}"
            if fn not in items:
                continue  # the item is removed; commit removes its json too
            v = version[fn]
            key = _cache_key(wd.root, JSON_DIR, j.rel)
            jk = _json_key(v)
            rec = cached.get(key)
            if cache_hit(rec, j.st) and rec is not None and isinstance(rec[7], dict) and rec[7].get(_CACHE_MARK) == jk:
                continue
            raw, fst = read_all(root_fd, [JSON_DIR, *j.rel.split("/")], display)
            st.read += 1
            edit = json_edit(repo, display, raw, fn, v)
            if edit is None:
                pending.append((key, fst, hash_bytes(raw), "application/json", {_CACHE_MARK: jk}))
            else:
                edits[fn] = edit
                st.json_changed[fn] = list(edit.parts)
        for fn in sorted(set(items) - set(version)):
            st.added.append(fn)
            j = jsons.get(fn)
            if j is not None:
                display = f"{JSON_DIR}/{j.rel}"
                raw, _ = read_all(root_fd, [JSON_DIR, *j.rel.split("/")], display)
                st.read += 1
                edit = json_edit(repo, display, raw, fn, None)
                if edit is not None:
                    new_edits[fn] = edit
        for fn in sorted(set(jsons) - set(version) - set(items)):
            st.ignored.append(f"{JSON_DIR}/{jsons[fn].rel}")
        st.ignored.sort()
    finally:
        os.close(root_fd)
    return _Scan(wd, st, version, items, jsons, edits, new_edits, pending)


def status(directory: str = ".", *, store_path: str | None = None) -> Status:
    """Compare a working folder with the version it was checked out from.

    Reads no file whose stat matches a trusted stat-cache entry; files it had to read are
    recorded in the stat cache so the next call does not read them again.

    Args:
        directory: The working folder (or a folder inside it).
        store_path: Use this store instead of the one named in ``.dvs-checkout``.

    Raises:
        NotFoundError: No ``.dvs-checkout``; the store or dataset no longer exists.
        UsageError / ImportFormatError / InvalidNameError: a malformed json file, a json
            whose id does not match, a hostile or symlinked file under items/ or json/.
    """
    scan = _scan(_open_workdir(directory, store_path))
    _store_stat_cache(scan.wd.store.repo, scan.cache)
    return scan.status


# -- commit -----------------------------------------------------------------------------------------


def commit(directory: str = ".", message: str = "", *, store_path: str | None = None) -> Digest | None:
    """Record a working folder's changes as one version whose parent is the checked-out one.

    Returns the new version's id, or None when the folder has no changes. See
    ``commit_folder`` for the rules.
    """
    return commit_folder(directory, message, store_path=store_path).version


def commit_folder(directory: str = ".", message: str = "", *, store_path: str | None = None) -> CommitResult:
    """Commit a working folder (CLI.md "The working folder").

    Binaries: a changed file under items/ replaces the item's binary (same id); a missing
    one deletes the item; a new one is a new item. Json files: edits to ``annotations``
    (ids keep identity, an annotation without an id is new, QA status in
    ``metadata.system.status``), ``metadata``, task status (``status`` map or
    ``metadata.system.refs``) and ``hidden`` are applied; a field left out, or the whole
    json file deleted, changes nothing.

    A clean folder commits nothing (None), even when the head has moved.

    Raises:
        ConflictError: The folder has changes and the dataset's head is no longer the
            checked-out version (nothing is written).
    """
    wd = _open_workdir(directory, store_path)
    repo = wd.store.repo
    scan = _scan(wd)
    st = scan.status
    result = CommitResult(version=None, parent=wd.commit, status=st)
    if st.clean:
        _store_stat_cache(repo, scan.cache)
        return result
    if not message:
        message = _summary(st)
    cache = list(scan.cache)
    root_fd = os.open(wd.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with repo.lock():
            # The folder's changes always become a version on top of the checked-out one;
            # if the head moved meanwhile, that version is merged three-way into the head.
            e = Editor(repo, wd.record, message, base=wd.commit)
            try:
                for fn in st.removed:
                    e.delete(fn)
                for fn in sorted(set(st.modified) | set(st.added)):
                    f = scan.items[fn]
                    cache.append(_store_file(e, root_fd, fn, f, wd.root))
                for fn, edit in sorted({**scan.edits, **scan.new_edits}.items()):
                    apply_edit(e, fn, edit)
                _publish_folder(wd, e, result)
            except BaseException:
                repo.objects.discard()
                repo.blobs.discard()
                raise
            finally:
                e.close()
    finally:
        os.close(root_fd)
    if result.folder_version is not None:
        _write_checkout_after(wd, result, cache)
    _store_stat_cache(repo, cache)
    return result


def _publish_folder(wd: _Workdir, e: Editor, result: CommitResult) -> None:
    """Publish the folder's version; merge it into the head when the head moved.

    After a merge the folder stays at its own version (the merge's second parent), which is
    exactly its content, so its status is clean and a later commit merges again from there.
    """
    repo = wd.store.repo
    prepared = e.prepare()
    if prepared is None:
        return
    mine, mine_paths = prepared
    head = repo.head(wd.record)
    if head == wd.commit:
        items_root = mine.layers["items"]
        assert items_root is not None
        result.version = result.folder_version = repo.publish(
            ds=wd.record, expected_head=head, commit=mine, extra=e.run_extra, path_index=(items_root, mine_paths),
            folders=e.folders_root)
        return
    from dvstore import merging

    mine_id = repo.put_commit(mine)
    m = merging.merge_versions(repo, wd.commit, head, mine_id, theirs_id=wd.record.id_hex)
    layers = m.layers
    unresolved = [c for c in m.conflicts if c.resolution is None]
    if unresolved:
        lines = "\n".join(c.line() for c in unresolved[:20])
        more = f"\n... and {len(unresolved) - 20} more" if len(unresolved) > 20 else ""
        raise ConflictError(
            f"dataset {wd.record.name} moved since this folder was checked out (folder at "
            f"{short(wd.commit)}, head {short(head)}) and the changes conflict; nothing was committed:\n"
            f"{lines}{more}",
            hint=f"check out {wd.record.name} into another folder and apply your changes there, or merge by hand",
        )
    head_commit = repo.commit(head)
    recipe = mine.recipe if head_commit.recipe == repo.commit(wd.commit).recipe else head_commit.recipe
    merged = Commit(layers=layers, recipe=recipe, parents=(head, mine_id), op="merge",
                    info={"merge": {"workdir": True, "base": wd.commit.hex(), "sources": [head.hex(), mine_id.hex()]}},
                    author=e.author, message=f"{e.message} (merged onto {short(head)})", time=now_iso())
    items_root = layers["items"]
    assert items_root is not None
    result.version = repo.publish(ds=wd.record, expected_head=head, commit=merged, extra=e.run_extra,
                                  path_index=(items_root, m.paths), folders=m.folders)
    result.folder_version = mine_id
    result.merged_onto = head


def _summary(st: Status) -> str:
    parts = []
    for n, word in ((len(st.added), "added"), (len(st.removed), "removed"), (len(st.modified), "modified"),
                    (len(st.json_changed), "json edited")):
        if n:
            parts.append(f"{n} {word}")
    return "commit working folder: " + ", ".join(parts)


def _store_file(e: Editor, root_fd: int, fn: str, f: DiskFile,
                root: str) -> _CacheRow:
    """Store one file of items/ as ``fn``'s binary; return its stat-cache entry."""
    display = f"{ITEMS_DIR}/{f.rel}"
    parts = [ITEMS_DIR, *f.rel.split("/")]
    fd = open_in(root_fd, parts, display)
    try:
        fst = os.fstat(fd)
        if fst.st_size <= SMALL_MAX:
            data = b"".join(read_chunks(fd))
            iid = e.add_bytes(fn, data)
        else:
            head: list[bytes] = []
            try:
                blob = e.repo.blobs.add_file(f"/proc/self/fd/{fd}", fst.st_size, head)
            except OSError as err:
                raise UsageError(f"cannot read {display}: {err.strerror}") from None
            mt, system = imageinfo.sniff(head[0] if head else b"", fn)
            iid = e.put_blob_item(fn, blob, fst.st_size, mt, system)
    finally:
        os.close(fd)
    rec = e.current("items", iid)
    assert rec is not None
    return (_cache_key(root, ITEMS_DIR, f.rel), fst, bytes(rec["blob"]), rec["mimetype"], rec.get("system") or {})


def _write_checkout_after(wd: _Workdir, result: CommitResult,
                          cache: list[_CacheRow]) -> None:
    """After a commit: point .dvs-checkout at it and bring touched json files up to date."""
    repo = wd.store.repo
    new = result.folder_version
    assert new is not None
    st = result.status
    try:
        scan_json = _scan_json_names(wd.root)
    except DvsError as err:
        scan_json = {}
        result.warnings.append(f"json files not updated: {err.message}")
    root_fd = os.open(wd.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            _write_checkout_file(root_fd, repo, wd.record, new)
        except DvsError as err:
            raise StorageError(f"version {short(new)} was committed, but {CHECKOUT_FILE} could not be updated: "
                               f"{err.message}",
                               hint="check the new version out again with 'dvs checkout --force'") from None
        try:
            json_fd = open_dir(root_fd, JSON_DIR, JSON_DIR, create=True, replace_links=False)
        except DvsError as err:
            result.warnings.append(f"json files not updated: {err.message}")
            return
        chain = DirChain(json_fd, JSON_DIR, create=True, replace_links=False)
        try:
            touched = set(st.added) | set(st.modified) | set(st.json_changed)
            # A json that was deleted stays deleted; a new item gets one (its ids are new).
            wanted = sorted(fn for fn in touched if fn in st.added or fn in scan_json)
            for fn, v in sorted(_records(repo, new, wanted).items()):
                rel = scan_json.get(fn) or fn[1:] + JSON_SUFFIX
                parts = rel.split("/")
                data = render_json(view(repo, v))
                try:
                    dfd = chain.fd(parts[:-1])
                    jst = write_file(dfd, parts[-1], (data,), f"{JSON_DIR}/{rel}")
                except DvsError as err:
                    result.warnings.append(err.message)
                    continue
                cache.append((_cache_key(wd.root, JSON_DIR, rel), jst, hash_bytes(data),
                              "application/json", {_CACHE_MARK: _json_key(v)}))
            for fn in st.removed:
                if fn not in scan_json:
                    continue
                parts = scan_json[fn].split("/")
                try:
                    dfd = chain.fd(parts[:-1])
                    os.unlink(parts[-1], dir_fd=dfd)
                except (DvsError, OSError):
                    result.warnings.append(f"could not remove {JSON_DIR}/{scan_json[fn]}")
        finally:
            chain.close()
            os.close(json_fd)
    finally:
        os.close(root_fd)


def _scan_json_names(root: str) -> dict[str, str]:
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return {fn: f.rel for fn, f in _index(root_fd, JSON_DIR).items()}
    finally:
        os.close(root_fd)


__all__ = [
    "CHECKOUT_FILE",
    "CheckoutStats",
    "CommitResult",
    "Status",
    "checkout",
    "commit",
    "commit_folder",
    "find_workdir",
    "render_json",
    "status",
]
