"""Merge through the library: merge base, Dataloop's three cases, sparse clones, N-way, --into."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dvstore import merging, tree
from dvstore.api import Dataset, Store
from dvstore.errors import IncompatibleRecipesError, MergeConflictError, UsageError
from dvstore.hashing import hash_bytes
from dvstore.merge_item import union_annotation_id
from dvstore.model import Commit

PETS = {"title": "pets", "labels": [{"tag": "dog"}, {"tag": "cat"}], "attributes": []}
CARS = {"title": "cars", "labels": [{"tag": "car"}, {"tag": "truck"}], "attributes": []}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.init(str(tmp_path))


def make(store: Store, name: str, n: int = 20, recipe: dict[str, Any] | None = None, prefix: str = "/img") -> Dataset:
    from dvstore.recipes import parse_recipe

    ds = store.datasets.create(name, recipe=parse_recipe(recipe or PETS, recipe_id="a" * 24))
    with ds.edit("add") as e:
        for i in range(n):
            e.add_bytes(f"{prefix}/{i}.jpg", f"{name}-{i}".encode())
    return ds


def labels(ds: Dataset, filename: str) -> list[str]:
    return sorted(a["label"] for a in ds.items.get(filepath=filename).annotations)


def version_state(ds: Dataset) -> tuple[dict[str, Any], bytes]:
    v = ds.version
    return dict(v.layers), v.recipe


# --------------------------------------------------------------------------------------
# the merge base


class FakeRepo:
    def __init__(self, graph: dict[bytes, tuple[bytes, ...]]) -> None:
        self.graph = graph

    def commit(self, cid: bytes) -> Commit:
        return Commit(layers={}, recipe=b"", parents=self.graph[cid], op="commit")


def cid(name: str) -> bytes:
    return hash_bytes(name.encode())


def test_merge_base_prefers_greatest_generation_then_smallest_id() -> None:
    r, a, b, c1, c2 = (cid(x) for x in ("root", "a", "b", "c1", "c2"))
    # criss-cross: x and y both merge a and b; a and b have the same generation.
    x, y = cid("x"), cid("y")
    hist = merging.History(FakeRepo({r: (), a: (r,), b: (r,), x: (a, b), y: (b, a), c1: (x,), c2: (y,)}))  # type: ignore[arg-type]
    assert hist.merge_base([c1], c2) == min(a, b)
    assert hist.generation(c1) == 4
    assert hist.merge_base([c1], r) == r
    lone = cid("lone")
    hist2 = merging.History(FakeRepo({r: (), lone: ()}))  # type: ignore[arg-type]
    assert hist2.merge_base([r], lone) is None


def test_clone_parents_count(store: Store) -> None:
    a = make(store, "A", 3)
    b = a.clone("B")
    hist = merging.History(store.repo)
    assert hist.merge_base([a.head_id], b.head_id) == a.head_id


# --------------------------------------------------------------------------------------
# Dataloop's three cases


def test_case1_clones_merged_annotations_from_both_sides_not_duplicated(store: Store) -> None:
    a = make(store, "A")
    with a.edit() as e:
        e.add_annotation("/img/0.jpg", {"id": "0" * 24, "type": "box", "label": "dog"})
    b, c = a.clone("B"), a.clone("C")
    with b.edit() as e:
        e.add_annotation("/img/0.jpg", {"type": "box", "label": "cat"})
    with c.edit() as e:
        e.add_annotation("/img/0.jpg", {"type": "box", "label": "dog"})
        e.update_metadata("/img/1.jpg", user={"checked": True})
    m = store.datasets.merge("M", [b, c])
    assert labels(m, "/img/0.jpg") == ["cat", "dog", "dog"]  # the shared one once, two new ones
    assert m.items.get(filepath="/img/1.jpg").metadata["user"] == {"checked": True}
    assert m.counts() == {"items": 20, "annotations": 3}
    v = m.version
    assert v.op == "merge" and v.parents == (b.head_id, c.head_id)
    info = v.info["merge"]
    assert [s["name"] for s in info["sources"]] == ["B", "C"] and info["bases"] == [a.head_id.hex()]
    assert info["strategy"] == "fail" and info["with_metadata"] is True


def test_case2_unrelated_datasets_sum_and_rename(store: Store) -> None:
    a = make(store, "A", 3)
    b = make(store, "B", 2)  # same recipe file and id, unrelated items on the same paths
    m = store.datasets.merge("M", [a, b])
    names = sorted(it.filename for it in m.items.list())
    assert names == ["/img/0.jpg", "/img/0_1.jpg", "/img/1.jpg", "/img/1_1.jpg", "/img/2.jpg"]
    assert m.items.get(filepath="/img/0.jpg").read() == b"A-0"
    assert m.items.get(filepath="/img/0_1.jpg").read() == b"B-0"
    assert m.version.info["merge"]["bases"] == [None]
    assert len(m.version.info["merge"]["renamed"]) == 2
    # The derived filename index published with the version is the one a rebuild gives.
    repo = store.repo
    items_root = m.version.layers["items"]
    cached = repo.db.get("index", b"path:" + items_root)
    rebuilt = tree.build(repo.objects, ((merging.m3.path_key(r["filename"]), [r["filename"], k])
                                       for k, r in tree.items(repo.objects, items_root)))
    assert cached == rebuilt


def test_case2_path_collision_fail(store: Store) -> None:
    a, b = make(store, "A", 3), make(store, "B", 2)
    with pytest.raises(MergeConflictError) as ei:
        store.datasets.merge("M", [a, b], path_collision="fail")
    assert {c.kind for c in ei.value.conflicts} == {"path"}
    assert "M" not in {d.name for d in store.datasets.list()}


def test_case3_different_recipes_refused_then_switch(store: Store) -> None:
    a = make(store, "A", 2)
    from dvstore.recipes import parse_recipe

    b = store.datasets.create("B", recipe=parse_recipe(CARS))
    with b.edit() as e:
        e.add_bytes("/x.jpg", b"x")
    with pytest.raises(IncompatibleRecipesError) as ei:
        store.datasets.merge("M", [a, b])
    assert "A=" in str(ei.value) and "B=" in str(ei.value) and "dvs recipe switch" in str(ei.value)
    assert ei.value.exit_code == 4
    new = merging.switch_recipe(b, a.recipe)
    assert new is not None and b.version.op == "switch_recipe" and b.version.layers == store.repo.commit(
        b.version.parents[0]).layers
    assert merging.switch_recipe(b, a.recipe) is None  # already that recipe: no version
    m = store.datasets.merge("M", [a, b])
    assert m.counts()["items"] == 3


def test_case3_map_labels(store: Store) -> None:
    a = make(store, "A", 2)
    from dvstore.recipes import flat_labels, parse_recipe

    b = store.datasets.create("B", recipe=parse_recipe(CARS))
    with b.edit() as e:
        e.add_bytes("/x.jpg", b"x")
        e.add_annotation("/x.jpg", {"type": "box", "label": "car"})
        e.add_annotation("/x.jpg", {"type": "box", "label": "truck"})
    m = store.datasets.merge("M", [a, b], map_labels="car=vehicle.car,truck=vehicle.truck")
    assert labels(m, "/x.jpg") == ["vehicle.car", "vehicle.truck"]
    assert set(flat_labels(m.recipe)) == {"dog", "cat", "vehicle", "vehicle.car", "vehicle.truck"}
    assert m.recipe["id"] == a.recipe["id"]
    assert labels(b, "/x.jpg") == ["car", "truck"]  # the source is never modified
    assert m.version.info["merge"]["map_labels"] == {"car": "vehicle.car", "truck": "vehicle.truck"}


def test_recipe_three_way_merge(store: Store) -> None:
    a = make(store, "A", 1)
    b, c = a.clone("B"), a.clone("C")
    from dvstore.recipes import add_labels, flat_labels

    merging.switch_recipe(b, add_labels(b.recipe, ["bird"]))
    merging.switch_recipe(c, add_labels(c.recipe, ["fish"]))
    m = store.datasets.merge("M", [b, c])
    assert set(flat_labels(m.recipe)) == {"cat", "dog", "bird", "fish"}


# --------------------------------------------------------------------------------------
# sparse clones: the annotation team workflow (SEMANTICS §3.4)


def team_setup(store: Store) -> tuple[Dataset, Dataset]:
    a = make(store, "A", 20)
    team = a.clone("team", filters={"filter": {"filename": {"$in": ["/img/5.jpg", "/img/6.jpg"]}}})
    assert team.counts()["items"] == 2
    with team.edit() as e:
        e.add_annotation("/img/5.jpg", {"type": "box", "label": "dog"})
        e.set_task_status("/img/6.jpg", "task-1", "completed")
    with a.edit() as e:
        e.update_metadata("/img/7.jpg", user={"score": 0.9})
    return a, team


def check_team_result(ds: Dataset) -> None:
    assert ds.counts() == {"items": 20, "annotations": 1}
    assert labels(ds, "/img/5.jpg") == ["dog"]
    assert ds.items.get(filepath="/img/6.jpg").status == {"task-1": "completed"}
    assert ds.items.get(filepath="/img/7.jpg").metadata["user"] == {"score": 0.9}


def test_sparse_clone_merges_into_new_dataset_without_deleting(store: Store) -> None:
    a, team = team_setup(store)
    check_team_result(store.datasets.merge("M", [a, team]))
    check_team_result(store.datasets.merge("M2", [team, a]))


def test_sparse_clone_merges_back_into_source_twice(store: Store) -> None:
    a, team = team_setup(store)
    a = a.merge([team])
    check_team_result(a)
    with team.edit() as e:  # the team goes on; the second merge-back has the team's version as base
        e.add_annotation("/img/6.jpg", {"type": "box", "label": "cat"})
        e.delete("/img/5.jpg")
    a = a.merge([team])
    assert a.counts() == {"items": 19, "annotations": 1}
    assert labels(a, "/img/6.jpg") == ["cat"]
    assert a.items.get(filepath="/img/7.jpg").metadata["user"] == {"score": 0.9}


def test_sparse_deletion_inside_scope_is_a_deletion(store: Store) -> None:
    a, team = team_setup(store)
    with team.edit() as e:
        e.delete("/img/5.jpg")
        e.add_bytes("/img/new.jpg", b"new")
    a = a.merge([team])
    names = {it.filename for it in a.items.list()}
    assert "/img/5.jpg" not in names and "/img/new.jpg" in names and len(names) == 20


def test_scope_of_a_clone_of_a_clone_intersects(store: Store) -> None:
    a, team = team_setup(store)
    sub = team.clone("sub", filters={"filter": {"filename": "/img/5.jpg"}})
    with sub.edit() as e:
        e.add_annotation("/img/5.jpg", {"type": "box", "label": "cat"})
    team = team.merge([sub])  # into the team clone: base is team's head, team stays sparse
    assert team.counts()["items"] == 2 and team.version.info["merge"]["keeps_scope"] is True
    a = a.merge([team])
    assert a.counts()["items"] == 20
    assert labels(a, "/img/5.jpg") == ["cat", "dog"]


def test_projected_clone_merges_back_without_dropping_the_layer(store: Store) -> None:
    a = make(store, "A", 5)
    with a.edit() as e:
        e.update_metadata("/img/1.jpg", user={"keep": "me"})
        e.set_task_status("/img/2.jpg", "t", "approved")
    team = a.clone("team", with_metadata=False, with_task_annotations_status=False)
    assert team.version.layers["metadata"] is None
    with team.edit() as e:
        e.add_annotation("/img/3.jpg", {"type": "point", "label": "dog"})
        e.delete("/img/4.jpg")
    m = a.merge([team])
    assert m.items.get(filepath="/img/1.jpg").metadata["user"] == {"keep": "me"}
    assert m.items.get(filepath="/img/2.jpg").status == {"t": "approved"}
    assert labels(m, "/img/3.jpg") == ["dog"] and m.counts()["items"] == 4


# --------------------------------------------------------------------------------------
# conflicts, strategies, flags


def conflicting(store: Store) -> tuple[Dataset, Dataset]:
    a = make(store, "A", 4)
    with a.edit() as e:
        e.add_annotation("/img/0.jpg", {"id": "1" * 24, "type": "box", "label": "dog"})
    b, c = a.clone("B"), a.clone("C")
    with b.edit() as e:
        e.update_metadata("/img/1.jpg", user={"k": 1})
        e.remove_annotation("/img/0.jpg", "1" * 24)
        e.add_annotation("/img/0.jpg", {"id": "1" * 24, "type": "box", "label": "cat"})
    with c.edit() as e:
        e.update_metadata("/img/1.jpg", user={"k": 2})
        e.remove_annotation("/img/0.jpg", "1" * 24)
        e.add_annotation("/img/0.jpg", {"id": "1" * 24, "type": "box", "label": "bird"})
    return b, c


def test_fail_writes_nothing_and_carries_conflicts(store: Store) -> None:
    b, c = conflicting(store)
    before = {d.name: d.head_id for d in store.datasets.list()}
    with pytest.raises(MergeConflictError) as ei:
        store.datasets.merge("M", [b, c])
    kinds = sorted((x.kind, x.path, x.source) for x in ei.value.conflicts)
    assert kinds == [("annotation", "annotations." + "1" * 24, "C"), ("metadata", "metadata.user.k", "C")]
    assert ei.value.exit_code == 1
    assert {d.name: d.head_id for d in store.datasets.list()} == before
    assert not store.repo.objects.pending


@pytest.mark.parametrize(("strategy", "k", "anns"), [
    ("ours", 1, ["cat"]), ("theirs", 2, ["bird"]), ("union", 2, ["bird", "cat"])])
def test_strategies(store: Store, strategy: str, k: int, anns: list[str]) -> None:
    b, c = conflicting(store)
    m = store.datasets.merge("M", [b, c], strategy=strategy)
    assert m.items.get(filepath="/img/1.jpg").metadata["user"] == {"k": k}
    assert labels(m, "/img/0.jpg") == anns
    resolved = m.version.info["merge"]["resolved_conflicts"]
    assert len(resolved) == 2 and {r["resolution"] for r in resolved} == {strategy}
    if strategy == "union":
        ids = {a["id"] for a in m.items.get(filepath="/img/0.jpg").annotations}
        assert ids == {"1" * 24, union_annotation_id("1" * 24, c.id)}


def test_projection_flags_drop_layers_and_their_conflicts(store: Store) -> None:
    b, c = conflicting(store)
    with pytest.raises(MergeConflictError) as ei:
        store.datasets.merge("M", [b, c], with_metadata=False)
    assert {x.kind for x in ei.value.conflicts} == {"annotation"}
    m = store.datasets.merge("M", [b, c], with_metadata=False, with_items_annotations=False)
    assert m.version.layers["metadata"] is None and m.version.layers["annotations"] is None
    assert m.version.layers["status"] is not None


def test_keep_deleted(store: Store) -> None:
    a = make(store, "A", 3)
    b, c = a.clone("B"), a.clone("C")
    with b.edit() as e:
        e.delete("/img/0.jpg")
    assert store.datasets.merge("M", [b, c]).counts()["items"] == 2
    assert store.datasets.merge("K", [b, c], keep_deleted=True).counts()["items"] == 3


def test_dry_run_writes_nothing(store: Store) -> None:
    b, c = conflicting(store)
    plan = merging.run_merge(store, [b, c], merge_name="M", dry_run=True)
    assert len(plan.unresolved) == 2 and plan.committed is None
    assert plan.stats["items"] == 4
    assert "M" not in {d.name for d in store.datasets.list()}
    assert not store.repo.objects.pending


def test_result_roots_are_deterministic(store: Store) -> None:
    b, c = conflicting(store)
    m1 = store.datasets.merge("M1", [b, c], strategy="union")
    m2 = store.datasets.merge("M2", [b, c], strategy="union")
    assert version_state(m1) == version_state(m2)
    assert m1.version.info == m2.version.info


def test_needs_two_distinct_datasets(store: Store) -> None:
    a = make(store, "A", 1)
    with pytest.raises(UsageError, match="at least two distinct"):
        store.datasets.merge("M", [a, a])
    with pytest.raises(UsageError, match="already exists"):
        store.datasets.merge("A", [a, a.clone("B")])
    with pytest.raises(UsageError, match="strategy"):
        store.datasets.merge("M", [a, "B"], strategy="bogus")


# --------------------------------------------------------------------------------------
# N-way and --into


def test_n_way_fold(store: Store) -> None:
    a = make(store, "A", 3)
    clones = [a.clone(n) for n in ("B", "C", "D")]
    for ds, label in zip(clones, ("dog", "cat", "bird")):
        with ds.edit() as e:
            e.add_annotation("/img/1.jpg", {"type": "box", "label": label})
            e.add_bytes(f"/{ds.name}.jpg", ds.name.encode())
    m = store.datasets.merge("M", clones)
    assert labels(m, "/img/1.jpg") == ["bird", "cat", "dog"]
    assert m.counts()["items"] == 6
    assert m.version.parents == tuple(ds.head_id for ds in clones)
    assert m.version.info["merge"]["bases"] == [a.head_id.hex()] * 2


def test_into_fast_forward_and_up_to_date(store: Store) -> None:
    a = make(store, "A", 3)
    b = a.clone("B")
    with b.edit() as e:
        e.add_annotation("/img/1.jpg", {"type": "box", "label": "dog"})
    head_before = a.head_id
    a = a.merge([b])
    v = a.version
    assert v.info["merge"]["fast_forward"] is True and v.parents == (head_before, b.head_id)
    assert v.layers == b.version.layers
    again = a.merge([b])  # nothing new: no version
    assert again.head_id == a.head_id


def test_into_three_way(store: Store) -> None:
    a = make(store, "A", 3)
    b = a.clone("B")
    with a.edit() as e:
        e.update_metadata("/img/0.jpg", user={"a": 1})
    with b.edit() as e:
        e.update_metadata("/img/1.jpg", user={"b": 1})
    a = a.merge([b])
    assert a.version.info["merge"]["fast_forward"] is False
    assert a.items.get(filepath="/img/0.jpg").metadata["user"] == {"a": 1}
    assert a.items.get(filepath="/img/1.jpg").metadata["user"] == {"b": 1}
    assert b.items.get(filepath="/img/0.jpg").metadata["user"] == {}


def test_merge_commits_for_the_working_folder(store: Store) -> None:
    a = make(store, "A", 3)
    base = a.head_id
    with a.edit() as e:
        e.update_metadata("/img/0.jpg", user={"head": 1})
    ours = a.head_id
    b = a.at(base.hex()).clone("B")
    with b.edit() as e:
        e.update_metadata("/img/1.jpg", user={"folder": 1})
        e.update_metadata("/img/0.jpg", user={"head": 2})
    layers, conflicts = merging.merge_commits(store, base, ours, b.head_id)
    assert [c.path for c in conflicts] == ["metadata.user.head"]
    meta = dict(tree.items(store.repo.objects, layers["metadata"] or tree.EMPTY))
    assert sorted(str(v["user"]) for v in meta.values()) == ["{'folder': 1}", "{'head': 1}"]
    layers, conflicts = merging.merge_commits(store.repo, base, ours, b.head_id, strategy="theirs")
    assert conflicts[0].resolution == "theirs"
    store.repo.objects.discard()
