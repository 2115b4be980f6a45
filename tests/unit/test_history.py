"""history.diff through the library: one test per change kind, plus its cost."""

from __future__ import annotations

from typing import Any

import pytest

from dvstore import history, tree
from dvstore.api import Dataset, Store
from dvstore.errors import UsageError
from dvstore.model import Commit
from dvstore.storage.objects import MemoryObjectStore


@pytest.fixture
def ds(store: Store) -> Dataset:
    d = store.datasets.create("pets")
    with d.edit("v1") as e:
        e.add_bytes("/a.jpg", b"aaa")
        e.add_bytes("/b.jpg", b"bbb")
        e.add_bytes("/c.jpg", b"ccc")
        e.add_annotation("/a.jpg", {"id": "a1", "type": "box", "label": "cat", "coordinates": [1, 2]})
        e.add_annotation("/a.jpg", {"id": "a2", "type": "box", "label": "cat", "coordinates": [3, 4]})
        e.add_annotation("/b.jpg", {"id": "b1", "type": "class", "label": "dog"})
        e.update_metadata("/a.jpg", user={"split": "train", "nested": {"x": 1}})
        e.set_task_status("/a.jpg", "t1", "completed")
    return d


def change(ds: Dataset, fn: Any) -> dict[str, Any]:
    """Apply ``fn(editor)`` as one version; return the diff from the previous head to the new one."""
    before = ds.head_id
    with ds.edit("change") as e:
        fn(e)
    return history.diff(ds.at(before.hex()), ds)


def empty_sections(doc: dict[str, Any], *keep: str) -> None:
    """Every section other than ``keep`` reports nothing."""
    s = history.stat(doc)
    for section in ("items", "annotations", "status"):
        if section not in keep:
            assert not any(s[section].values()), (section, doc[section])
    if "metadata" not in keep:
        assert doc["metadata"] == {"changed": [], "keys": {}}
    if "labels" not in keep:
        assert doc["labels"]["change"] == {}
    assert doc["recipe"] == {"changed": False}


def test_identical_versions(ds: Dataset) -> None:
    doc = history.diff(ds, ds)
    assert doc["identical"] is True
    assert not history.differs(doc)
    empty_sections(doc)
    assert doc["a"] == doc["b"] == {"dataset": "pets", "version": ds.head_id.hex()}


def test_item_added(ds: Dataset) -> None:
    doc = change(ds, lambda e: e.add_bytes("/d.jpg", b"ddd"))
    assert doc["items"]["added"] == ["/d.jpg"]
    assert not doc["identical"]
    empty_sections(doc, "items")


def test_item_removed_reports_its_records_in_every_layer(ds: Dataset) -> None:
    doc = change(ds, lambda e: e.delete("/a.jpg"))
    assert doc["items"]["removed"] == ["/a.jpg"]
    assert [(r["filename"], r["id"]) for r in doc["annotations"]["removed"]] == [("/a.jpg", "a1"), ("/a.jpg", "a2")]
    assert doc["metadata"]["changed"] == [
        {"filename": "/a.jpg", "added": [], "removed": ["user.nested.x", "user.split"], "modified": []}
    ]
    assert doc["status"]["tasks"] == [{"filename": "/a.jpg", "task": "t1", "from": "completed", "to": None}]
    assert doc["labels"]["change"] == {"cat": -2}


def test_item_modified_binary(ds: Dataset) -> None:
    doc = change(ds, lambda e: e.add_bytes("/b.jpg", b"new bytes"))
    assert doc["items"]["modified"] == ["/b.jpg"]
    assert doc["items"]["renamed"] == []
    empty_sections(doc, "items")


def test_item_renamed_keeps_identity(ds: Dataset) -> None:
    doc = change(ds, lambda e: e.rename("/c.jpg", "/sub/c2.jpg"))
    assert doc["items"]["renamed"] == [{"from": "/c.jpg", "to": "/sub/c2.jpg"}]
    assert doc["items"]["added"] == doc["items"]["removed"] == doc["items"]["modified"] == []
    empty_sections(doc, "items")


def test_renamed_and_modified(ds: Dataset) -> None:
    def fn(e: Any) -> None:
        e.rename("/b.jpg", "/b2.jpg")
        e.add_bytes("/b2.jpg", b"other")

    doc = change(ds, fn)
    assert doc["items"]["renamed"] == [{"from": "/b.jpg", "to": "/b2.jpg"}]
    assert doc["items"]["modified"] == ["/b2.jpg"]


def test_item_hidden(ds: Dataset) -> None:
    doc = change(ds, lambda e: e.set_hidden("/c.jpg", True))
    assert doc["items"]["hidden"] == [{"filename": "/c.jpg", "hidden": True}]
    assert doc["items"]["modified"] == []


def test_annotation_added(ds: Dataset) -> None:
    doc = change(ds, lambda e: e.add_annotation("/c.jpg", {"id": "c1", "type": "box", "label": "dog"}))
    assert doc["annotations"]["added"] == [{"filename": "/c.jpg", "id": "c1", "type": "box", "label": "dog"}]
    assert doc["labels"]["change"] == {"dog": 1}
    empty_sections(doc, "annotations", "labels")


def test_annotation_removed(ds: Dataset) -> None:
    doc = change(ds, lambda e: e.remove_annotation("/a.jpg", "a2"))
    assert doc["annotations"]["removed"] == [{"filename": "/a.jpg", "id": "a2", "type": "box", "label": "cat"}]
    assert doc["labels"]["change"] == {"cat": -1}
    empty_sections(doc, "annotations", "labels")


def test_annotation_modified_fields_and_relabel(ds: Dataset) -> None:
    doc = change(
        ds, lambda e: e.add_annotation("/a.jpg", {"id": "a1", "type": "box", "label": "dog", "coordinates": [1, 5]})
    )
    [m] = doc["annotations"]["modified"]
    assert m == {
        "filename": "/a.jpg",
        "id": "a1",
        "type": "box",
        "label": "dog",
        "label_from": "cat",
        "fields": ["coordinates", "label"],
    }
    assert doc["labels"]["change"] == {"cat": -1, "dog": 1}
    assert doc["annotations"]["added"] == doc["annotations"]["removed"] == []


def test_annotation_modified_on_renamed_item_uses_new_name(ds: Dataset) -> None:
    def fn(e: Any) -> None:
        e.rename("/b.jpg", "/renamed.jpg")
        e.add_annotation("/renamed.jpg", {"id": "b1", "type": "class", "label": "dog", "attributes": ["x"]})

    doc = change(ds, fn)
    [m] = doc["annotations"]["modified"]
    assert (m["filename"], m["fields"]) == ("/renamed.jpg", ["attributes"])
    assert doc["labels"]["change"] == {}


def test_annotation_only_change_names_the_item(ds: Dataset) -> None:
    """An item changed in the annotations layer only is named by a lookup, not the items diff."""
    doc = change(ds, lambda e: e.remove_annotation("/b.jpg", "b1"))
    assert doc["annotations"]["removed"][0]["filename"] == "/b.jpg"
    assert history.stat(doc)["items"] == {"added": 0, "removed": 0, "modified": 0, "renamed": 0, "hidden": 0}


def test_metadata_dotted_paths(ds: Dataset) -> None:
    doc = change(
        ds,
        lambda e: e.update_metadata(
            "/a.jpg",
            user={"split": "val", "nested": {"y": 2}, "score": 1},
            system={"tags": {"train": True}},
            replace=True,
        ),
    )
    assert doc["metadata"]["changed"] == [
        {
            "filename": "/a.jpg",
            "added": ["system.tags.train", "user.nested.y", "user.score"],
            "removed": ["user.nested.x"],
            "modified": ["user.split"],
        }
    ]
    assert doc["metadata"]["keys"] == {
        "system.tags.train": 1,
        "user.nested.x": 1,
        "user.nested.y": 1,
        "user.score": 1,
        "user.split": 1,
    }
    empty_sections(doc, "metadata")


def test_metadata_int_vs_float_is_a_change(ds: Dataset) -> None:
    change(ds, lambda e: e.update_metadata("/c.jpg", user={"v": 1}))
    doc = change(ds, lambda e: e.update_metadata("/c.jpg", user={"v": 1.0}))
    assert doc["metadata"]["changed"][0]["modified"] == ["user.v"]


def test_task_status_changes(ds: Dataset) -> None:
    def fn(e: Any) -> None:
        e.set_task_status("/a.jpg", "t1", "discard")
        e.set_task_status("/b.jpg", "t2", "approved")

    doc = change(ds, fn)
    assert doc["status"]["tasks"] == [
        {"filename": "/a.jpg", "task": "t1", "from": "completed", "to": "discard"},
        {"filename": "/b.jpg", "task": "t2", "from": None, "to": "approved"},
    ]
    empty_sections(doc, "status")


def test_annotation_qa_status_is_a_status_change(ds: Dataset) -> None:
    doc = change(ds, lambda e: e.set_annotation_status("/b.jpg", "b1", "issue"))
    assert doc["status"]["annotations"] == [{"filename": "/b.jpg", "annotation": "b1", "from": None, "to": "issue"}]
    empty_sections(doc, "status")


def test_recipe_difference(ds: Dataset) -> None:
    old = ds.recipe
    doc = change(ds, lambda e: e.set_recipe(dict(old, title="pets v2", labels=[{"tag": "cat"}])))
    r = doc["recipe"]
    assert r["changed"] is True
    assert r["labels"]["added"] == ["cat"]
    assert r["title"] == {"a": "default", "b": "pets v2"}
    assert r["compatible"] is True  # same recipe lineage id
    assert not doc["identical"]


def test_label_counts_on_request(ds: Dataset) -> None:
    before = ds.head_id
    with ds.edit() as e:
        e.add_annotation("/c.jpg", {"id": "c1", "type": "box", "label": "dog"})
    doc = history.diff(ds.at(before.hex()), ds, labels=True)
    assert doc["labels"] == {"change": {"dog": 1}, "counts": {"cat": {"a": 2, "b": 2}, "dog": {"a": 1, "b": 2}}}
    assert "counts" not in history.diff(ds.at(before.hex()), ds)["labels"]
    assert "counts" in history.diff(ds.at(before.hex()), ds, labels=None)["labels"]  # small: cheap


def test_labels_none_skips_counts_when_not_cheap(ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(history, "CHEAP_LABEL_ITEMS", 1)
    assert "counts" not in history.diff(ds.at("~0"), ds, labels=None)["labels"]


def test_direction_is_a_to_b(ds: Dataset) -> None:
    change(ds, lambda e: e.add_bytes("/d.jpg", b"ddd"))
    assert history.diff(ds, ds.at("~1"))["items"]["removed"] == ["/d.jpg"]
    assert ds.at("~1").diff()["items"]["added"] == ["/d.jpg"]  # Dataset.diff: against the head


def test_two_related_datasets(store: Store, ds: Dataset) -> None:
    clone = ds.clone("pets-clone")
    assert history.diff(ds, clone)["identical"]
    with clone.edit() as e:
        e.add_bytes("/a.jpg", b"changed")
        e.delete("/c.jpg")
    doc = history.diff(ds, clone)
    assert doc["items"]["modified"] == ["/a.jpg"]
    assert doc["items"]["removed"] == ["/c.jpg"]
    assert (doc["a"]["dataset"], doc["b"]["dataset"]) == ("pets", "pets-clone")


def test_clone_without_annotations_shows_them_removed(ds: Dataset) -> None:
    bare = ds.clone("bare", with_items_annotations=False, with_metadata=False)
    doc = history.diff(ds, bare)
    assert len(doc["annotations"]["removed"]) == 3
    assert doc["labels"]["change"] == {"cat": -2, "dog": -1}
    assert doc["metadata"]["changed"][0]["filename"] == "/a.jpg"
    assert doc["items"] == {"added": [], "removed": [], "modified": [], "renamed": [], "hidden": []}


def test_unrelated_datasets_share_no_ids(store: Store, ds: Dataset) -> None:
    other = store.datasets.create("other")
    with other.edit() as e:
        e.add_bytes("/a.jpg", b"aaa")
    doc = history.diff(ds, other)
    assert doc["items"]["removed"] == ["/a.jpg", "/b.jpg", "/c.jpg"]
    assert doc["items"]["added"] == ["/a.jpg"]


def test_different_stores_refused(tmp_path: Any, ds: Dataset) -> None:
    other = Store.init(str(tmp_path / "other")).datasets.create("x")
    with pytest.raises(UsageError):
        history.diff(ds, other)


# -- cost: the diff reads what differs, not the dataset ------------------------------------


class CountingStore(MemoryObjectStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get_any(self, oid: bytes) -> tuple[bytes, Any]:
        # Every typed read (``get``, tree.read_node) comes through here, cache hits included.
        self.reads += 1
        return super().get_any(oid)


def _key(i: int) -> bytes:
    from dvstore.hashing import hash_bytes

    return hash_bytes(i.to_bytes(8, "big"))[:16]


def test_diff_cost_follows_the_differences() -> None:
    objs = CountingStore()
    n = 20_000
    items = {_key(i): {"filename": f"/{i}.jpg", "blob": bytes(32), "size": i, "hidden": False} for i in range(n)}
    meta = {_key(i): {"user": {"i": i}} for i in range(n)}
    root_items = tree.build(objs, items.items())
    root_meta = tree.build(objs, meta.items())
    changed = {_key(i): dict(items[_key(i)], blob=b"\1" * 32) for i in range(0, n, n // 5)}
    root_items2 = tree.apply(objs, root_items, changed)
    objs.flush()

    def commit(items_root: bytes) -> Commit:
        return Commit(
            layers={"items": items_root, "annotations": None, "metadata": root_meta, "status": None},
            recipe=bytes(32),
            parents=(),
            op="commit",
        )

    objs.reads = 0
    doc = history.diff_commits(objs, commit(root_items), commit(root_items2))
    assert len(doc["items"]["modified"]) == 5
    depth = 4  # 20,000 keys: root + 2 internal levels + leaf, with LEAF_MAX 64 and fanout 16
    assert objs.reads <= 2 * depth * 5 + 2, objs.reads  # two sides, one path per change
    objs.reads = 0
    assert history.diff_commits(objs, commit(root_items), commit(root_items))["identical"]
    assert objs.reads == 0
