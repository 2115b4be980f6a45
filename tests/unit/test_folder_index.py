"""The derived folder index: kept in step by every edit, rebuilt when missing, checked by fsck."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from dvstore import repo as repo_mod
from dvstore import tree
from dvstore.api import Dataset, Store
from dvstore.errors import InvalidNameError
from dvstore.storage.objects import MemoryObjectStore


def _stored(store: Store, ds: str) -> dict[str, int]:
    repo = store.repo
    items = repo.commit(store.datasets.get(ds).head_id).layers["items"]
    root = repo.stored_folder_index(items)
    assert root is not None, "the edit did not record its folder index"
    return {v[0]: v[1] for _, v in tree.items(repo.objects, root)}


def _expected(store: Store, ds: str) -> dict[str, int]:
    names = [it.filename for it in store.datasets.get(ds).items.list()]
    scratch = MemoryObjectStore()
    return {v[0]: v[1] for _, v in tree.items(scratch, repo_mod.build_folder_index(scratch, names))}


def test_every_edit_keeps_the_folder_index_in_step(tmp_path: Path) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = store.datasets.create("ds")
    rnd = random.Random(7)
    names: set[str] = set()
    folders = ["/a", "/a/b", "/c", "/c/d/e", ""]
    for round_ in range(12):
        with ds.edit(f"round {round_}") as e:
            for _ in range(rnd.randint(1, 6)):
                op = rnd.random()
                if op < 0.6 or not names:
                    fn = f"{rnd.choice(folders)}/f{rnd.randint(0, 30)}.bin"
                    if fn not in names:
                        e.add_bytes(fn, fn.encode())
                        names.add(fn)
                elif op < 0.8:
                    fn = rnd.choice(sorted(names))
                    e.delete(fn)
                    names.discard(fn)
                else:
                    old = rnd.choice(sorted(names))
                    new = f"{rnd.choice(folders)}/r{rnd.randint(0, 30)}.bin"
                    if new not in names:
                        e.rename(old, new)
                        names.discard(old)
                        names.add(new)
        assert _stored(store, "ds") == _expected(store, "ds")
    assert store.fsck().ok


def test_a_small_edit_of_a_big_dataset_does_not_read_every_name(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store.init(str(tmp_path / "s"))
    ds = store.datasets.create("ds")
    with ds.edit("many") as e:
        for i in range(3000):
            e.add_bytes(f"/d{i % 40}/x{i}.bin", b"%d" % i)
    calls = []
    real_items = tree.items

    def counting_items(store_, root):  # type: ignore[no-untyped-def]
        calls.append(root)
        return real_items(store_, root)

    monkeypatch.setattr(tree, "items", counting_items)
    with ds.edit("one more") as e:
        e.add_bytes("/d3/new.bin", b"new")
        with pytest.raises(InvalidNameError, match="inside /d3/x3.bin"):
            e.add_bytes("/d3/x3.bin/inner.bin", b"no")
    assert calls == []  # no full walk of the filename index or the items layer
    monkeypatch.setattr(tree, "items", real_items)
    assert _stored(store, "ds") == _expected(store, "ds")


def _one_item(tmp_path: Path) -> tuple[Store, Dataset, bytes]:
    """A store with dataset ds holding /a/b.bin, and its items root."""
    store = Store.init(str(tmp_path / "s"))
    ds = store.datasets.create("ds")
    with ds.edit("seed") as e:
        e.add_bytes("/a/b.bin", b"1")
    return store, ds, store.repo.commit(ds.head_id).layers["items"]


def test_a_missing_folder_index_is_rebuilt_and_refuses_clashes(tmp_path: Path) -> None:
    store, ds, items = _one_item(tmp_path)
    repo = store.repo
    repo.db.write(lambda t: t.delete("index", b"dirs:" + items))
    assert repo.stored_folder_index(items) is None
    with pytest.raises(InvalidNameError, match="would be a folder too"):
        with ds.edit("clash") as e:
            e.add_bytes("/a", b"2")
    with ds.edit("fine") as e:
        e.add_bytes("/a/c.bin", b"3")
    assert _stored(store, "ds") == {"/a": 2}
    assert store.fsck().ok


def test_fsck_flags_a_folder_index_that_disagrees(tmp_path: Path) -> None:
    store, _, items = _one_item(tmp_path)
    repo = store.repo
    wrong = tree.build(repo.objects, [(repo_mod.folder_key("/a"), ["/a", 5])], canonical=True)
    repo.db.write(lambda t: (repo.objects.write_pending(t), t.put("index", b"dirs:" + items, wrong)))
    repo.objects.committed()
    rep = store.fsck()
    assert not rep.ok
    assert any("folder index does not match" in f.message for f in rep.findings)


def _spread(tmp_path: Path, name: str, n: int) -> tuple[Store, Dataset]:
    """A store with dataset ``name`` holding n items spread over three folders."""
    store = Store.init(str(tmp_path / "s"))
    ds = store.datasets.create(name)
    with ds.edit("seed") as e:
        for i in range(n):
            e.add_bytes(f"/f{i % 3}/x{i}.bin", b"%d" % i)
    return store, ds


def test_clone_into_carries_the_folder_index_forward(tmp_path: Path) -> None:
    store, src = _spread(tmp_path, "src", 20)
    dst = store.datasets.create("dst")
    with dst.edit("seed") as e:
        e.add_bytes("/keep/a.bin", b"a")
    src.clone(dst_dataset="dst", target_directory="/in")
    assert _stored(store, "dst") == _expected(store, "dst")
    other = store.datasets.create("other")
    with other.edit("seed") as e:
        e.add_bytes("/x.bin", b"x")
    with pytest.raises(InvalidNameError, match="inside /keep/a.bin"):
        other.clone(dst_dataset="dst", target_directory="/keep/a.bin")
    with pytest.raises(InvalidNameError, match="would be a folder too"):
        _clone_named(store, "/keep")


def _clone_named(store: Store, name: str) -> None:
    """Clone a one-item dataset whose item is called ``name`` into dst (a folder there)."""
    one = store.datasets.create("one")
    with one.edit("seed") as e:
        e.add_bytes(name, b"1")
    one.clone(dst_dataset="dst")


def test_merges_carry_the_folder_index_forward(tmp_path: Path) -> None:
    store, base = _spread(tmp_path, "base", 12)
    left = base.clone("left")
    right = base.clone("right")
    with left.edit("left") as e:
        e.add_bytes("/new/l.bin", b"l")
        e.delete("/f0/x0.bin")
        e.rename("/f1/x1.bin", "/moved/x1.bin")
    with right.edit("right") as e:
        e.add_bytes("/f2/r.bin", b"r")
        e.add_bytes("/new/deep/r.bin", b"r2")
    store.datasets.merge("merged", [left, right])
    assert _stored(store, "merged") == _expected(store, "merged")
    left.merge([right])
    assert _stored(store, "left") == _expected(store, "left")
    assert store.fsck().ok


def test_folder_commit_onto_a_moved_head_carries_both_indexes(tmp_path: Path) -> None:
    from dvstore import workdir

    store, ds = _spread(tmp_path, "ds", 9)
    first = ds.head_id
    with ds.edit("head moves") as e:
        e.add_bytes("/f0/head.bin", b"h")
    wd = tmp_path / "wd"
    workdir.checkout(store, ds, first, str(wd))
    (wd / "items" / "f1" / "mine.bin").write_bytes(b"m")
    os.unlink(wd / "items" / "f2" / "x2.bin")
    res = workdir.commit_folder(str(wd), "folder")
    assert res.merged_onto is not None
    items = store.repo.commit(store.datasets.get("ds").head_id).layers["items"]
    assert store.repo.db.get("index", b"path:" + items) is not None  # recorded, not rebuilt later
    assert _stored(store, "ds") == _expected(store, "ds")
    assert store.fsck().ok  # fsck compares both indexes with the items layer


def test_a_merge_adding_names_does_not_read_ours_whole_filename_index(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store, base = _spread(tmp_path, "base", 3000)
    left = base.clone("left")
    right = base.clone("right")
    with right.edit("new names") as e:
        for i in range(5):
            e.add_bytes(f"/f{i % 3}/new{i}.bin", b"n%d" % i)
            e.add_bytes(f"/fresh{i}/n.bin", b"f%d" % i)
    ours_paths = store.repo.path_index(store.repo.commit(left.head_id).layers["items"])
    walked: list[bytes] = []
    real_items = tree.items

    def spy(store_, root):  # type: ignore[no-untyped-def]
        walked.append(root)
        return real_items(store_, root)

    monkeypatch.setattr(tree, "items", spy)
    left.merge([right])
    assert ours_paths not in walked
    monkeypatch.setattr(tree, "items", real_items)
    assert _stored(store, "left") == _expected(store, "left")
