"""fsck pieces: object verification, roots, the child-process boundary, the page scan."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from dvstore import codec, fsck
from dvstore.api import Store
from dvstore.errors import CorruptionError
from dvstore.hashing import hash_bytes, object_id
from dvstore.maintenance import Issue, read_roots, schema_problem, verify_object
from dvstore.model import Commit

D = bytes(range(32))


def _obj(tag: bytes, value: Any) -> tuple[bytes, bytes]:
    payload = codec.encode(value)
    return object_id(tag, payload), tag + b"\0" + payload


@pytest.mark.parametrize("tag,value,ok", [
    (b"leaf", [[b"\0" * 16, 1], [b"\1" * 16, 2]], True),
    (b"leaf", [[b"\1" * 16, 1], [b"\0" * 16, 2]], False),  # out of order
    (b"leaf", [[b"\0" * 15, 1]], False),
    (b"leaf", {"a": 1}, False),
    (b"node", [3, [D, D], 100], True),
    (b"node", [3, [D], 100], False),
    (b"node", [0, [], 0], False),
    (b"node", [1 << 16, [D], 1], False),
    (b"node", [1, [b"short"], 1], False),
    (b"annset", {"a": {"id": "a"}}, True),
    (b"annset", {"a": 1}, False),
    (b"recipe", {"title": "x"}, True),
    (b"recipe", [1], False),
    (b"commit", Commit(layers={"items": D, "annotations": None, "metadata": None, "status": None}, recipe=D,
                       parents=(), op="create").to_record(), True),
    (b"commit", {"format": 1}, False),
])
def test_schema_problem(tag: bytes, value: Any, ok: bool) -> None:
    assert (schema_problem(tag, value) is None) == ok


def test_verify_object_kinds() -> None:
    oid, raw = _obj(b"recipe", {"t": 1})
    assert verify_object(oid, raw)[0] == b"recipe"  # type: ignore[index]
    bad = verify_object(oid, raw[:-1] + b"\0")
    assert isinstance(bad, Issue) and bad.kind == "object-hash"
    raw2 = b"blob\0xyz"
    assert verify_object(hash_bytes(raw2), raw2).kind == "object-type"  # type: ignore[union-attr]
    raw3 = b"recipe\0\xc1"
    assert verify_object(hash_bytes(raw3), raw3).kind == "object-decode"  # type: ignore[union-attr]
    oid4, raw4 = _obj(b"node", [1, [], 0])
    assert verify_object(oid4, raw4).kind == "object-schema"  # type: ignore[union-attr]


def test_read_roots_reports_malformed_records(tmp_path: Path) -> None:
    s = Store.init(str(tmp_path / "s"))
    ds = s.datasets.create("d")
    dsid = ds.record.id
    s.repo.db.write(lambda t: (t.put("refs", b"weird", D), t.put("refs", b"tag:" + dsid + b":x", b"short"),
                               t.put("ops", b"op1", b"\xc1")) and None)
    roots = read_roots(s.repo, retention=None)
    kinds = sorted(i.kind for i in roots.issues)
    assert kinds == ["op-malformed", "ref-malformed", "ref-malformed"]
    assert [r.source for r in roots.roots if not r.op][:1] == ["head of d"]


def test_child_killed_by_a_signal_is_index_corrupt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store.init(str(tmp_path / "s"))
    monkeypatch.setattr(fsck, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGBUS)")
    rep = fsck.fsck(s.path)
    assert rep.kinds() == {"index-corrupt"}
    assert "SIGBUS" in rep.findings[0].message and "--rebuild" in rep.findings[0].message


def test_child_failing_otherwise_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store.init(str(tmp_path / "s"))
    monkeypatch.setattr(fsck, "_CHILD", "raise SystemExit('boom')")
    with pytest.raises(CorruptionError, match="boom"):
        fsck.fsck(s.path)


def test_report_json_round_trip(tmp_path: Path) -> None:
    rep = fsck.FsckReport()
    rep.findings.append(Issue("blob-missing", "ab", "gone"))
    for i in range(15):
        rep.note("tmp-file", f"tmp/{i}", "old")
    again = fsck.FsckReport.from_json(rep.to_json())
    assert again.findings == rep.findings and again.notes["tmp-file"]["count"] == 15
    assert len(again.notes["tmp-file"]["examples"]) == 10 and not again.ok


def test_skip_widens() -> None:
    k = bytes.fromhex("12345678ff")
    assert fsck._skip(k, 1) == bytes.fromhex("12345679")
    assert fsck._skip(k, 2) == bytes.fromhex("123457")
    assert fsck._skip(k, 4) == bytes.fromhex("13")
    assert fsck._skip(b"\xff\xff", 9) is None


def test_raw_scan_finds_every_verifiable_record(tmp_path: Path) -> None:
    s = Store.init(str(tmp_path / "s"))
    ds = s.datasets.create("d")
    with ds.edit() as e:
        for i in range(300):
            e.add_bytes(f"/{i}.bin", os.urandom(100 + 50 * i))  # inline and overflow values
    objects = {k for k, _ in s.repo.db.scan("objects")}
    blobs = {k for k, _ in s.repo.db.scan("blobs")}
    out = io.BytesIO()
    counts = fsck._raw_scan(os.path.join(s.path, "db", "data.mdb"), out)
    assert counts["objects"] >= len(objects) and counts["blobs"] == len(blobs)
    path = tmp_path / "frames"
    path.write_bytes(out.getvalue())
    got: dict[str, set[bytes]] = {"objects": set(), "blobs": set()}
    for db, k, v in fsck._read_frames(str(path)):
        assert hash_bytes(v) == k
        got[db].add(k)
    assert objects <= got["objects"] and got["blobs"] == blobs


def test_check_needs_no_lock_file(tmp_path: Path) -> None:
    s = Store.init(str(tmp_path / "s"))
    assert not os.path.exists(s.repo.lock_path)
    assert fsck.fsck(s.path).ok
    assert not os.path.exists(s.repo.lock_path), "a read-only check must not create the lock file"


def test_signals_named() -> None:
    assert fsck._signame(signal.SIGSEGV) == "SIGSEGV"
