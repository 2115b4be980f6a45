"""``dvs gc --compact`` killed at each step of the data.mdb replacement (crash hooks).

After each kill the store opens, fsck has no findings, every version of every dataset reads
back with the same items and bytes, and the next ``gc --compact`` removes the leftovers and
compacts. Two more tests kill or release the compaction while another process is waiting to
open the database: that process must see the whole store, never a half-switched one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.helpers import make_store, payload, run_dvs

pytestmark = [pytest.mark.crash, pytest.mark.timeout(600)]

LABELS = ["compact_after_copy", "compact_after_truncate", "compact_after_replace", "compact_after_reopen"]

# Prints every version's items as {"ds@commit": {filename: blob hex}} after reading every blob.
READER = r'''
import json, sys
from dvstore.api import Store
s = Store(sys.argv[1])
out = {}
for d in s.datasets.list():
    ds = s.datasets.get(d.name)
    for cid, _ in ds.log():
        items = ds.at(cid.hex()).items.list()
        for it in items:
            s.read_blob(it.binary)
        out[f"{d.name}@{cid.hex()}"] = {it.filename: it.binary for it in items}
print(json.dumps(out, sort_keys=True))
'''


def _read_all(dvs_dir: str, timeout: float = 60) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-c", READER, dvs_dir], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def _fsck(dvs_dir: str) -> list[str]:
    p = run_dvs(dvs_dir, "fsck", "--json")
    assert p.returncode in (0, 6), p.stderr
    return [f"{f['kind']}: {f['subject']}" for f in json.loads(p.stdout)["findings"]]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A store with live data and a deleted dataset's garbage; its contents as READER prints them."""
    from dvstore.api import Store

    root = tmp_path_factory.mktemp("compact") / "pristine"
    dvs_dir = make_store(root, 60, n_large=2)
    s = Store(dvs_dir)
    gone = s.datasets.create("gone")
    with gone.edit() as e:
        for i in range(600):
            e.add_bytes(f"/g/{i}.bin", payload(7, i, 2500))
    s.datasets.delete("gone")
    with s.datasets.get("d").edit("second") as e:
        e.add_bytes("/second.bin", b"second")
    s.repo.db.close()
    # gc first, so the killed runs below differ only in the compaction.
    p = run_dvs(dvs_dir, "gc", "--expire", "now")
    assert p.returncode == 0, p.stderr
    return root, _read_all(dvs_dir)


def _copy(pristine: tuple[Path, dict[str, Any]], dest: Path) -> str:
    shutil.copytree(pristine[0], dest)
    return str(dest / ".dvs")


def _leftovers(dvs_dir: str) -> list[str]:
    return [n for n in os.listdir(os.path.join(dvs_dir, "tmp")) if n.startswith("compact-")]


@pytest.mark.parametrize("label", LABELS)
def test_kill_at_each_compaction_step(label: str, pristine: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    dvs_dir = _copy(pristine, tmp_path / "s")
    size = os.path.getsize(os.path.join(dvs_dir, "db", "data.mdb"))
    p = run_dvs(dvs_dir, "gc", "--expire", "now", "--compact", env={"DVS_TEST_CRASH_AT": f"{label}:1"})
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr)
    # Opens, reads everything back, and fsck is clean (a compaction leftover is only a note).
    assert _read_all(dvs_dir) == pristine[1]
    assert _fsck(dvs_dir) == []
    replaced = os.path.getsize(os.path.join(dvs_dir, "db", "data.mdb")) < size
    assert replaced == (label in ("compact_after_replace", "compact_after_reopen")), label
    # The next gc removes the leftovers and compacts (or finds it already compact).
    p = run_dvs(dvs_dir, "gc", "--expire", "now", "--compact", "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["compacted"] is True and doc["objects"] == 0, doc
    assert doc["db_bytes_after"] < size
    assert _leftovers(dvs_dir) == []
    assert _read_all(dvs_dir) == pristine[1]
    assert _fsck(dvs_dir) == []
    # And the store takes writes again.
    p = run_dvs(dvs_dir, "tag", "d", "after-crash")
    assert p.returncode == 0, p.stderr


def _paused_gc(dvs_dir: str, tmp_path: Path, label: str) -> tuple[subprocess.Popen[str], Path]:
    release, paused = tmp_path / "release", tmp_path / "paused"
    env = {k: v for k, v in os.environ.items() if k not in ("DVS_STORE", "DVS_DEBUG")}
    env.update(DVS_TEST_PAUSE_AT=label, DVS_TEST_PAUSE_FILE=str(release), DVS_TEST_PAUSED_FILE=str(paused))
    gc = subprocess.Popen([sys.executable, "-m", "dvstore", "--store", dvs_dir, "gc", "--expire", "now", "--compact",
                           "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not paused.exists():
        assert gc.poll() is None, gc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return gc, release


@pytest.mark.parametrize("outcome", ["killed", "finished"])
def test_reader_waiting_during_the_switch(outcome: str, pristine: tuple[Path, dict[str, Any]],
                                          tmp_path: Path) -> None:
    """A reader that starts while the new data.mdb is in place but the lock file is not yet
    re-initialised waits, then reads the whole store, whether gc dies there or goes on."""
    dvs_dir = _copy(pristine, tmp_path / "s")
    gc, release = _paused_gc(dvs_dir, tmp_path, "compact_after_replace")
    reader = subprocess.Popen([sys.executable, "-c", READER, dvs_dir], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        assert reader.poll() is None, "the reader must wait while the compaction holds the database"
        if outcome == "killed":
            gc.send_signal(signal.SIGKILL)
        else:
            release.touch()
        out, err = reader.communicate(timeout=60)
    finally:
        release.touch()
        if outcome == "killed" and gc.poll() is None:
            gc.kill()
        gc.communicate(timeout=60)
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
    assert reader.returncode == 0, err
    assert json.loads(out) == pristine[1]
    if outcome == "finished":
        assert gc.returncode == 0
    assert _read_all(dvs_dir) == pristine[1]
    assert _fsck(dvs_dir) == []
