"""Three-way merge of versions' layer tries: (base, ours, theirs) roots -> (result roots, conflicts).

It owns the merge of SEMANTICS §3.3 at the level of whole layers: one walk over the four
layer tries of the three sides together, keyed by item id, that takes a whole subtree from
one side whenever the other side left it as in the base (or both sides agree), so the cost
follows what changed, never the dataset's size. Only ids both sides changed reach the
per-item rules of ``dvstore.merge_item``. Around the walk it owns three pure steps over the
same tries: scoping a sparse side (§3.4: what a filtered or projected clone never held
counts as unchanged), ``--keep-deleted``, and path collisions after the item merge (rename
``{stem}_{n}{ext}`` or fail), which also keeps the derived filename index in step.

It is pure (git's merge-ort: "working tree and index are untouched"): it reads and stages
objects through an ``ObjectStore`` and returns values. It must not read commits, refs or
recipes, choose the merge base, or publish anything; ``dvstore.merging`` does that.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dvstore import codec, tree
from dvstore.hashing import Digest
from dvstore.merge_item import ANNSET, STRATEGIES, Conflict, ItemMerger, same
from dvstore.model import LAYERS, OPTIONAL_LAYERS, count_folders, folder_key, path_key, split_filename
from dvstore.storage.objects import ObjectStore
from dvstore.tree import DELETE, EMPTY, FANOUT, MAX_DEPTH, NODE

__all__ = [
    "ANNSET",
    "PATH_POLICIES",
    "STRATEGIES",
    "Conflict",
    "MergeOptions",
    "MergeResult",
    "PathOutcome",
    "Scope",
    "empty_layers",
    "merge_layers",
    "path_key",
    "remap_labels",
    "resolve_paths",
    "scoped_side",
]

Layers = Mapping[str, bytes | None]
PATH_POLICIES = ("rename", "fail")

# A subtree in the walk: a stored node id, or (below a leaf that had to be split to line up
# with a deeper node on another side) an in-memory list of [key, value] entries.
_Ref = Any


def empty_layers() -> dict[str, bytes | None]:
    """The layers of the empty version: the base when two inputs share no ancestor."""
    return {layer: EMPTY for layer in LAYERS}


@dataclass(frozen=True, slots=True)
class MergeOptions:
    """How one two-way step settles what both sides changed.

    Attributes:
        strategy: ``fail`` (record conflicts, keep ours for now), ``ours``, ``theirs`` or
            ``union`` (theirs for scalars, both annotations on modify/modify).
        keep_deleted: An item deleted on one side survives when the other side still has it.
        theirs_id: The theirs dataset id (hex), used to re-key annotations under ``union``.
    """

    strategy: str = "fail"
    keep_deleted: bool = False
    theirs_id: str = ""


@dataclass(slots=True)
class MergeResult:
    """The outcome of ``merge_layers``: result roots (None: layer not held) and conflicts."""

    layers: dict[str, bytes | None]
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def unresolved(self) -> list[Conflict]:
        return [c for c in self.conflicts if c.resolution is None]


# --------------------------------------------------------------------------------------
# the joint walk


def _same_ref(a: _Ref, b: _Ref) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(x[0] == y[0] and same(x[1], y[1]) for x, y in zip(a, b))
    return bool(a == b)


class _Walk:
    """One walk over the layer tries of base, ours and theirs at once.

    At each trie position it looks at every layer: if ours equals the base in all of them,
    the result is theirs' subtrees (and the other way round); if ours equals theirs, that.
    Only positions where both sides changed something descend, down to the leaves, where
    each item id is settled across its layers (an item deleted in ours and re-annotated in
    theirs must be seen as one item, so the layers cannot be merged one by one).

    A node records its entry count, so a merged node needs the counts of subtrees it takes
    whole. Reading them would cost a read per untouched sibling; instead a node's count is
    derived from the counts of the three nodes it merges (known once they are opened):
    ``result = ours + theirs - base`` over the children taken whole, which is exact for a
    child one side left as in the base, plus the exact counts of the children that were
    merged below, minus a correction read only where both sides made the same change.
    """

    def __init__(self, store: ObjectStore, layers: list[str], merger: ItemMerger) -> None:
        self.store = store
        self.layers = layers
        self.merger = merger

    def run(self, base: list[bytes], ours: list[bytes], theirs: list[bytes]) -> list[Digest]:
        n = len(self.layers)
        if all(ours[i] == base[i] for i in range(n)):
            return [Digest(r) for r in theirs]
        if all(theirs[i] == base[i] for i in range(n)) or all(ours[i] == theirs[i] for i in range(n)):
            return [Digest(r) for r in ours]
        return [r[0] for r in self._merge(0, base, ours, theirs)]

    def _count(self, ref: _Ref) -> int:
        if isinstance(ref, list):
            return len(ref)
        return tree.read_node(self.store, ref)[3]

    def _whole(self, ref: _Ref, depth: int) -> Digest:
        """A subtree taken as it is (an in-memory split leaf is written out first)."""
        return tree._build(self.store, ref, depth) if isinstance(ref, list) else Digest(ref)

    def _open(self, ref: _Ref) -> tuple[bool, dict[int, _Ref], list[Any], int]:
        """(is a leaf, children by nibble of a node, entries of a leaf, entry count)."""
        if isinstance(ref, list):
            return True, {}, ref, len(ref)
        entries, bitmap, children, count = tree.read_node(self.store, ref)
        if entries is None:
            return False, tree._slots(bitmap, children), [], count
        return True, {}, entries, count

    @staticmethod
    def _split(entries: list[Any], depth: int) -> dict[int, _Ref]:
        """A leaf's entries by nibble, to line up with a node on another side."""
        split: dict[int, list[Any]] = {}
        for e in entries:
            split.setdefault(tree.nibble(e[0], depth), []).append(e)
        return dict(split)

    def _merge(self, depth: int, b: list[_Ref], o: list[_Ref],
               t: list[_Ref]) -> list[tuple[Digest, int, int, int, int]]:
        """Merge subtrees that both sides changed: per layer (result, its count, b, o, t counts)."""
        n = len(self.layers)
        opened = [[self._open(x) for x in (b[i], o[i], t[i])] for i in range(n)]
        if depth >= MAX_DEPTH or all(side[0] for trio in opened for side in trio):
            return self._entries(depth, opened, (b, o, t))
        opened = [[(leaf, self._split(entries, depth) if leaf else slots, entries, count)
                   for leaf, slots, entries, count in trio] for trio in opened]
        # Per layer: [exact count of what was merged below, b, o, t counts of those children,
        # correction for children both sides changed alike].
        acc = [[0, 0, 0, 0, 0] for _ in range(n)]
        children: list[list[tuple[int, Digest]]] = [[] for _ in range(n)]
        for nib in range(FANOUT):
            cb = [opened[i][0][1].get(nib, EMPTY) for i in range(n)]
            co = [opened[i][1][1].get(nib, EMPTY) for i in range(n)]
            ct = [opened[i][2][1].get(nib, EMPTY) for i in range(n)]
            if all(_same_ref(co[i], cb[i]) for i in range(n)):
                picked = [self._whole(r, depth + 1) for r in ct]
            elif all(_same_ref(ct[i], cb[i]) for i in range(n)):
                picked = [self._whole(r, depth + 1) for r in co]
            elif all(_same_ref(co[i], ct[i]) for i in range(n)):
                picked = [self._whole(r, depth + 1) for r in co]
                for i in range(n):
                    if not _same_ref(co[i], cb[i]):
                        acc[i][4] += self._count(co[i]) - self._count(cb[i])
            else:
                for i, (oid, rc, bc, oc, tc) in enumerate(self._merge(depth + 1, cb, co, ct)):
                    a = acc[i]
                    a[0] += rc
                    a[1] += bc
                    a[2] += oc
                    a[3] += tc
                    if oid != EMPTY:
                        children[i].append((nib, oid))
                continue
            for i, oid in enumerate(picked):
                if oid != EMPTY:
                    children[i].append((nib, oid))
        out = []
        for i in range(n):
            bt, ot, tt = (opened[i][s][3] for s in range(3))
            merged, bm, om, tm, corr = acc[i]
            total = merged + (ot - om) + (tt - tm) - (bt - bm) - corr
            out.append((self._assemble(total, children[i]), total, bt, ot, tt))
        return out

    def _assemble(self, total: int, children: list[tuple[int, Digest]]) -> Digest:
        """The canonical subtree over merged children (a leaf again once it is small)."""
        if total == 0:
            return EMPTY
        if total <= tree.LEAF_MAX:
            entries: list[list[Any]] = []
            for _, oid in children:
                entries.extend(tree._collect(self.store, oid))
            return tree._write_leaf(self.store, entries)
        bitmap = 0
        ids = []
        for nib, oid in children:
            bitmap |= 1 << nib
            ids.append(oid)
        return self.store.put_encoded(NODE, codec.encode_canonical([bitmap, ids, total]))

    def _entries(self, depth: int, opened: list[list[tuple[bool, dict[int, _Ref], list[Any], int]]],
                 refs: tuple[list[_Ref], list[_Ref], list[_Ref]]) -> list[tuple[Digest, int, int, int, int]]:
        n = len(self.layers)
        o_refs, t_refs = refs[1], refs[2]
        maps = []
        for i in range(n):
            trio = []
            for side, (leaf, _, entries, _) in enumerate(opened[i]):
                if not leaf:  # a node past MAX_DEPTH: well-formed tries never have one
                    entries = tree._collect(self.store, refs[side][i])
                trio.append({e[0]: e[1] for e in entries})
            maps.append(trio)
        keys = sorted({k for trio in maps for m in trio for k in m})
        out: list[list[list[Any]]] = [[] for _ in range(n)]
        as_ours = [True] * n
        as_theirs = [True] * n
        layers = self.layers
        for k in keys:
            bv = [maps[i][0].get(k) for i in range(n)]
            ov = [maps[i][1].get(k) for i in range(n)]
            tv = [maps[i][2].get(k) for i in range(n)]
            if all(same(ov[i], bv[i]) for i in range(n)):
                rv = tv
            elif all(same(tv[i], bv[i]) for i in range(n)) or all(same(ov[i], tv[i]) for i in range(n)):
                rv = ov
            else:
                merged = self.merger.merge(k, dict(zip(layers, bv)), dict(zip(layers, ov)), dict(zip(layers, tv)))
                rv = [merged[layer] for layer in layers]
            for i in range(n):
                v = rv[i]
                if v is not ov[i]:
                    as_ours[i] = as_ours[i] and same(v, ov[i])
                if v is not tv[i]:
                    as_theirs[i] = as_theirs[i] and same(v, tv[i])
                if v is not None:
                    out[i].append([k, v])
        result = []
        for i in range(n):
            if as_ours[i] and not isinstance(o_refs[i], list):
                oid = Digest(o_refs[i])
            elif as_theirs[i] and not isinstance(t_refs[i], list):
                oid = Digest(t_refs[i])
            else:
                oid = tree._build(self.store, out[i], depth)
            result.append((oid, len(out[i]), len(maps[i][0]), len(maps[i][1]), len(maps[i][2])))
        return result


def merge_layers(store: ObjectStore, base: Layers, ours: Layers, theirs: Layers,
                 options: MergeOptions | None = None) -> MergeResult:
    """Three-way merge of two versions' layer roots against their base.

    A layer that is None on all three sides stays None; otherwise None counts as an empty
    trie (callers scope sparse sides first, see ``scoped_side``). Path collisions are not
    settled here (``resolve_paths``).

    Args:
        store: Where the tries are read and the result's new nodes are staged.
        base: Layer name -> root of the merge base (``empty_layers()`` when none).
        ours: The same for ours (the accumulated left side of a fold).
        theirs: The same for theirs.
        options: Strategy, ``keep_deleted`` and the theirs dataset id.

    Returns:
        The result roots and every conflict met, settled or not, sorted by filename.
    """
    options = options or MergeOptions()
    walked = [layer for layer in LAYERS if layer == "items" or any(s.get(layer) is not None
                                                                     for s in (base, ours, theirs))]
    merger = ItemMerger(store, strategy=options.strategy, keep_deleted=options.keep_deleted,
                        theirs_id=options.theirs_id)
    roots = _Walk(store, walked, merger).run([base.get(la) or EMPTY for la in walked],
                                             [ours.get(la) or EMPTY for la in walked],
                                             [theirs.get(la) or EMPTY for la in walked])
    result: dict[str, bytes | None] = {layer: None for layer in LAYERS}
    result.update(zip(walked, roots))
    if options.keep_deleted:
        result = _restore_deleted(store, base, ours, theirs, result, walked)
    return MergeResult(result, sorted(merger.conflicts, key=Conflict.sort_key))


def _restore_deleted(store: ObjectStore, base: Layers, ours: Layers, theirs: Layers,
                     result: dict[str, bytes | None], walked: list[str]) -> dict[str, bytes | None]:
    """``--keep-deleted``: an item one side deleted and the other still holds comes back.

    The walk took the deleting side wherever the other side left the item alone; the
    deletions are found by diffing each side's items against the base, O(deletions).
    """
    changes: dict[str, dict[bytes, Any]] = {layer: {} for layer in walked}
    b_items = base.get("items") or EMPTY
    for side, other in ((ours, theirs), (theirs, ours)):
        for key, old, new in tree.diff(store, b_items, side.get("items") or EMPTY):
            if old is None or new is not None:
                continue
            if tree.get(store, other.get("items") or EMPTY, key) is None:
                continue
            if tree.get(store, result["items"] or EMPTY, key) is not None:
                continue
            for layer in walked:
                root = other.get(layer)
                v = tree.get(store, root, key) if root else None
                if v is not None:
                    changes[layer][key] = v
    out = dict(result)
    for layer, ch in changes.items():
        if ch:
            out[layer] = tree.apply(store, out[layer] or EMPTY, ch)
    return out


# --------------------------------------------------------------------------------------
# sparse sides (SEMANTICS §3.4)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a side holds, when it is a filtered or projected clone (or descends from one).

    Attributes:
        items: The item ids of the sparse clone's first version (intersected along a chain
            of clones), or None when every item is in scope. Items the side holds now are
            in scope as well, whatever this says.
        layers: The layers the clones kept.
    """

    items: frozenset[bytes] | None = None
    layers: frozenset[str] = frozenset(LAYERS)


def _restrict(store: ObjectStore, root: bytes | None, keys: set[bytes]) -> Digest:
    """The trie of ``root`` cut down to ``keys`` (its shape depends on the keys alone)."""
    r = root or EMPTY
    return tree.build(store, ((k, v) for k in keys if (v := tree.get(store, r, k)) is not None))


def scoped_side(store: ObjectStore, base: Layers, side: Layers, scope: Scope | None) -> dict[str, bytes | None]:
    """The side as the merge sees it: what it never held counts as unchanged from the base.

    An item outside the scope that the side does not hold takes the base's value in every
    layer; a layer the side does not hold (None, or dropped by a clone flag) is the base's
    layer, minus the items the side deleted. Deletions, edits and additions inside the
    scope are the side's own. So a team's filtered clone merges back without deleting what
    it never had, and its edits are still edits.

    The cost follows the side's size (its items are the scope's frontier), not the base's:
    the side's changes are found against the base cut down to the scope, then applied to
    the base.

    Args:
        store: The object store.
        base: The merge base's layer roots.
        side: The side's layer roots (None: layer not held).
        scope: The side's scope, or None when only None layers make it sparse.

    Returns:
        Layer roots with the base's values filled in where the side held nothing.
    """
    scope = scope or Scope()
    b_items = base.get("items") or EMPTY
    s_items = side.get("items") or EMPTY
    out: dict[str, bytes | None] = dict(side)
    held = {la for la in OPTIONAL_LAYERS if side.get(la) is not None and la in scope.layers}
    in_scope: set[bytes] | None = None
    if scope.items is not None:
        in_scope = set(scope.items) | set(tree.keys(store, s_items))
        changes = {k: (DELETE if new is None else new)
                   for k, _, new in tree.diff(store, _restrict(store, b_items, in_scope), s_items)}
        out["items"] = tree.apply(store, b_items, changes)
        deleted = {k for k, v in changes.items() if v is DELETE}
    elif held != set(OPTIONAL_LAYERS):
        deleted = {k for k, old, new in tree.diff(store, b_items, s_items) if new is None and old is not None}
    else:
        return out
    for layer in OPTIONAL_LAYERS:
        b_root = base.get(layer)
        if layer in held:
            if in_scope is not None:
                bl = b_root or EMPTY
                ch = {k: (DELETE if new is None else new)
                      for k, _, new in tree.diff(store, _restrict(store, bl, in_scope), side[layer])}
                out[layer] = tree.apply(store, bl, ch)
            continue
        if b_root is None:
            continue  # neither holds it: stays as the side has it
        ch = {k: DELETE for k in deleted}
        own = side.get(layer)
        if own is not None:
            # A layer the clone dropped but the side filled in later: keep its values for
            # items the base does not have (they cannot be anyone else's).
            for k, v in tree.items(store, own):
                if tree.get(store, b_items, k) is None:
                    ch[k] = v
        out[layer] = tree.apply(store, b_root, ch)
    return out


# --------------------------------------------------------------------------------------
# path collisions and the derived filename index


@dataclass(slots=True)
class PathOutcome:
    """The items root after settling path collisions, its filename index, and what happened.

    Attributes:
        items: The items root with losers renamed (unchanged under ``fail``).
        paths: Root of the filename -> item id index of ``items`` (valid only when no
            ``path`` conflict is left).
        conflicts: ``path`` conflicts (policy ``fail``).
        renamed: ``(item id hex, old filename, new filename)`` in processing order.
        added: Items in the result that ours did not hold.
        removed: Items ours held that the result does not.
        modified: Items both hold whose items record differs.
        folder_delta: Change of the item count below each folder, from ours to the result
            (carries ours' folder index forward: ``repo.apply_folder_delta``).
    """

    items: Digest
    paths: Digest
    conflicts: list[Conflict] = field(default_factory=list)
    renamed: list[tuple[str, str, str]] = field(default_factory=list)
    added: int = 0
    removed: int = 0
    modified: int = 0
    folder_delta: dict[str, int] = field(default_factory=dict)


def _free_name(filename: str, taken: set[str], holder: Any, folders: _Folders) -> str:
    d, name = split_filename(filename)
    stem, ext = posixpath.splitext(name)
    prefix = "" if d == "/" else d
    n = 1
    while True:
        cand = f"{prefix}/{stem}_{n}{ext}"
        if cand not in taken and holder(cand) is None and folders.find(cand, ours=True) is None:
            return cand
        n += 1


class _Folders:
    """The folders of a merge result, each with the first item met inside it.

    Those of the changed items are known at once (a rename keeps an item in its folder);
    those of ours' items the merge did not touch come from ours' folder index (how many
    items are below a folder, minus the touched ones) when ours has one recorded; only a
    folder that does hold untouched items, or a missing index, costs one pass over ours'
    filename index (to name an item inside).
    """

    def __init__(self, store: ObjectStore, ours_paths: bytes, changed: dict[str, bytes],
                 touched: set[bytes], ours_folders: bytes | None = None,
                 touched_below: dict[str, int] | None = None) -> None:
        self.store = store
        self.ours_paths = ours_paths
        self.touched = touched
        self.ours_folders = ours_folders
        self.touched_below = touched_below or {}
        self.changed: dict[str, tuple[str, bytes]] = {}
        for fn in sorted(changed):
            _add_folders(self.changed, fn, changed[fn])
        self._ours: dict[str, tuple[str, bytes]] | None = None

    def find(self, fn: str, *, ours: bool) -> tuple[str, bytes] | None:
        """An item inside folder ``fn`` (name, id), or None; ``ours``: look at ours' items too."""
        found = self.changed.get(fn)
        if found is not None or not ours:
            return found
        if self._ours is None and self.ours_folders is not None:
            v = tree.get(self.store, self.ours_folders, folder_key(fn)) if self.ours_folders != EMPTY else None
            below = int(v[1]) if v is not None and v[0] == fn else 0
            if below <= self.touched_below.get(fn, 0):
                return None  # every ours item below fn (if any) is touched by the merge
        if self._ours is None:
            self._ours = {}
            for _, (name, k) in tree.items(self.store, self.ours_paths):
                if k not in self.touched:
                    _add_folders(self._ours, name, k)
        return self._ours.get(fn)


def _add_folders(folders: dict[str, tuple[str, bytes]], filename: str, key: bytes) -> None:
    """Record the folders of ``filename`` (each with the first item met inside it)."""
    i = filename.rfind("/")
    while i > 0:
        d = filename[:i]
        if d in folders:
            return
        folders[d] = (filename, key)
        i = filename.rfind("/", 0, i)


def _ancestors(filename: str) -> list[str]:
    """The folders of ``filename``, innermost first ("/a/b/c" -> ["/a/b", "/a"])."""
    out = []
    i = filename.rfind("/")
    while i > 0:
        out.append(filename[:i])
        i = filename.rfind("/", 0, i)
    return out


def resolve_paths(store: ObjectStore, ours_items: bytes, ours_paths: bytes, result_items: bytes, *,
                  policy: str = "rename", ours_folders: bytes | None = None) -> PathOutcome:
    """Settle items that share a filename after the item merge, and update the path index.

    Only items whose record differs from ours can collide (ours and theirs each have unique
    paths), so the work is a diff against ours plus index look-ups: O(changes). The item
    that holds the path in ours keeps it (the left side of the fold); otherwise the one
    that ours held at that path, else the smallest id. Every other one is renamed
    ``{stem}_{n}{ext}`` with the smallest free n >= 1, in (filename, id) order, or, under
    policy ``fail``, reported as a ``path`` conflict.

    Then no item may also be a folder of other items (``/a`` beside ``/a/b``: no checkout
    could hold both). Such an item, whichever side it came from, is renamed the same way to
    a name that is neither an item nor a folder (the items inside the folder keep their
    paths), or, under ``fail``, reported as a ``path`` conflict. Finding one needs ours'
    folders only when a changed item takes a name ours did not hold: one look-up in ours'
    folder index when it is given, else ours' filename index is read once, O(ours' items).

    Args:
        store: The object store.
        ours_items: Ours' items root (what the filename index describes).
        ours_paths: Root of ours' filename index (``repo.path_index``).
        result_items: The merged items root.
        policy: ``rename`` or ``fail``.
        ours_folders: Root of ours' folder index (``repo.stored_folder_index``), if recorded.

    Returns:
        A ``PathOutcome``.
    """
    if policy not in PATH_POLICIES:
        raise ValueError(f"unknown path collision policy {policy!r}")
    changed: dict[bytes, Any] = {}
    before: dict[bytes, Any] = {}
    removed: dict[bytes, Any] = {}
    out = PathOutcome(items=Digest(result_items), paths=Digest(ours_paths))
    for k, old, new in tree.diff(store, ours_items, result_items):
        if new is None:
            removed[k] = old
            continue
        changed[k] = new
        if old is not None:
            before[k] = old
            out.modified += 1
        else:
            out.added += 1
    out.removed = len(removed)
    touched = set(changed) | set(removed)

    in_ours: dict[str, bytes | None] = {}

    def ours_at(fn: str) -> bytes | None:
        """The item ours holds at ``fn``, if any (touched by the merge or not)."""
        if fn in in_ours:
            return in_ours[fn]
        v = tree.get(store, ours_paths, path_key(fn))
        h: bytes | None = v[1] if v is not None and v[0] == fn else None
        in_ours[fn] = h
        return h

    def holder(fn: str) -> bytes | None:
        """The ours item still at ``fn`` in the result (untouched by the merge), if any."""
        h = ours_at(fn)
        return None if h is None or h in touched else h

    claims: dict[str, list[bytes]] = {}
    for k, cur in changed.items():
        claims.setdefault(str(cur["filename"]), []).append(k)
    taken = set(claims)
    touched_below: dict[str, int] = {}
    for rec in (*removed.values(), *before.values()):
        count_folders(touched_below, rec["filename"], 1)
    folders = _Folders(store, ours_paths, {fn: keys[0] for fn, keys in claims.items()}, touched,
                       ours_folders, touched_below)
    renames: dict[bytes, str] = {}
    for fn in sorted(claims):
        keys = sorted(claims[fn])
        kept = holder(fn)
        if kept is None:
            if len(keys) == 1:
                continue
            stayed = [k for k in keys if k in before and before[k]["filename"] == fn]
            kept = stayed[0] if stayed else keys[0]
        for k in keys:
            if k == kept:
                continue
            if policy == "fail":
                out.conflicts.append(_path_conflict(
                    fn, f"{fn} is held by two items ({kept.hex()[:12]} and {k.hex()[:12]})", k, kept))
                continue
            new_name = _free_name(fn, taken, holder, folders)
            taken.add(new_name)
            renames[k] = new_name
            out.renamed.append((k.hex(), fn, new_name))
    _settle_folders(store, ours_items, policy, changed, before, renames, taken, folders, ours_at, holder, out)
    if out.conflicts:
        return out
    item_changes: dict[bytes, Any] = {}
    for k, new_name in renames.items():
        changed[k] = item_changes[k] = codec.canonical(dict(changed[k], filename=new_name))
    if item_changes:
        out.items = tree.apply(store, result_items, item_changes)
    path_changes: dict[bytes, Any] = {}
    for rec in removed.values():
        path_changes[path_key(rec["filename"])] = DELETE
    for k, old in before.items():
        if old["filename"] != changed[k]["filename"]:
            path_changes[path_key(old["filename"])] = DELETE
    for k, rec in changed.items():
        path_changes[path_key(rec["filename"])] = [rec["filename"], k]
    out.paths = tree.apply(store, ours_paths, path_changes)
    delta = out.folder_delta
    for rec in removed.values():
        count_folders(delta, rec["filename"], -1)
    for k, rec in changed.items():
        old = before.get(k)
        if old is None or old["filename"] != rec["filename"]:
            if old is not None:
                count_folders(delta, old["filename"], -1)
            count_folders(delta, rec["filename"], 1)
    return out


def _path_conflict(fn: str, detail: str, item: bytes, other: bytes) -> Conflict:
    """A ``path`` conflict (policy ``fail``): ``item`` cannot take ``fn`` because of ``other``."""
    return Conflict(kind="path", filename=fn, path="filename", detail=detail,
                    item=item.hex(), ours=other.hex(), theirs=item.hex())


def _settle_folders(store: ObjectStore, ours_items: bytes, policy: str, changed: dict[bytes, Any],
                    before: dict[bytes, Any], renames: dict[bytes, str], taken: set[str], folders: _Folders,
                    ours_at: Callable[[str], bytes | None], holder: Callable[[str], bytes | None],
                    out: PathOutcome) -> None:
    """Rename (or, under ``fail``, report) every item of the result that is also a folder.

    The result is ours' untouched items plus ``changed`` under their final names. Ours
    alone has no such item, so every clash involves a changed item: one inside an item, or
    one that is a folder. Ours' folders are needed only for a changed item whose name ours
    did not hold (a name ours held was no folder of ours).
    """
    final: dict[str, bytes] = {}
    for k, rec in changed.items():
        final.setdefault(renames.get(k) or str(rec["filename"]), k)
    files: dict[str, tuple[bytes, str, bytes]] = {}  # item that is a folder -> (its id, an item inside, its id)
    for fn in sorted(final):
        k = final[fn]
        new = ours_at(fn) is None
        for d in _ancestors(fn):
            if d in final:
                files.setdefault(d, (final[d], fn, k))
            elif new and (h := holder(d)) is not None:
                files.setdefault(d, (h, fn, k))
        found = folders.find(fn, ours=new)
        if found is not None:
            files.setdefault(fn, (k, *found))
    for fn in sorted(files):
        k, inner, inner_k = files[fn]
        if policy == "fail":
            out.conflicts.append(_path_conflict(
                fn, f"{fn} is an item and a folder ({inner} is an item inside it)", k, inner_k))
            continue
        if k not in changed:  # an ours item the merge did not touch
            rec = tree.get(store, ours_items, k)
            assert rec is not None
            changed[k] = before[k] = rec
            out.modified += 1
        new_name = _free_name(fn, taken, holder, folders)
        taken.add(new_name)
        renames[k] = new_name
        out.renamed.append((k.hex(), fn, new_name))


# --------------------------------------------------------------------------------------
# label remapping of one side (--map-labels)


def remap_labels(store: ObjectStore, annotations_root: bytes | None, mapping: Mapping[str, str]) -> bytes | None:
    """The annotations layer with every label renamed by ``mapping`` (``recipes.remap_label``).

    Reads every annotation set of the side (the remap is a deliberate, whole-side rewrite),
    writes new sets only for items whose labels changed.
    """
    from dvstore.recipes import remap_annotation_labels

    if annotations_root is None or not mapping:
        return annotations_root
    changes: dict[bytes, Any] = {}
    for k, oid in tree.items(store, annotations_root):
        annset = store.get(oid, ANNSET)
        ids = sorted(annset)
        remapped = remap_annotation_labels([annset[a] for a in ids], mapping)
        if any(r.get("label") != annset[a].get("label") for a, r in zip(ids, remapped)):
            changes[k] = store.put(ANNSET, dict(zip(ids, remapped)))
    return tree.apply(store, annotations_root, changes)
