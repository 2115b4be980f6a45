"""Store maintenance shared by gc and fsck: the roots, the reachability walk, durations.

It owns what "live" means (DESIGN §4): every dataset head, every tag, every reflog entry
(within a retention window for gc), and every operation in progress recorded in the ``ops``
database; from those, all history (commit parents), recipes, the four layer tries, the
annotation sets the annotations layer names and the blobs the items layer names. gc
(``dvstore.gc``) deletes what is not live and fsck (``dvstore.fsck``) checks that what is
live is present and sound; both walk with ``Walk`` so they can never disagree about it.

The walk verifies every object it loads (hash, type, decoding, schema) and reports each
problem as an ``Issue`` instead of raising: gc turns any issue into "delete nothing" (fail
closed), fsck lists them. It reads through ``Repository.db`` only, never writes, and knows
nothing of the CLI.

In-progress operations (``ops`` database): a long operation that must keep objects alive
across several transactions records ``key -> msgpack {"pid": int, "time": iso, "roots":
[32-byte ids]}`` with ``register_op`` and removes it with ``finish_op``. Each root may be a
commit, a tree node, an annotation set, a recipe or a blob; missing roots are tolerated
(the operation may not have written them yet).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from dvstore import codec, tree
from dvstore.errors import CorruptObjectError, UsageError
from dvstore.hashing import hash_bytes, short
from dvstore.model import Commit, now_iso
from dvstore.storage.objects import TAGS

if TYPE_CHECKING:
    from dvstore.api import Store
    from dvstore.fsck import FsckReport
    from dvstore.gc import GcResult
    from dvstore.repo import Repository

DEFAULT_RETENTION = 90 * 86400.0
"""Reflog entries younger than this are gc roots (git's gc.reflogExpireUnreachable is 30 days;
a dataset store is slower-moving and a lost version costs more)."""
DEFAULT_GRACE = 3600.0
"""Unreferenced data younger than this is kept by gc (git's gc.pruneExpire is 2 weeks)."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_LOAD_BATCH = 256


def parse_duration(text: str) -> float:
    """Seconds in "now", "0", "90", "45s", "30m", "1h30m", "90d", "2w"; else UsageError."""
    t = text.strip().lower()
    if t == "now":
        return 0.0
    try:
        v = float(t)
    except ValueError:
        pass
    else:
        if v >= 0 and v == v and v != float("inf"):
            return v
        raise UsageError(f"invalid duration: {text!r}")
    pos, total = 0, 0.0
    for m in _DURATION_RE.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(t) or not t:
        raise UsageError(f"invalid duration: {text!r}", hint="use 'now' or e.g. 90d, 12h, 30m, 1h30m, 45s")
    return total


def parse_time(value: Any) -> float:
    """Unix time of an ISO-8601 timestamp as written by ``model.now_iso``; ValueError if not."""
    if not isinstance(value, str):
        raise ValueError("not a timestamp")
    s = value[:-1] + "+00:00" if value.endswith("Z") else value  # Python 3.10 lacks "Z"
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


# -- findings ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem the walk or a check found: a stable kind, what it is about, and why."""

    kind: str
    subject: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "message": self.message}

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.message}"


Report = Callable[[Issue], None]


# -- roots ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Root:
    """A commit (or, for ``op`` roots, any id) that keeps history alive, and who names it."""

    oid: bytes
    source: str
    op: bool = False


@dataclass
class Roots:
    """Every root of the store, read in one transaction, plus what could not be read."""

    roots: list[Root] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    expired_reflog: list[tuple[bytes, list[bytes]]] = field(default_factory=list)
    """Reflog entries past retention: (key, commit ids it names). Not roots."""
    datasets: dict[bytes, str] = field(default_factory=dict)
    """Dataset id -> name, from the registry."""
    ops: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)


def ref_name(key: bytes, names: dict[bytes, str]) -> str:
    """Human name of a refs key: "head of pets", "tag v1 of pets"."""
    if key.startswith(b"head:") and len(key) == 5 + 16:
        dsid = key[5:]
        return f"head of {names.get(dsid, dsid.hex())}"
    if key.startswith(b"tag:") and len(key) > 4 + 16 + 1 and key[20:21] == b":":
        dsid = key[4:20]
        return f"tag {key[21:].decode('utf-8', 'replace')} of {names.get(dsid, dsid.hex())}"
    return f"ref {key!r}"


def read_roots(repo: Repository, *, retention: float | None, now: float | None = None) -> Roots:
    """Collect the roots. ``retention=None`` makes every reflog entry a root (fsck).

    Malformed refs, reflog entries, registry records and op records are issues: gc must not
    run when it cannot tell what they would have kept alive.
    """
    now = time.time() if now is None else now

    def fn(t: Any) -> tuple[list[tuple[bytes, bytes]], ...]:
        return (list(t.scan("datasets")), list(t.scan("refs")), list(t.scan("reflog")), list(t.scan("ops")))

    ds_rows, ref_rows, log_rows, op_rows = repo.db.read(fn)
    out = Roots()
    heads_seen: set[bytes] = set()
    for k, v in ds_rows:
        name = k.decode("utf-8", "replace")
        try:
            rec = repo._decode_ds(v)
        except CorruptObjectError as e:
            out.issues.append(Issue("dataset-malformed", name, str(e)))
            continue
        if rec.name != name or len(rec.id) != 16:
            out.issues.append(Issue("dataset-malformed", name, "registry record does not match its key"))
            continue
        out.datasets[rec.id] = rec.name
    for k, v in ref_rows:
        name = ref_name(k, out.datasets)
        well_formed = (k.startswith(b"head:") and len(k) == 21) or (
            k.startswith(b"tag:") and len(k) > 21 and k[20:21] == b":")
        if not well_formed:
            out.issues.append(Issue("ref-malformed", name, "unknown ref key"))
            continue
        if len(v) != 32:
            out.issues.append(Issue("ref-malformed", name, f"ref value has {len(v)} bytes, expected 32"))
            continue
        if k.startswith(b"head:"):
            heads_seen.add(k[5:])
            if k[5:] not in out.datasets:
                out.issues.append(Issue("ref-orphan", name, "a head whose dataset is not in the registry"))
        out.roots.append(Root(v, name))
    for dsid, dsname in out.datasets.items():
        if dsid not in heads_seen:
            out.issues.append(Issue("dataset-no-head", dsname, "registered dataset has no head ref"))
    for k, v in log_rows:
        subject = f"reflog {k[:16].hex()}#{int.from_bytes(k[16:], 'big') if len(k) == 24 else '?'}"
        try:
            rec = codec.decode(v)
            if len(k) != 24 or not isinstance(rec, dict):
                raise ValueError("not a reflog record")
            ids = [rec[f] for f in ("old", "new") if rec.get(f) is not None]
            if not all(type(i) is bytes and len(i) == 32 for i in ids):
                raise ValueError("bad commit id")
            when = parse_time(rec.get("time"))
        except (CorruptObjectError, KeyError, TypeError, ValueError) as e:
            out.issues.append(Issue("reflog-malformed", subject, str(e) or type(e).__name__))
            continue
        dsname = out.datasets.get(k[:16]) or str(rec.get("name") or k[:16].hex())
        if retention is not None and now - when > retention:
            out.expired_reflog.append((k, ids))
            continue
        for i in ids:
            out.roots.append(Root(i, f"reflog of {dsname}"))
    for k, v in op_rows:
        try:
            rec = codec.decode(v)
            roots = rec["roots"]
            if not isinstance(rec, dict) or not isinstance(roots, list):
                raise ValueError("not an op record")
            if not all(type(i) is bytes and len(i) == 32 for i in roots):
                raise ValueError("bad root id")
        except (CorruptObjectError, KeyError, TypeError, ValueError) as e:
            out.issues.append(Issue("op-malformed", repr(k), str(e) or type(e).__name__))
            continue
        out.ops.append((k, rec))
        for i in roots:
            out.roots.append(Root(i, f"operation {k.decode('utf-8', 'replace')}", op=True))
    return out


def register_op(repo: Repository, key: str, roots: Iterable[bytes]) -> None:
    """Record an operation in progress whose ``roots`` gc must keep (see module docstring)."""
    rec = {"pid": os.getpid(), "time": now_iso(), "roots": [bytes(r) for r in roots]}
    repo.db.write(lambda t: t.put("ops", key.encode(), codec.encode(rec)))


def finish_op(repo: Repository, key: str) -> None:
    """Remove an operation record (its roots are then referenced by refs, or garbage)."""
    repo.db.write(lambda t: t.delete("ops", key.encode()))


# -- objects --------------------------------------------------------------------------


def schema_problem(tag: bytes, value: Any) -> str | None:
    """What is wrong with a decoded object of type ``tag`` regardless of where it is used."""
    if tag == b"commit":
        try:
            Commit.from_record(value)
        except CorruptObjectError as e:
            return str(e)
        return None
    if tag == b"recipe":
        return None if isinstance(value, dict) else "a recipe must be a map"
    if tag == b"annset":
        if not isinstance(value, dict) or not all(type(v) is dict for v in value.values()):
            return "an annotation set must map annotation ids to annotations"
        return None
    if tag == tree.LEAF:
        if type(value) is not list:
            return "a tree leaf must be a list"
        prev = b""
        for entry in value:
            if (type(entry) is not list or len(entry) != 2 or type(entry[0]) is not bytes
                    or len(entry[0]) != tree.KEY_SIZE):
                return "malformed tree leaf entry"
            if entry[0] <= prev:
                return "tree leaf keys out of order"
            prev = entry[0]
        return None
    if tag == tree.NODE:
        if type(value) is not list or len(value) != 3:
            return "a tree node must be [bitmap, children, count]"
        bitmap, children, count = value
        if type(bitmap) is not int or not 0 < bitmap < (1 << tree.FANOUT):
            return "bad tree node bitmap"
        if type(children) is not list or bin(bitmap).count("1") != len(children):
            return "tree node children do not match its bitmap"
        if not all(type(c) is bytes and len(c) == 32 for c in children):
            return "bad tree node child id"
        if type(count) is not int or count < 0:
            return "bad tree node count"
        return None
    return f"unknown object type {tag!r}"


def verify_object(oid: bytes, raw: bytes) -> tuple[bytes, Any] | Issue:
    """(tag, value) of a stored object, or the Issue saying why it cannot be trusted."""
    if hash_bytes(raw) != oid:
        return Issue("object-hash", oid.hex(), "stored bytes do not hash to the object id")
    tag, sep, payload = raw.partition(b"\0")
    if not sep or tag not in TAGS:
        return Issue("object-type", oid.hex(), "unknown object type")
    try:
        value = codec.decode(payload)
    except CorruptObjectError as e:
        return Issue("object-decode", oid.hex(), f"{tag.decode()} does not decode: {e}")
    problem = schema_problem(tag, value)
    if problem is not None:
        return Issue("object-schema", oid.hex(), f"{tag.decode()}: {problem}")
    return tag, value


# -- the walk -------------------------------------------------------------------------

# Walk kinds: what an id is expected to be, which decides what its contents reference.
_COMMIT, _RECIPE, _ANNSET, _ITEMS, _ANNS, _PLAIN, _ANY = b"c", b"r", b"a", b"i", b"n", b"p", b"?"
_TREE_KINDS = (_ITEMS, _ANNS, _PLAIN)
_EXPECT = {_COMMIT: (b"commit",), _RECIPE: (b"recipe",), _ANNSET: (b"annset",),
           _ITEMS: (tree.LEAF, tree.NODE), _ANNS: (tree.LEAF, tree.NODE), _PLAIN: (tree.LEAF, tree.NODE)}


class Walk:
    """Mark everything reachable from roots; report each problem as an Issue.

    After ``run``: ``objects`` holds every live object that verified, ``blobs`` every live
    blob id with the size its item record declares and one referrer, ``items_roots`` every
    live items-layer root, ``commits`` the live commit count. Objects are loaded in batches,
    one read transaction per batch, because per-object transactions dominate on big stores.
    """

    def __init__(self, repo: Repository, report: Report) -> None:
        self.repo = repo
        self.report = report
        self.objects: set[bytes] = set()
        self.blobs: dict[bytes, tuple[int | None, str]] = {}
        self.items_roots: set[bytes] = set()
        self.commits = 0
        self._seen: set[bytes] = set()
        self._stack: list[tuple[bytes, bytes, str]] = []
        self._roots: set[str] = set()

    def add(self, root: Root) -> None:
        self._roots.add(root.source)
        self._push(_ANY if root.op else _COMMIT, root.oid, root.source)

    def _push(self, kind: bytes, oid: bytes, referrer: str) -> None:
        if oid == tree.EMPTY and kind in _TREE_KINDS:
            return  # the empty leaf is implicit: never stored, never loaded
        key = kind + oid
        if key not in self._seen:
            self._seen.add(key)
            self._stack.append((kind, oid, referrer))

    def run(self) -> None:
        while self._stack:
            batch = self._stack[-_LOAD_BATCH:]
            del self._stack[-_LOAD_BATCH:]
            ids = [oid for _, oid, _ in batch]
            raws = self.repo.db.read(lambda t, ids=ids: [t.get("objects", o) for o in ids])  # type: ignore[misc]
            for (kind, oid, referrer), raw in zip(batch, raws):
                self._visit(kind, oid, referrer, raw)

    def _visit(self, kind: bytes, oid: bytes, referrer: str, raw: bytes | None) -> None:
        if raw is None:
            if kind == _ANY:
                self._any_blob(oid, referrer)
                return
            what = {_COMMIT: "commit", _RECIPE: "recipe", _ANNSET: "annotation set"}.get(kind, "tree node")
            issue = "object-missing"
            if referrer in self._roots:
                issue = "reflog-dangling" if referrer.startswith("reflog") else "ref-dangling"
            self.report(Issue(issue, oid.hex(), f"{what} named by {referrer} is missing"))
            return
        got = verify_object(oid, raw)
        if isinstance(got, Issue):
            self.report(Issue(got.kind, got.subject, f"{got.message} (named by {referrer})"))
            return
        tag, value = got
        if kind == _ANY:
            kind = {b"commit": _COMMIT, b"recipe": _RECIPE, b"annset": _ANNSET}.get(tag, _ANY)
        elif tag not in _EXPECT[kind]:
            self.report(Issue("object-wrong-type", oid.hex(),
                              f"{referrer} names a {tag.decode()} where a {_EXPECT[kind][0].decode()} belongs"))
            return
        self.objects.add(oid)
        me = f"{tag.decode()} {short(oid)}"
        if tag == b"commit":
            self.commits += 1
            c = Commit.from_record(value)
            for p in c.parents:
                self._push(_COMMIT, p, me)
            self._push(_RECIPE, c.recipe, me)
            for layer, root in c.layers.items():
                if root is None:
                    continue
                if layer == "items":
                    self.items_roots.add(root)
                self._push({"items": _ITEMS, "annotations": _ANNS}.get(layer, _PLAIN), root, me)
        elif tag == tree.NODE:
            for child in value[1]:
                self._push(kind, child, me)
        elif tag == tree.LEAF:
            self._leaf(kind, oid, value, me)

    def _leaf(self, kind: bytes, oid: bytes, entries: list[Any], me: str) -> None:
        if kind == _ITEMS:
            for k, v in entries:
                blob = v.get("blob") if type(v) is dict else None
                size = v.get("size") if type(v) is dict else None
                if (type(blob) is not bytes or len(blob) != 32 or type(v.get("filename")) is not str
                        or type(size) is not int or size < 0):
                    self.report(Issue("object-schema", oid.hex(), f"malformed item record {k.hex()} in {me}"))
                    continue
                self.blobs.setdefault(blob, (size, f"item {v['filename']} ({me})"))
        elif kind == _ANNS:
            for k, v in entries:
                if type(v) is not bytes or len(v) != 32:
                    self.report(Issue("object-schema", oid.hex(), f"malformed annotation-set id for {k.hex()}"))
                    continue
                self._push(_ANNSET, v, f"item {k.hex()} ({me})")
        elif kind == _ANY:
            # A tree of unknown layer named by an in-progress operation: keep whatever its
            # values could name (blobs, annotation sets).
            for _, v in entries:
                if type(v) is dict and type(v.get("blob")) is bytes and len(v["blob"]) == 32:
                    self.blobs.setdefault(v["blob"], (None, me))
                elif type(v) is bytes and len(v) == 32:
                    self._push(_ANY, v, me)

    def _any_blob(self, oid: bytes, referrer: str) -> None:
        # An op root that is not an object may be a blob; if it is neither, the operation has
        # not written it yet, which is fine.
        if self.repo.blobs.has(oid):
            self.blobs.setdefault(oid, (None, referrer))

    def path_tree(self, root: bytes) -> tuple[set[bytes], dict[bytes, Any]] | str:
        """Walk a derived filename-index tree: (node ids, entries) or why it is broken.

        Derived data is never a reason to fail closed: the caller drops or rebuilds it.
        """
        nodes: set[bytes] = set()
        entries: dict[bytes, Any] = {}
        stack = [root]
        while stack:
            oid = stack.pop()
            if oid == tree.EMPTY:
                continue
            raw = self.repo.db.get("objects", oid)
            if raw is None:
                return f"node {short(oid)} is missing"
            got = verify_object(oid, raw)
            if isinstance(got, Issue):
                return got.message
            tag, value = got
            if tag == tree.NODE:
                stack.extend(value[1])
            elif tag == tree.LEAF:
                for k, v in value:
                    entries[k] = v
            else:
                return f"node {short(oid)} is a {tag.decode()}"
            nodes.add(oid)
        return nodes, entries


# -- the API entry points -------------------------------------------------------------


def gc(store: Store, *, dry_run: bool = False, expire: str | None = None, grace: str | None = None,
       compact: bool = False) -> GcResult:
    """Reclaim unreferenced space, and with ``compact`` shrink ``data.mdb``; see ``dvstore.gc``."""
    from dvstore import gc as gc_mod

    return gc_mod.collect(store.repo, dry_run=dry_run, expire=expire, grace=grace, compact=compact)


def fsck(store: Store, *, read_data: bool = False, rebuild: bool = False) -> FsckReport:
    """Verify the store (read-only unless ``rebuild``); see ``dvstore.fsck``."""
    from dvstore import fsck as fsck_mod

    return fsck_mod.fsck(store.repo.dir, read_data=read_data, rebuild=rebuild)


__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_RETENTION",
    "Issue",
    "Root",
    "Roots",
    "Walk",
    "finish_op",
    "fsck",
    "gc",
    "parse_duration",
    "parse_time",
    "read_roots",
    "register_op",
    "schema_problem",
    "verify_object",
]
