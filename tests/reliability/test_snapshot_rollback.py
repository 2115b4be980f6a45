"""G13 (RELIABILITY.md §5.13): snapshot, a processing process killed mid-way, rollback.

Each iteration: a fresh store with dataset "data" (small blobs in LMDB and a few large
file blobs), a snapshot taken by this process, then a child process that rewrites 50 % of
the items and deletes 25 % over five commits and is killed with SIGKILL at a random point:
either after a random delay within its measured running time, or at a random crash point
inside the write path (``DVS_TEST_CRASH_AT``, before or after the LMDB commit of its n-th
version). Then the snapshot is rolled back (``Snapshot.rollback()`` or ``dvs restore``) and
the dataset must be byte-identical to the snapshot: the same layer roots and recipe, and the
same tree hash (sorted filenames plus blake3 of bytes read back through the store, and of a
``dvs checkout`` of the result every fifth iteration).

20 iterations by default; 100 with ``-m slow``.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvstore.api import Dataset, Store
from dvstore.hashing import Digest, Hasher, hash_bytes
from tests.conftest import ROOT, run_dvs

pytestmark = pytest.mark.crash

N_ITEMS = 48
LARGE = {3, 17, 30}  # above the small-blob threshold: file blobs, written before the commit
LARGE_SIZE = 300 * 1024

CHILD = r"""
import os, random, sys
from dvstore.api import Store

store_path, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
ds = Store(store_path).datasets.get("data")
names = sorted(it.filename for it in ds.items.list())
rng.shuffle(names)
rewrite, delete = names[: len(names) // 2], names[len(names) // 2 : len(names) // 2 + len(names) // 4]
print("ready", flush=True)
for k in range(3):
    with ds.edit(f"rewrite {k}") as e:
        for fn in rewrite[k::3]:
            size = 300 * 1024 if fn.startswith("/large") else rng.randrange(512, 4096)
            e.add_bytes(fn, rng.randbytes(size))
for k in range(2):
    with ds.edit(f"dedup {k}") as e:
        for fn in delete[k::2]:
            e.delete(fn)
print("done", flush=True)
"""


def make_dataset(path: Path, seed: int) -> tuple[Store, Dataset, dict[str, bytes]]:
    rng = random.Random(seed)
    store = Store.init(str(path))
    ds = store.datasets.create("data")
    files = {}
    for i in range(N_ITEMS):
        name = f"/large/{i}.bin" if i in LARGE else f"/img/{i % 4}/{i}.jpg"
        files[name] = rng.randbytes(LARGE_SIZE if i in LARGE else rng.randrange(256, 2048))
    with ds.edit("ingest") as e:
        for i, (name, data) in enumerate(files.items()):
            e.add_bytes(name, data)
            e.add_annotation(name, {"type": "box", "label": rng.choice(["cat", "dog"]), "coordinates": [i, i]})
            e.update_metadata(name, user={"split": rng.choice(["train", "val"])})
            e.set_task_status(name, "qa", "completed")
    return store, ds, files


def tree_hash(files: dict[str, bytes]) -> bytes:
    """Sorted paths plus blake3 of each file's bytes: the checked-out tree's identity."""
    h = Hasher()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hash_bytes(files[name]))
    return h.digest()


def stored_tree_hash(ds: Dataset) -> bytes:
    return tree_hash({it.filename: it.read() for it in ds.items.list()})


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for k in ("DVS_TEST_CRASH_AT", "DVS_TEST_PAUSE_AT", "DVS_STORE"):
        env.pop(k, None)
    env.update(extra or {})
    return env


def start_child(store: Store, seed: int, env: dict[str, str]) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, store.path, str(seed)],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None
    line = p.stdout.readline()
    if line.strip() != "ready":
        p.kill()
        raise AssertionError(f"child did not start: {line!r} {p.stderr.read() if p.stderr else ''}")
    return p


@pytest.fixture(scope="module")
def processing_time(tmp_path_factory: pytest.TempPathFactory) -> float:
    """How long the processing takes here uninterrupted: the window the random kills fall in.

    The fastest of three runs, so that one slow (cold) run does not stretch the window past
    the processing and let most timed kills land after it finished.
    """
    times = []
    for k in range(3):
        store, _, _ = make_dataset(tmp_path_factory.mktemp("calibrate"), k)
        p = start_child(store, k, child_env())
        t0 = time.perf_counter()
        out, err = p.communicate(timeout=60)
        times.append(time.perf_counter() - t0)
        assert p.returncode == 0 and out.strip() == "done", err
    return min(times)


def one_run(tmp: Path, seed: int, window: float) -> str:
    """One G13 iteration; returns how the child ended (for the spread of kill points)."""
    rng = random.Random(seed)
    store, ds, files = make_dataset(tmp / f"run{seed}", seed)
    original = tree_hash(files)
    assert stored_tree_hash(ds) == original
    snap = ds.snapshot("before processing")
    if seed % 2:
        # A crash point inside the write path: before or after the LMDB commit of version n.
        label = rng.choice(["before_lmdb_commit", "after_lmdb_commit"])
        n = rng.randint(1, 5)
        p = start_child(store, seed, child_env({"DVS_TEST_CRASH_AT": f"{label}:{n}"}))
        p.wait(timeout=60)
    else:
        p = start_child(store, seed, child_env())
        time.sleep(rng.uniform(0, window))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    for stream in (p.stdout, p.stderr):
        if stream is not None:
            stream.close()
    ended = "finished" if p.returncode == 0 else f"killed ({'crash point' if seed % 2 else 'timer'})"
    if p.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(f"child failed with {p.returncode}")

    # Whatever the kill point, the head is one complete version whose items all read back.
    # A fresh process reads it: a writer killed inside LMDB's commit leaves a durable commit
    # that processes which had the store open see only after the next write transaction
    # (history._see_latest); opening the store does one.
    r = run_dvs("--store", store.path, "show", "data", "--json")
    assert r.rc == 0, r.err
    killed_head = Digest(bytes.fromhex(json.loads(r.out)["id"]))
    assert ds._repo.reflog(ds.record)[0]["new"] == killed_head == ds.head_id
    for it in ds.items.list():
        it.read()

    if seed % 4 < 2:
        snap.rollback()
    else:
        r = run_dvs("--store", store.path, "restore", "data", snap.tag)
        assert r.rc == 0, r.err
    head = ds.version
    want = ds._repo.commit(snap.commit)
    assert head.layers == want.layers, f"seed {seed}: layer roots differ after rollback"
    assert head.recipe == want.recipe
    assert stored_tree_hash(ds) == original, f"seed {seed}: bytes differ after rollback"
    assert [it.filename for it in ds.items.list()] == sorted(files)
    if killed_head != snap.commit:
        assert head.op == "restore" and head.parents == (killed_head,)
    if seed % 5 == 0 and checkout_available():
        out = tmp / f"checkout{seed}"
        r = run_dvs("--store", store.path, "checkout", "data", str(out))
        assert r.rc == 0, r.err
        got = {
            "/" + str(f.relative_to(out / "items")): f.read_bytes() for f in (out / "items").rglob("*") if f.is_file()
        }
        assert tree_hash(got) == original, f"seed {seed}: checked-out tree differs after rollback"
    return ended


@functools.cache
def checkout_available() -> bool:
    """Whether ``dvs checkout`` exists (another module of the CLI); the store-read hash runs regardless."""
    return run_dvs("checkout", "--help").rc == 0


def run_many(tmp: Path, iterations: int, window: float) -> None:
    ends: dict[str, int] = {}
    for seed in range(1, iterations + 1):
        how = one_run(tmp, seed, window)
        ends[how] = ends.get(how, 0) + 1
    # Timed kills must mostly land inside the processing, or they prove little (the crash
    # points always do).
    assert ends.get("killed (timer)", 0) >= iterations // 8, ends


def test_rollback_after_kill(tmp_path: Path, processing_time: float) -> None:
    run_many(tmp_path, 20, processing_time)


@pytest.mark.slow
def test_rollback_after_kill_deep(tmp_path: Path, processing_time: float) -> None:
    run_many(tmp_path, 100, processing_time)


def test_snapshot_is_a_gc_root(tmp_path: Path, processing_time: float) -> None:
    """A snapshot is a gc root on its own: with the dataset deleted and the reflog expired,
    gc frees the processing's garbage and keeps every object and blob of the snapshot."""
    pytest.importorskip("dvstore.maintenance", reason="gc is not built yet")
    store, ds, files = make_dataset(tmp_path / "gc", 7)
    snap = ds.snapshot("before processing")
    p = start_child(store, 7, child_env())
    p.communicate(timeout=60)
    assert p.returncode == 0
    record = ds.record
    store.datasets.delete("data")  # no head and (expire="now") no reflog left: only the tag
    freed = store.gc(expire="now")
    assert freed.objects > 0  # the processing's versions and rewritten blobs went
    assert store.repo.tags(record)[snap.tag] == snap.commit
    kept = Dataset(store, record, snap.commit)
    assert stored_tree_hash(kept) == tree_hash(files)
    assert fsck_clean(store)


def fsck_clean(store: Store) -> bool:
    r = run_dvs("--store", store.path, "fsck", "--read-data")
    return r.rc == 0
