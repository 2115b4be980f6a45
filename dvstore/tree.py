"""The layer tree: a persistent, content-addressed hash array mapped trie (HAMT).

It owns the node format and every algorithm over it: get, apply a batch of changes, build,
iterate, count, and the diff of two roots. It works over any ``ObjectStore``; it never opens
LMDB or files and knows nothing of what the values mean.

Keys are 16-byte item ids (random, so the trie is balanced without rehashing). The shape is a
function of the key set alone (history independence): a set S at depth d is a *leaf* (sorted
[key, value] pairs) when |S| <= LEAF_MAX, otherwise a *node* splitting S by the d-th 4-bit
nibble of the key, with a 16-bit bitmap of non-empty children and the subtree's entry count.
So equal content has an equal root id whatever the order of edits, a commit of k changes
rewrites O(k * depth) nodes, and diff skips every subtree whose ids are equal.

Encodings (canonical msgpack): leaf = [[key, value], ...]; node = [bitmap, [child ids], count].
Values must be canonical msgpack values; ``apply`` canonicalises the ones it is given.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from dvstore import codec
from dvstore.errors import CorruptObjectError
from dvstore.hashing import Digest, object_id
from dvstore.storage.objects import ObjectStore

LEAF_MAX = 64
FANOUT = 16
LEAF = b"leaf"
NODE = b"node"
KEY_SIZE = 16
MAX_DEPTH = KEY_SIZE * 2

EMPTY_PAYLOAD = codec.encode_canonical([])
EMPTY: Digest = object_id(LEAF, EMPTY_PAYLOAD)


class _Delete:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DELETE"


DELETE: Any = _Delete()
"""Marker for a deleted key in a change batch."""


def nibble(key: bytes, depth: int) -> int:
    b = key[depth >> 1]
    return (b >> 4) if not depth & 1 else (b & 15)


def read_node(store: ObjectStore, oid: bytes) -> tuple[list[Any] | None, int, list[bytes], int]:
    """Load a node: returns (leaf entries or None, bitmap, children, count)."""
    if oid == EMPTY:
        return [], 0, [], 0
    tag, v = store.get_any(oid)
    if tag == LEAF:
        # A hash-valid but malformed object (a buggy writer, a crafted import) must end in
        # CorruptObjectError, not in a TypeError deep inside a walk (G8).
        if type(v) is not list or not all(type(e) is list and len(e) == 2 and type(e[0]) is bytes for e in v):
            raise CorruptObjectError("malformed tree leaf")
        return v, 0, [], len(v)
    if tag != NODE:
        raise CorruptObjectError(f"expected a tree node, found a {tag.decode()} object")
    try:
        bitmap, children, count = v
        if (not 0 < bitmap < (1 << FANOUT) or bin(bitmap).count("1") != len(children)
                or not all(type(c) is bytes and len(c) == 32 for c in children)):
            raise ValueError
    except (TypeError, ValueError):
        raise CorruptObjectError("malformed tree node") from None
    return None, bitmap, children, count


def _check_key(k: Any) -> None:
    if type(k) is not bytes or len(k) != KEY_SIZE:
        raise CorruptObjectError("malformed tree key")


def _write_leaf(store: ObjectStore, entries: Sequence[Sequence[Any]]) -> Digest:
    if not entries:
        return EMPTY
    return store.put_encoded(LEAF, codec.encode_canonical(entries))


def _build(store: ObjectStore, entries: Sequence[Sequence[Any]], depth: int) -> Digest:
    """Write the canonical subtree for sorted ``entries`` ([key, value] lists or (key,
    value) tuples: both encode as arrays) at ``depth``."""
    return _build_range(store, entries, 0, len(entries), depth)


def _build_range(store: ObjectStore, entries: Sequence[Sequence[Any]], lo: int, hi: int,
                 depth: int) -> Digest:
    """``_build`` of ``entries[lo:hi]``, which share their first ``depth`` nibbles.

    Each child's range is found by bisecting for its upper bound, so the entries are not
    visited again at every level: only the leaves encode them.
    """
    n = hi - lo
    if n <= LEAF_MAX or depth >= MAX_DEPTH:
        return _write_leaf(store, entries[lo:hi])
    bitmap = 0
    children = []
    i = lo
    while i < hi:
        key = entries[i][0]
        bound = _bound(key, depth)
        j = hi if bound is None else bisect_left(entries, bound, i, hi, key=_key)
        bitmap |= 1 << nibble(key, depth)
        children.append(_build_range(store, entries, i, j, depth + 1))
        i = j
    return store.put_encoded(NODE, codec.encode_canonical([bitmap, children, n]))


def _key(entry: Sequence[Any]) -> Any:
    return entry[0]


def build(store: ObjectStore, entries: Iterable[tuple[bytes, Any]], *, canonical: bool = False) -> Digest:
    """Build a tree from (key, value) pairs (any order; later duplicates win).

    ``canonical=True`` promises canonical values (e.g. read from another tree).
    """
    d: dict[bytes, Any] = {}
    for k, v in entries:
        _check_key(k)
        d[k] = v if canonical else codec.canonical(v)
    return _build(store, [[k, d[k]] for k in sorted(d)], 0)


def build_sorted(store: ObjectStore, entries: list[list[Any]]) -> Digest:
    """Build a tree from canonical [key, value] entries already sorted by unique key."""
    return _build(store, entries, 0)


def _collect(store: ObjectStore, oid: bytes) -> list[list[Any]]:
    out: list[list[Any]] = []
    stack = [oid]
    # Depth-first, children in nibble order, gives key order.
    def walk(o: bytes) -> None:
        entries, _, children, _ = read_node(store, o)
        if entries is not None:
            out.extend(entries)
        else:
            for c in children:
                walk(c)
    walk(stack[0])
    return out


class _Changes:
    """A sorted stream of (key, value) changes that can be peeked at and pushed back onto.

    The builders below look at most LEAF_MAX + 1 entries ahead per level before they know
    whether a set is a leaf or a node, so a batch of any size is applied in bounded memory.
    """

    __slots__ = ("_it", "_back", "head")

    def __init__(self, it: Iterable[tuple[bytes, Any]]) -> None:
        self._it = iter(it)
        self._back: list[tuple[bytes, Any]] = []  # pushed back, last one first
        self.head: tuple[bytes, Any] | None = next(self._it, None)

    def pop(self) -> tuple[bytes, Any]:
        h = self.head
        assert h is not None
        self.head = self._back.pop() if self._back else next(self._it, None)
        return h

    def unread(self, entries: list[tuple[bytes, Any]]) -> None:
        """Put ``entries`` (sorted, all before ``head``) back in front."""
        if not entries:
            return
        if self.head is not None:
            self._back.append(self.head)
        self._back.extend(reversed(entries[1:]))
        self.head = entries[0]

    def below(self, hi: bytes | None) -> bool:
        """Is there a next change with key < ``hi`` (None: no bound)?"""
        h = self.head
        return h is not None and (hi is None or h[0] < hi)

    def take(self, hi: bytes | None, n: int) -> list[tuple[bytes, Any]]:
        """Pop up to ``n`` changes with key < ``hi`` (``pop`` while ``below``, in one loop:
        this runs once per entry per level of a tree being built)."""
        out: list[tuple[bytes, Any]] = []
        h, back, it = self.head, self._back, self._it
        while h is not None and len(out) < n and (hi is None or h[0] < hi):
            out.append(h)
            h = back.pop() if back else next(it, None)
        self.head = h
        return out


def _bound(key: bytes, depth: int) -> bytes | None:
    """Exclusive upper bound of the keys sharing ``key``'s first ``depth + 1`` nibbles."""
    shift = 4 * (MAX_DEPTH - depth - 1)
    nxt = (int.from_bytes(key, "big") >> shift) + 1
    if nxt >> (4 * (depth + 1)):
        return None  # the last range at this depth
    return (nxt << shift).to_bytes(KEY_SIZE, "big")


def _build_stream(store: ObjectStore, s: _Changes, depth: int, hi: bytes | None) -> tuple[Digest, int]:
    """Write the canonical subtree of every entry of ``s`` below ``hi``; return (id, count)."""
    buf = s.take(hi, LEAF_MAX + 1)
    if len(buf) <= LEAF_MAX or depth >= MAX_DEPTH:
        return _write_leaf(store, [[k, v] for k, v in buf]), len(buf)
    s.unread(buf)
    bitmap = 0
    children = []
    total = 0
    while s.below(hi):
        head = s.head
        assert head is not None
        child, n = _build_stream(store, s, depth + 1, _bound(head[0], depth))
        bitmap |= 1 << nibble(head[0], depth)
        children.append(child)
        total += n
    return store.put_encoded(NODE, codec.encode_canonical([bitmap, children, total])), total


def _merge_leaf(entries: list[Any], s: _Changes, hi: bytes | None) -> Iterator[tuple[bytes, Any]]:
    """A leaf's entries with the changes of ``s`` below ``hi`` applied, in key order."""
    i = 0
    while s.below(hi):
        k, v = s.pop()
        while i < len(entries) and entries[i][0] < k:
            yield entries[i][0], entries[i][1]
            i += 1
        if i < len(entries) and entries[i][0] == k:
            i += 1
        if v is not DELETE:
            yield k, v
    for e in entries[i:]:
        yield e[0], e[1]


def _apply(store: ObjectStore, oid: bytes, depth: int, hi: bytes | None, s: _Changes) -> tuple[Digest, int, int]:
    """Apply the changes of ``s`` below ``hi`` to the subtree ``oid`` at ``depth``.

    Returns (new id, new count, old count). Untouched children keep their ids; a leaf that
    grows is rebuilt from a stream, so even a batch of millions never sits in one list.
    """
    entries, bitmap, children, count = read_node(store, oid)
    if entries is not None:
        new, n = _build_stream(store, _Changes(_merge_leaf(entries, s, hi)), depth, None)
        return new, n, count
    slots = _slots(bitmap, children)
    total = count
    while s.below(hi):
        head = s.head
        assert head is not None
        n = nibble(head[0], depth)
        new_child, new_c, old_c = _apply(store, slots.get(n, EMPTY), depth + 1, _bound(head[0], depth), s)
        total += new_c - old_c
        if new_c:
            slots[n] = new_child
        else:
            slots.pop(n, None)
    if total <= LEAF_MAX:
        gathered: list[list[Any]] = []
        for n in sorted(slots):
            gathered.extend(_collect(store, slots[n]))
        return _write_leaf(store, gathered), total, count
    new_bitmap = 0
    new_children = []
    for n in sorted(slots):
        new_bitmap |= 1 << n
        new_children.append(slots[n])
    return store.put_encoded(NODE, codec.encode_canonical([new_bitmap, new_children, total])), total, count


def apply(store: ObjectStore, root: bytes, changes: Mapping[bytes, Any], *, canonical: bool = False) -> Digest:
    """Return the root after setting each key to its value (``DELETE`` removes it).

    ``canonical=True`` promises the values are canonical already (the editor builds them
    so); otherwise they are canonicalised here.
    """
    if not changes:
        return Digest(root)
    batch = []
    for k in sorted(changes):
        v = changes[k]
        batch.append((k, v if v is DELETE or canonical else codec.canonical(v)))
    return apply_sorted(store, root, batch)


def apply_sorted(store: ObjectStore, root: bytes, changes: Iterable[tuple[bytes, Any]]) -> Digest:
    """``apply`` for a stream of (key, canonical value or ``DELETE``) in strictly increasing
    key order: memory stays bounded whatever the number of changes (bulk ingest)."""
    if root == EMPTY:  # a new tree (a first ingest): nothing to merge with, deletions are no-ops
        if isinstance(changes, list):  # in memory already: built by ranges (_build_range)
            entries = [c for c in changes if c[1] is not DELETE]
            _check_increasing(entries)
            return _build(store, entries, 0)
        fresh = _Changes(c for c in _increasing(changes) if c[1] is not DELETE)
        return _build_stream(store, fresh, 0, None)[0]
    s = _Changes(_increasing(changes))
    if s.head is None:
        return Digest(root)
    return _apply(store, root, 0, None, s)[0]


def _check_increasing(entries: list[tuple[bytes, Any]]) -> None:
    """``_increasing``'s check of a whole list at once."""
    if not (all(type(c[0]) is bytes and len(c[0]) == KEY_SIZE for c in entries)
            and all(a[0] < b[0] for a, b in zip(entries, entries[1:]))):
        raise ValueError("tree changes need distinct 16-byte keys in increasing order")


def _increasing(changes: Iterable[tuple[bytes, Any]]) -> Iterator[tuple[bytes, Any]]:
    prev = b""
    for c in changes:
        k = c[0]
        if type(k) is not bytes or len(k) != KEY_SIZE or k <= prev:
            raise ValueError("tree changes need distinct 16-byte keys in increasing order")
        prev = k
        yield c


def get(store: ObjectStore, root: bytes, key: bytes) -> Any | None:
    """Return the value at ``key`` or None."""
    oid = root
    depth = 0
    while True:
        entries, bitmap, children, _ = read_node(store, oid)
        if entries is not None:
            lo, hi = 0, len(entries)
            while lo < hi:
                mid = (lo + hi) // 2
                if entries[mid][0] < key:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < len(entries) and entries[lo][0] == key:
                return entries[lo][1]
            return None
        n = nibble(key, depth)
        if not bitmap >> n & 1:
            return None
        oid = children[bin(bitmap & ((1 << n) - 1)).count("1")]
        depth += 1


def count(store: ObjectStore, root: bytes) -> int:
    return read_node(store, root)[3]


def items(store: ObjectStore, root: bytes) -> Iterator[tuple[bytes, Any]]:
    """Yield (key, value) in key order, loading one node at a time."""
    stack = [root]
    while stack:
        entries, _, children, _ = read_node(store, stack.pop())
        if entries is not None:
            yield from entries
        else:
            stack.extend(reversed(children))


def leaves(store: ObjectStore, root: bytes) -> Iterator[list[Any]]:
    """Yield the entry lists of the leaves in key order (bulk work without a per-entry yield).

    The lists are shared with the object cache: callers must not mutate them.
    """
    stack = [root]
    while stack:
        entries, _, children, _ = read_node(store, stack.pop())
        if entries is not None:
            if entries:
                yield entries
        else:
            stack.extend(reversed(children))


def join(store: ObjectStore, primary: bytes, others: Mapping[str, bytes | None]
         ) -> Iterator[tuple[bytes, Any, dict[str, Any]]]:
    """Walk ``primary`` with the values other trees hold under the same keys.

    Yields (key, value, {name: value in that tree or None}) in key order; one pass over every
    tree (all are in key order), so joining layers costs no lookups.
    """
    streams = {name: items(store, root) for name, root in others.items() if root}
    heads: dict[str, Any] = {name: next(s, None) for name, s in streams.items()}
    for k, v in items(store, primary):
        row: dict[str, Any] = dict.fromkeys(others)
        for name, s in streams.items():
            h = heads[name]
            while h is not None and h[0] < k:
                h = next(s, None)
            heads[name] = h
            if h is not None and h[0] == k:
                row[name] = h[1]
        yield k, v, row


def keys(store: ObjectStore, root: bytes) -> Iterator[bytes]:
    for k, _ in items(store, root):
        yield k


def _slots(bitmap: int, children: list[bytes]) -> dict[int, bytes]:
    out = {}
    i = 0
    for n in range(FANOUT):
        if bitmap >> n & 1:
            out[n] = children[i]
            i += 1
    return out


def same_value(a: Any, b: Any) -> bool:
    """Equal as stored: Python's == would call 1, 1.0 and True equal."""
    if a is b:
        return True
    if a != b:
        return False
    return codec.encode_canonical(a) == codec.encode_canonical(b)


def diff(store: ObjectStore, a: bytes | None, b: bytes | None) -> Iterator[tuple[bytes, Any | None, Any | None]]:
    """Yield (key, value in a or None, value in b or None) for every key that differs.

    Subtrees with equal ids on both sides are skipped, so the cost follows the differences.
    Keys come in key order.
    """
    yield from _diff(store, a or EMPTY, b or EMPTY, 0)


def _diff(store: ObjectStore, a: bytes, b: bytes, depth: int) -> Iterator[tuple[bytes, Any, Any]]:
    if a == b:
        return
    ea, bma, ca, _ = read_node(store, a)
    eb, bmb, cb, _ = read_node(store, b)
    if ea is None and eb is None:
        sa, sb = _slots(bma, ca), _slots(bmb, cb)
        for n in range(FANOUT):
            x, y = sa.get(n, EMPTY), sb.get(n, EMPTY)
            if x != y:
                yield from _diff(store, x, y, depth + 1)
        return
    la = ea if ea is not None else _collect(store, a)
    lb = eb if eb is not None else _collect(store, b)
    yield from _diff_lists(la, lb)


def _diff_lists(la: list[Any], lb: list[Any]) -> Iterator[tuple[bytes, Any, Any]]:
    i = j = 0
    while i < len(la) or j < len(lb):
        if j >= len(lb) or (i < len(la) and la[i][0] < lb[j][0]):
            yield la[i][0], la[i][1], None
            i += 1
        elif i >= len(la) or lb[j][0] < la[i][0]:
            yield lb[j][0], None, lb[j][1]
            j += 1
        else:
            if not same_value(la[i][1], lb[j][1]):
                yield la[i][0], la[i][1], lb[j][1]
            i += 1
            j += 1


def reachable(store: ObjectStore, root: bytes) -> Iterator[bytes]:
    """Yield the id of every node of the tree (for gc and fsck)."""
    stack = [root]
    while stack:
        oid = stack.pop()
        if oid == EMPTY:
            continue
        yield oid
        entries, _, children, _ = read_node(store, oid)
        if entries is None:
            stack.extend(children)
