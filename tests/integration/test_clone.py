"""Clone (SEMANTICS §2.3) through the library and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dvstore import Filters, Store
from dvstore.errors import FilterError, NotFoundError, UsageError


@pytest.fixture
def pets(store: Store):
    ds = store.datasets.create("pets")
    with ds.edit("seed") as e:
        for i in range(6):
            kind = "cats" if i % 2 == 0 else "dogs"
            fn = f"/{kind}/{i}.jpg"
            e.add_bytes(fn, f"img{i}".encode() * 10)
            e.add_annotation(fn, {"type": "box", "label": kind[:-1], "coordinates": [{"x": 0, "y": 0}, {"x": i, "y": i}],
                                  "metadata": {"system": {"status": "approved"}}})
            e.update_metadata(fn, user={"score": i / 10}, system={"tags": {"train": True}})
            e.set_task_status(fn, "task-1", "completed")
        e.set_hidden("/dogs/5.jpg", True)
    return ds


def _blob_count(store: Store) -> int:
    return store.repo.db.read(lambda t: t.count("blobs"))


def test_unfiltered_clone_shares_roots_and_parent(pets):
    store = pets._store
    blobs = _blob_count(store)
    c = pets.clone(clone_name="copy")
    assert c.version.layers == pets.version.layers
    assert c.version.parents == (pets.head_id,)
    assert c.version.op == "clone" and c.version.recipe == pets.version.recipe
    assert c.version.info["clone"]["src_commit"] == pets.head_id.hex()
    assert _blob_count(store) == blobs


@pytest.mark.parametrize("flag,layer", [("with_items_annotations", "annotations"), ("with_metadata", "metadata"),
                                         ("with_task_annotations_status", "status")])
def test_flags_drop_exactly_their_layer(pets, flag, layer):
    c = pets.clone(clone_name="p", **{flag: False})
    for name, root in c.version.layers.items():
        assert root == (None if name == layer else pets.version.layers[name])
    it = c.items.get(filepath="/cats/0.jpg")
    src = pets.items.get(filepath="/cats/0.jpg")
    assert it.id == src.id and it.binary == src.binary
    if layer == "annotations":
        assert it.annotations == []
    if layer == "metadata":
        assert it.metadata["user"] == {} and "tags" not in it.metadata["system"]
        assert it.metadata["system"]["size"] == src.metadata["system"]["size"]  # intrinsic kept
    if layer == "status":
        assert it.status == {} and "status" not in it.annotations[0]["metadata"]["system"]


def test_filtered_clone_is_exactly_what_ls_lists(pets):
    q = {"filename": "/cats/**"}
    listed = {i.id for i in pets.items.list(filters=q)}
    c = pets.clone(clone_name="cats", filters=q)
    got = {i.id: i for i in c.items.list()}
    assert set(got) == listed and len(listed) == 3
    for iid, it in got.items():
        src = pets.items.get(item_id=iid)
        assert it.binary == src.binary and it.annotations == src.annotations and it.metadata == src.metadata


def test_clone_includes_hidden_items_listing_does_not(pets):
    c = pets.clone(clone_name="dogs", filters={"filename": "/dogs/**"})
    assert "/dogs/5.jpg" not in [i.filename for i in pets.items.list(filters={"filename": "/dogs/**"})]
    assert sorted(i.filename for i in c.items.list(filters={"filename": "/dogs/**", "hidden": True})) == ["/dogs/5.jpg"]
    assert c.version.info["clone"]["filter"] is not None


def test_join_filter_and_builder(pets):
    f = Filters()
    f.add_join(field="label", values="cat")
    c = pets.clone(clone_name="has-cat", filters=f)
    assert sorted(i.filename for i in c.items.list()) == ["/cats/0.jpg", "/cats/2.jpg", "/cats/4.jpg"]
    # The clone copies every annotation of a selected item (the join does not prune).
    assert all(len(i.annotations) == 1 for i in c.items.list())


def test_source_is_never_modified(pets):
    before = (pets.head_id, pets.version.layers)
    pets.clone(clone_name="a", filters={"filename": "/cats/**"}, with_metadata=False)
    assert (pets.head_id, pets.version.layers) == before


def test_validation_errors_create_nothing(pets):
    store = pets._store
    names = {d.name for d in store.datasets.list()}
    with pytest.raises(UsageError, match="Must provide clone name or destination dataset id"):
        pets.clone()
    with pytest.raises(UsageError, match="already exists"):
        pets.clone(clone_name="pets")
    with pytest.raises(FilterError):
        pets.clone(clone_name="bad", filters={"filename": {"$bogus": 1}})
    with pytest.raises(UsageError):
        pets.clone(clone_name="bad", filters=42)
    with pytest.raises(NotFoundError):
        pets.clone(dst_dataset="missing")
    assert {d.name for d in store.datasets.list()} == names


def test_clone_into_existing_dataset_with_target_dir(pets):
    store = pets._store
    dst = store.datasets.create("dst")
    out = pets.clone(dst_dataset="dst", target_directory="from-pets", filters={"filename": "/cats/**"})
    assert out.name == "dst"
    assert sorted(i.filename for i in dst.items.list()) == ["/from-pets/cats/0.jpg", "/from-pets/cats/2.jpg",
                                                           "/from-pets/cats/4.jpg"]
    v = dst.version
    assert v.parents[1] == pets.head_id and len(v.parents) == 2
    src_ids = {i.id for i in pets.items.list(filters={"filename": "/cats/**"})}
    assert {i.id for i in dst.items.list()} == src_ids
    with pytest.raises(UsageError, match="already holds item"):
        pets.clone(dst_dataset="dst", target_directory="again", filters={"filename": "/cats/**"})


def test_clone_into_path_collision(pets):
    store = pets._store
    dst = store.datasets.create("dst")
    with dst.edit() as e:
        e.add_bytes("/cats/0.jpg", b"other")
    with pytest.raises(UsageError, match="Item already exists at /cats/0.jpg"):
        pets.clone(dst_dataset=dst)
    assert len(dst.log()) == 2


def test_cli_clone(tmp_path: Path, dvs):
    (tmp_path / "d" / "cats").mkdir(parents=True)
    (tmp_path / "d" / "dogs").mkdir(parents=True)
    (tmp_path / "d" / "cats" / "a.jpg").write_bytes(b"a")
    (tmp_path / "d" / "dogs" / "b.jpg").write_bytes(b"b")
    dvs("create", "pets")
    dvs("add", "pets", str(tmp_path / "d"))
    r = dvs("clone", "pets", "cats", "--filter", '{"filename": "/cats/**"}', "--json")
    assert r.rc == 0 and json.loads(r.out)["items"] == 1
    assert [i["filename"] for i in json.loads(dvs("ls", "cats", "--json").out)] == ["/cats/a.jpg"]
    (tmp_path / "q.json").write_text('{"filename": "/dogs/**"}')
    assert dvs("clone", "pets", "dogs", "--filter", f"@{tmp_path / 'q.json'}", "--no-annotations").rc == 0
    assert dvs("clone", "pets").rc == 2
    assert dvs("clone", "pets", "cats").rc == 2
    assert dvs("clone", "pets", "x", "--filter", "[1,2]").rc == 2
    dvs("create", "dst")
    assert dvs("clone", "pets", "--into", "dst", "--target-dir", "/p").rc == 0
    assert len(json.loads(dvs("ls", "dst", "--json").out)) == 2
