"""gc rules: roots, retention, the two-phase grace period, derived data, dry runs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dvstore import maintenance
from dvstore.api import Store
from dvstore.errors import UsageError
from dvstore.fsck import check
from dvstore.gc import SEEN_PREFIX, collect
from dvstore.hashing import hash_bytes, object_id
from dvstore.maintenance import finish_op, parse_duration, register_op
from tests.reliability.helpers import LARGE, payload, store_digest, tree_hash

HOUR = 3600.0
DAY = 86400.0


@pytest.mark.parametrize("text,seconds", [("now", 0), ("0", 0), ("90", 90), ("45s", 45), ("30m", 1800),
                                          ("1h30m", 5400), ("90d", 90 * DAY), ("2w", 14 * DAY), ("1.5h", 5400)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "-1", "1y", "1h 2m", "h", "nan", "inf"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


def _store(tmp_path: Path) -> Store:
    s = Store.init(str(tmp_path / "s"))
    ds = s.datasets.create("d")
    with ds.edit() as e:
        for i in range(70):
            e.add_bytes(f"/a/{i}.bin", payload(1, i, 1000 + i))
        e.add_bytes("/big.bin", payload(1, 999, LARGE))
        e.set_annotations("/a/0.bin", [{"type": "box", "label": "x", "coordinates": [1, 2, 3, 4]}])
    return s


def _garbage(s: Store) -> tuple[bytes, bytes]:
    """An unreferenced object and an unreferenced small blob, written directly."""
    payload_ = b"\x81\xa1k\x01"
    oid = object_id(b"recipe", payload_)
    blob = b"garbage bytes"
    s.repo.db.write(lambda t: (t.put("objects", oid, b"recipe\0" + payload_), t.put("blobs", hash_bytes(blob), blob))
                    and None)
    return oid, hash_bytes(blob)


def test_gc_keeps_everything_reachable(tmp_path: Path) -> None:
    s = _store(tmp_path)
    before = store_digest(s.path)
    res = collect(s.repo, expire="now")
    assert res.objects == 0 and store_digest(s.path) == before
    assert check(s.path, read_data=True).ok


def test_two_phase_grace(tmp_path: Path) -> None:
    s = _store(tmp_path)
    oid, blob = _garbage(s)
    now = time.time()
    first = collect(s.repo, now=now)
    assert first.objects == 0 and first.kept_young == 2
    assert s.repo.db.get("meta", SEEN_PREFIX + b"o" + oid) is not None
    # Within the grace period: still kept.
    assert collect(s.repo, now=now + 0.5 * HOUR).objects == 0
    # Past it: the dry run says what the real run then does.
    dry = collect(s.repo, dry_run=True, now=now + 1.5 * HOUR)
    assert (dry.objects, dry.object_entries, dry.small_blobs) == (2, 1, 1)
    real = collect(s.repo, now=now + 1.5 * HOUR)
    assert (real.objects, real.bytes) == (dry.objects, dry.bytes)
    assert s.repo.db.get("objects", oid) is None and s.repo.db.get("blobs", blob) is None
    assert not s.repo.db.scan("meta", SEEN_PREFIX), "the first-seen records go with the entries"


def test_grace_zero_and_expire_now_delete_at_once(tmp_path: Path) -> None:
    s = _store(tmp_path)
    _garbage(s)
    assert collect(s.repo, grace="0").objects == 2
    _garbage(s)
    assert collect(s.repo, expire="now").objects == 2



@pytest.mark.parametrize("expire,grace,retention_s,grace_s", [
    ("now", None, 0, 0), ("NOW", None, 0, 0), ("now", "2h", 0, 2 * HOUR), ("now", "0", 0, 0),
    ("0", None, 0, HOUR), ("0s", None, 0, HOUR), ("0", "2h", 0, 2 * HOUR), (None, "2h", 90 * DAY, 2 * HOUR),
])
def test_only_expire_now_drops_the_grace_and_an_explicit_grace_holds(
        tmp_path: Path, expire: str | None, grace: str | None, retention_s: float, grace_s: float) -> None:
    s = _store(tmp_path)
    _garbage(s)
    res = collect(s.repo, dry_run=True, expire=expire, grace=grace)
    assert (res.retention_seconds, res.grace_seconds) == (retention_s, grace_s)
    assert res.objects == (2 if grace_s == 0 else 0)  # fresh garbage goes only without a grace period


def test_gc_cli_reports_the_grace_it_used(tmp_path: Path) -> None:
    from tests.conftest import run_dvs

    s = _store(tmp_path)
    for args, grace_s in ((("--expire", "now", "--grace", "2h"), 2 * HOUR), (("--expire", "0s"), HOUR),
                          (("--expire", "now"), 0)):
        r = run_dvs("--store", s.path, "gc", "--dry-run", "--json", *args)
        assert r.rc == 0, r.err
        assert json.loads(r.out)["grace_seconds"] == grace_s, args


def test_resurrected_entry_loses_its_record(tmp_path: Path) -> None:
    s = _store(tmp_path)
    ds = s.datasets.get("d")
    blob = hash_bytes(b"later referenced")
    s.repo.db.write(lambda t: t.put("blobs", blob, b"later referenced"))
    now = time.time()
    collect(s.repo, now=now)
    assert s.repo.db.get("meta", SEEN_PREFIX + b"b" + blob) is not None
    with ds.edit() as e:
        e.add_bytes("/now-used.bin", b"later referenced")
    collect(s.repo, now=now + 2 * HOUR)
    assert s.repo.db.get("blobs", blob) == b"later referenced"
    assert s.repo.db.get("meta", SEEN_PREFIX + b"b" + blob) is None


def test_deleted_dataset_kept_while_reflog_in_retention(tmp_path: Path) -> None:
    s = _store(tmp_path)
    other = s.datasets.create("other")
    with other.edit() as e:
        e.add_bytes("/only-here.bin", b"only in the deleted dataset")
    s.datasets.delete("other")
    blob = hash_bytes(b"only in the deleted dataset")
    now = time.time()
    assert collect(s.repo, grace="0", now=now).small_blobs == 0
    assert collect(s.repo, grace="0", now=now + 89 * DAY).small_blobs == 0
    res = collect(s.repo, grace="0", now=now + 91 * DAY)
    assert res.small_blobs == 1 and res.reflog_entries >= 1
    assert s.repo.db.get("blobs", blob) is None
    assert check(s.path).ok  # no reflog entry names a collected commit


def test_expire_duration_sets_retention(tmp_path: Path) -> None:
    s = _store(tmp_path)
    other = s.datasets.create("other")
    s.datasets.delete("other")
    del other
    assert collect(s.repo, expire="1d", grace="0").object_entries == 0
    assert collect(s.repo, expire="1d", grace="0", now=time.time() + 2 * DAY).object_entries >= 1


def test_tags_are_roots(tmp_path: Path) -> None:
    s = _store(tmp_path)
    ds = s.datasets.get("d")
    ds.tag("keep")
    tagged = ds.head_id
    ds2 = s.datasets.create("t")
    with ds2.edit() as e:
        e.add_bytes("/t.bin", b"tagged only")
    ds2.tag("snap")
    s.datasets.delete("t")
    collect(s.repo, expire="now")
    assert s.repo.objects.has(tagged)
    assert s.repo.db.get("blobs", hash_bytes(b"tagged only")) == b"tagged only"
    assert check(s.path).ok


def test_in_progress_operations_are_roots(tmp_path: Path) -> None:
    s = _store(tmp_path)
    oid, blob = _garbage(s)
    register_op(s.repo, "import-1", [oid, blob, hash_bytes(b"not written yet")])
    assert collect(s.repo, expire="now").objects == 0
    finish_op(s.repo, "import-1")
    assert collect(s.repo, expire="now").objects == 2


def test_tmp_files_by_age(tmp_path: Path) -> None:
    s = _store(tmp_path)
    old = os.path.join(s.path, "tmp", "old.partial")
    young = os.path.join(s.path, "tmp", "young.partial")
    for p in (old, young):
        with open(p, "wb") as f:
            f.write(b"x" * 100)
    os.utime(old, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))
    res = collect(s.repo)
    assert res.tmp_files == 1 and not os.path.exists(old) and os.path.exists(young)


def test_blob_files_by_age(tmp_path: Path) -> None:
    s = _store(tmp_path)
    data = payload(2, 0, LARGE)
    d = s.repo.blobs.add_bytes(data)  # a blob file nothing references
    path = s.repo.blobs.path_for(d)
    assert collect(s.repo).blob_files == 0 and os.path.exists(path)
    os.utime(path, (time.time() - 2 * HOUR, time.time() - 2 * HOUR))
    res = collect(s.repo)
    assert res.blob_files == 1 and res.bytes >= LARGE and not os.path.exists(path)


def test_derived_data_pruned_with_what_it_describes(tmp_path: Path) -> None:
    s = _store(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(b"stat cached")
    other = s.datasets.create("o")
    from dvstore.ingest import ingest

    with other.edit() as e:
        ingest(e, [str(src)])
    assert s.repo.db.scan("stat_cache")
    items_root = other.version.layers["items"]
    assert s.repo.db.get("index", b"path:" + items_root) is not None
    s.datasets.delete("o")
    res = collect(s.repo, expire="now")
    assert res.derived_entries >= 2
    assert s.repo.db.get("index", b"path:" + items_root) is None
    assert not s.repo.db.scan("stat_cache")


def test_broken_live_path_index_is_dropped_and_rebuilt(tmp_path: Path) -> None:
    s = _store(tmp_path)
    ds = s.datasets.get("d")
    items_root = ds.version.layers["items"]
    proot = s.repo.db.get("index", b"path:" + items_root)
    assert proot is not None
    from dvstore import tree

    _, _, children, _ = tree.read_node(s.repo.objects, proot)
    s.repo.db.write(lambda t: t.delete("objects", children[0]))
    assert "index-derived" in check(s.path).kinds()
    collect(s.repo, expire="now")
    assert s.repo.db.get("index", b"path:" + items_root) is None
    fresh = Store(s.path)
    assert fresh.datasets.get("d").items.get(filepath="/a/5.bin").read() == payload(1, 5, 1005)
    assert check(s.path).ok


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    s = _store(tmp_path)
    _garbage(s)
    with open(os.path.join(s.path, "tmp", "x.partial"), "wb") as f:
        f.write(b"x")
    s.datasets.delete("d")
    # The exclusive lock writes its holder's pid into .dvs/lock: that file aside, nothing changes.
    before = tree_hash(s.path, exclude=("lock.mdb", "lock"))
    res = collect(s.repo, dry_run=True, expire="now")
    assert res.objects > 0 and res.tmp_files == 1 and res.dry_run
    assert tree_hash(s.path, exclude=("lock.mdb", "lock")) == before


def test_store_api_delegates(tmp_path: Path) -> None:
    s = _store(tmp_path)
    _garbage(s)
    assert s.gc(dry_run=True, expire="now").objects == 2
    assert maintenance.gc(s, expire="now").objects == 2
    assert s.fsck().ok
