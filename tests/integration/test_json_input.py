"""JSON given to dvs by the user or read from disk: one reader, clear errors, documented codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dvstore import Store
from dvstore.errors import FilterError
from tests.conftest import write_files

ANNOTATIONS_QUERY = '{"resource": "annotations", "filter": {"label": "cat"}}'


@pytest.fixture
def pets(tmp_path: Path, dvs):  # type: ignore[no-untyped-def]
    write_files(tmp_path / "ph", {"cat/1.png": b"\x89PNG\r\n\x1a\n1", "dog/2.png": b"\x89PNG\r\n\x1a\n2"})
    assert dvs("create", "pets").rc == 0
    assert dvs("add", "pets", str(tmp_path / "ph")).rc == 0
    return dvs


def test_listing_refuses_an_annotations_query_as_clone_does(tmp_path: Path, pets) -> None:
    for args in (("ls", "pets"), ("clone", "pets", "c")):
        r = pets(*args, "--filter", ANNOTATIONS_QUERY)
        assert r.rc == 2, (args, r.err)
        assert r.err.splitlines()[0].endswith("filter must select items, not annotations"), r.err
        assert r.err.splitlines()[1].startswith("hint: ") and '"join"' in r.err


def test_items_list_refuses_an_annotations_query(store: Store) -> None:
    ds = store.datasets.create("pets")
    with pytest.raises(FilterError, match="must select items, not annotations"):
        ds.items.list(filters={"resource": "annotations", "filter": {"label": "cat"}})


DEEP_LIST = "[" * 100_000 + "]" * 100_000


def _deep_and(n: int) -> str:
    expr = '{"filename": "/cat/**"}'
    for _ in range(n):
        expr = '{"$and": [' + expr + "]}"
    return expr


def _one_error(r, rc: int, end: str) -> None:  # type: ignore[no-untyped-def]
    assert r.rc == rc, r.err
    lines = r.err.splitlines()
    assert lines[0].startswith("error: ") and lines[0].endswith(end), r.err
    assert all(line.startswith("hint: ") for line in lines[1:]), r.err


def test_deeply_nested_json_is_a_clear_error_everywhere(tmp_path: Path, pets) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP_LIST)
    deep_and = tmp_path / "and.json"
    deep_and.write_text(_deep_and(900))
    assert pets("clone", "pets", "c1").rc == 0 and pets("clone", "pets", "c2").rc == 0
    for args in (("ls", "pets", "--filter", f"@{deep}"), ("ls", "pets", "--filter", f"@{deep_and}"),
                 ("ls", "pets", "--filter", "[" * 50_000 + "]" * 50_000), ("clone", "pets", "c3", "--filter", f"@{deep_and}"),
                 ("merge", "m", "c1", "c2", "--map-labels", f"@{deep}"),
                 ("merge", "m", "c1", "c2", "--map-labels", '{"a": ' * 5000 + "1" + "}" * 5000),
                 ("create", "r", "--recipe", str(deep)), ("recipe", "switch", "pets", "--file", str(deep))):
        _one_error(pets(*args), 2, "JSON nested too deeply")
    # A filter deep enough to pass the JSON reader stops at the compiler's own limit.
    _one_error(pets("ls", "pets", "--filter", _deep_and(45)), 2, "query nested deeper than 64 levels")


def test_deeply_nested_store_and_checkout_files(tmp_path: Path, pets) -> None:
    wd = tmp_path / "W"
    assert pets("checkout", "pets", str(wd)).rc == 0
    record = (wd / ".dvs-checkout").read_bytes()
    (wd / ".dvs-checkout").write_text(DEEP_LIST)
    _one_error(pets("status", str(wd)), 2, ".dvs-checkout is malformed: JSON nested too deeply")
    (wd / ".dvs-checkout").write_bytes(record)
    assert pets("status", str(wd)).rc == 0
    config = tmp_path / "store" / ".dvs" / "config.json"
    config.write_text(DEEP_LIST)
    _one_error(pets("datasets"), 6, "config.json: JSON nested too deeply")


def test_non_regular_files_are_refused_without_blocking(tmp_path: Path, pets) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert pets("clone", "pets", "c1").rc == 0 and pets("clone", "pets", "c2").rc == 0
    for args, what in ((("add", "pets", str(tmp_path / "ph"), "--annotations", str(fifo)), f"{fifo}"),
                       (("add", "pets", str(tmp_path / "ph"), "--annotations", str(fifo), "--format", "coco"),
                        f"{fifo}"),
                       (("create", "r", "--recipe", str(fifo)), f"recipe file {fifo}"),
                       (("recipe", "switch", "pets", "--file", str(fifo)), f"recipe file {fifo}"),
                       (("ls", "pets", "--filter", f"@{fifo}"), f"filter file {fifo}"),
                       (("merge", "m", "c1", "c2", "--map-labels", f"@{fifo}"), f"label map {fifo}"),
                       (("ls", "pets", "--filter", "@/dev/null"), "filter file /dev/null")):
        _one_error(pets(*args, timeout=30), 2, f"{what}: not a regular file")
    r = pets("add", "pets", str(tmp_path / "ph"), "--annotations", str(fifo), env={"DVS_NO_FORK": "1"}, timeout=30)
    _one_error(r, 2, f"{fifo}: not a regular file")
    assert len(json.loads(pets("log", "pets", "--json").out)) == 2  # create and the first add only


BOX = [{"x": 1, "y": 2}, {"x": 3, "y": 4}]
BAD_BOX = "box coordinates must be [{\"x\": number, \"y\": number}, {\"x\": number, \"y\": number}] " \
          "(top-left, bottom-right; a rotation angle may follow), got a string"


def test_working_folder_json_coordinates_are_checked(tmp_path: Path, pets) -> None:
    store = Store(str(tmp_path / "store" / ".dvs"))
    with store.datasets.get("pets").edit("legacy") as e:  # the API stores what it is given
        e.add_annotation("/dog/2.png", {"type": "box", "label": "dog", "coordinates": [{"x": 1, "y": 2}]})
    wd = tmp_path / "W"
    assert pets("checkout", "pets", str(wd)).rc == 0
    cat = wd / "json/cat/1.png.json"
    doc = json.loads(cat.read_text())
    doc["annotations"] = [{"type": "box", "label": "cat", "coordinates": BOX},
                          {"type": "box", "label": "cat", "coordinates": "zz"}]
    cat.write_text(json.dumps(doc))
    for command in ("status", "commit"):
        _one_error(pets(command, str(wd)), 2, f"json/cat/1.png.json: annotations[1]: {BAD_BOX}")
    assert len(json.loads(pets("log", "pets", "--json").out)) == 3  # nothing committed
    doc["annotations"][1]["coordinates"] = BOX
    cat.write_text(json.dumps(doc))
    # A label edit leaves the coordinates an older version stored alone.
    dog = wd / "json/dog/2.png.json"
    ddoc = json.loads(dog.read_text())
    ddoc["annotations"][0]["label"] = "puppy"
    dog.write_text(json.dumps(ddoc))
    assert pets("commit", str(wd)).rc == 0
    anns = json.loads(pets("show", "pets", "/dog/2.png", "--json").out)["annotations"]
    assert [(a["label"], a["coordinates"]) for a in anns] == [("puppy", [{"x": 1, "y": 2}])]
    ddoc["annotations"][0]["coordinates"] = [{"x": 1, "y": 2}]  # unchanged: still accepted
    ddoc["annotations"][0]["type"] = "point"  # but a new type must fit its shape
    dog.write_text(json.dumps(ddoc))
    _one_error(pets("status", str(wd)), 2, "json/dog/2.png.json: annotations[0]: point coordinates must be "
                                           '{"x": number, "y": number}, got a list')


def test_dataloop_json_import_coordinates_are_checked(tmp_path: Path, pets) -> None:
    write_files(tmp_path / "export", {"json/cat/1.json": json.dumps(
        {"annotations": [{"type": "box", "label": "cat", "coordinates": "zz"}]}).encode()})
    r = pets("add", "pets", str(tmp_path / "ph"), "--annotations", str(tmp_path / "export" / "json"))
    _one_error(r, 2, f"json/cat/1.json: annotations[0]: {BAD_BOX}")
    assert len(json.loads(pets("log", "pets", "--json").out)) == 2
    write_files(tmp_path / "export", {"json/cat/1.json": json.dumps(
        {"annotations": [{"type": "box", "label": "cat", "coordinates": BOX},
                         {"type": "cube", "label": "cat", "coordinates": "kept as it is"}]}).encode()})
    assert pets("add", "pets", str(tmp_path / "ph"), "--annotations", str(tmp_path / "export" / "json")).rc == 0
    anns = json.loads(pets("show", "pets", "/cat/1.png", "--json").out)["annotations"]
    assert sorted((a["type"], a["coordinates"]) for a in anns) == [("box", BOX), ("cube", "kept as it is")]


def test_format_without_annotations_is_a_usage_error(tmp_path: Path, pets) -> None:
    for fmt in ("coco", "dataloop"):
        r = pets("add", "pets", str(tmp_path / "ph"), "--format", fmt)
        _one_error(r, 2, f"--format {fmt} needs an annotation file (--annotations)")
    assert len(json.loads(pets("log", "pets", "--json").out)) == 2
