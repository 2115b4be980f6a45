"""A deleted dataset stays recoverable until gc expires it (CLI.md "dvs delete"), through ``dvs``.

``dvs reflog`` / ``dvs tags`` of a deleted name show its history (the delete is ``{0}``),
``dvs datasets --deleted`` lists what is left, and ``dvs restore NAME @{1}`` brings it back
with the same items, annotations, tags and reflog (``--id`` when the name was taken since).
After ``gc --expire now`` an untagged deleted dataset is gone, with one clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dvstore.api import Store
from tests.conftest import write_files


@pytest.fixture
def pets(dvs: Any, tmp_path: Path) -> Any:
    """Dataset pets: v1 adds a, b (tagged snap), v2 adds c with an annotation and metadata."""
    write_files(tmp_path / "photos", {"a.jpg": b"aaa", "b.jpg": b"bbb"})
    assert dvs("create", "pets").rc == 0
    assert dvs("add", "pets", str(tmp_path / "photos"), "-m", "v1").rc == 0
    assert dvs("tag", "pets", "snap").rc == 0
    ds = Store(str(tmp_path / "store" / ".dvs")).datasets.get("pets")
    with ds.edit("v2") as e:
        e.add_bytes("/c.jpg", b"ccc")
        e.add_annotation("/c.jpg", {"id": "a1", "type": "box", "label": "cat", "coordinates": [1, 2, 3, 4]})
        e.update_metadata("/a.jpg", user={"split": "train"})
    return dvs


def _json(r: Any) -> Any:
    assert r.rc == 0, r.err
    return json.loads(r.out)


def _error(r: Any, code: int) -> str:
    assert r.rc == code, (r.rc, r.out, r.err)
    assert r.err.startswith("error: ") and "Traceback" not in r.err
    return str(r.err)


def test_delete_then_restore_brings_back_everything(pets: Any) -> None:
    head = _json(pets("show", "pets", "--json"))["id"]
    items = _json(pets("ls", "pets", "--json"))
    tagged = _json(pets("ls", "pets@snap", "--json"))
    ds_id = _json(pets("datasets", "--json"))[0]["id"]
    r = pets("delete", "pets")
    assert r.rc == 0 and "dvs restore pets @{1}" in r.out
    _error(pets("ls", "pets"), 3)
    # What is left is visible...
    log = _json(pets("reflog", "pets", "--json"))
    assert [e["op"] for e in log] == ["delete", "commit", "commit", "create"]
    assert log[0]["new"] is None and log[0]["old"] == head and log[1]["new"] == head
    r = pets("reflog", "pets")
    assert r.rc == 0 and "pets@{0}" in r.out and "delete" in r.out
    assert "was deleted" in r.err and "dvs restore pets @{1}" in r.err
    assert [t["tag"] for t in _json(pets("tags", "pets", "--json"))] == ["snap"]
    gone = _json(pets("datasets", "--deleted", "--json"))
    assert [(d["name"], d["id"], d["head"], d["items"], d["tags"]) for d in gone] == [("pets", ds_id, head, 3, ["snap"])]
    assert gone[0]["deleted"] == log[0]["time"]
    assert _json(pets("datasets", "--json")) == []
    # ...and restoring @{1} makes it whole: same head, items, annotations, tags, id.
    r = pets("restore", "pets", "@{1}", "--json")
    doc = _json(r)
    assert doc["version"] == doc["restored"] == head
    assert _json(pets("show", "pets", "--json"))["id"] == head
    assert _json(pets("ls", "pets", "--json")) == items
    assert _json(pets("ls", "pets@snap", "--json")) == tagged
    assert _json(pets("datasets", "--json"))[0]["id"] == ds_id
    assert _json(pets("datasets", "--deleted", "--json")) == []
    log = _json(pets("reflog", "pets", "--json"))
    assert [e["op"] for e in log] == ["restore", "delete", "commit", "commit", "create"]
    assert pets("fsck").rc == 0
    # It is a dataset like any other again.
    assert pets("restore", "pets", "snap").rc == 0
    assert _json(pets("ls", "pets", "--json")) == tagged


def test_restore_a_deleted_dataset_to_an_older_version(pets: Any) -> None:
    head = _json(pets("show", "pets", "--json"))["id"]
    tagged = _json(pets("ls", "pets@snap", "--json"))
    assert pets("delete", "pets").rc == 0
    doc = _json(pets("restore", "pets", "snap", "--json"))
    v = _json(pets("show", "pets", "--json"))
    assert v["id"] == doc["version"] != head
    assert v["op"] == "restore" and v["parents"] == [head] and v["info"] == {"restored": doc["restored"]}
    assert _json(pets("ls", "pets", "--json")) == tagged
    assert pets("fsck").rc == 0


def test_a_name_taken_again_restores_with_id(pets: Any) -> None:
    items = _json(pets("ls", "pets", "--json"))
    ds_id = _json(pets("datasets", "--json"))[0]["id"]
    assert pets("delete", "pets").rc == 0
    assert pets("create", "pets").rc == 0
    # The name is the new dataset's now: its own reflog and tags.
    assert len(_json(pets("reflog", "pets", "--json"))) == 1
    assert _json(pets("tags", "pets", "--json")) == []
    _error(pets("restore", "pets", "@{1}"), 3)
    assert [d["id"] for d in _json(pets("datasets", "--deleted", "--json"))] == [ds_id]
    assert "already exists" in _error(pets("restore", "pets", "@{1}", "--id", ds_id[:8]), 2)
    assert pets("restore", "old-pets", "@{1}", "--id", ds_id[:8]).rc == 0
    assert _json(pets("ls", "old-pets", "--json")) == items
    assert [t["tag"] for t in _json(pets("tags", "old-pets", "--json"))] == ["snap"]
    assert len(_json(pets("ls", "pets", "--json"))) == 0
    assert pets("fsck").rc == 0
    _error(pets("restore", "x", "@{1}", "--id", "zz"), 2)
    _error(pets("restore", "x", "@{1}", "--id", "0" * 32), 3)


def test_a_revision_of_another_dataset_is_refused(pets: Any) -> None:
    assert pets("create", "other").rc == 0
    assert pets("delete", "pets").rc == 0
    assert "not of the deleted pets" in _error(pets("restore", "pets", "other@{0}"), 2)
    _error(pets("restore", "pets", "@{0}"), 3)  # {0} is the delete: no version


def test_after_gc_expiry_it_is_gone_with_a_clear_message(dvs: Any, tmp_path: Path) -> None:
    write_files(tmp_path / "p", {"a.jpg": b"only here"})
    assert dvs("create", "tmp").rc == 0
    assert dvs("add", "tmp", str(tmp_path / "p")).rc == 0
    assert dvs("delete", "tmp").rc == 0
    assert dvs("gc").rc == 0  # within retention: kept
    assert dvs("restore", "tmp", "@{1}").rc == 0
    assert dvs("delete", "tmp").rc == 0
    assert dvs("gc", "--expire", "now").rc == 0
    assert _json(dvs("datasets", "--deleted", "--json")) == []
    for args in (("reflog", "tmp"), ("tags", "tmp"), ("restore", "tmp", "@{1}")):
        err = _error(dvs(*args), 3)
        assert "Dataset not found. Name: 'tmp' (nor a deleted one whose versions gc still keeps)" in err
        assert "until gc expires" in err
    assert dvs("fsck").rc == 0


def test_a_tag_keeps_part_of_a_deleted_dataset_past_expiry(pets: Any) -> None:
    """gc keeps the reflog entries naming a tagged version: the dataset stays listed (its
    delete entry expired), and its newest remaining entry, {0}, is the tagged version."""
    tagged = _json(pets("ls", "pets@snap", "--json"))
    snap = _json(pets("tags", "pets", "--json"))[0]["version"]
    assert pets("delete", "pets").rc == 0
    assert pets("gc", "--expire", "now").rc == 0
    gone = _json(pets("datasets", "--deleted", "--json"))
    assert [(d["name"], d["head"], d["deleted"], d["tags"]) for d in gone] == [("pets", snap, None, ["snap"])]
    r = pets("reflog", "pets")
    assert r.rc == 0 and "dvs restore pets @{0}" in r.err
    assert pets("restore", "pets", "@{0}").rc == 0
    assert _json(pets("ls", "pets", "--json")) == tagged
    assert pets("fsck").rc == 0


def test_two_restores_of_one_deleted_dataset_race(pets: Any, tmp_path: Path) -> None:
    """Restoring is one transaction like any head move: of two restores of the same deleted
    dataset (under two names), the one that commits second gets exit 5 and changes nothing."""
    ds_id = _json(pets("datasets", "--json"))[0]["id"]
    assert pets("delete", "pets").rc == 0
    release, paused = tmp_path / "release", tmp_path / "paused"
    env = {**os.environ, "DVS_TEST_PAUSE_AT": "before_lmdb_commit", "DVS_TEST_PAUSE_FILE": str(release),
           "DVS_TEST_PAUSED_FILE": str(paused)}
    env.pop("DVS_STORE", None)
    a = subprocess.Popen([sys.executable, "-m", "dvstore", "--store", str(tmp_path / "store" / ".dvs"),
                          "restore", "pets", "@{1}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not paused.exists():
        assert time.monotonic() < deadline and a.poll() is None, "A never reached its pause point"
        time.sleep(0.01)
    assert pets("restore", "pets2", "@{1}", "--id", ds_id).rc == 0
    release.touch()
    _, err = a.communicate(timeout=60)
    assert a.returncode == 5 and err.startswith("error: ") and "restored by another process" in err, err
    assert [d["name"] for d in _json(pets("datasets", "--json"))] == ["pets2"]
    assert pets("fsck").rc == 0


def test_a_dataset_whose_head_was_lost_comes_back_at_an_older_version(pets: Any, tmp_path: Path) -> None:
    """docs/reliability.md section 5: delete the dangling head, restore @{2}."""
    from dvstore.storage.db import Database

    before = _json(pets("log", "pets", "--json"))
    store = Store(str(tmp_path / "store" / ".dvs"))
    head = store.datasets.get("pets").head_id
    Database(str(tmp_path / "store" / ".dvs" / "db")).write(lambda t: t.delete("objects", head))
    assert pets("fsck").rc == 6
    assert pets("delete", "pets").rc == 0
    gone = _json(pets("datasets", "--deleted", "--json"))
    assert gone[0]["head"] == head.hex() and gone[0]["items"] is None
    doc = _json(pets("restore", "pets", "@{2}", "--json"))
    assert doc["version"] == doc["restored"] == before[1]["id"]
    assert _json(pets("ls", "pets", "--json")) == _json(pets("ls", f"pets@{before[1]['id'][:12]}", "--json"))
    # The lost version stays lost: only the reflog entries naming it are left to report.
    r = pets("fsck", "--json")
    assert r.rc == 6 and {f["kind"] for f in json.loads(r.out)["findings"]} == {"reflog-dangling"}
