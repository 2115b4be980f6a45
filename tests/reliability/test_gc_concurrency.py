"""G7: gc against concurrent adds, and gc failing closed.

* Deterministic: an add paused after its blob files are renamed into place (unreferenced,
  but the add holds the store lock shared) makes every gc wait or refuse; once released,
  the add commits and every blob it wrote verifies.
* SIGSTOP (rustic-style): an add frozen at a random moment, gc, then SIGCONT.
* Randomised: adds and ``gc --expire now`` started with random offsets; at the end 0 missing
  or bad blobs for any version, and the garbage gc may take is gone (gc does work).
* Fail closed: with a ref, a commit, a tree node or a blob damaged, gc exits 6 and deletes
  nothing.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvstore.fsck import check
from dvstore.hashing import hash_bytes
from dvstore.repo import Repository
from dvstore.storage.db import Database
from tests.reliability.helpers import assert_clean_error, make_store, run_dvs, store_digest, write_tree

RANDOM_ROUNDS = 10


def _env(**kw: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("DVS_STORE", "DVS_DEBUG")}
    e.update(kw)
    return e


def _dvs(d: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "dvstore", "--store", d, *args]


def _all_blobs_verify(d: str) -> None:
    rep = check(d, read_data=True)
    assert rep.ok, rep.findings[:5]


def test_gc_waits_for_a_paused_add(tmp_path: Path) -> None:
    d = make_store(tmp_path / "s", 10)
    src = tmp_path / "src"
    files = write_tree(src, 5, 3, seed=21)
    release, paused = tmp_path / "release", tmp_path / "paused"
    a = subprocess.Popen(_dvs(d, "add", "d", str(src)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=_env(DVS_TEST_PAUSE_AT="after_blob_rename", DVS_TEST_PAUSE_FILE=str(release),
                                  DVS_TEST_PAUSED_FILE=str(paused)))
    deadline = time.monotonic() + 30
    while not paused.exists():
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.01)
    before = store_digest(d)
    written = {hash_bytes(v).hex() for v in files.values()} & before["blobs"]
    assert written, "the paused add has written a blob file"
    for args in (("gc", "--expire", "now"), ("gc",), ("gc", "--grace", "0")):
        p = run_dvs(d, *args, env={"DVS_LOCK_TIMEOUT": "0.5"})
        assert_clean_error(p, 5)
        assert "locked" in p.stderr
    # The add is paused in one copier thread; the other may still land a blob meanwhile:
    # what must hold is that gc took nothing away.
    after = store_digest(d)
    assert after["refs"] == before["refs"]
    assert before["blobs"] <= after["blobs"] and before["objects"] <= after["objects"], \
        "gc deleted something while an add was in flight"
    waiting_gc = subprocess.Popen(_dvs(d, "gc", "--expire", "now"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=_env(DVS_LOCK_TIMEOUT="60"))
    time.sleep(0.3)
    assert waiting_gc.poll() is None, "gc must wait for the writer"
    release.touch()
    assert a.wait(timeout=60) == 0, a.stderr.read() if a.stderr else ""
    assert waiting_gc.wait(timeout=60) == 0
    items = Repository(d)
    assert len(list(items.history(items.head(items.dataset("d"))))) == 3
    _all_blobs_verify(d)
    assert written <= store_digest(d)["blobs"]


def test_sigstopped_add_then_gc(tmp_path: Path) -> None:
    d = make_store(tmp_path / "s", 10)
    src = tmp_path / "src"
    write_tree(src, 30, 3, seed=22)
    rnd = random.Random(7)
    for i in range(5):
        w = tmp_path / f"src{i}"
        shutil.copytree(src, w)
        a = subprocess.Popen(_dvs(d, "add", "d", str(w)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=_env())
        time.sleep(rnd.uniform(0.05, 0.4))
        a.send_signal(signal.SIGSTOP)
        try:
            g = run_dvs(d, "gc", "--expire", "now", env={"DVS_LOCK_TIMEOUT": "0.3"})
            assert g.returncode in (0, 5), g.stderr
        finally:
            a.send_signal(signal.SIGCONT)
        assert a.wait(timeout=60) == 0, a.stderr.read() if a.stderr else ""
        _all_blobs_verify(d)


def _random_rounds(tmp_path: Path, rounds: int) -> None:
    d = make_store(tmp_path / "s", 10)
    # Garbage that must go: an aged unreferenced blob file and a killed add's leftovers.
    junk = tmp_path / "junk"
    write_tree(junk, 2, 2, seed=99)
    subprocess.run(_dvs(d, "add", "d", str(junk)), env=_env(DVS_TEST_CRASH_AT="before_lmdb_commit:1"),
                   capture_output=True)
    garbage = store_digest(d)["blobs"] - _live_blobs(d)
    assert garbage
    rnd = random.Random(5)
    for i in range(rounds):
        src = tmp_path / f"r{i}"
        write_tree(src, 20, 1, seed=1000 + i)
        a = subprocess.Popen(_dvs(d, "add", "d", str(src)), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=_env(DVS_LOCK_TIMEOUT="60"))
        time.sleep(rnd.uniform(0, 0.35))
        g = subprocess.Popen(_dvs(d, "gc", "--expire", "now"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, env=_env(DVS_LOCK_TIMEOUT="60"))
        assert a.wait(timeout=120) == 0, a.stderr.read() if a.stderr else ""
        assert g.wait(timeout=120) == 0, g.stderr.read() if g.stderr else ""
        shutil.rmtree(src)
    _all_blobs_verify(d)
    repo = Repository(d)
    assert len(list(repo.history(repo.head(repo.dataset("d"))))) == 2 + rounds
    assert not garbage & store_digest(d)["blobs"], "gc never removed the garbage"
    assert not {k for k in check(d).notes if k.startswith("unreferenced")}


def _live_blobs(d: str) -> set[str]:
    from dvstore.maintenance import Walk, read_roots

    repo = Repository(d)
    walk = Walk(repo, lambda issue: None)
    for r in read_roots(repo, retention=None).roots:
        walk.add(r)
    walk.run()
    return {b.hex() for b in walk.blobs}


def test_randomised_add_and_gc(tmp_path: Path) -> None:
    _random_rounds(tmp_path, RANDOM_ROUNDS)


@pytest.mark.slow
def test_randomised_add_and_gc_200(tmp_path: Path) -> None:
    _random_rounds(tmp_path, 200)


# -- fail closed ---------------------------------------------------------------------


def _corrupt_ref(d: str) -> None:
    repo = Repository(d)
    ds = repo.dataset("d")
    Database(os.path.join(d, "db")).write(lambda t: t.put("refs", b"head:" + ds.id, hash_bytes(b"nothing")))


def _corrupt_commit(d: str) -> None:
    repo = Repository(d)
    cid = repo.head(repo.dataset("d"))
    db = Database(os.path.join(d, "db"))
    raw = db.get("objects", cid) or b""
    db.write(lambda t: t.put("objects", cid, raw[:-1] + bytes([raw[-1] ^ 1])))


def _lose_node(d: str) -> None:
    repo = Repository(d)
    c = repo.commit(repo.head(repo.dataset("d")))
    Database(os.path.join(d, "db")).write(lambda t: t.delete("objects", c.layers["items"]))


def _lose_old_commit(d: str) -> None:
    repo = Repository(d)
    c = repo.commit(repo.head(repo.dataset("d")))
    Database(os.path.join(d, "db")).write(lambda t: t.delete("objects", c.parents[0]))


def _lose_blob(d: str) -> None:
    repo = Repository(d)
    for h in sorted(_live_blobs(d)):
        path = repo.blobs.path_for(bytes.fromhex(h))
        if os.path.exists(path):
            os.unlink(path)
            return
    raise AssertionError("no live blob file")


def _corrupt_reflog(d: str) -> None:
    repo = Repository(d)
    ds = repo.dataset("d")
    Database(os.path.join(d, "db")).write(lambda t: t.put("reflog", ds.id + b"\0" * 7 + b"\x09", b"\xc1"))


@pytest.mark.parametrize("damage", [_corrupt_ref, _corrupt_commit, _lose_node, _lose_old_commit, _lose_blob,
                                    _corrupt_reflog], ids=lambda f: f.__name__.strip("_"))
def test_gc_fails_closed(tmp_path: Path, damage: object) -> None:
    d = make_store(tmp_path / "s", 80, n_large=2)
    # Garbage gc would otherwise delete: a deleted dataset and a killed add.
    junk = tmp_path / "junk"
    write_tree(junk, 3, 2, seed=3)
    subprocess.run(_dvs(d, "add", "d", str(junk)), env=_env(DVS_TEST_CRASH_AT="before_lmdb_commit:1"),
                   capture_output=True)
    assert run_dvs(d, "create", "gone").returncode == 0
    assert run_dvs(d, "delete", "gone").returncode == 0
    damage(d)  # type: ignore[operator]
    before = store_digest(d)
    for args in (("gc", "--expire", "now"), ("gc", "--dry-run", "--expire", "now")):
        p = run_dvs(d, *args)
        assert_clean_error(p, 6)
        assert "nothing was deleted" in p.stderr
    assert store_digest(d) == before
