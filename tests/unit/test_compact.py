"""``gc --compact``: data.mdb shrinks, the store stays whole, and other processes are respected."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dvstore.api import Store
from dvstore.fsck import check
from dvstore.gc import collect
from dvstore.storage.db import Database
from tests.conftest import run_dvs
from tests.reliability.helpers import payload, store_digest


def _store(tmp_path: Path) -> Store:
    """A store with two versions of ``keep``, a tag, and a deleted dataset's garbage."""
    s = Store.init(str(tmp_path / "s"))
    keep = s.datasets.create("keep")
    with keep.edit("one") as e:
        for i in range(150):
            e.add_bytes(f"/k/{i}.bin", payload(3, i, 2000 + i))
        e.add_bytes("/k/large.bin", payload(3, 999, 300 * 1024))
    keep.tag("v1")
    with keep.edit("two") as e:
        e.add_bytes("/k/extra.bin", b"extra")
        e.delete("/k/0.bin")
    gone = s.datasets.create("gone")
    with gone.edit() as e:
        for i in range(2500):
            e.add_bytes(f"/g/{i}.bin", payload(4, i, 3000))
    s.datasets.delete("gone")
    return s


def _contents(s: Store) -> dict[str, dict[str, bytes]]:
    """Every version of every dataset: filename -> blob bytes (reads every blob)."""
    out: dict[str, dict[str, bytes]] = {}
    for d in s.datasets.list():
        ds = s.datasets.get(d.name)
        for cid, _ in ds.log():
            items = ds.at(cid.hex()).items.list()
            out[f"{d.name}@{cid.hex()}"] = {it.filename: s.read_blob(it.binary) for it in items}
    return out


def test_compact_shrinks_and_keeps_everything(tmp_path: Path) -> None:
    s = _store(tmp_path)
    plain = collect(s.repo, expire="now")
    assert plain.object_entries > 0 and not plain.compacted
    assert plain.db_bytes_after >= plain.db_bytes_before, "a plain gc never shrinks data.mdb"
    digest, contents = store_digest(s.path), _contents(s)
    res = collect(s.repo, expire="now", compact=True)
    assert res.compacted and res.compact_skipped is None and res.objects == 0
    assert res.db_bytes_after < res.db_bytes_before / 2, (res.db_bytes_before, res.db_bytes_after)
    assert res.db_bytes_after == os.path.getsize(os.path.join(s.path, "db", "data.mdb"))
    assert check(s.path, read_data=True).ok
    # The same process keeps working through its old handles, and a fresh one sees the same.
    assert store_digest(s.path) == digest
    assert _contents(s) == contents and _contents(Store(s.path)) == contents
    with s.datasets.get("keep").edit("three") as e:
        e.add_bytes("/k/after.bin", b"after compaction")
    assert check(s.path).ok
    assert not [n for n in os.listdir(os.path.join(s.path, "tmp")) if n.startswith("compact-")]
    assert oct(os.stat(os.path.join(s.path, "db", "data.mdb")).st_mode & 0o777) == "0o600"


def test_compact_skips_while_another_process_has_the_store_open(tmp_path: Path) -> None:
    s = _store(tmp_path)
    collect(s.repo, expire="now")
    release, ready = tmp_path / "release", tmp_path / "ready"
    reader = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, time
from dvstore.api import Store
s = Store({s.path!r})
n = len(s.datasets.get("keep").items.list())
open({str(ready)!r}, "w").close()
while not os.path.exists({str(release)!r}):
    time.sleep(0.01)
assert len(s.datasets.get("keep").items.list()) == n
print("ok")
"""], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert reader.poll() is None and time.monotonic() < deadline, reader.stderr and reader.stderr.read()
            time.sleep(0.01)
        size = s.repo.db.file_size()
        res = collect(s.repo, expire="now", compact=True)
        assert not res.compacted and "another process" in (res.compact_skipped or "")
        assert res.db_bytes_after == size
        assert len(s.datasets.get("keep").items.list()) == 151  # this process reopens its handle
    finally:
        release.touch()
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0 and out.strip() == "ok", err
    assert collect(s.repo, expire="now", compact=True).compacted  # once it has gone
    assert check(s.path).ok


def test_compact_dry_run_and_leftovers(tmp_path: Path) -> None:
    s = _store(tmp_path)
    left = Path(s.path) / "tmp" / "compact-0123"
    left.mkdir()
    (left / "data.mdb").write_bytes(b"x" * 1000)
    dry = collect(s.repo, expire="now", dry_run=True, compact=True)
    assert not dry.compacted and dry.compact_skipped == "dry run" and left.exists()
    res = collect(s.repo, expire="now")
    assert not left.exists() and res.tmp_files == 1
    assert check(s.path).ok


def test_compact_two_databases_in_one_process(tmp_path: Path) -> None:
    """Every Database handle of the path reopens after the environment was replaced."""
    s = _store(tmp_path)
    other = Database(os.path.join(s.path, "db"))
    before = other.scan("datasets")
    assert collect(s.repo, expire="now", compact=True).compacted
    assert other.scan("datasets") == before
    other.write(lambda t: t.put("meta", b"test-key", b"1"))
    assert s.repo.db.get("meta", b"test-key") == b"1"


def test_cli_gc_compact(tmp_path: Path) -> None:
    s = _store(tmp_path)
    s.repo.db.close()  # the CLI must find no other process holding the database
    store = str(tmp_path / "s")
    r = run_dvs("--store", store, "gc", "--expire", "now", "--compact", "--json")
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    assert doc["compacted"] is True and doc["compact_skipped"] is None
    assert doc["db_bytes_after"] < doc["db_bytes_before"]
    r = run_dvs("--store", store, "gc", "--compact")
    assert r.rc == 0 and "compacted the database:" in r.out, (r.out, r.err)
    r = run_dvs("--store", store, "gc", "--dry-run", "--compact")
    assert r.rc == 0 and "not compacted" in r.out and "dry run" in r.out, r.out
    r = run_dvs("--store", store, "gc", "--json")
    doc = json.loads(r.out)
    assert doc["compacted"] is False and doc["db_bytes_before"] == doc["db_bytes_after"] > 0
