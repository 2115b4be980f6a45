"""Editor's item/folder rule against a brute-force model: any mix of adds, deletes, renames
and commits (with and without ``prefetch``) is refused exactly when the result would hold an
item that is also a folder of other items, and what is published matches the model."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dvstore import tree
from dvstore.api import Store
from dvstore.edit import Editor
from dvstore.errors import InvalidNameError, NotFoundError, UsageError

NAMES = ["/a", "/a/b", "/a/b/c", "/a/c", "/b", "/b/a", "/c/d/e", "/c/d", "/c"]
name = st.sampled_from(NAMES)
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), name),
    st.tuples(st.just("delete"), name),
    st.tuples(st.just("rename"), name, name),
    st.tuples(st.just("commit"), st.booleans()),
), max_size=25)


def clashes(names: set[str], new: str) -> bool:
    parts = new.split("/")
    ancestors = {"/".join(parts[:i]) for i in range(2, len(parts))}
    return bool(ancestors & names) or any(n.startswith(new + "/") for n in names)


def published(store: Store) -> set[str]:
    repo = store.repo
    c = repo.commit(repo.head(repo.dataset("ds")))
    root = c.layers["items"] or tree.EMPTY
    got = {r["filename"] for _, r in tree.items(repo.objects, root)}
    index = {v[0] for _, v in tree.items(repo.objects, repo.path_index(root))}
    assert got == index
    return got


@settings(max_examples=80, deadline=None)
@given(ops=ops, prefetch=st.booleans())
def test_editor_matches_model(ops: list[tuple[Any, ...]], prefetch: bool) -> None:
    d = tempfile.mkdtemp(prefix="dvs-clash-")
    try:
        store = Store.init(d)
        store.datasets.create("ds")
        repo = store.repo
        model: set[str] = set()
        committed: set[str] = set()
        e = Editor(repo, repo.dataset("ds"))
        if prefetch:
            e.prefetch()
        for op in ops:
            if op[0] == "add":
                fn = op[1]
                refused = fn not in model and clashes(model, fn)
                try:
                    e.add_bytes(fn, fn.encode())
                    assert not refused, f"accepted {fn} beside {sorted(model)}"
                    model.add(fn)
                except InvalidNameError:
                    assert refused, f"refused {fn} beside {sorted(model)}"
            elif op[0] == "delete":
                fn = op[1]
                try:
                    e.delete(fn)
                    model.remove(fn)
                except NotFoundError:
                    assert fn not in model
            elif op[0] == "rename":
                old, new = op[1], op[2]
                try:
                    e.rename(old, new)
                    assert old in model and new not in model and not clashes(model - {old}, new)
                    model.remove(old)
                    model.add(new)
                except NotFoundError:
                    assert old not in model
                except InvalidNameError:
                    assert old in model and new not in model and clashes(model - {old}, new)
                except UsageError:
                    assert new in model
            else:
                e.commit()
                committed = set(model)
                assert published(store) == committed
                e = Editor(repo, repo.dataset("ds"))
                if op[1]:
                    e.prefetch()
        e.commit()
        assert published(store) == model
    finally:
        shutil.rmtree(d, ignore_errors=True)


def consistent(names: list[str]) -> list[str]:
    out: list[str] = []
    for n in names:
        if n not in out and not clashes(set(out), n):
            out.append(n)
    return out


def has_clash(names: list[str]) -> bool:
    return len(set(names)) != len(names) or any(clashes(set(names) - {n}, n) for n in names)


@settings(max_examples=150, deadline=None)
@given(ours=st.lists(name, max_size=6), theirs=st.lists(name, max_size=6), fail=st.booleans())
def test_merge_path_step_never_leaves_an_item_that_is_a_folder(ours: list[str], theirs: list[str],
                                                                fail: bool) -> None:
    from dvstore.hashing import hash_bytes
    from dvstore.merge import path_key, resolve_paths
    from dvstore.storage.objects import MemoryObjectStore

    def rec(fn: str) -> dict[str, Any]:
        return {"filename": fn, "blob": b"\0" * 32, "size": 1, "mimetype": "x/y", "system": {}, "hidden": False}

    s = MemoryObjectStore()
    o = {hash_bytes(f"o{i}".encode())[:16]: rec(fn) for i, fn in enumerate(consistent(ours))}
    t = {hash_bytes(f"t{i}".encode())[:16]: rec(fn) for i, fn in enumerate(theirs)}
    o_root = tree.build(s, o.items())
    o_paths = tree.build(s, ((path_key(r["filename"]), [r["filename"], k]) for k, r in o.items()))
    result = tree.build(s, {**o, **t}.items())
    out = resolve_paths(s, o_root, o_paths, result, policy="fail" if fail else "rename")
    # Given ours' folder index, the same outcome without reading ours' filename index; and
    # its per-folder delta carries that index to the result's.
    from dvstore.repo import apply_folder_delta, build_folder_index

    o_folders = build_folder_index(s, [r["filename"] for r in o.values()])
    fast = resolve_paths(s, o_root, o_paths, result, policy="fail" if fail else "rename", ours_folders=o_folders)
    assert (fast.items, fast.paths, fast.renamed, [c.detail for c in fast.conflicts]) == (
        out.items, out.paths, out.renamed, [c.detail for c in out.conflicts])
    if not out.conflicts:
        names = [r["filename"] for _, r in tree.items(s, out.items)]
        assert apply_folder_delta(s, o_folders, out.folder_delta) == build_folder_index(s, names)
    before = [r["filename"] for r in {**o, **t}.values()]
    if fail:
        assert bool(out.conflicts) == has_clash(before)
        return
    got = {k: r["filename"] for k, r in tree.items(s, out.items)}
    assert set(got) == set(o) | set(t)
    assert not has_clash(list(got.values())), sorted(got.values())
    assert {v[0]: v[1] for _, v in tree.items(s, out.paths)} == {fn: k for k, fn in got.items()}
