"""No version the store makes holds an item that is also a folder of other items (/a beside
/a/b): the Editor refuses the edit (InvalidNameError), clone into a dataset refuses it, and a
merge renames the item (or, with --path-collision fail, reports a ``path`` conflict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dvstore import tree, workdir
from dvstore.api import Dataset, Store
from dvstore.edit import Editor
from dvstore.errors import InvalidNameError, MergeConflictError, UsageError
from dvstore.hashing import hash_bytes
from dvstore.merge import path_key, resolve_paths
from dvstore.storage.objects import MemoryObjectStore

pytestmark = pytest.mark.timeout(120)


def names(ds: Dataset) -> list[str]:
    return sorted(it.filename for it in ds.items.list(filters={"$or": [{"hidden": True}, {"hidden": False}]}))


def seeded(tmp_path: Path, *fns: str) -> tuple[Store, Dataset]:
    store = Store.init(str(tmp_path / "store"))
    ds = store.datasets.create("ds")
    if fns:
        with ds.edit("seed") as e:
            for fn in fns:
                e.add_bytes(fn, fn.encode())
    return store, store.datasets.get("ds")


def editor(store: Store, ds: Dataset, *, prefetch: bool) -> Editor:
    e = Editor(store.repo, ds.record)
    if prefetch:
        e.prefetch()
    return e


@pytest.mark.parametrize("first, second, message", [
    ("/a", "/a/b", "item /a/b would be inside /a, which is an item"),
    ("/a/b", "/a", "item /a would be a folder too: /a/b is an item inside it"),
    ("/d/x", "/d/x/y/z", "item /d/x/y/z would be inside /d/x, which is an item"),
    ("/d/x/y/z", "/d/x", "item /d/x would be a folder too: /d/x/y/z is an item inside it"),
])
def test_clash_in_one_edit(tmp_path: Path, first: str, second: str, message: str) -> None:
    store, ds = seeded(tmp_path)
    with pytest.raises(InvalidNameError) as ei:
        with ds.edit("clash") as e:
            e.add_bytes(first, b"1")
            e.add_bytes(second, b"2")
    assert str(ei.value.message) == message
    assert "\n" not in ei.value.message
    assert names(store.datasets.get("ds")) == []


@pytest.mark.parametrize("prefetch", [False, True])
@pytest.mark.parametrize("base, new, message", [
    (["/a", "/z"], "/a/b", "item /a/b would be inside /a, which is an item"),
    (["/a/b", "/z"], "/a", "item /a would be a folder too: /a/b is an item inside it"),
    (["/p/q/r.jpg", "/p/s.jpg"], "/p/q/r.jpg/t/u", "item /p/q/r.jpg/t/u would be inside /p/q/r.jpg, which is an item"),
    (["/p/q/r/s.jpg", "/p/q/r/t.jpg"], "/p/q", "item /p/q would be a folder too: /p/q/r/s.jpg is an item inside it"),
])
def test_clash_with_the_base_version(tmp_path: Path, prefetch: bool, base: list[str], new: str, message: str) -> None:
    store, ds = seeded(tmp_path, *base)
    head = ds.head_id
    e = editor(store, ds, prefetch=prefetch)
    with pytest.raises(InvalidNameError, match="^" + message.replace(".", r"\.") + "$"):
        e.add_bytes(new, b"new")
    # The refused name left no trace: the edit goes on and publishes without it.
    e.add_bytes("/ok/new.txt", b"fine")
    assert e.commit() is not None
    assert names(store.datasets.get("ds")) == sorted([*base, "/ok/new.txt"])
    assert store.datasets.get("ds").head_id != head


@pytest.mark.parametrize("prefetch", [False, True])
def test_delete_then_reuse_the_name_as_a_folder_and_back(tmp_path: Path, prefetch: bool) -> None:
    store, ds = seeded(tmp_path, "/a", "/f/x", "/f/y")
    e = editor(store, ds, prefetch=prefetch)
    e.delete("/a")
    e.add_bytes("/a/b", b"b")          # /a is no item any more
    e.delete("/f/x")
    with pytest.raises(InvalidNameError, match="/f/y"):
        e.add_bytes("/f", b"f")         # /f/y still makes /f a folder
    e.delete("f/y")
    e.add_bytes("/f", b"f")             # now it does not
    with pytest.raises(InvalidNameError, match="inside /f,"):
        e.add_bytes("/f/x", b"again")
    assert e.commit() is not None
    assert names(store.datasets.get("ds")) == ["/a/b", "/f"]


@pytest.mark.parametrize("prefetch", [False, True])
def test_rename(tmp_path: Path, prefetch: bool) -> None:
    store, ds = seeded(tmp_path, "/a", "/m/n", "/x", "/k/only")
    e = editor(store, ds, prefetch=prefetch)
    e.rename("/a", "/a/b")              # the item leaves /a: /a can be its folder
    e.rename("/k/only", "/k")           # the folder /k empties as the item takes its name
    with pytest.raises(InvalidNameError, match="^item /m/n/o would be inside /m/n, which is an item$"):
        e.rename("/x", "/m/n/o")
    with pytest.raises(InvalidNameError, match="^item /m would be a folder too: /m/n is an item inside it$"):
        e.rename("/x", "/m")
    # A refused rename changed nothing: /x is still there under its name.
    assert e.item_id("/x") is not None
    e.rename("/x", "/x2")
    with pytest.raises(UsageError, match="already exists"):
        e.rename("/x2", "/m/n")
    assert e.commit() is not None
    assert names(store.datasets.get("ds")) == ["/a/b", "/k", "/m/n", "/x2"]
    # The published path index agrees with the items.
    repo = store.repo
    c = repo.commit(repo.head(store.datasets.get("ds").record))
    items_root = c.layers["items"] or tree.EMPTY
    got = sorted(v[0] for _, v in tree.items(repo.objects, repo.path_index(items_root)))
    assert got == ["/a/b", "/k", "/m/n", "/x2"]


def test_new_binary_for_an_existing_item_is_no_new_name(tmp_path: Path) -> None:
    store, ds = seeded(tmp_path, "/a/b", "/c")
    with ds.edit("update") as e:
        e.add_bytes("/a/b", b"changed")
        e.add_bytes("/c", b"changed")
    assert names(store.datasets.get("ds")) == ["/a/b", "/c"]


def test_nfc_names_are_checked_after_normalisation(tmp_path: Path) -> None:
    store, ds = seeded(tmp_path, "/caf\u00e9")
    with pytest.raises(InvalidNameError, match="inside /caf\u00e9,"):
        with ds.edit() as e:
            e.add_bytes("/cafe\u0301/x", b"1")


def test_every_version_made_checks_out(tmp_path: Path) -> None:
    """The checkout (which refuses clashes) accepts what the editor let through."""
    store, ds = seeded(tmp_path, "/a/b", "/a/c/d", "/e")
    with ds.edit() as e:
        e.delete("/a/b")
        e.rename("/a/c/d", "/a/c2")
        e.add_bytes("/a/c", b"now an item")
        e.add_bytes("/e2/f", b"1")
    workdir.checkout(store, store.datasets.get("ds"), None, str(tmp_path / "wd"))
    assert (tmp_path / "wd" / "items" / "a" / "c").read_bytes() == b"now an item"


# --------------------------------------------------------------------------------------
# merge: the pure path step


def key(i: Any) -> bytes:
    return hash_bytes(str(i).encode())[:16]


def rec(name: str, blob: bytes = b"\0" * 32) -> dict[str, Any]:
    return {"filename": name, "blob": blob, "size": 1, "mimetype": "image/jpeg", "system": {}, "hidden": False}


def index(s: MemoryObjectStore, root: bytes) -> bytes:
    return tree.build(s, ((path_key(r["filename"]), [r["filename"], k]) for k, r in tree.items(s, root)))


def settle(ours: dict[bytes, Any], result: dict[bytes, Any], policy: str = "rename",
           s: MemoryObjectStore | None = None) -> tuple[dict[bytes, str], Any]:
    s = s or MemoryObjectStore()
    o_root = tree.build(s, ours.items())
    out = resolve_paths(s, o_root, index(s, o_root), tree.build(s, result.items()), policy=policy)
    if not out.conflicts:
        assert dict(tree.items(s, out.paths)) == dict(tree.items(s, index(s, out.items))), "index out of step"
    return {k: r["filename"] for k, r in tree.items(s, out.items)}, out


def test_merge_renames_theirs_item_that_is_an_ours_folder() -> None:
    ours = {key(1): rec("/a/b"), key(2): rec("/a/c/d"), key(3): rec("/z")}
    names, out = settle(ours, {**ours, key(4): rec("/a"), key(5): rec("/a/c")})
    assert names == {key(1): "/a/b", key(2): "/a/c/d", key(3): "/z", key(4): "/a_1", key(5): "/a/c_1"}
    assert sorted(r[1:] for r in out.renamed) == [("/a", "/a_1"), ("/a/c", "/a/c_1")]
    assert (out.added, out.modified, out.removed) == (2, 0, 0)


def test_merge_renames_an_untouched_ours_item_that_theirs_made_a_folder() -> None:
    ours = {key(1): rec("/img"), key(2): rec("/z")}
    names, out = settle(ours, {**ours, key(3): rec("/img/b.jpg"), key(4): rec("/img/c/d.jpg")})
    assert names == {key(1): "/img_1", key(2): "/z", key(3): "/img/b.jpg", key(4): "/img/c/d.jpg"}
    assert out.renamed == [(key(1).hex(), "/img", "/img_1")]
    assert (out.added, out.modified, out.removed) == (2, 1, 0)


def test_merge_rename_skips_names_that_are_folders_or_items() -> None:
    ours = {key(1): rec("/a/b"), key(2): rec("/a_1/x"), key(3): rec("/a_2")}
    names, _ = settle(ours, {**ours, key(4): rec("/a")})
    assert names[key(4)] == "/a_3"


def test_merge_a_deleted_or_moved_item_frees_its_name() -> None:
    ours = {key(1): rec("/a"), key(2): rec("/m/n")}
    # The merge deleted /a and moved /m/n away: /a/b and /m are no clash.
    names, out = settle(ours, {key(2): rec("/n"), key(3): rec("/a/b"), key(4): rec("/m")})
    assert not out.renamed and names == {key(2): "/n", key(3): "/a/b", key(4): "/m"}


def test_merge_same_name_renames_come_first() -> None:
    # Theirs brings /a (taken by ours: renamed /a_1) and /a_1/x (which makes /a_1 a folder).
    ours = {key(1): rec("/a")}
    names, _ = settle(ours, {**ours, key(2): rec("/a"), key(3): rec("/a_1/x")})
    assert names == {key(1): "/a", key(2): "/a_2", key(3): "/a_1/x"}


def test_merge_fail_policy_reports_each_item_that_is_a_folder() -> None:
    ours = {key(1): rec("/img"), key(2): rec("/p/q")}
    result = {**ours, key(3): rec("/img/b.jpg"), key(4): rec("/p"), key(5): rec("/img")}
    _, out = settle(ours, result, policy="fail")
    got = sorted((c.kind, c.filename, c.detail) for c in out.conflicts)
    assert got == [
        ("path", "/img", "/img is an item and a folder (/img/b.jpg is an item inside it)"),
        ("path", "/img", f"/img is held by two items ({key(1).hex()[:12]} and {key(5).hex()[:12]})"),
        ("path", "/p", "/p is an item and a folder (/p/q is an item inside it)"),
    ]
    p = next(c for c in out.conflicts if c.filename == "/p")
    assert (p.item, p.ours, p.theirs) == (key(4).hex(), key(2).hex(), key(4).hex())
    assert all(c.resolution is None for c in out.conflicts)


def test_merge_without_new_names_does_not_read_ours_whole_index() -> None:
    s = MemoryObjectStore()
    ours = {key(i): rec(f"/d{i % 10}/f{i}.jpg") for i in range(3000)}
    changed = {**ours, key(7): rec("/d7/f7.jpg", b"\1" * 32), key(8): rec("/d8/f8.jpg", b"\2" * 32)}
    o_root = tree.build(s, ours.items())
    o_paths = index(s, o_root)
    result = tree.build(s, changed.items())
    walked = []
    real = tree.items

    def spy(store: Any, root: bytes) -> Any:
        walked.append(root)
        return real(store, root)

    tree.items = spy  # type: ignore[assignment]
    try:
        out = resolve_paths(s, o_root, o_paths, result)
        assert o_paths not in walked and out.modified == 2
        resolve_paths(s, o_root, o_paths, tree.build(s, {**changed, key("n"): rec("/d1/new.jpg")}.items()))
        assert o_paths in walked  # a new name needs ours' folders
    finally:
        tree.items = real  # type: ignore[assignment]


# --------------------------------------------------------------------------------------
# merge, clone and the working folder through the library


def test_three_way_merge_of_an_item_and_a_folder_of_the_same_name(tmp_path: Path) -> None:
    store, a = seeded(tmp_path, "/z")
    b = a.clone("B")
    with a.edit() as e:
        e.add_bytes("/a", b"file")
    with b.edit() as e:
        e.add_bytes("/a/b", b"inside")
    head = a.head_id
    with pytest.raises(MergeConflictError) as ei:
        a.merge([b], path_collision="fail")
    assert [(c.kind, c.filename) for c in ei.value.conflicts] == [("path", "/a")]
    assert ei.value.conflicts[0].line().startswith("CONFLICT path /a /a is an item and a folder")
    assert store.datasets.get("ds").head_id == head
    m = a.merge([b])
    assert names(m) == ["/a/b", "/a_1", "/z"]
    assert m.items.get(filepath="/a_1").read() == b"file"
    assert m.version.info["merge"]["renamed"][0][1:] == ["/a", "/a_1"]
    workdir.checkout(store, m, None, str(tmp_path / "wd"))


def test_clone_into_a_dataset_refuses_an_item_and_folder_clash(tmp_path: Path) -> None:
    store, src = seeded(tmp_path, "/b.jpg", "/q/r.jpg")
    dst = store.datasets.create("dst")
    with dst.edit() as e:
        e.add_bytes("/x", b"file")
        e.add_bytes("/y/b.jpg/c", b"inside")
    head = dst.head_id
    # Items are cloned in item-id order (random): either one is the first to clash.
    with pytest.raises(InvalidNameError, match=r"^item /x/(b\.jpg|q/r\.jpg) would be inside /x, which is an item$"):
        src.clone(dst_dataset="dst", target_directory="/x")
    with pytest.raises(InvalidNameError, match=r"^item /x/deep/(b\.jpg|q/r\.jpg) would be inside /x, which is"):
        src.clone(dst_dataset="dst", target_directory="/x/deep")
    with pytest.raises(InvalidNameError, match=r"^item /y/b.jpg would be a folder too: /y/b.jpg/c is an item"):
        src.clone(dst_dataset="dst", target_directory="/y")
    assert store.datasets.get("dst").head_id == head
    src.clone(dst_dataset="dst", target_directory="/y2")
    assert names(store.datasets.get("dst")) == ["/x", "/y/b.jpg/c", "/y2/b.jpg", "/y2/q/r.jpg"]


def test_folder_commit_onto_a_moved_head_renames_the_clashing_item(tmp_path: Path) -> None:
    store, ds = seeded(tmp_path, "/z")
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, None, str(wd))
    with ds.edit() as e:  # the head moves: it gets an item /a
        e.add_bytes("/a", b"file")
    (wd / "items" / "a").mkdir()
    (wd / "items" / "a" / "b").write_bytes(b"inside")  # the folder makes /a a folder
    r = workdir.commit_folder(str(wd), "add a/b")
    assert r.merged_onto is not None
    head = store.datasets.get("ds")
    assert names(head) == ["/a/b", "/a_1", "/z"]
    workdir.checkout(store, head, None, str(tmp_path / "wd2"))
