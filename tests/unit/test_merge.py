"""Unit tests for the pure merge: the joint walk, its cost, sparse scoping, path collisions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from dvstore import repo as repo_mod
from dvstore import tree
from dvstore.hashing import hash_bytes
from dvstore.merge import (
    ANNSET,
    MergeOptions,
    Scope,
    empty_layers,
    merge_layers,
    path_key,
    remap_labels,
    resolve_paths,
    scoped_side,
)
from dvstore.merge_item import Conflict, ItemMerger, same, union_annotation_id
from dvstore.storage.objects import MemoryObjectStore


def key(i: Any) -> bytes:
    return hash_bytes(str(i).encode())[:16]


def rec(name: str, blob: bytes = b"\0" * 32, **kw: Any) -> dict[str, Any]:
    return {"filename": name, "blob": blob, "size": 1, "mimetype": "image/jpeg", "system": {}, "hidden": False, **kw}


@contextmanager
def small_leaves(n: int = 2) -> Iterator[None]:
    """Tiny leaves make deep tries out of a few keys, so every walk case is exercised."""
    old = tree.LEAF_MAX
    tree.LEAF_MAX = n
    try:
        yield
    finally:
        tree.LEAF_MAX = old


class CountingStore(MemoryObjectStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, oid: bytes, tag: bytes) -> Any:
        self.reads += 1
        return super().get(oid, tag)

    def get_any(self, oid: bytes) -> tuple[bytes, Any]:
        self.reads += 1
        return super().get_any(oid)


def test_shared_definitions_match_the_repository() -> None:
    for name in ("/a.jpg", "/x/ü/b c.png"):
        assert path_key(name) == repo_mod.path_key(name)
    assert ANNSET == repo_mod.ANNSET


def test_same_is_type_strict() -> None:
    assert same({"a": [1, "x"]}, {"a": [1, "x"]})
    assert not same(1, True)
    assert not same(1, 1.0)
    assert not same({"a": 1}, {"a": True})
    assert not same([1], (1,))


def naive(store: MemoryObjectStore, base: dict[str, bytes], ours: dict[str, bytes], theirs: dict[str, bytes],
          layers: list[str]) -> list[bytes]:
    """The per-key definition the walk must agree with: every key, every layer, no skipping."""
    merger = ItemMerger(store)
    dicts = [[dict(tree.items(store, side[la])) for la in layers] for side in (base, ours, theirs)]
    out: list[dict[bytes, Any]] = [{} for _ in layers]
    for k in sorted({k for side in dicts for d in side for k in d}):
        bv, ov, tv = ([d.get(k) for d in side] for side in dicts)
        if all(same(a, b) for a, b in zip(ov, bv)):
            rv = tv
        elif all(same(a, b) for a, b in zip(tv, bv)) or all(same(a, b) for a, b in zip(ov, tv)):
            rv = ov
        else:
            r = merger.merge(k, dict(zip(layers, bv)), dict(zip(layers, ov)), dict(zip(layers, tv)))
            rv = [r[la] for la in layers]
        for i, v in enumerate(rv):
            if v is not None:
                out[i][k] = v
    return [tree.build(store, d.items()) for d in out]


@pytest.mark.parametrize("leaf", [2, 64])
@pytest.mark.parametrize("seed", range(12))
def test_walk_equals_per_key_definition(seed: int, leaf: int) -> None:
    rnd = random.Random(seed)
    with small_leaves(leaf):
        s = MemoryObjectStore()
        n = rnd.choice([0, 3, 40, 300])
        items = {key(i): rec(f"/f{i}") for i in range(n)}
        meta = {key(i): {"user": {"v": i}} for i in range(n) if rnd.random() < 0.5}

        def mutate(p: float, tag: str) -> tuple[dict[bytes, Any], dict[bytes, Any]]:
            it, md = dict(items), dict(meta)
            for k in list(it):
                r = rnd.random()
                if r < p:
                    del it[k]
                    md.pop(k, None)
                elif r < 2 * p:
                    it[k] = dict(it[k], hidden=True)
                elif r < 3 * p:
                    md[k] = {"user": {"v": -1, tag: 1}}
            for j in range(rnd.randint(0, 8)):
                it[key(f"{tag}{seed}-{j}")] = rec(f"/{tag}{j}")
            return it, md

        p = rnd.choice([0.01, 0.1, 0.4])
        (oi, om), (ti, tm) = mutate(p, "o"), mutate(p, "t")
        base = {"items": tree.build(s, items.items()), "metadata": tree.build(s, meta.items())}
        ours = {"items": tree.build(s, oi.items()), "metadata": tree.build(s, om.items())}
        theirs = {"items": tree.build(s, ti.items()), "metadata": tree.build(s, tm.items())}
        res = merge_layers(s, base, ours, theirs)
        assert [res.layers["items"], res.layers["metadata"]] == naive(s, base, ours, theirs, ["items", "metadata"])
        assert res.layers["annotations"] is None and res.layers["status"] is None


def test_cost_follows_changes_not_size() -> None:
    s = CountingStore()
    n = 20_000
    items = {key(i): rec(f"/f{i}") for i in range(n)}
    meta = {key(i): {"user": {"v": 0}} for i in range(n)}
    base = {"items": tree.build(s, items.items()), "metadata": tree.build(s, meta.items())}
    s.flush()

    def side(lo: int) -> dict[str, bytes]:
        ch = {key(i): {"user": {"v": lo + 1}} for i in range(lo, lo + 10)}
        return {"items": base["items"], "metadata": tree.apply(s, base["metadata"], ch)}

    ours, theirs = side(0), side(5000)
    s.reads = 0
    res = merge_layers(s, base, ours, theirs)
    assert not res.conflicts
    assert s.reads < 600, s.reads  # a full read would be ~2 x 20000 / 64 leaves per side
    got = dict(tree.items(s, res.layers["metadata"] or tree.EMPTY))
    assert got[key(3)] == {"user": {"v": 1}} and got[key(5003)] == {"user": {"v": 5001}}
    assert sum(1 for v in got.values() if v["user"]["v"] != 0) == 20


def test_identical_sides_cost_nothing() -> None:
    s = CountingStore()
    base = {"items": tree.build(s, ((key(i), rec(f"/f{i}")) for i in range(5000)))}
    ours = {"items": tree.apply(s, base["items"], {key(1): rec("/renamed")})}
    s.reads = 0
    assert merge_layers(s, base, ours, ours).layers["items"] == ours["items"]
    assert merge_layers(s, base, base, ours).layers["items"] == ours["items"]
    assert merge_layers(s, base, ours, base).layers["items"] == ours["items"]
    assert s.reads <= 6  # three counts of a root, nothing opened


def test_empty_base_sums_unrelated_datasets() -> None:
    s = MemoryObjectStore()
    a = {key(f"a{i}"): rec(f"/a{i}") for i in range(200)}
    b = {key(f"b{i}"): rec(f"/b{i}") for i in range(3)}
    res = merge_layers(s, empty_layers(), {"items": tree.build(s, a.items())}, {"items": tree.build(s, b.items())})
    assert dict(tree.items(s, res.layers["items"] or tree.EMPTY)) == {**a, **b}


# --------------------------------------------------------------------------------------
# paths


def index(s: MemoryObjectStore, root: bytes) -> bytes:
    return tree.build(s, ((path_key(r["filename"]), [r["filename"], k]) for k, r in tree.items(s, root)))


def test_rename_picks_smallest_free_suffix_in_order() -> None:
    s = MemoryObjectStore()
    ours = {key("o1"): rec("/d/a.jpg"), key("o2"): rec("/d/a_1.jpg"), key("o3"): rec("/x.tar.gz"),
            key("o4"): rec("/noext")}
    theirs_new = {key("t1"): rec("/d/a.jpg"), key("t2"): rec("/d/a.jpg"), key("t3"): rec("/x.tar.gz"),
                  key("t4"): rec("/noext")}
    o_root = tree.build(s, ours.items())
    result = tree.build(s, {**ours, **theirs_new}.items())
    out = resolve_paths(s, o_root, index(s, o_root), result)
    names = {k: r["filename"] for k, r in tree.items(s, out.items)}
    first, second = sorted([key("t1"), key("t2")])
    assert names[first] == "/d/a_2.jpg" and names[second] == "/d/a_3.jpg"
    assert names[key("t3")] == "/x.tar_1.gz" and names[key("t4")] == "/noext_1"
    assert {names[k] for k in ours} == {r["filename"] for r in ours.values()}
    assert dict(tree.items(s, out.paths)) == dict(tree.items(s, index(s, out.items)))
    assert out.added == 4 and out.removed == 0
    assert [r[1] for r in out.renamed] == ["/d/a.jpg", "/d/a.jpg", "/noext", "/x.tar.gz"]


def test_a_path_vacated_by_the_merge_is_free() -> None:
    s = MemoryObjectStore()
    o_root = tree.build(s, [(key(1), rec("/a.jpg"))])
    result = tree.build(s, [(key(1), rec("/b.jpg")), (key(2), rec("/a.jpg"))])
    out = resolve_paths(s, o_root, index(s, o_root), result)
    assert not out.renamed
    assert dict(tree.items(s, out.paths)) == dict(tree.items(s, index(s, result)))


def test_path_collision_fail_reports_and_changes_nothing() -> None:
    s = MemoryObjectStore()
    o_root = tree.build(s, [(key(1), rec("/a.jpg"))])
    result = tree.build(s, [(key(1), rec("/a.jpg")), (key(2), rec("/a.jpg"))])
    out = resolve_paths(s, o_root, index(s, o_root), result, policy="fail")
    assert [(c.kind, c.filename, c.item) for c in out.conflicts] == [("path", "/a.jpg", key(2).hex())]
    assert out.items == result


def test_the_item_ours_held_keeps_its_path_when_theirs_changed_it() -> None:
    s = MemoryObjectStore()
    # Ours holds K1 at /a; the merge changed K1's binary and brought K2 to /a as well.
    o_root = tree.build(s, [(key(1), rec("/a.jpg"))])
    result = tree.build(s, [(key(1), rec("/a.jpg", b"\1" * 32)), (key(2), rec("/a.jpg"))])
    out = resolve_paths(s, o_root, index(s, o_root), result)
    names = {k: r["filename"] for k, r in tree.items(s, out.items)}
    assert names == {key(1): "/a.jpg", key(2): "/a_1.jpg"}


# --------------------------------------------------------------------------------------
# sparse sides


def layers_of(s: MemoryObjectStore, items: dict[bytes, Any], meta: dict[bytes, Any]) -> dict[str, bytes | None]:
    return {"items": tree.build(s, items.items()), "annotations": tree.EMPTY,
            "metadata": tree.build(s, meta.items()), "status": tree.EMPTY}


def test_scoped_side_keeps_what_it_never_held() -> None:
    s = MemoryObjectStore()
    base_items = {key(i): rec(f"/f{i}") for i in range(100)}
    base_meta = {key(i): {"user": {"v": i}} for i in range(100)}
    base = layers_of(s, base_items, base_meta)
    scope = frozenset({key(1), key(2), key(3)})
    side_items = {key(1): rec("/f1", hidden=True), key(3): rec("/f3"), key("new"): rec("/new")}
    side_meta = {key(1): {"user": {"v": 1}}, key(3): {"user": {"v": 33}}}
    side = layers_of(s, side_items, side_meta)
    eff = scoped_side(s, base, side, Scope(items=scope))
    got_items = dict(tree.items(s, eff["items"] or tree.EMPTY))
    got_meta = dict(tree.items(s, eff["metadata"] or tree.EMPTY))
    want_items = dict(base_items)
    del want_items[key(2)]  # deleted inside the scope
    want_items.update(side_items)
    assert got_items == want_items
    want_meta = {k: v for k, v in base_meta.items() if k != key(2)}
    want_meta[key(3)] = {"user": {"v": 33}}
    assert got_meta == want_meta


def test_scoped_side_layer_not_held_is_the_base_minus_deletions() -> None:
    s = MemoryObjectStore()
    base_items = {key(i): rec(f"/f{i}") for i in range(10)}
    base = layers_of(s, base_items, {key(i): {"user": {"v": i}} for i in range(10)})
    side = layers_of(s, {k: v for k, v in base_items.items() if k != key(4)}, {})
    side["metadata"] = None
    eff = scoped_side(s, base, side, None)
    got = dict(tree.items(s, eff["metadata"] or tree.EMPTY))
    assert set(got) == {key(i) for i in range(10)} - {key(4)}
    assert eff["items"] == side["items"]


# --------------------------------------------------------------------------------------
# item details


def test_union_keeps_both_annotations_and_theirs_status() -> None:
    s = MemoryObjectStore()
    aid = "c" * 24
    k = key(1)

    def item(label: str, status: str) -> dict[str, Any]:
        a = {"id": aid, "type": "box", "label": label, "metadata": {"system": {}, "user": {}}}
        return {"items": rec("/a.jpg"), "annotations": s.put(ANNSET, {aid: a}),
                "metadata": None, "status": {"annotations": {aid: status}}}

    m = ItemMerger(s, strategy="union", theirs_id="f" * 32)
    out = m.merge(k, item("dog", "review"), item("cat", "approved"), item("bird", "issue"))
    annset = s.get(out["annotations"], ANNSET)
    new_id = union_annotation_id(aid, "f" * 32)
    assert {a: v["label"] for a, v in annset.items()} == {aid: "cat", new_id: "bird"}
    assert annset[new_id]["id"] == new_id
    assert out["status"] == {"annotations": {aid: "approved", new_id: "issue"}}
    assert [c.resolution for c in m.conflicts] == ["union"]


def test_delete_modify_in_another_layer_is_an_item_conflict() -> None:
    s = MemoryObjectStore()
    base = {"items": tree.build(s, [(key(1), rec("/a.jpg"))]), "metadata": tree.EMPTY}
    ours = {"items": tree.EMPTY, "metadata": tree.EMPTY}
    theirs = {"items": base["items"], "metadata": tree.build(s, [(key(1), {"user": {"new": 1}})])}
    res = merge_layers(s, base, ours, theirs)
    assert [(c.kind, c.detail) for c in res.conflicts] == [("item", "deleted in ours, modified in theirs")]
    res = merge_layers(s, base, ours, theirs, MergeOptions(strategy="ours"))
    assert res.layers["items"] == tree.EMPTY and res.layers["metadata"] == tree.EMPTY


def test_conflict_json_and_line() -> None:
    c = Conflict(kind="binary", filename="/a.jpg", path="binary", detail="binary changed differently",
                 item="ab", ours={"blob": "00"}, theirs={"blob": "11"})
    assert c.line() == "CONFLICT binary /a.jpg binary changed differently"
    doc = c.to_json()
    assert {"kind", "filename", "path"} <= set(doc) and doc["resolution"] is None
    assert c.mirrored().ours == {"blob": "11"}


def test_remap_labels_rewrites_only_changed_sets() -> None:
    s = MemoryObjectStore()
    a1 = s.put(ANNSET, {"a": {"id": "a", "label": "car"}, "b": {"id": "b", "label": "dog"}})
    a2 = s.put(ANNSET, {"c": {"id": "c", "label": "dog"}})
    root = tree.build(s, [(key(1), a1), (key(2), a2)])
    new = remap_labels(s, root, {"car": "vehicle.car"})
    got = {k: s.get(v, ANNSET) for k, v in tree.items(s, new or tree.EMPTY)}
    assert got[key(1)]["a"]["label"] == "vehicle.car" and got[key(1)]["b"]["label"] == "dog"
    assert tree.get(s, new or tree.EMPTY, key(2)) == a2


@pytest.mark.parametrize("leaf", [2, 8, 64])
def test_identical_changes_on_both_sides_keep_counts_exact(leaf: int) -> None:
    """Subtrees both sides changed alike are taken whole; the node counts must stay exact."""
    with small_leaves(leaf):
        s = MemoryObjectStore()
        base_d = {key(i): rec(f"/f{i}") for i in range(600)}
        base = {"items": tree.build(s, base_d.items())}
        same_change = {key(i): tree.DELETE for i in range(0, 200, 3)}
        same_change.update({key(f"both{i}"): rec(f"/both{i}") for i in range(40)})
        ours_only = {key(i): rec(f"/f{i}", hidden=True) for i in range(300, 320)}
        theirs_only = {key(i): tree.DELETE for i in range(400, 450)}
        ours = {"items": tree.apply(s, base["items"], {**same_change, **ours_only})}
        theirs = {"items": tree.apply(s, base["items"], {**same_change, **theirs_only})}
        res = merge_layers(s, base, ours, theirs)
        want = dict(base_d)
        for k, v in {**same_change, **ours_only, **theirs_only}.items():
            if v is tree.DELETE:
                want.pop(k, None)
            else:
                want[k] = v
        assert res.layers["items"] == tree.build(s, want.items())
        assert tree.count(s, res.layers["items"] or tree.EMPTY) == len(want)
