"""G6: locks. A held store lock gives "locked by pid N" after the configured wait; a holder
killed with kill -9 releases it at once (flock), with no manual step; an LMDB writer killed
in the middle of a write transaction blocks nobody and leaves no trace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dvstore.api import Store
from dvstore.locks import store_lock
from dvstore.storage.db import Database
from tests.reliability.helpers import assert_clean_error, run_dvs

HOLD = """
import sys, time
from dvstore.locks import store_lock
with store_lock(sys.argv[1], exclusive=sys.argv[2] == "x", timeout=5):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(lock: str, mode: str = "x") -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, lock, mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_held_lock_names_the_holder_after_the_timeout(tmp_path: Path) -> None:
    s = Store.init(str(tmp_path / "s"))
    s.datasets.create("d")
    holder = _holder(s.repo.lock_path)
    try:
        t0 = time.monotonic()
        p = run_dvs(s.path, "gc", env={"DVS_LOCK_TIMEOUT": "1"})
        waited = time.monotonic() - t0
        assert_clean_error(p, 5)
        assert f"locked by pid {holder.pid}" in p.stderr, p.stderr
        assert 1.0 <= waited <= 1.0 + 1.5, waited  # the wait, plus one interpreter start
    finally:
        holder.kill()
        holder.wait()


def test_killed_holder_releases_within_a_second(tmp_path: Path) -> None:
    s = Store.init(str(tmp_path / "s"))
    s.datasets.create("d")
    holder = _holder(s.repo.lock_path)
    holder.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    holder.wait()
    with store_lock(s.repo.lock_path, exclusive=True, timeout=5):
        taken = time.monotonic() - killed
    assert taken <= 1.0, taken
    p = run_dvs(s.path, "gc", env={"DVS_LOCK_TIMEOUT": "1"})
    assert p.returncode == 0, p.stderr


def test_writer_shared_lock_blocks_gc_not_other_writers(tmp_path: Path) -> None:
    s = Store.init(str(tmp_path / "s"))
    s.datasets.create("d")
    holder = _holder(s.repo.lock_path, mode="s")
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "x.bin").write_bytes(b"x")
        assert run_dvs(s.path, "add", "d", str(src), env={"DVS_LOCK_TIMEOUT": "1"}).returncode == 0
        p = run_dvs(s.path, "gc", env={"DVS_LOCK_TIMEOUT": "1"})
        assert_clean_error(p, 5)
        assert "locked" in p.stderr
    finally:
        holder.kill()
        holder.wait()
    assert run_dvs(s.path, "gc", env={"DVS_LOCK_TIMEOUT": "1"}).returncode == 0


WRITER = """
import sys, time
from dvstore.storage.db import Database
db = Database(sys.argv[1])
def fn(t):
    t.put("index", b"half-written", b"x" * 5000)
    print("in-txn", flush=True)
    time.sleep(600)
db.write(fn)
"""


def test_lmdb_writer_killed_mid_transaction(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    Database(path).write(lambda t: t.put("index", b"before", b"1"))
    p = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "in-txn"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    t0 = time.monotonic()
    Database(path).write(lambda t: t.put("index", b"after", b"2"))
    assert time.monotonic() - t0 < 5
    db = Database(path)
    assert db.get("index", b"half-written") is None
    assert db.get("index", b"before") == b"1" and db.get("index", b"after") == b"2"


def test_lmdb_writer_killed_while_another_waits(tmp_path: Path) -> None:
    """A second writer blocked on the killed writer's mutex proceeds (robust mutex)."""
    path = str(tmp_path / "db")
    Database(path).write(lambda t: t.put("index", b"before", b"1"))
    p = subprocess.Popen([sys.executable, "-c", WRITER, path], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "in-txn"
    waiter = subprocess.Popen([sys.executable, "-c",
                               "import sys; from dvstore.storage.db import Database; "
                               "Database(sys.argv[1]).write(lambda t: t.put('index', b'waiter', b'w')); print('ok')",
                               path], stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    assert waiter.poll() is None, "the second writer should be blocked by the first"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    out, _ = waiter.communicate(timeout=10)
    assert out.strip() == "ok"
    assert Database(path).get("index", b"half-written") is None


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d))
    return out


def _alive(pid: int) -> bool:
    """Running (a zombie holds no file and no lock: it is not alive here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_add_leaves_no_helper_holding_the_lock(tmp_path: Path, sig: signal.Signals) -> None:
    """``dvs add`` killed while its helpers (two storers, the COCO reader) are slow: the
    helpers end with it, so no orphan keeps the store lock (inherited flock) and gc runs."""
    s = Store.init(str(tmp_path / "s"))
    s.datasets.create("d")
    before = s.datasets.get("d").head_id
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"a")
    coco = tmp_path / "coco.json"
    coco.write_text('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [], "categories": []}')
    env = dict(os.environ, DVS_TEST_PAUSE_AT="helper_start", DVS_TEST_PAUSE_FILE=str(tmp_path / "never"))
    env.pop("DVS_NO_FORK", None)
    p = subprocess.Popen([sys.executable, "-m", "dvstore", "--store", s.path, "add", "d", str(src),
                          "--annotations", str(coco)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    helpers: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while len(helpers := _children(p.pid)) < 3:  # the reader and the two storers, paused
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.02)
        os.kill(p.pid, sig)
        _, err = p.communicate(timeout=30)
        if sig == signal.SIGTERM:
            assert p.returncode == 143, (p.returncode, err)
            assert err.strip().splitlines() == ["error: terminated"], err
        else:
            assert p.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 5
        while any(_alive(h) for h in helpers):
            assert time.monotonic() < deadline, [h for h in helpers if _alive(h)]
            time.sleep(0.02)
        t0 = time.monotonic()
        g = run_dvs(s.path, "gc", "--expire", "now", env={"DVS_LOCK_TIMEOUT": "2"})
        assert g.returncode == 0, g.stderr
        assert time.monotonic() - t0 < 2, "gc waited for the lock"
        assert Store(s.path).datasets.get("d").head_id == before
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for h in helpers:
            if _alive(h):
                os.kill(h, signal.SIGKILL)
