"""Three-way merge inside one item: the component rules of SEMANTICS §3.3, and conflicts as data.

It owns what happens to one item id when *both* sides changed it: the item-level table
(add/add, delete/modify), then each component on its own -- the binary, the filename, the
other item fields, metadata leaf by leaf on dotted paths, annotations per annotation id
(with their QA status), and task status per task id -- and how a strategy (``fail``,
``ours``, ``theirs``, ``union``) settles a conflicting component. Every conflict, settled or
not, is recorded as a ``Conflict`` value.

It is pure: it reads and writes annotation sets through an ``ObjectStore`` and nothing else.
It must not decide which items need it (``dvstore.merge`` walks the layer tries and calls it
only for ids both sides changed), and it never writes a version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dvstore import codec
from dvstore.hashing import hash_bytes, short
from dvstore.storage.objects import ObjectStore

ANNSET = b"annset"
"""Object tag of an annotation set; the same tag ``dvstore.repo`` stores them under."""

STRATEGIES = ("fail", "ours", "theirs", "union")
CONFLICT_KINDS = ("binary", "filename", "metadata", "annotation", "status", "item", "path", "recipe")

# The fields of an items record that describe the binary: they change together, so they
# merge as one value (intrinsic system fields are a function of the bytes, never merged).
BINARY_FIELDS = ("blob", "size", "mimetype", "system")
# Metadata paths that are one value however they are shaped (SEMANTICS §3.3).
ATOMIC_PATHS = frozenset({"system.tags"})
KEYSET_PATHS = frozenset({"system.collections"})


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""An absent dict key or record, distinct from a stored ``None``."""


def same(a: Any, b: Any) -> bool:
    """Equal as stored: like ``==`` but 1, 1.0 and True differ (they encode differently).

    Values come from canonical msgpack, so their types are exact builtins and a typed
    structural comparison is the same test as comparing encodings, without encoding.
    """
    if a is b:
        return True
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict:
        if len(a) != len(b):
            return False
        for k, v in a.items():
            if k not in b or not same(v, b[k]):
                return False
        return True
    if ta is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _jsonable(v: Any) -> Any:
    """A conflict value as JSON can carry it: bytes become hex, MISSING becomes None."""
    if v is MISSING:
        return None
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@dataclass(frozen=True, slots=True)
class Conflict:
    """One component both sides changed differently.

    Attributes:
        kind: ``binary``, ``filename``, ``metadata``, ``annotation``, ``status``, ``item``,
            ``path`` or ``recipe`` (CLI.md "Merge with conflicts").
        filename: The item's filename (ours, else theirs, else base); ``""`` for recipes.
        path: Which component: ``binary``, ``filename``, ``item``, ``metadata.user.k``,
            ``annotations.<id>``, ``task_status.<task>``, ``annotation_status.<id>``,
            ``labels.<name>``...
        detail: One human line saying what each side did.
        item: The item id in hex (``""`` for recipe conflicts).
        base: The component in the base (JSON-ready; None when absent).
        ours: The component on the ours side.
        theirs: The component on the theirs side.
        resolution: None while unresolved (strategy ``fail``), else the strategy that
            settled it.
        source: The name of the theirs input (set by the orchestration, for N-way merges).
    """

    kind: str
    filename: str
    path: str
    detail: str
    item: str = ""
    base: Any = None
    ours: Any = None
    theirs: Any = None
    resolution: str | None = None
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON shape of ``dvs merge --json`` (keys of CLI.md plus the rest)."""
        return {
            "kind": self.kind,
            "filename": self.filename,
            "path": self.path,
            "detail": self.detail,
            "item": self.item,
            "base": self.base,
            "ours": self.ours,
            "theirs": self.theirs,
            "resolution": self.resolution,
            "source": self.source,
        }

    def line(self) -> str:
        """``CONFLICT <kind> <filename> <detail>``, the CLI's text form."""
        return f"CONFLICT {self.kind} {self.filename or '-'} {self.detail}"

    def mirrored(self) -> Conflict:
        """The same conflict seen with ours and theirs swapped (for symmetry checks)."""
        return replace(self, ours=self.theirs, theirs=self.ours)

    def sort_key(self) -> tuple[str, str, str, str]:
        return (self.filename, self.item, self.kind, self.path)


def union_annotation_id(annotation_id: str, theirs_dataset_id: str) -> str:
    """The id theirs' copy of a both-modified annotation gets under ``union`` (G5)."""
    return hash_bytes(f"{annotation_id}:{theirs_dataset_id}".encode()).hex()[:24]


def _three(base: Any, ours: Any, theirs: Any) -> tuple[Any, bool]:
    """Git's trivial rule on whole values: (result, conflicted); a conflict returns ours."""
    if same(ours, theirs):
        return ours, False
    if same(ours, base):
        return theirs, False
    if same(theirs, base):
        return ours, False
    return ours, True


def _side_word(base: Any, value: Any) -> str:
    if value is MISSING or value is None:
        return "deleted" if base is not MISSING and base is not None else "absent"
    if base is MISSING or base is None:
        return "added"
    return "changed"


def _detail(what: str, base: Any, ours: Any, theirs: Any) -> str:
    o, t = _side_word(base, ours), _side_word(base, theirs)
    if o == t:
        return f"{what} {o} differently on both sides"
    return f"{what} {o} in ours, {t} in theirs"


class ItemMerger:
    """Merges items that both sides changed, collecting conflicts as it goes.

    One instance serves one two-way merge step. ``merge`` is called once per item id, in
    key order, by the layer walk.
    """

    def __init__(self, store: ObjectStore, *, strategy: str = "fail", keep_deleted: bool = False,
                 theirs_id: str = "") -> None:
        """Args:
            store: Where annotation sets are read and written.
            strategy: How a conflicting component is settled (``STRATEGIES``).
            keep_deleted: An item deleted on one side and present on the other survives
                (Dataloop's union, G9) instead of being deleted or conflicting.
            theirs_id: The theirs dataset's id (hex), for ``union`` re-keying (G5).
        """
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown merge strategy {strategy!r}")
        self.store = store
        self.strategy = strategy
        self.keep_deleted = keep_deleted
        self.theirs_id = theirs_id
        self.conflicts: list[Conflict] = []
        self._key = b""
        self._filename = ""

    # -- plumbing ------------------------------------------------------------------------

    @property
    def _resolution(self) -> str | None:
        return None if self.strategy == "fail" else self.strategy

    def _pick(self, ours: Any, theirs: Any) -> Any:
        """The side a strategy keeps for a conflicting scalar (``fail`` keeps ours for now)."""
        return theirs if self.strategy in ("theirs", "union") else ours

    def _conflict(self, kind: str, path: str, detail: str, base: Any, ours: Any, theirs: Any,
                  resolution: str | None = None) -> None:
        self.conflicts.append(Conflict(
            kind=kind, filename=self._filename, path=path, detail=detail, item=self._key.hex(),
            base=_jsonable(base), ours=_jsonable(ours), theirs=_jsonable(theirs),
            resolution=resolution if resolution is not None else self._resolution))

    # -- the item-level table ------------------------------------------------------------

    def merge(self, key: bytes, base: Mapping[str, Any], ours: Mapping[str, Any],
              theirs: Mapping[str, Any]) -> dict[str, Any]:
        """Merge one item both sides changed.

        Args:
            key: The item id.
            base: Layer name -> the item's value in the base (None when absent). Only the
                layers being merged are present; the same keys in all three mappings.
            ours: The same for ours.
            theirs: The same for theirs.

        Returns:
            Layer name -> the merged value (None: absent), canonical.
        """
        bi, oi, ti = base.get("items"), ours.get("items"), theirs.get("items")
        self._key = key
        self._filename = next((r["filename"] for r in (oi, ti, bi) if r is not None), "")
        if oi is None and ti is None:
            return {layer: None for layer in ours}
        if oi is None or ti is None:
            if bi is None:
                # Stray layer values without an item on one side: the side holding the item wins.
                return dict(theirs if oi is None else ours)
            keeper = theirs if oi is None else ours
            if self.keep_deleted:
                return dict(keeper)
            detail = "deleted in ours, modified in theirs" if oi is None else "modified in ours, deleted in theirs"
            self._conflict("item", "item", detail, _item_summary(base), _item_summary(ours), _item_summary(theirs))
            return dict(self._pick(ours, theirs))
        return self._components(base, ours, theirs)

    def _components(self, base: Mapping[str, Any], ours: Mapping[str, Any],
                    theirs: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"items": self._items_record(base["items"] or {}, ours["items"], theirs["items"])}
        if "metadata" in ours:
            out["metadata"] = self._metadata(base["metadata"], ours["metadata"], theirs["metadata"])
        ann = "annotations" in ours
        st = "status" in ours
        if ann or st:
            a, s = self._annotations_and_status(
                base.get("annotations"), ours.get("annotations"), theirs.get("annotations"),
                base.get("status"), ours.get("status"), theirs.get("status"), annotations_merged=ann)
            if ann:
                out["annotations"] = a
            if st:
                out["status"] = s
        return out

    # -- items layer: binary, filename, other fields -----------------------------------------

    def _items_record(self, base: dict[str, Any], ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
        def binary(r: dict[str, Any]) -> dict[str, Any]:
            return {f: r[f] for f in BINARY_FIELDS if f in r}

        out: dict[str, Any] = {}
        bb, ob, tb = binary(base), binary(ours), binary(theirs)
        value, conflicted = _three(bb or MISSING, ob, tb)
        if conflicted:
            shown = f" (ours {short(ob.get('blob', b''))}, theirs {short(tb.get('blob', b''))})"
            self._conflict("binary", "binary", _detail("binary", bb or MISSING, ob, tb) + shown, bb or None, ob, tb)
            value = self._pick(ob, tb)
        out.update(value)
        fields = sorted((set(base) | set(ours) | set(theirs)) - set(BINARY_FIELDS))
        for f in fields:
            b, o, t = base.get(f, MISSING), ours.get(f, MISSING), theirs.get(f, MISSING)
            v, conflicted = _three(b, o, t)
            if conflicted:
                if f == "createdAt":
                    # Creation time is bookkeeping, not content: the earlier one is the truth.
                    v = min(x for x in (o, t) if x is not MISSING)
                elif f == "filename":
                    self._conflict("filename", "filename", _detail("filename", b, o, t) + f" (ours {o}, theirs {t})",
                                   b, o, t)
                    v = self._pick(o, t)
                else:
                    self._conflict("item", f, _detail(f"item field {f}", b, o, t), b, o, t)
                    v = self._pick(o, t)
            if v is not MISSING:
                out[f] = v
        return codec.canonical(out)  # type: ignore[no-any-return]

    # -- metadata: leaf-wise on dotted paths ---------------------------------------------------

    def _metadata(self, base: Any, ours: Any, theirs: Any) -> Any:
        merged = self._tree(base or {}, ours or {}, theirs or {}, "")
        # An empty user or system map is the same as none (Editor stores neither).
        rec = {k: v for k, v in (merged if isinstance(merged, dict) else {}).items() if v != {}}
        return codec.canonical(rec) if rec else None

    def _tree(self, base: Any, ours: Any, theirs: Any, path: str) -> Any:
        if same(ours, theirs):
            return ours
        if same(ours, base):
            return theirs
        if same(theirs, base):
            return ours
        dicts = isinstance(ours, dict) and isinstance(theirs, dict) and (base is MISSING or isinstance(base, dict))
        if path in KEYSET_PATHS and all(isinstance(v, dict) or v is MISSING for v in (base, ours, theirs)):
            return self._keyset(base, ours, theirs, path)
        if dicts and path not in ATOMIC_PATHS:
            bd = base if isinstance(base, dict) else {}
            out = {}
            for k in sorted(set(bd) | set(ours) | set(theirs)):
                v = self._tree(bd.get(k, MISSING), ours.get(k, MISSING), theirs.get(k, MISSING),
                               f"{path}.{k}" if path else k)
                if v is not MISSING:
                    out[k] = v
            return out
        self._conflict("metadata", f"metadata.{path}", _detail(f"metadata.{path}", base, ours, theirs),
                       base, ours, theirs)
        return self._pick(ours, theirs)

    def _keyset(self, base: Any, ours: Any, theirs: Any, path: str) -> Any:
        """A map merged as a set of keys (``system.collections``): adds and removes both count."""
        bd, od, td = (v if isinstance(v, dict) else {} for v in (base, ours, theirs))
        out = {}
        for k in sorted(set(bd) | set(od) | set(td)):
            present, _ = _three(k in bd, k in od, k in td)
            if not present:
                continue
            b, o, t = bd.get(k, MISSING), od.get(k, MISSING), td.get(k, MISSING)
            v, conflicted = _three(b, o, t)
            if conflicted and o is not MISSING and t is not MISSING:
                self._conflict("metadata", f"metadata.{path}.{k}", _detail(f"metadata.{path}.{k}", b, o, t), b, o, t)
                v = self._pick(o, t)
            elif v is MISSING:
                # Present by the key-set rule, but the side that kept it is the other one.
                v = o if o is not MISSING else t
            out[k] = v
        return out if out else MISSING

    # -- annotations (per id, QA status included) and task status ----------------------------

    def _annset(self, oid: Any) -> dict[str, Any]:
        return dict(self.store.get(oid, ANNSET)) if oid else {}

    def _annotations_and_status(self, b_oid: Any, o_oid: Any, t_oid: Any, b_st: Any, o_st: Any, t_st: Any,
                                *, annotations_merged: bool) -> tuple[Any, Any]:
        bs, os_, ts = (s or {} for s in (b_st, o_st, t_st))
        qb, qo, qt = (s.get("annotations") or {} for s in (bs, os_, ts))
        if same(o_oid, t_oid) and (same(qo, qt) or same(qo, qb) or same(qt, qb)):
            # Both sides hold the same annotations and the statuses merge whole: no
            # annotation can be deleted on one side and re-statused on the other.
            ann = o_oid
            qa, _ = _three(qb, qo, qt)
        else:
            ann, qa = self._annotations(b_oid, o_oid, t_oid, qb, qo, qt, annotations_merged)
        status = self._status(bs, os_, ts, qa)
        return ann, status

    def _annotations(self, b_oid: Any, o_oid: Any, t_oid: Any, qb: dict[str, Any], qo: dict[str, Any],
                     qt: dict[str, Any], annotations_merged: bool) -> tuple[Any, dict[str, Any]]:
        bset, oset, tset = self._annset(b_oid), self._annset(o_oid), self._annset(t_oid)
        result: dict[str, Any] = {}
        qa: dict[str, Any] = {}
        rekeyed: list[tuple[str, Any, Any]] = []
        for aid in sorted(set(bset) | set(oset) | set(tset) | set(qb) | set(qo) | set(qt)):
            # An annotation and its QA status change together as far as conflicts go: a
            # status set on an annotation the other side deleted is a delete/modify.
            ba, oa, ta = bset.get(aid), oset.get(aid), tset.get(aid)
            bq, oq, tq = qb.get(aid), qo.get(aid), qt.get(aid)
            bp, op, tp = [ba, bq], [oa, oq], [ta, tq]
            pair, conflicted = _three(bp, op, tp)
            if conflicted:
                pair = self._annotation_conflict(aid, bp, op, tp, rekeyed)
            content, status = pair
            if content is not None:
                result[aid] = content
            if status is not None:
                qa[aid] = status
        for aid, content, status in rekeyed:
            new_id = union_annotation_id(aid, self.theirs_id)
            while new_id in result and not same(result[new_id], dict(content, id=new_id)):
                new_id = union_annotation_id(new_id, self.theirs_id)
            result[new_id] = dict(content, id=new_id)
            if status is not None:
                qa[new_id] = status
        if annotations_merged:
            qa = {k: v for k, v in qa.items() if k in result}
        if not annotations_merged:
            return o_oid, qa
        for side_oid, side in ((o_oid, oset), (t_oid, tset)):
            if side_oid and same(side, result):
                return side_oid, qa
        return (self.store.put(ANNSET, result) if result else None), qa

    def _annotation_conflict(self, aid: str, bp: list[Any], op: list[Any], tp: list[Any],
                             rekeyed: list[tuple[str, Any, Any]]) -> list[Any]:
        (ba, bq), (oa, oq), (ta, tq) = bp, op, tp
        if ba is not None and oa is None and ta is None:
            return [None, None]  # deleted on both sides; a status left behind means nothing
        if ba is not None and (oa is None) != (ta is None):
            detail = "deleted in ours, modified in theirs" if oa is None else "modified in ours, deleted in theirs"
            self._conflict("annotation", f"annotations.{aid}", f"annotation {aid} {detail}", bp, op, tp)
            return list(self._pick(op, tp))
        content, c_conflict = _three(ba, oa, ta)
        status, s_conflict = _three(bq, oq, tq)
        if c_conflict:
            if self.strategy == "union" and oa is not None and ta is not None:
                # Dataloop's "annotations from different datasets on the same item": keep both.
                rekeyed.append((aid, ta, tq))
                self._conflict("annotation", f"annotations.{aid}",
                               _detail(f"annotation {aid}", ba, oa, ta) + "; theirs kept under a new id",
                               ba, oa, ta, resolution="union")
                return [oa, oq]
            self._conflict("annotation", f"annotations.{aid}", _detail(f"annotation {aid}", ba, oa, ta), ba, oa, ta)
            return list(self._pick(op, tp))
        if s_conflict:
            self._conflict("status", f"annotation_status.{aid}", _detail(f"QA status of annotation {aid}", bq, oq, tq),
                           bq, oq, tq)
            status = self._pick(oq, tq)
        return [content, status]

    def _status(self, bs: dict[str, Any], os_: dict[str, Any], ts: dict[str, Any], qa: dict[str, Any]) -> Any:
        out: dict[str, Any] = {}
        for k in sorted((set(bs) | set(os_) | set(ts)) - {"annotations", "tasks"}):
            b, o, t = bs.get(k, MISSING), os_.get(k, MISSING), ts.get(k, MISSING)
            v, conflicted = _three(b, o, t)
            if conflicted:
                self._conflict("status", f"status.{k}", _detail(f"status field {k}", b, o, t), b, o, t)
                v = self._pick(o, t)
            if v is not MISSING:
                out[k] = v
        bt, ot, tt = (s.get("tasks") or {} for s in (bs, os_, ts))
        tasks: dict[str, Any] = {}
        for tid in sorted(set(bt) | set(ot) | set(tt)):
            b, o, t = bt.get(tid, MISSING), ot.get(tid, MISSING), tt.get(tid, MISSING)
            v, conflicted = _three(b, o, t)
            if conflicted:
                words = [x.get("status") if isinstance(x, dict) else None for x in (o, t)]
                self._conflict("status", f"task_status.{tid}",
                               _detail(f"task {tid} status (ours {words[0]}, theirs {words[1]})", b, o, t), b, o, t)
                v = self._pick(o, t)
            if v is not MISSING:
                tasks[tid] = v
        if tasks:
            out["tasks"] = tasks
        if qa:
            out["annotations"] = qa
        return codec.canonical(out) if out else None


def _item_summary(values: Mapping[str, Any]) -> Any:
    """What a conflict shows of a whole item: its items record, or None when absent."""
    rec = values.get("items")
    return None if rec is None else {"filename": rec.get("filename"), "binary": rec.get("blob")}
