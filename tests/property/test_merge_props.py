"""Properties of the three-way layer merge over small generated datasets.

Datasets are generated as plain dicts (item id -> the item's value in each layer), drawn
from small pools so that the sides often agree, and built into tries with ``tree.build``
over a ``MemoryObjectStore``. Tiny leaves (``LEAF_MAX`` patched to 2) make deep tries out
of a few items, so every shape the walk meets (leaf against node, split leaves) occurs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dvstore import tree
from dvstore.hashing import hash_bytes
from dvstore.merge import ANNSET, MergeOptions, merge_layers
from dvstore.merge_item import ItemMerger, same
from dvstore.model import LAYERS
from dvstore.storage.objects import MemoryObjectStore

KEYS = [hash_bytes(str(i).encode())[:16] for i in range(40)]
BLOBS = [bytes([i]) * 32 for i in range(3)]
AIDS = ["a" * 24, "b" * 24, "c" * 24]

Item = dict[str, Any]  # layer -> value, annotation sets as dicts
Dataset = dict[bytes, Item]


@contextmanager
def small_leaves() -> Iterator[None]:
    old = tree.LEAF_MAX
    tree.LEAF_MAX = 2
    try:
        yield
    finally:
        tree.LEAF_MAX = old


@st.composite
def items(draw: st.DrawFn, index: int) -> Item:
    rec = {"filename": draw(st.sampled_from([f"/f{index}.jpg", f"/r{index}.jpg"])),
           "blob": draw(st.sampled_from(BLOBS)), "size": 1, "mimetype": "image/jpeg", "system": {},
           "hidden": draw(st.booleans())}
    anns = draw(st.dictionaries(st.sampled_from(AIDS), st.sampled_from(["dog", "cat"]), max_size=2))
    annset = {a: {"id": a, "type": "box", "label": label} for a, label in anns.items()} or None
    user = draw(st.dictionaries(st.sampled_from("pq"), st.one_of(st.integers(0, 1), st.lists(st.integers(0, 1),
                                                                                          max_size=2)), max_size=2))
    tags = draw(st.sampled_from([None, {"train": True}, {"test": True}]))
    md: dict[str, Any] = {}
    if user:
        md["user"] = user
    if tags:
        md["system"] = {"tags": tags}
    tasks = draw(st.dictionaries(st.sampled_from(["t1", "t2"]), st.sampled_from(["completed", "discard"]),
                                 max_size=2))
    qa = draw(st.dictionaries(st.sampled_from(sorted(anns) or ["-"]), st.sampled_from(["review", "issue"]),
                              max_size=2)) if anns else {}
    status: dict[str, Any] = {}
    if tasks:
        status["tasks"] = {t: {"status": s} for t, s in tasks.items()}
    if qa:
        status["annotations"] = qa
    return {"items": rec, "annotations": annset, "metadata": md or None, "status": status or None}


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    keys = draw(st.lists(st.integers(0, len(KEYS) - 1), unique=True, max_size=25))
    return {KEYS[i]: draw(items(i)) for i in keys}


@st.composite
def edited(draw: st.DrawFn, base: Dataset) -> Dataset:
    """A side: the base with some items deleted, replaced or added."""
    out = dict(base)
    for i in draw(st.lists(st.integers(0, len(KEYS) - 1), unique=True, max_size=8)):
        k = KEYS[i]
        if k in out and draw(st.booleans()):
            del out[k]
        else:
            out[k] = draw(items(i))
    return out


@st.composite
def triples(draw: st.DrawFn) -> tuple[Dataset, Dataset, Dataset]:
    base = draw(datasets())
    return base, draw(edited(base)), draw(edited(base))


def build(store: MemoryObjectStore, ds: Dataset) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for layer in LAYERS:
        entries = []
        for k, it in ds.items():
            v = it[layer]
            if v is not None:
                entries.append((k, store.put(ANNSET, v) if layer == "annotations" else v))
        out[layer] = tree.build(store, entries)
    return out


def blobs_of(store: MemoryObjectStore, layers: dict[str, bytes | None]) -> set[bytes]:
    return {r["blob"] for _, r in tree.items(store, layers["items"] or tree.EMPTY)}


def annotations_of(store: MemoryObjectStore, layers: dict[str, bytes | None]) -> set[bytes]:
    out = set()
    for _, oid in tree.items(store, layers["annotations"] or tree.EMPTY):
        for a in store.get(oid, ANNSET).values():
            out.add(repr(sorted((k, v) for k, v in a.items() if k != "id")).encode())
    return out


def merge(store: MemoryObjectStore, b: Dataset, o: Dataset, t: Dataset, strategy: str = "fail") -> Any:
    return merge_layers(store, build(store, b), build(store, o), build(store, t),
                        MergeOptions(strategy=strategy, theirs_id="9" * 32))


@settings(max_examples=100, deadline=None)
@given(triples())
def test_trivial_merges(case: tuple[Dataset, Dataset, Dataset]) -> None:
    b, x, _ = case
    with small_leaves():
        s = MemoryObjectStore()
        want = build(s, x)
        for res in (merge(s, b, x, x), merge(s, b, b, x), merge(s, b, x, b)):
            assert res.layers == want
            assert not res.conflicts


@settings(max_examples=200, deadline=None)
@given(triples())
def test_swapping_sides_gives_the_same_clean_result_and_mirrored_conflicts(case: tuple[Dataset, Dataset,
                                                                                      Dataset]) -> None:
    b, o, t = case
    with small_leaves():
        s = MemoryObjectStore()
        r1, r2 = merge(s, b, o, t), merge(s, b, t, o)

        def sig(c: Any) -> tuple[str, str, str, str, str]:
            return (c.item, c.kind, c.path, repr(c.ours), repr(c.theirs))

        assert sorted(sig(c) for c in r1.conflicts) == sorted(sig(c.mirrored()) for c in r2.conflicts)
        if not r1.conflicts:
            assert r1.layers == r2.layers


@settings(max_examples=120, deadline=None)
@given(triples(), st.sampled_from(["fail", "ours", "theirs", "union"]))
def test_result_holds_only_what_the_inputs_hold(case: tuple[Dataset, Dataset, Dataset], strategy: str) -> None:
    b, o, t = case
    with small_leaves():
        s = MemoryObjectStore()
        res = merge(s, b, o, t, strategy)
        inputs = [build(s, d) for d in (b, o, t)]
        assert blobs_of(s, res.layers) <= set().union(*(blobs_of(s, x) for x in inputs))
        assert annotations_of(s, res.layers) <= set().union(*(annotations_of(s, x) for x in inputs))
        # No layer holds a value for an item the result does not have.
        ids = {k for k, _ in tree.items(s, res.layers["items"] or tree.EMPTY)}
        for layer in ("annotations", "metadata", "status"):
            assert {k for k, _ in tree.items(s, res.layers[layer] or tree.EMPTY)} <= ids


@settings(max_examples=60, deadline=None)
@given(triples(), st.sampled_from(["fail", "ours", "theirs", "union"]))
def test_same_inputs_same_result(case: tuple[Dataset, Dataset, Dataset], strategy: str) -> None:
    b, o, t = case
    with small_leaves():
        first = merge(MemoryObjectStore(), b, o, t, strategy)
        s = MemoryObjectStore()
        assert merge(s, b, o, t, strategy).layers == first.layers
        assert merge(s, b, o, t, strategy).layers == first.layers
        assert [c.to_json() for c in merge(s, b, o, t, strategy).conflicts] == [c.to_json() for c in first.conflicts]


@settings(max_examples=200, deadline=None)
@given(triples())
def test_walk_agrees_with_the_per_item_definition(case: tuple[Dataset, Dataset, Dataset]) -> None:
    """Skipping subtrees is an optimisation: the result is the per-item rule applied to every id."""
    b, o, t = case
    with small_leaves():
        s = MemoryObjectStore()
        res = merge(s, b, o, t)
        merger = ItemMerger(s)
        layers = list(LAYERS)
        sides = [build(s, d) for d in (b, o, t)]
        dicts = [[dict(tree.items(s, side[la] or tree.EMPTY)) for la in layers] for side in sides]
        want: list[dict[bytes, Any]] = [{} for _ in layers]
        for k in sorted(set(b) | set(o) | set(t)):
            bv, ov, tv = ([d.get(k) for d in side] for side in dicts)
            if all(same(x, y) for x, y in zip(ov, bv)):
                rv = tv
            elif all(same(x, y) for x, y in zip(tv, bv)) or all(same(x, y) for x, y in zip(ov, tv)):
                rv = ov
            else:
                m = merger.merge(k, dict(zip(layers, bv)), dict(zip(layers, ov)), dict(zip(layers, tv)))
                rv = [m[la] for la in layers]
            for i, v in enumerate(rv):
                if v is not None:
                    want[i][k] = v
        assert [res.layers[la] for la in layers] == [tree.build(s, d.items()) for d in want]
