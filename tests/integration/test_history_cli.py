"""dvs diff / tag / tags / restore / reflog through a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dvstore.api import Store
from tests.conftest import write_files


@pytest.fixture
def pets(dvs: Any, tmp_path: Path) -> Any:
    """Dataset "pets" with two versions: v1 adds a, b, c; v2 edits through the library."""
    write_files(tmp_path / "photos", {"a.jpg": b"aaa", "b.jpg": b"bbb", "c.jpg": b"ccc"})
    assert dvs("create", "pets").rc == 0
    r = dvs("add", "pets", str(tmp_path / "photos"), "-m", "v1")
    assert r.rc == 0, r.err
    store = Store(str(tmp_path / "store" / ".dvs"))
    ds = store.datasets.get("pets")
    with ds.edit("v2") as e:
        e.add_bytes("/b.jpg", b"new b")
        e.delete("/c.jpg")
        e.add_bytes("/d.jpg", b"ddd")
        e.rename("/a.jpg", "/x/a.jpg")
        e.add_annotation("/x/a.jpg", {"id": "a1", "type": "box", "label": "cat", "coordinates": [1, 2]})
        e.update_metadata("/x/a.jpg", user={"split": "train"})
        e.set_task_status("/x/a.jpg", "t1", "completed")
    return dvs


def test_diff_json(pets: Any) -> None:
    r = pets("diff", "pets@~1", "pets", "--json")
    assert r.rc == 0, r.err
    doc = json.loads(r.out)
    for key in ("items", "annotations", "metadata", "status", "labels", "recipe"):
        assert key in doc
    assert doc["items"]["added"] == ["/d.jpg"]
    assert doc["items"]["removed"] == ["/c.jpg"]
    assert doc["items"]["modified"] == ["/b.jpg"]
    assert doc["items"]["renamed"] == [{"from": "/a.jpg", "to": "/x/a.jpg"}]
    assert doc["annotations"]["added"] == [{"filename": "/x/a.jpg", "id": "a1", "type": "box", "label": "cat"}]
    assert doc["annotations"]["removed"] == doc["annotations"]["modified"] == []
    assert doc["metadata"]["changed"] == [
        {"filename": "/x/a.jpg", "added": ["user.split"], "removed": [], "modified": []}
    ]
    assert doc["status"]["tasks"] == [{"filename": "/x/a.jpg", "task": "t1", "from": None, "to": "completed"}]
    assert doc["labels"] == {"change": {"cat": 1}}
    assert doc["recipe"] == {"changed": False}
    assert doc["identical"] is False


def test_diff_text_and_default_b(pets: Any) -> None:
    r = pets("diff", "pets@~1")
    assert r.rc == 0, r.err
    assert "A  /d.jpg" in r.out and "D  /c.jpg" in r.out and "M  /b.jpg" in r.out
    assert "R  /a.jpg -> /x/a.jpg" in r.out
    assert "task t1: (none) -> completed" in r.out


def test_diff_stat(pets: Any) -> None:
    r = pets("diff", "pets@~1", "pets", "--stat")
    assert r.rc == 0, r.err
    assert "items        +1 -1 ~1 modified, 1 renamed" in r.out
    assert "cat  0 -> 1 (+1)" in r.out  # few annotated items: absolute counts are cheap
    doc = json.loads(pets("diff", "pets@~1", "pets", "--stat", "--json").out)
    assert doc["items"] == {"added": 1, "removed": 1, "modified": 1, "renamed": 1, "hidden": 0}
    assert doc["annotations"] == {"added": 1, "removed": 0, "modified": 0}
    assert doc["labels"]["counts"] == {"cat": {"a": 0, "b": 1}}


def test_diff_labels_flag(pets: Any) -> None:
    doc = json.loads(pets("diff", "pets@~1", "pets", "--labels", "--json").out)
    assert doc["labels"]["counts"] == {"cat": {"a": 0, "b": 1}}


def test_diff_exit_code(pets: Any) -> None:
    assert pets("diff", "pets@~1", "pets", "--exit-code").rc == 1
    r = pets("diff", "pets@~1", "pets", "--exit-code", "--json")
    assert r.rc == 1 and json.loads(r.out)["identical"] is False
    r = pets("diff", "pets", "pets", "--exit-code")
    assert r.rc == 0 and "no differences" in r.out
    assert pets("diff", "pets@~1", "pets").rc == 0  # without --exit-code, differences are success


def test_diff_errors(pets: Any) -> None:
    r = pets("diff", "pets@nosuchtag", "pets")
    assert r.rc == 3 and r.err.startswith("error:")
    assert pets("diff", "nosuch", "pets").rc == 3
    assert pets("diff", "bad name!", "pets").rc == 2


def test_diff_two_datasets(pets: Any) -> None:
    assert pets("clone", "pets", "copy").rc == 0
    r = pets("diff", "pets", "copy", "--exit-code", "--json")
    assert r.rc == 0, r.err
    assert json.loads(r.out)["identical"] is True


def test_tag_tags_and_delete(pets: Any) -> None:
    r = pets("tag", "pets@~1", "v1", "--json")
    assert r.rc == 0, r.err
    v1 = json.loads(r.out)["version"]
    assert pets("tag", "pets", "v2").rc == 0
    rows = json.loads(pets("tags", "pets", "--json").out)
    assert [(t["tag"], t["version"]) for t in rows][0] == ("v1", v1)
    assert [t["tag"] for t in rows] == ["v1", "v2"]
    r = pets("tag", "pets", "v1")
    assert r.rc == 2 and "already exists" in r.err
    assert pets("tag", "pets", "v1", "--force").rc == 0
    assert pets("tag", "pets", "abcdef").rc == 2
    assert pets("diff", "pets@v1", "pets@v2", "--exit-code").rc == 0  # v1 was moved to the head
    assert pets("tag", "--delete", "pets", "v1").rc == 0
    assert pets("tag", "--delete", "pets", "v1").rc == 3
    assert pets("diff", "pets@v1", "pets").rc == 3


def test_restore(pets: Any) -> None:
    assert pets("tag", "pets@~1", "v1").rc == 0
    r = pets("restore", "pets", "v1", "--json")
    assert r.rc == 0, r.err
    out = json.loads(r.out)
    assert out["changed"] is True
    show = json.loads(pets("show", "pets", "--json").out)
    assert show["op"] == "restore" and show["id"] == out["version"]
    assert show["info"] == {"restored": out["restored"]}
    assert pets("diff", "pets@v1", "pets", "--exit-code").rc == 0
    files = [i["filename"] for i in json.loads(pets("ls", "pets", "--json").out)]
    assert files == ["/a.jpg", "/b.jpg", "/c.jpg"]
    r = pets("restore", "pets", "v1")
    assert r.rc == 0 and "nothing to do" in r.out
    assert pets("restore", "pets", "nosuch").rc == 3
    assert pets("restore", "pets@v1", "v1").rc == 2


def test_reflog_and_undo(pets: Any) -> None:
    before = json.loads(pets("ls", "pets", "--json").out)
    assert pets("restore", "pets", "~2").rc == 0  # back to the empty first version
    assert json.loads(pets("ls", "pets", "--json").out) == []
    log = json.loads(pets("reflog", "pets", "--json").out)
    assert [r["ref"] for r in log] == ["pets@{0}", "pets@{1}", "pets@{2}", "pets@{3}"]
    assert [r["op"] for r in log] == ["restore", "commit", "commit", "create"]
    text = pets("reflog", "pets").out
    assert "pets@{1}" in text and "restore" in text
    r = pets("restore", "pets", "@{1}")  # the documented undo
    assert r.rc == 0, r.err
    assert json.loads(pets("ls", "pets", "--json").out) == before
    assert pets("restore", "pets", "pets@{1}").rc == 0  # the NAME@{N} spelling: undo the undo
    assert json.loads(pets("ls", "pets", "--json").out) == []
    assert pets("restore", "pets", "@{42}").rc == 3


def test_an_id_prefix_names_a_version_of_that_dataset_only(pets: Any, tmp_path: Path) -> None:
    write_files(tmp_path / "o", {"o.jpg": b"other"})
    assert pets("create", "other").rc == 0
    assert pets("add", "other", str(tmp_path / "o")).rc == 0
    theirs = json.loads(pets("show", "other", "--json").out)["id"][:8]
    before = pets("ls", "pets", "--json").out
    for args in (("restore", "pets", theirs), ("tag", f"pets@{theirs}", "x"), ("ls", f"pets@{theirs}"),
                 ("show", f"pets@{theirs}"), ("log", f"pets@{theirs}"), ("clone", f"pets@{theirs}", "c")):
        r = pets(*args)
        assert r.rc == 3, (args, r.err)
        assert r.err.startswith(f"error: unknown revision pets@{theirs}\nhint: no version of pets"), r.err
    assert pets("ls", "pets", "--json").out == before
    assert pets("tags", "pets", "--json").out.strip() == "[]"
    mine = json.loads(pets("log", "pets", "--json").out)[1]["id"][:8]
    assert pets("show", f"pets@{mine}").rc == 0
    assert pets("show", f"other@{theirs}").rc == 0
