"""G14: fsck detects and names each fault class, has no false positives, and is read-only.

One test per fault class: the class's finding kind is reported (and only kinds the fault
explains), the CLI exits 6, and a hash of the store tree (lock.mdb aside) is unchanged by
fsck. Notes (unreferenced data, temp files, stray files, stale readers) never fail fsck.
A damaged data.mdb is an ``index-corrupt`` finding, never a crash and never a silent OK, and
``fsck --rebuild`` salvages what can still be read.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dvstore import codec, tree
from dvstore.api import Store
from dvstore.fsck import check, fsck
from dvstore.hashing import hash_bytes, object_id
from dvstore.repo import Repository
from dvstore.storage.db import Database
from tests.reliability.helpers import heads, make_store, rewrite_file, run_dvs, tree_hash

FIXTURE_ITEMS = 100  # more than tree.LEAF_MAX, so the items layer has inner nodes


def _db(dvs_dir: str) -> Database:
    return Database(os.path.join(dvs_dir, "db"))


def _put(dvs_dir: str, db: str, key: bytes, value: bytes) -> None:
    _db(dvs_dir).write(lambda t: t.put(db, key, value))


def _delete(dvs_dir: str, db: str, key: bytes) -> None:
    _db(dvs_dir).write(lambda t: t.delete(db, key))


def _put_object(dvs_dir: str, tag: bytes, value: Any) -> bytes:
    payload = codec.encode(value)
    oid = object_id(tag, payload)
    _put(dvs_dir, "objects", oid, tag + b"\0" + payload)
    return oid


def _head(dvs_dir: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """(dataset id, head commit id, commit record) of dataset d."""
    repo = Repository(dvs_dir)
    ds = repo.dataset("d")
    cid = repo.head(ds)
    return ds.id, cid, repo.commit(cid).to_record()


def _build(root: Path) -> str:
    dvs_dir = make_store(root, FIXTURE_ITEMS, n_large=3)
    ds = Store(dvs_dir).datasets.get("d")
    with ds.edit("annotate") as e:
        for i in range(5):
            e.set_annotations(f"/seed/{i:04d}.bin", [{"type": "box", "label": "cat", "coordinates": [1, 2, 3, 4]}])
        e.update_metadata("/seed/0005.bin", user={"k": 1})
        e.set_task_status("/seed/0006.bin", "task1", "completed")
    ds.tag("v1")
    return dvs_dir


def _items(dvs_dir: str) -> dict[str, Any]:
    repo = Repository(dvs_dir)
    _, cid, _ = _head(dvs_dir)
    return {v["filename"]: v for _, v in tree.items(repo.objects, repo.commit(cid).layers["items"])}


def _file_blob(dvs_dir: str) -> str:
    repo = Repository(dvs_dir)
    for rec in _items(dvs_dir).values():
        p = repo.blobs.path_for(rec["blob"])
        if os.path.exists(p):
            return p
    raise AssertionError("no blob file")


def _small_blob(dvs_dir: str) -> bytes:
    return bytes(_items(dvs_dir)["/seed/0001.bin"]["blob"])


def _flip(data: bytes, at: int | None = None) -> bytes:
    i = len(data) // 2 if at is None else at
    return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:]


# -- fault classes ------------------------------------------------------------------------
# Each returns nothing; it damages the store at dvs_dir in one way.


def f_blob_file_missing(d: str) -> None:
    os.unlink(_file_blob(d))


def f_small_blob_missing(d: str) -> None:
    _delete(d, "blobs", _small_blob(d))


def f_blob_file_corrupt(d: str) -> None:
    rewrite_file(_file_blob(d), _flip)


def f_blob_file_truncated(d: str) -> None:
    rewrite_file(_file_blob(d), lambda b: b[: len(b) // 3])


def f_blob_file_zero(d: str) -> None:
    rewrite_file(_file_blob(d), lambda b: b"")


def f_blob_wrong_name(d: str) -> None:
    p = _file_blob(d)
    other = hash_bytes(b"some other name").hex()
    dest = os.path.join(d, "blobs", other[:2], other[2:])
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.rename(p, dest)


def f_small_blob_corrupt(d: str) -> None:
    b = _small_blob(d)
    _put(d, "blobs", b, _flip(_db(d).get("blobs", b) or b""))


def f_small_blob_size(d: str) -> None:
    b = _small_blob(d)
    _put(d, "blobs", b, (_db(d).get("blobs", b) or b"")[:100])


def f_object_corrupt(d: str) -> None:
    _, cid, _ = _head(d)
    _put(d, "objects", cid, _flip(_db(d).get("objects", cid) or b"", at=40))


def f_object_undecodable(d: str) -> None:
    raw = b"commit\0\xc1\xc1"
    oid = hash_bytes(raw)
    _put(d, "objects", oid, raw)
    dsid, _, _ = _head(d)
    _put(d, "refs", b"tag:" + dsid + b":bad", oid)


def f_object_bad_schema(d: str) -> None:
    dsid, _, rec = _head(d)
    rec = dict(rec)
    del rec["op"]
    oid = _put_object(d, b"commit", rec)
    _put(d, "refs", b"tag:" + dsid + b":bad", oid)


def f_object_wrong_type(d: str) -> None:
    dsid, cid, rec = _head(d)
    rec = dict(rec, recipe=rec["layers"]["items"], parents=[cid])  # a tree node where the recipe belongs
    oid = _put_object(d, b"commit", rec)
    _put(d, "refs", b"tag:" + dsid + b":bad", oid)


def f_tree_node_missing(d: str) -> None:
    repo = Repository(d)
    _, cid, _ = _head(d)
    root = repo.commit(cid).layers["items"]
    _, _, children, _ = tree.read_node(repo.objects, root)
    assert children, "the fixture's items layer must have inner nodes"
    _delete(d, "objects", children[0])


def f_annset_missing(d: str) -> None:
    repo = Repository(d)
    _, cid, _ = _head(d)
    for _, oid in tree.items(repo.objects, repo.commit(cid).layers["annotations"]):
        _delete(d, "objects", oid)
        return
    raise AssertionError("no annotation set")


def f_recipe_missing(d: str) -> None:
    _, _, rec = _head(d)
    _delete(d, "objects", rec["recipe"])


def f_head_unknown(d: str) -> None:
    dsid, _, _ = _head(d)
    _put(d, "refs", b"head:" + dsid, hash_bytes(b"no such commit"))


def f_tag_unknown(d: str) -> None:
    dsid, _, _ = _head(d)
    _put(d, "refs", b"tag:" + dsid + b":v1", hash_bytes(b"no such commit"))


def f_ref_malformed(d: str) -> None:
    dsid, cid, _ = _head(d)
    _put(d, "refs", b"tag:" + dsid + b":v1", cid[:31])


def f_dataset_no_head(d: str) -> None:
    dsid, _, _ = _head(d)
    _delete(d, "refs", b"head:" + dsid)


def f_reflog_malformed(d: str) -> None:
    dsid, _, _ = _head(d)
    _put(d, "reflog", dsid + struct.pack(">Q", 999), b"\xc1 not msgpack")


def f_reflog_dangling(d: str) -> None:
    dsid, _, _ = _head(d)
    rec = {"old": None, "new": hash_bytes(b"gone"), "op": "commit", "time": "2020-01-01T00:00:00.000Z",
           "message": "", "name": "d"}
    _put(d, "reflog", dsid + struct.pack(">Q", 999), codec.encode(rec))


def f_item_record_bad(d: str) -> None:
    repo = Repository(d)
    dsid, cid, rec = _head(d)
    items = dict(_items(d))
    first = sorted(items)[0]
    iid = next(k for k, v in tree.items(repo.objects, rec["layers"]["items"]) if v["filename"] == first)
    bad = dict(items[first], blob=b"short")
    root = tree.apply(repo.objects, rec["layers"]["items"], {iid: bad})
    new = dict(rec, layers=dict(rec["layers"], items=root), parents=[cid])
    _db(d).write(repo.objects.write_pending)
    _put(d, "refs", b"head:" + dsid, _put_object(d, b"commit", new))


def f_path_index_broken(d: str) -> None:
    repo = Repository(d)
    _, _, rec = _head(d)
    proot = _db(d).get("index", b"path:" + rec["layers"]["items"])
    assert proot is not None
    _, _, children, _ = tree.read_node(repo.objects, proot)
    _delete(d, "objects", children[0] if children else proot)


FAULTS: dict[str, tuple[Callable[[str], None], str, set[str], bool]] = {
    # name: (inject, expected kind, other kinds it may also explain, needs --read-data)
    "blob file missing": (f_blob_file_missing, "blob-missing", set(), False),
    "small blob missing": (f_small_blob_missing, "blob-missing", set(), False),
    "blob file corrupt": (f_blob_file_corrupt, "blob-hash", set(), True),
    "blob file truncated": (f_blob_file_truncated, "blob-size", set(), False),
    "blob file zero-length": (f_blob_file_zero, "blob-size", set(), False),
    "blob under the wrong name": (f_blob_wrong_name, "blob-missing", {"blob-hash"}, True),
    "small blob corrupt": (f_small_blob_corrupt, "blob-hash", set(), True),
    "small blob wrong size": (f_small_blob_size, "blob-size", set(), False),
    "object bytes corrupt": (f_object_corrupt, "object-hash", set(), False),
    "object does not decode": (f_object_undecodable, "object-decode", set(), False),
    "object bad schema": (f_object_bad_schema, "object-schema", set(), False),
    "object of the wrong type": (f_object_wrong_type, "object-wrong-type", set(), False),
    "tree node missing": (f_tree_node_missing, "object-missing", {"index-derived"}, False),
    "annotation set missing": (f_annset_missing, "object-missing", set(), False),
    "recipe missing": (f_recipe_missing, "object-missing", set(), False),
    "head names an unknown commit": (f_head_unknown, "ref-dangling", set(), False),
    "tag names an unknown commit": (f_tag_unknown, "ref-dangling", set(), False),
    "ref malformed": (f_ref_malformed, "ref-malformed", set(), False),
    "dataset without head": (f_dataset_no_head, "dataset-no-head", set(), False),
    "reflog entry malformed": (f_reflog_malformed, "reflog-malformed", set(), False),
    "reflog names an unknown commit": (f_reflog_dangling, "reflog-dangling", set(), False),
    "item record malformed": (f_item_record_bad, "object-schema", set(), False),
    "derived path index broken": (f_path_index_broken, "index-derived", set(), False),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("g14") / "pristine"
    _build(root)
    return root


def _copy(pristine: Path, dest: Path) -> str:
    shutil.copytree(pristine, dest)
    return str(dest / ".dvs")


def test_clean_store_has_no_findings(pristine: Path, tmp_path: Path) -> None:
    d = _copy(pristine, tmp_path / "s")
    before = tree_hash(d)
    rep = fsck(d, read_data=True)
    assert rep.ok, rep.findings
    assert rep.stats["commits"] >= 3 and rep.stats["live_blobs"] == FIXTURE_ITEMS + 3
    assert tree_hash(d) == before
    p = run_dvs(d, "fsck", "--read-data", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["ok"] is True


@pytest.mark.parametrize("name", list(FAULTS))
def test_fault_class_detected(name: str, pristine: Path, tmp_path: Path) -> None:
    inject, kind, also, read_data = FAULTS[name]
    d = _copy(pristine, tmp_path / "s")
    inject(d)
    before = tree_hash(d)
    rep = fsck(d, read_data=read_data)
    kinds = rep.kinds()
    assert kind in kinds, (name, rep.findings)
    assert kinds <= {kind} | also, (name, rep.findings)
    assert tree_hash(d) == before, "fsck changed the store"
    p = run_dvs(d, "fsck", *(["--read-data"] if read_data else []))
    assert p.returncode == 6 and kind in p.stdout, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and p.stderr.startswith("error: fsck found")
    assert tree_hash(d) == before, "dvs fsck changed the store"


def test_notes_are_not_findings(pristine: Path, tmp_path: Path) -> None:
    d = _copy(pristine, tmp_path / "s")
    Path(d, "tmp", "orphan.partial").write_bytes(b"x" * 10)
    Path(d, "blobs", "junk-name").write_bytes(b"junk")
    os.makedirs(os.path.join(d, "blobs", "zz"), exist_ok=True)
    Path(d, "blobs", "zz", "not-a-hash").write_bytes(b"junk")
    _put(d, "blobs", hash_bytes(b"unreferenced"), b"unreferenced")
    _put_object(d, b"recipe", {"title": "unused"})
    _put(d, "stat_cache", b"/some/path", b"\xc1")
    before = tree_hash(d)
    rep = fsck(d, read_data=True)
    assert rep.ok, rep.findings
    assert {"tmp-file", "stray-file", "unreferenced-blob", "unreferenced-object", "stat-cache"} <= set(rep.notes)
    assert tree_hash(d) == before
    assert run_dvs(d, "fsck").returncode == 0


def test_stale_reader_slot_is_cleared(pristine: Path, tmp_path: Path) -> None:
    """A reader killed with -9 leaves a slot while another process keeps the env open;
    fsck's open runs reader_check, and afterwards no stale slot remains."""
    d = _copy(pristine, tmp_path / "s")
    db_dir = os.path.join(d, "db")
    _db(d).get("meta", b"format")  # this process keeps the environment open
    script = ("import os, sys, time; from dvstore.storage.db import Database; db = Database(sys.argv[1]); "
              "env = db.env; txn = env.begin(); print('r', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", script, db_dir], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "r"
    p.kill()
    p.wait()
    assert str(p.pid) in _db(d).env.readers(), "the killed reader's slot should still be listed"
    rep = fsck(d)
    assert rep.ok
    assert str(p.pid) not in _db(d).env.readers()
    assert _db(d).reader_check() == 0


# -- a damaged data.mdb -----------------------------------------------------------------

P_BRANCH, P_LEAF, P_META = 0x01, 0x02, 0x08


def _pages(path: str, flag: int) -> list[int]:
    out = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        for pg in range(2, size // 4096):
            f.seek(pg * 4096)
            head = f.read(16)
            pgno, _, flags = struct.unpack_from("<QHH", head)
            if pgno == pg and flags & flag and not flags & P_META:
                out.append(pg)
    return out


def _smash(path: str, pages: list[int]) -> None:
    with open(path, "r+b") as f:
        for pg in pages:
            f.seek(pg * 4096 + 16)
            f.write(b"\xff" * (4096 - 16))


def _fresh_store(tmp_path: Path, n: int) -> str:
    """A store built by a child process: this process must not have its env open (rebuild
    refuses while another process holds the database)."""
    root = tmp_path / "s"
    code = ("import sys; from pathlib import Path; from tests.reliability.helpers import make_store; "
            f"make_store(Path(sys.argv[1]), {n}, n_large=2)")
    subprocess.run([sys.executable, "-c", code, str(root)], check=True, cwd=str(Path(__file__).parents[2]))
    return str(root / ".dvs")


def test_corrupt_data_mdb_is_index_corrupt_and_rebuild_salvages(tmp_path: Path) -> None:
    d = _fresh_store(tmp_path, 1500)
    before_heads = run_dvs(d, "datasets", "--json").stdout
    data = os.path.join(d, "db", "data.mdb")
    branches = _pages(data, P_BRANCH)
    assert branches, "the fixture needs branch pages"
    _smash(data, branches[len(branches) // 2: len(branches) // 2 + 1])
    before = tree_hash(d)
    p = run_dvs(d, "fsck", "--json")
    assert p.returncode == 6, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    doc = json.loads(p.stdout)
    assert [f["kind"] for f in doc["findings"]] == ["index-corrupt"]
    assert "--rebuild" in doc["findings"][0]["message"]
    assert tree_hash(d) == before, "fsck changed a damaged store"
    p = run_dvs(d, "fsck", "--rebuild", "--json")
    assert "Traceback" not in p.stderr
    doc = json.loads(p.stdout)
    salvage = doc["rebuilt"]["salvage"]
    assert salvage["kept"]["refs"] == 1 and salvage["kept"]["datasets"] == 1
    # A branch page holds only pointers: the page scan reaches every leaf below it, so
    # nothing is lost and the rebuilt store is clean.
    assert p.returncode == 0 and doc["ok"], doc["findings"][:5]
    assert run_dvs(d, "datasets", "--json").stdout == before_heads
    assert run_dvs(d, "fsck", "--read-data").returncode == 0
    src = tmp_path / "more"
    src.mkdir()
    (src / "x.bin").write_bytes(b"after the rebuild")
    assert run_dvs(d, "add", "d", str(src)).returncode == 0
    assert any(n.startswith("db.corrupt-") for n in os.listdir(d))


def test_rebuild_reports_what_was_lost(tmp_path: Path) -> None:
    """Leaf pages smashed: their records are gone; the rebuild keeps the rest, the final
    check names every lost blob or object, and the store takes new versions again."""
    d = _fresh_store(tmp_path, 1500)
    data = os.path.join(d, "db", "data.mdb")
    leaves = _pages(data, P_LEAF)
    _smash(data, leaves[len(leaves) // 3: len(leaves) // 3 + 3] + _pages(data, P_BRANCH)[:1])
    assert run_dvs(d, "fsck").returncode == 6
    p = run_dvs(d, "fsck", "--rebuild", "--json")
    assert "Traceback" not in p.stderr
    doc = json.loads(p.stdout)
    kinds = {f["kind"] for f in doc["findings"]}
    assert "index-corrupt" not in kinds
    assert kinds <= {"blob-missing", "object-missing", "ref-dangling", "reflog-dangling", "dataset-no-head"}
    assert p.returncode == (6 if kinds else 0)
    src = tmp_path / "more"
    src.mkdir()
    (src / "x.bin").write_bytes(b"after the rebuild")
    assert run_dvs(d, "create", "fresh").returncode == 0
    assert run_dvs(d, "add", "fresh", str(src)).returncode == 0
    again = run_dvs(d, "fsck", "--json")
    assert {f["kind"] for f in json.loads(again.stdout)["findings"]} == kinds


def test_totally_destroyed_data_mdb_never_a_silent_ok(tmp_path: Path) -> None:
    d = _fresh_store(tmp_path, 200)
    data = os.path.join(d, "db", "data.mdb")
    _smash(data, list(range(2, os.path.getsize(data) // 4096)))
    rep = fsck(d)
    assert rep.kinds() == {"index-corrupt"}
    p = run_dvs(d, "fsck")
    assert p.returncode == 6 and "index-corrupt" in p.stdout and "Traceback" not in p.stderr


def test_check_in_process_matches_child(pristine: Path, tmp_path: Path) -> None:
    d = _copy(pristine, tmp_path / "s")
    f_blob_file_truncated(d)
    assert check(d).kinds() == fsck(d).kinds() == {"blob-size"}
    assert heads(d)
