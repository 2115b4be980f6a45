"""The repository core: one store on disk, its refs, and the write order.

It owns the ``.dvs/`` layout, the dataset registry, heads, tags and the reflog, revision
parsing, and ``publish``: the single place where a new version becomes real (DESIGN §3 write
order: blobs, then objects, then one LMDB transaction that compare-and-swaps the head and
appends the reflog). It knows nothing about annotations, filters or the CLI.

LMDB keys:
  datasets  name (utf-8)                  -> {"id": hex, "name", "created", ...}
  refs      b"head:" + dataset id (16 B)  -> commit id (32 B)
            b"tag:" + dataset id + b":" + tag name -> commit id
  reflog    dataset id + seq (8 B, big-endian) -> {"old", "new", "op", "time", "message", "name"}
  index     b"path:" + items root         -> root of the derived filename -> item id tree
  meta      b"format"                      -> b"1"
"""

from __future__ import annotations

import itertools
import json
import os
import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from dvstore import codec, testhooks, tree
from dvstore.errors import (
    ConflictError,
    CorruptionError,
    CorruptObjectError,
    FormatVersionError,
    NotFoundError,
    UsageError,
)
from dvstore.hashing import Digest, short
from dvstore.io.dataloop import read_json_file
from dvstore.locks import store_lock
from dvstore.model import FORMAT, Commit, count_folders, now_iso, validate_dataset_name
from dvstore.model import folder_key as folder_key  # the index keys, re-exported for their users
from dvstore.model import path_key as path_key
from dvstore.storage.blobs import BlobStore
from dvstore.storage.db import Database, ReadTxn, WriteTxn
from dvstore.storage.objects import LmdbObjectStore, ObjectStore

STORE_DIR = ".dvs"
CONFIG = "config.json"
COMMIT = b"commit"
RECIPE = b"recipe"
ANNSET = b"annset"
_REV_RE = re.compile(r"(?P<name>[^@]+)(?:@(?P<rev>.*))?", re.DOTALL)  # fullmatch
_RECENT = 1024  # versions walked before the reflog is scanned for an id prefix
_STEPS_RE = re.compile(r"~[0-9]*")
_REFLOG_RE = re.compile(r"\{[0-9]+\}")
_REV_HINT = "REV is an id prefix (6+ hex digits), a tag, ~N or {N} (N a whole number)"
TAG_RE = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}")
"""A tag name (``fullmatch``): letters, digits, '.', '_' and '-' (not first), at most 128."""
HEXLIKE_RE = re.compile(r"[0-9a-fA-F]{6,64}")
"""An id prefix in ``NAME@REV`` (``fullmatch``), in either case; a tag spelled so would shadow one."""


def is_tag_name(text: str) -> bool:
    """Whether ``text`` has a tag's syntax (``TAG_RE``, not ``.`` or ``..``); says nothing of hex."""
    return bool(TAG_RE.fullmatch(text)) and text not in (".", "..")


@dataclass(frozen=True, slots=True)
class DatasetRecord:
    name: str
    id: bytes
    created: str
    info: dict[str, Any]

    @property
    def id_hex(self) -> str:
        return self.id.hex()


@dataclass(frozen=True, slots=True)
class DeletedDataset:
    """A dataset no longer in the registry whose history gc has not expired yet.

    ``record`` has the dataset's id and its last name (from its newest reflog entry);
    ``head`` is its head when it was deleted (else the newest version its reflog still
    names); ``deleted`` the time of the delete (None once gc expired that entry).
    """

    record: DatasetRecord
    head: bytes
    deleted: str | None
    tags: dict[str, bytes]


def find_store(start: str | None = None, explicit: str | None = None) -> str:
    """Return the path of the ``.dvs`` directory to use (CLI.md "Finding the store").

    The upward search stops at the first ``.dvs`` directory: one without its config.json
    is a damaged store (CorruptionError, exit 6), never a reason to use a parent's store.
    """
    cand = explicit or os.environ.get("DVS_STORE")
    if cand:
        p = os.path.abspath(cand)
        if os.path.basename(p) != STORE_DIR and os.path.isdir(os.path.join(p, STORE_DIR)):
            p = os.path.join(p, STORE_DIR)
        if not os.path.isfile(os.path.join(p, CONFIG)):
            if os.path.basename(p) == STORE_DIR and os.path.isdir(p):
                raise _no_config(p)
            raise NotFoundError(f"no dvs store at {cand}", hint="create one with 'dvs init'")
        return p
    d = os.path.abspath(start or os.getcwd())
    while True:
        p = os.path.join(d, STORE_DIR)
        if os.path.isdir(p):
            if not os.path.isfile(os.path.join(p, CONFIG)):
                raise _no_config(p)
            return p
        parent = os.path.dirname(d)
        if parent == d:
            raise NotFoundError("no dvs store found here or in any parent directory",
                                hint="create one with 'dvs init', or pass --store / set DVS_STORE")
        d = parent


_CONFIG_HINT = f"restore .dvs/{CONFIG} from a backup; to use another store, pass --store PATH or set DVS_STORE"


def _no_config(dvs_dir: str) -> CorruptionError:
    return CorruptionError(f"damaged dvs store at {dvs_dir}: its {CONFIG} is missing", hint=_CONFIG_HINT)


class Repository:
    """One open store."""

    def __init__(self, dvs_dir: str) -> None:
        self.dir = os.path.abspath(dvs_dir)
        self.config = self._read_config()
        self.db = Database(os.path.join(self.dir, "db"))
        self.objects = LmdbObjectStore(self.db)
        self.blobs = BlobStore(self.dir, self.db)
        self.lock_path = os.path.join(self.dir, "lock")

    # -- creation --------------------------------------------------------------------

    @classmethod
    def init(cls, parent: str) -> Repository:
        d = os.path.join(os.path.abspath(parent), STORE_DIR)
        if os.path.exists(os.path.join(d, CONFIG)):
            raise UsageError(f"a dvs store already exists at {d}")
        if os.path.exists(os.path.join(d, "db", "data.mdb")):
            # Its versions are still there: a new config (with a new store id) would hide
            # the damage, and working folders checked out from it would no longer match.
            raise _no_config(d)
        for sub in ("", "blobs", "tmp", "db"):
            os.makedirs(os.path.join(d, sub), mode=0o700, exist_ok=True)
        cfg = {"format": FORMAT, "store_id": os.urandom(16).hex(), "hash": "blake3"}
        tmp = os.path.join(d, "tmp", CONFIG + ".partial")
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(d, CONFIG))
        repo = cls(d)
        repo.db.write(lambda t: t.put("meta", b"format", str(FORMAT).encode()))
        return repo

    def _read_config(self) -> dict[str, Any]:
        path = os.path.join(self.dir, CONFIG)
        if not os.path.lexists(path):
            if os.path.isdir(self.dir):
                raise _no_config(self.dir)
            raise NotFoundError(f"no dvs store at {os.path.dirname(self.dir)}", hint="create one with 'dvs init'")
        try:
            cfg = read_json_file(path, display=f"unreadable store config {path}", error=CorruptionError)
        except CorruptionError as e:
            raise CorruptionError(e.message, hint=_CONFIG_HINT) from None
        if not isinstance(cfg, dict) or not isinstance(cfg.get("format"), int):
            raise CorruptionError(f"malformed store config {path}", hint=_CONFIG_HINT)
        if cfg["format"] > FORMAT:
            raise FormatVersionError(
                f"this store has format {cfg['format']}, newer than this dvs understands ({FORMAT})",
                hint="upgrade dvstore",
            )
        return cfg

    def lock(self, *, exclusive: bool = False, timeout: float | None = None) -> Any:
        return store_lock(self.lock_path, exclusive=exclusive, timeout=timeout)

    # -- objects ---------------------------------------------------------------------

    def commit(self, oid: bytes) -> Commit:
        return Commit.from_record(self.objects.get(oid, COMMIT))

    def put_commit(self, c: Commit) -> Digest:
        return self.objects.put(COMMIT, c.to_record())

    def recipe(self, oid: bytes) -> dict[str, Any]:
        r = self.objects.get(oid, RECIPE)
        if not isinstance(r, dict):
            raise CorruptObjectError(f"malformed recipe {short(oid)}")
        return r

    # -- datasets and refs -----------------------------------------------------------

    def datasets(self) -> list[DatasetRecord]:
        return [self._decode_ds(v) for _, v in self.db.scan("datasets")]

    @staticmethod
    def _decode_ds(raw: bytes) -> DatasetRecord:
        r = codec.decode(raw)
        try:
            return DatasetRecord(r["name"], bytes.fromhex(r["id"]), r["created"], r.get("info", {}))
        except (KeyError, TypeError, ValueError):
            raise CorruptObjectError("malformed dataset record") from None

    def dataset(self, name: str) -> DatasetRecord:
        raw = self.db.get("datasets", name.encode("utf-8", "surrogatepass"))
        if raw is None:
            raise NotFoundError(f"Dataset not found. Name: '{name}'", hint="list datasets with 'dvs datasets'")
        return self._decode_ds(raw)

    def head(self, ds: DatasetRecord) -> Digest:
        raw = self.db.get("refs", b"head:" + ds.id)
        if raw is None or len(raw) != 32:
            raise CorruptionError(f"dataset {ds.name} has no head", hint="run 'dvs fsck'")
        return Digest(raw)

    def tags(self, ds: DatasetRecord) -> dict[str, Digest]:
        prefix = b"tag:" + ds.id + b":"
        return {k[len(prefix):].decode(): Digest(v) for k, v in self.db.scan("refs", prefix)}

    def reflog(self, ds: DatasetRecord) -> list[dict[str, Any]]:
        """Head moves, newest first."""
        rows = self.db.scan("reflog", ds.id)
        out = []
        for _, v in reversed(rows):
            r = codec.decode(v)
            if isinstance(r, dict):
                out.append(r)
        return out

    def deleted_datasets(self) -> list[DeletedDataset]:
        """Deleted datasets whose reflog entries gc still keeps, most recently deleted first.

        Nothing marks a deleted dataset but its reflog (keyed by its id, each entry naming
        the dataset's name at the time) and its tags: ``delete`` removes only the registry
        record and the head. So a dataset id with reflog entries and no registry record is
        a deleted dataset, recoverable while gc keeps the versions its entries name.
        """
        def fn(t: ReadTxn) -> tuple[list[tuple[bytes, bytes]], ...]:
            return list(t.scan("datasets")), list(t.scan("reflog")), list(t.scan("refs", b"tag:"))

        ds_rows, log_rows, tag_rows = self.db.read(fn)
        live = set()
        for _, v in ds_rows:
            try:
                live.add(self._decode_ds(v).id)
            except CorruptObjectError:
                continue  # fsck reports it
        entries: dict[bytes, list[dict[str, Any]]] = {}
        for k, v in log_rows:  # oldest first per dataset (key order)
            if len(k) != 24 or k[:16] in live:
                continue
            try:
                rec = codec.decode(v)
            except CorruptObjectError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("name"), str):
                entries.setdefault(k[:16], []).append(rec)
        tags: dict[bytes, dict[str, bytes]] = {}
        for k, v in tag_rows:
            if len(k) > 21 and k[20:21] == b":" and len(v) == 32:
                tags.setdefault(k[4:20], {})[k[21:].decode("utf-8", "replace")] = v
        out = []
        for dsid, log in entries.items():
            head = next((c for r in reversed(log)
                         if type(c := r.get("old" if r.get("op") == "delete" else "new")) is bytes and len(c) == 32),
                        None)
            if head is None:
                continue
            last = log[-1]
            deleted = last.get("time") if last.get("op") == "delete" and last.get("new") is None else None
            created = str(log[0].get("time", ""))
            out.append(DeletedDataset(DatasetRecord(last["name"], dsid, created, {}), head,
                                      deleted if isinstance(deleted, str) else None, tags.get(dsid, {})))
        out.sort(key=lambda d: (d.deleted or "", d.record.created), reverse=True)
        return out

    def deleted_dataset(self, name: str | None = None, *, dataset_id: str | None = None) -> DeletedDataset:
        """The most recently deleted dataset last named ``name``, or the one whose id (hex)
        starts with ``dataset_id``; NotFoundError when gc has expired it (or there was none)."""
        if dataset_id is not None and not re.fullmatch(r"[0-9a-fA-F]{6,32}", dataset_id):
            raise UsageError(f"invalid dataset id: {dataset_id!r}", hint="give 6 to 32 hex digits of the id")
        found = [d for d in self.deleted_datasets()
                 if (dataset_id is None or d.record.id_hex.startswith(dataset_id.lower()))
                 and (dataset_id is not None or d.record.name == name)]
        if dataset_id is not None and len({d.record.id for d in found}) > 1:
            raise UsageError(f"ambiguous dataset id {dataset_id}", hint="give more hex digits")
        if not found:
            msg = (f"No deleted dataset with id {dataset_id} whose versions gc still keeps" if dataset_id is not None
                   else f"Dataset not found. Name: '{name}' (nor a deleted one whose versions gc still keeps)")
            raise NotFoundError(msg, hint="a deleted dataset's versions are kept until gc expires its reflog "
                                          "entries (90 days by default); list them with 'dvs datasets --deleted'")
        return found[0]

    def dataset_by_id(self, dsid: bytes) -> DatasetRecord | None:
        for d in self.datasets():
            if d.id == dsid:
                return d
        return None

    # -- publishing (the write order) -------------------------------------------------

    def publish(
        self,
        *,
        ds: DatasetRecord | None,
        expected_head: bytes | None,
        commit: Commit,
        op_message: str = "",
        op: str | None = None,
        create: DatasetRecord | None = None,
        extra: Callable[[WriteTxn], None] | None = None,
        path_index: tuple[bytes, bytes] | None = None,
        folders: bytes | None = None,
    ) -> Digest:
        """Make ``commit`` the new head of ``ds`` (or of the new dataset ``create``).

        Blobs staged in the blob store and objects staged in the object store are written in
        the same LMDB transaction; large blobs were already made durable by the blob store.
        The head must still be ``expected_head`` inside the transaction, else ConflictError.
        ``create`` may carry the id of a deleted dataset (it then has its reflog and tags
        back); its head must still be absent. The reflog entry's op is ``op`` or the commit's.
        """
        self.blobs.wait_durable()  # write order step 1: blob files durable before the version
        cid = self.put_commit(commit)
        target = create or ds
        assert target is not None
        size = self.objects.pending_size() + self.blobs.pending_size()
        self.db.ensure_room(size)
        testhooks.point("before_lmdb_commit")

        def txn(t: WriteTxn) -> None:
            key = b"head:" + target.id
            if create is not None:
                if t.get("datasets", create.name.encode()) is not None:
                    raise UsageError(f"Dataset already exists: {create.name}")
                if t.get("refs", key) is not None:
                    raise ConflictError(f"dataset {create.name} ({create.id_hex}) was restored by another process",
                                        hint="see 'dvs datasets'")
                rec = {"id": create.id.hex(), "name": create.name, "created": create.created, "info": create.info}
                t.put("datasets", create.name.encode(), codec.encode(rec))
                old = None
            else:
                cur = t.get("refs", key)
                if cur != expected_head:
                    raise ConflictError(
                        f"dataset {target.name} moved: expected head "
                        f"{short(expected_head) if expected_head else 'none'}, found {short(cur) if cur else 'none'}",
                        hint="another process committed first; run the command again",
                    )
                old = cur
            self.blobs.write_pending(t)
            self.objects.write_pending(t)
            t.put("refs", key, cid)
            if path_index is not None:
                t.put("index", b"path:" + path_index[0], path_index[1])
                if folders is not None:
                    t.put("index", b"dirs:" + path_index[0], folders)
            if extra is not None:
                extra(t)
            self._append_reflog(t, target, old, cid, op or commit.op, op_message or commit.message)

        self.db.write(txn)
        self.objects.committed()
        self.blobs.committed()
        testhooks.point("after_lmdb_commit")
        return cid

    def _append_reflog(self, t: WriteTxn, ds: DatasetRecord, old: bytes | None, new: bytes | None,
                       op: str, message: str) -> None:
        last = t.last_key("reflog", ds.id)
        seq = struct.unpack(">Q", last[16:24])[0] + 1 if last else 0
        rec = {"old": old, "new": new, "op": op, "time": now_iso(), "message": message, "name": ds.name}
        t.put("reflog", ds.id + struct.pack(">Q", seq), codec.encode(rec))

    def move_ref(self, ds: DatasetRecord, *, tag: str | None = None, new: bytes | None, expected: bytes | None,
                 op: str, message: str = "", force: bool = False) -> None:
        """Set or delete a tag, or move a head to an existing commit (restore)."""
        def txn(t: WriteTxn) -> None:
            if tag is not None:
                key = b"tag:" + ds.id + b":" + tag.encode()
                if not force and t.get("refs", key) is not None and new is not None:
                    raise UsageError(f"tag already exists: {tag}")
                if new is None:
                    if not t.delete("refs", key):
                        raise NotFoundError(f"no tag {tag} on {ds.name}")
                else:
                    t.put("refs", key, new)
                return
            key = b"head:" + ds.id
            cur = t.get("refs", key)
            if cur != expected:
                raise ConflictError(f"dataset {ds.name} moved under this operation",
                                    hint="run the command again")
            if new is None:
                t.delete("refs", key)
                t.delete("datasets", ds.name.encode())
            else:
                t.put("refs", key, new)
            self._append_reflog(t, ds, cur, new, op, message)
        self.db.write(txn)

    # -- revisions ---------------------------------------------------------------------

    def resolve(self, spec: str) -> tuple[DatasetRecord, Digest]:
        """Parse ``NAME[@REV]`` into (dataset, commit id)."""
        m = _REV_RE.fullmatch(spec or "")
        if not m:
            raise UsageError(f"invalid revision: {spec!r}", hint="use NAME or NAME@REV")
        name, rev = m.group("name"), m.group("rev")
        validate_dataset_name(name)
        ds = self.dataset(name)
        head = self.head(ds)
        if rev is None:
            return ds, head
        return ds, self.resolve_rev(ds, head, rev)

    def resolve_rev(self, ds: DatasetRecord, head: Digest, rev: str) -> Digest:
        """The version of ``ds`` that ``rev`` (the part after ``NAME@``) names.

        The syntax (docs/history.md "Revisions"): ``~N`` and ``{N}`` with N a whole number,
        an id prefix (6 to 64 hex digits, either case), or a tag name; tags are looked up
        first. Anything else is malformed (UsageError); a well-formed revision that names
        nothing, a tag-like ``abc`` included, is not found (NotFoundError).
        """
        if rev.startswith("~"):
            if not _STEPS_RE.fullmatch(rev):
                raise UsageError(f"invalid revision {ds.name}@{rev}", hint=_REV_HINT)
            n = int(rev[1:] or "1")
            c = head
            for _ in range(n):
                parents = self.commit(c).parents
                if not parents:
                    raise NotFoundError(f"{ds.name}@{rev}: the history is shorter than {n} versions")
                c = Digest(parents[0])
            return c
        if rev.startswith("{"):
            if not _REFLOG_RE.fullmatch(rev):
                raise UsageError(f"invalid reflog revision {ds.name}@{rev}", hint=_REV_HINT)
            n = int(rev[1:-1])
            log = self.reflog(ds)
            if n >= len(log) or log[n].get("new") is None:
                raise NotFoundError(f"{ds.name}@{rev}: no such reflog entry", hint=f"see 'dvs reflog {ds.name}'")
            return Digest(log[n]["new"])
        tags = self.tags(ds)
        if rev in tags:
            return tags[rev]
        if HEXLIKE_RE.fullmatch(rev):
            return self._by_prefix(ds, head, rev.lower())
        if not is_tag_name(rev):
            what = "empty revision" if not rev else "invalid revision"
            raise UsageError(f"{what} {ds.name}@{rev}", hint=_REV_HINT)
        hint = f"see 'dvs log {ds.name}' and 'dvs tags {ds.name}'"
        if re.fullmatch(r"[0-9a-fA-F]{1,5}", rev):
            hint = f"no tag {rev} on {ds.name}, and an id prefix needs at least 6 hex digits"
        raise NotFoundError(f"unknown revision {ds.name}@{rev}", hint=hint)

    def _by_prefix(self, ds: DatasetRecord, head: Digest, hexprefix: str) -> Digest:
        """The version of ``ds`` whose id starts with ``hexprefix`` (docs/history.md "Revisions").

        The store holds every dataset's versions, so the commits the prefix matches are only
        candidates: one counts when it is a version of ``ds`` (``versions_of``).
        """
        candidates = self._commits_by_prefix(hexprefix)
        found = self.versions_of(ds, head, candidates) if candidates else []
        if not found:
            hint = f"see 'dvs log {ds.name}'"
            if candidates:
                hint = f"no version of {ds.name} starts with {hexprefix} (a version of another dataset does); " + hint
            raise NotFoundError(f"unknown revision {ds.name}@{hexprefix}", hint=hint)
        if len(found) > 1:
            raise UsageError(f"ambiguous revision {ds.name}@{hexprefix}", hint="give more hex digits")
        return found[0]

    def _commits_by_prefix(self, hexprefix: str) -> list[Digest]:
        """Every commit in the store whose id starts with ``hexprefix`` (one key range scan)."""
        raw = bytes.fromhex(hexprefix[: len(hexprefix) // 2 * 2])
        return [Digest(k) for k, v in self.db.scan("objects", raw)
                if k.hex().startswith(hexprefix) and v.startswith(COMMIT + b"\0")]

    def versions_of(self, ds: DatasetRecord, head: Digest, candidates: Iterable[bytes]) -> list[Digest]:
        """Those of ``candidates`` that are versions of ``ds``, in the order given.

        A version of a dataset is one its head reaches along parents (what ``dvs log NAME``
        lists, a clone's or a merge's source versions included), one of its tags, or a head
        its reflog records. Cheap answers come first: the head and the tags, then the newest
        ``_RECENT`` versions, then one raw scan of the reflog (every head the dataset had);
        only a candidate none of them names resumes the walk, newest first, until every
        candidate is found. So a version of another dataset is the one case that walks the
        whole history (about 20 us a version: 2 s for 100,000).
        """
        wanted = list(dict.fromkeys(bytes(c) for c in candidates))
        left = set(wanted) - {head} - set(self.tags(ds).values())
        walk = self.history(head)
        for budget in (_RECENT, None):
            if not left:
                break
            for cid, _ in itertools.islice(walk, budget):
                left.discard(cid)
                if not left:
                    break
            if left and budget is not None:
                left -= self._in_reflog(ds, left)
        return [Digest(c) for c in wanted if c not in left]

    def _in_reflog(self, ds: DatasetRecord, wanted: set[bytes]) -> set[bytes]:
        """Those of ``wanted`` that a reflog entry of ``ds`` names (as its old or new head)."""
        found: set[bytes] = set()
        for rows in self.db.iter_batches("reflog", ds.id):
            for _, v in rows:
                hits = [c for c in wanted if c in v]  # a 32-byte id inside the raw record
                if hits:
                    r = codec.decode(v)
                    if isinstance(r, dict):
                        found.update(c for c in hits if c in (r.get("old"), r.get("new")))
        return found

    def history(self, head: bytes, limit: int | None = None) -> Iterator[tuple[Digest, Commit]]:
        """Versions reachable from ``head``, newest first (by time, then id); at most ``limit``."""
        if limit is not None and limit <= 0:
            return
        seen = {head}
        frontier = [(head, self.commit(head))]
        n = 0
        while frontier:
            frontier.sort(key=lambda p: (p[1].time, p[0]), reverse=True)
            cid, c = frontier.pop(0)
            yield Digest(cid), c
            n += 1
            if limit is not None and n >= limit:
                return
            for p in c.parents:
                if p not in seen:
                    seen.add(p)
                    frontier.append((p, self.commit(p)))

    # -- derived filename index ----------------------------------------------------------

    def path_index(self, items_root: bytes) -> Digest:
        """Root of the filename -> item id tree for ``items_root``; rebuilt if missing."""
        raw = self.db.get("index", b"path:" + items_root)
        if raw is not None and self.objects.has(raw):
            return Digest(raw)
        root = tree.build(self.objects, ((path_key(v["filename"]), [v["filename"], k])
                                         for k, v in tree.items(self.objects, items_root)))
        return root


    def stored_folder_index(self, items_root: bytes) -> Digest | None:
        """The recorded folder index of ``items_root``, or None (never rebuilds)."""
        if items_root == tree.EMPTY:
            return tree.EMPTY
        raw = self.db.get("index", b"dirs:" + items_root)
        return Digest(raw) if raw is not None and self.objects.has(raw) else None

    def folder_index(self, items_root: bytes) -> Digest:
        """Root of the folder -> item count tree for ``items_root``; rebuilt if missing.

        Every folder that holds items, at any depth, maps to ``[folder, items below it]``
        under ``folder_key(folder)``. It answers "is this name a folder?" in one lookup.
        """
        root = self.stored_folder_index(items_root)
        if root is not None:
            return root
        return build_folder_index(self.objects, (v[0] for _, v in tree.items(self.objects, self.path_index(items_root))))


def build_folder_index(objects: ObjectStore, filenames: Iterable[str]) -> Digest:
    """Build the folder index of a version from its item names."""
    counts: dict[str, int] = {}
    for fn in filenames:
        count_folders(counts, fn, 1)
    return tree.build(objects, ((folder_key(f), [f, n]) for f, n in counts.items()), canonical=True)


def folder_count(objects: ObjectStore, root: bytes, folder: str) -> int:
    """Items below ``folder`` in the folder index ``root`` (0: not a folder there)."""
    if root == tree.EMPTY:
        return 0
    v = tree.get(objects, root, folder_key(folder))
    return int(v[1]) if v is not None and v[0] == folder else 0


def apply_folder_delta(objects: ObjectStore, root: bytes, delta: dict[str, int]) -> Digest:
    """The folder index ``root`` with each folder's item count changed by ``delta``."""
    changes: dict[bytes, Any] = {}
    for folder, d in delta.items():
        if d:
            n = folder_count(objects, root, folder) + d
            changes[folder_key(folder)] = [folder, n] if n > 0 else tree.DELETE
    return tree.apply(objects, root, changes, canonical=True) if changes else Digest(root)


INDEX_KINDS = (b"path:", b"dirs:")


def parse_index_key(k: bytes) -> tuple[bytes, bytes] | None:
    """(kind, items root) of an ``index`` database key, or None for a malformed key."""
    for kind in INDEX_KINDS:
        if k.startswith(kind) and len(k) == len(kind) + 32:
            return kind, k[len(kind):]
    return None



