"""G15: a store opened before fork() works in the children (the PyTorch DataLoader pattern).

A fork pool of 4 reads 1,000 items through the parent's store object and gets the right
bytes every time; an iterator made before the fork is consumed after it; a child that writes
reopens the environment (never reusing the parent's handle) and its version is seen by the
parent.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from dvstore.api import Store
from dvstore.fsck import check
from dvstore.hashing import hash_bytes
from tests.reliability.helpers import payload

N = 1000
_STORE: Store | None = None  # inherited by the forked workers
_ITER: Any = None


def _read(fn: str) -> tuple[str, str]:
    assert _STORE is not None
    item = _STORE.datasets.get("d").items.get(filepath=fn)
    return fn, hash_bytes(item.read()).hex()


def _consume_iterator(_: int) -> int:
    assert _ITER is not None and _STORE is not None
    n = 0
    for _iid, rec, _a, _m, _s in _ITER:
        _STORE.read_blob(rec["blob"])
        n += 1
    return n


def _write(tag: str) -> tuple[int, int, str]:
    assert _STORE is not None
    db = _STORE.repo.db
    parent_env = id(db._env)
    with _STORE.datasets.get("d").edit(f"from child {tag}") as e:
        e.add_bytes(f"/child/{tag}.bin", tag.encode() * 100)
    return parent_env, id(db._env), e.committed.hex() if e.committed else ""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, str]]:
    s = Store.init(str(tmp_path_factory.mktemp("g15") / "s"))
    ds = s.datasets.create("d")
    expected = {}
    with ds.edit() as e:
        for i in range(N):
            data = payload(15, i, 500 + i % 300)
            e.add_bytes(f"/x/{i:04d}.bin", data)
            expected[f"/x/{i:04d}.bin"] = hash_bytes(data).hex()
    return s, expected


def test_fork_pool_reads_are_correct(store: tuple[Store, dict[str, str]]) -> None:
    global _STORE
    s, expected = store
    _STORE = s
    assert len(s.datasets.get("d").items.list()) == N  # the parent's environment is open and used
    with multiprocessing.get_context("fork").Pool(4) as pool:
        got = dict(pool.map(_read, sorted(expected), chunksize=25))
    assert got == expected  # 100 % of 1,000 reads
    assert s.datasets.get("d").items.get(filepath="/x/0001.bin").read()  # the parent still works


def test_iterator_made_before_fork(store: tuple[Store, dict[str, str]]) -> None:
    global _STORE, _ITER
    s, _ = store
    _STORE = s
    _ITER = s.datasets.get("d").items.iter_records()
    next(_ITER)  # started in the parent
    with multiprocessing.get_context("fork").Pool(2) as pool:
        counts = pool.map(_consume_iterator, range(2))
    assert counts == [N - 1, N - 1]


def test_write_in_a_forked_child_reopens(store: tuple[Store, dict[str, str]]) -> None:
    global _STORE
    s, _ = store
    _STORE = s
    head = s.datasets.get("d").head_id
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        parent_env, child_env, committed = pool.apply(_write, ("a",))
    assert committed and parent_env != child_env, "the child reused the parent's LMDB handle"
    ds = s.datasets.get("d")
    assert ds.head_id.hex() == committed and ds.version.parents == (head,)
    assert ds.items.get(filepath="/child/a.bin").read() == b"a" * 100
    assert check(s.path).ok
