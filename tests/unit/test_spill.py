"""Large edits move their pending changes to a scratch table: same version, bounded memory."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from dvstore import Store, spill
from dvstore.storage.db import SCRATCH_PREFIX, Scratch
from dvstore.tree import DELETE


def _scripted_edit(root: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """One big edit touching every layer; item ids are deterministic so versions compare."""
    counter = itertools.count()
    monkeypatch.setattr("dvstore.edit.new_item_id", lambda: next(counter).to_bytes(16, "big")[::-1])
    monkeypatch.setattr("dvstore.edit.now_iso", lambda: "2026-01-01T00:00:00.000Z")
    store = Store.init(str(root))
    ds = store.datasets.create("ds")
    with ds.edit("base") as e:
        for i in range(30):
            e.add_bytes(f"/base/{i % 4}/b{i}.bin", b"base %d" % i)
    with ds.edit("big") as e:
        for i in range(60):
            e.add_bytes(f"/new/{i % 5}/n{i}.bin", b"new %d" % i)
        for i in range(0, 60, 3):
            e.set_annotations(f"/new/{i % 5}/n{i}.bin", [{"id": f"a{i}", "type": "box", "label": "cat"}])
            e.update_metadata(f"/new/{i % 5}/n{i}.bin", user={"k": i})
            e.set_task_status(f"/new/{i % 5}/n{i}.bin", "t1", "completed")
        for i in range(0, 30, 4):
            e.delete(f"/base/{i % 4}/b{i}.bin")
        for i in range(1, 30, 4):
            e.rename(f"/base/{i % 4}/b{i}.bin", f"/moved/b{i}.bin")
        e.add_bytes("/base/0/b0.bin", b"back again")  # a deleted name, reused
        e.rename("/new/1/n1.bin", "/tmp-name.bin")
        e.rename("/tmp-name.bin", "/new/1/n1.bin")  # and back: no change at all
        e.set_hidden("/new/2/n2.bin", True)
        assert e.item_id("/moved/b1.bin") is not None and e.item_id("/base/1/b1.bin") is None
        assert e.current("metadata", e.item_id("/new/0/n0.bin")) == {"user": {"k": 0}}
    return store


def test_a_spilled_edit_builds_the_same_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = _scripted_edit(tmp_path / "a", monkeypatch)
    writes: list[int] = []
    real = Scratch.put_many

    def counted(self: Scratch, rows: list) -> None:
        writes.append(len(rows))
        real(self, rows)

    monkeypatch.setattr(Scratch, "put_many", counted)
    monkeypatch.setattr(spill, "LIMIT", 3)
    small = _scripted_edit(tmp_path / "b", monkeypatch)
    assert len(writes) > 20  # it really went to disk, many times
    a, b = big.datasets.get("ds"), small.datasets.get("ds")
    va, vb = big.repo.commit(big.repo.head(a.record)), small.repo.commit(small.repo.head(b.record))
    assert va.layers == vb.layers  # the same content gives the same roots
    items_root = va.layers["items"]
    assert big.repo.path_index(items_root) == small.repo.path_index(items_root)
    assert big.repo.stored_folder_index(items_root) == small.repo.stored_folder_index(items_root)
    assert small.fsck().ok
    assert not [n for n in os.listdir(small.repo.blobs.tmp) if n.startswith(SCRATCH_PREFIX)]


def test_scratch_file_goes_when_the_edit_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spill, "LIMIT", 2)
    store = Store.init(str(tmp_path / "s"))
    ds = store.datasets.create("ds")
    with pytest.raises(RuntimeError), ds.edit("doomed") as e:
        for i in range(10):
            e.add_bytes(f"/f{i}", b"x%d" % i)
        assert [n for n in os.listdir(store.repo.blobs.tmp) if n.startswith(SCRATCH_PREFIX)]
        raise RuntimeError("boom")
    assert not [n for n in os.listdir(store.repo.blobs.tmp) if n.startswith(SCRATCH_PREFIX)]
    assert len(ds.log()) == 1


def test_merged_yields_key_order_and_the_latest_change(tmp_path: Path) -> None:
    s = spill.Spill(str(tmp_path), limit=3)
    d: dict[bytes, object] = {}
    for k, v in [(b"c", 1), (b"a", 2), (b"e", DELETE)]:
        d[k] = v
        s.check(b"x", d)
    assert d == {} and s.any(b"x", d)
    d[b"b"] = 3
    d[b"c"] = 4  # changed again after it went to disk
    assert list(s.merged(b"x", d)) == [(b"a", 2), (b"b", 3), (b"c", 4), (b"e", DELETE)]
    assert s.get(b"x", d, b"e") is DELETE and s.get(b"x", d, b"c") == 4
    assert s.get(b"x", d, b"z") is spill.MISSING and s.get(b"y", {}, b"a") is spill.MISSING
    s.close()
    assert not os.listdir(tmp_path)


def test_scratch_scan_crosses_batches(tmp_path: Path) -> None:
    sc = Scratch(str(tmp_path))
    rows = [(b"p" + bytes([i]), b"v%d" % i) for i in range(10)]
    sc.put_many(rows + [(b"q\0", b"other")])
    for batch in (2, 3, 4, 10, 11, 12):
        assert list(sc.scan(b"p", batch=batch)) == rows
    assert list(sc.scan(b"r")) == []
    sc.close()


def test_scratch_reads_see_every_write_and_scans_survive_writes_between_pages(tmp_path: Path) -> None:
    # One read transaction serves the reads between two writes: each write ends it, so a
    # read after a write sees it, and a scan's next page starts from the new state.
    sc = Scratch(str(tmp_path))
    assert sc.get(b"a") is None and list(sc.scan(b"")) == []
    sc.put_many([(b"a", b"1")])
    assert sc.get(b"a") == b"1" and sc.get(b"b") is None
    sc.put_many([(b"a", b"2"), (b"b", b"3")])
    assert (sc.get(b"a"), sc.get(b"b")) == (b"2", b"3")
    sc.put_many([(b"p" + bytes([i]), b"old") for i in range(9)])
    seen = []
    for k, v in sc.scan(b"p", batch=3):
        seen.append((k, v))
        if k == b"p\x01":  # a write while the first page is being handed out
            sc.put_many([(b"p" + bytes([i]), b"new") for i in range(9)])
    assert seen == [(b"p" + bytes([i]), b"old" if i < 3 else b"new") for i in range(9)]
    sc.close()
    assert not os.listdir(tmp_path)
