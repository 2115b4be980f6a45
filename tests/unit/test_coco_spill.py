"""A big COCO file's records spilled to a scratch table give exactly the in-memory frames and errors."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dvstore.errors import ImportFormatError
from dvstore.io import coco_child, coco_spill
from dvstore.io.coco_child import CocoReader


def _doc(n: int) -> dict[str, Any]:
    return {
        "images": [{"id": i, "file_name": f"d{i % 3}/img{(7 * i) % n}-{i}.jpg"} for i in range(n)],
        "annotations": [{"id": 10 * i + k, "image_id": i, "category_id": 1 + k % 2, "bbox": [i, k, 3, 4]}
                        for i in range(n) for k in range(i % 3)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _frames(path: Path, tmpdir: str | None, prefix: str = "/train") -> list[Any]:
    return list(coco_child._frames(str(path), prefix, tmpdir))


def _error(path: Path, tmpdir: str | None) -> str:
    with pytest.raises(ImportFormatError) as e:
        _frames(path, tmpdir)
    return e.value.message


@pytest.fixture
def spill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tmp dir for the scratch table, and a spill of every few records."""
    monkeypatch.setattr(coco_spill, "LIMIT", 3)
    monkeypatch.setattr(coco_spill, "FLUSH", 2)
    return str(tmp_path / "tmp")


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    return path


def _reordered(doc: dict[str, Any]) -> dict[str, Any]:
    """Annotations first, images last: references to images not read yet."""
    return {k: doc[k] for k in ("categories", "annotations", "images") if k in doc}


@pytest.mark.parametrize("limit", [1, 2, 3, 50, 10**9])
@pytest.mark.parametrize("order", ["images first", "annotations first"])
def test_spilled_frames_are_the_in_memory_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int,
                                                 order: str) -> None:
    doc = _doc(120)
    doc["images"][5]["file_name"] = "x" * 250 + "/" + "y" * 250 + "/b.jpg"  # keyed by their start: sorted
    doc["images"][6]["file_name"] = "x" * 250 + "/" + "y" * 250 + "/a.jpg"
    doc["images"][7]["file_name"] = "x" * 250 + "/" + "y" * 149 + ".jpg"  # 400 bytes with the prefix
    path = _write(tmp_path, _reordered(doc) if order == "annotations first" else doc)
    want = _frames(path, None)
    monkeypatch.setattr(coco_spill, "LIMIT", limit)
    monkeypatch.setattr(coco_spill, "FLUSH", 5)
    tmpdir = tmp_path / "tmp"
    got = _frames(path, str(tmpdir))
    assert got == want
    assert got[0] == ["ok", ["cat", "dog"], 120] and sum(len(f) for f in got[1:]) == 120  # 120 images
    names = [name for frame in got[1:] for name, _ in frame]
    assert names == sorted(names)
    assert not tmpdir.exists() or os.listdir(tmpdir) == []  # the scratch table is gone


def test_it_really_spills(tmp_path: Path, spill: str) -> None:
    path = _write(tmp_path, _doc(10))
    frames = coco_child._frames(str(path), "", spill)
    next(frames)
    assert [f for f in os.listdir(spill) if f.startswith("scratch-")]  # read from disk
    list(frames)
    assert os.listdir(spill) == []


def test_more_frames_than_one(tmp_path: Path, spill: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coco_child, "BATCH", 7)
    path = _write(tmp_path, _doc(30))
    got = _frames(path, spill)
    assert [len(f) for f in got[1:]] == [7, 7, 7, 7, 2]
    monkeypatch.setattr(coco_spill, "LIMIT", 10**9)
    assert got == _frames(path, spill)


def test_forked_reader_gives_the_same_entries(tmp_path: Path, spill: str) -> None:
    path = _write(tmp_path, _doc(300))
    ok, *frames = _frames(path, None)
    with CocoReader(str(path), "/train", spill) as r:
        assert r._pid and r.labels() == ok[1]
        got = [list(e) for e in r.entries()]
    assert got == [list(e) for f in frames for e in f]
    assert os.listdir(spill) == []


@pytest.mark.parametrize("fork", [True, False])
def test_a_reader_closed_early_leaves_no_table(tmp_path: Path, spill: str, monkeypatch: pytest.MonkeyPatch,
                                               fork: bool) -> None:
    if not fork:
        monkeypatch.setenv("DVS_NO_FORK", "1")
    path = _write(tmp_path, _doc(3000))
    r = CocoReader(str(path), "", spill)
    it = r.entries()
    next(it)
    r.close()
    assert os.listdir(spill) == []


def _bad_docs() -> list[tuple[str, dict[str, Any]]]:
    cases = []

    def case(name: str, doc: dict[str, Any]) -> None:
        cases.append((name, doc))
        cases.append((name + ", annotations first", _reordered(doc)))

    d = _doc(20)
    d["annotations"][5]["image_id"] = 99
    case("unknown image", d)
    d = _doc(20)
    d["annotations"][-1]["image_id"] = "nope"
    d["annotations"][3]["image_id"] = 77
    case("two unknown images", d)
    d = _doc(20)
    d["annotations"][7]["category_id"] = 9
    case("unknown category", d)
    d = _doc(20)
    d["images"][15]["id"] = 2
    case("duplicate image id", d)
    d = _doc(20)
    d["images"][18]["file_name"] = d["images"][1]["file_name"]
    case("file_name twice", d)
    d = _doc(20)
    d["images"][2]["file_name"], d["images"][17]["file_name"] = "caf\u00e9.jpg", "cafe\u0301.jpg"
    case("one item", d)
    d = _doc(20)
    d["images"][2]["file_name"], d["images"][17]["file_name"] = "caf\u00e9.jpg", "cafe\u0301.jpg"
    d["images"][4]["file_name"], d["images"][9]["file_name"] = "\u00c5.jpg", "A\u030a.jpg"
    d["images"][11]["file_name"] = "\u00c5.jpg".replace("\u00c5", "\u212b")  # a third spelling
    case("three clashes", d)
    d = _doc(20)
    # 4,092 bytes: a good file_name, but too long an item name under /train.
    d["images"][3]["file_name"] = "/".join(["q" * 250] * 16 + ["q" * 72 + ".jpg"])
    d["images"][12]["file_name"] = "/".join(["z" * 250] * 16 + ["z" * 72 + ".jpg"])
    d["images"][8]["file_name"] = d["images"][3]["file_name"].upper()
    case("bad item names", d)
    d = _doc(20)
    d["annotations"][4]["bbox"] = [1, 2, -3, 4]
    d["images"][19]["id"] = 0
    case("first error in the file", d)
    d = _doc(20)
    del d["images"]
    case("no images", d)
    return cases


def test_the_error_cases_are_what_they_say(tmp_path: Path) -> None:
    messages = {name: _error(_write(tmp_path, doc), None) for name, doc in _bad_docs()}
    assert "item name longer than 4096 bytes" in messages["bad item names"]
    assert messages["three clashes"].endswith("same item /train/\u00c5.jpg (file_name 'A\u030a.jpg')")  # images[9]
    assert "image_id 77 names no image" in messages["two unknown images"]


@pytest.mark.parametrize("name, doc", _bad_docs(), ids=[n for n, _ in _bad_docs()])
def test_spilled_errors_are_the_in_memory_errors(tmp_path: Path, spill: str, name: str, doc: dict[str, Any]) -> None:
    path = _write(tmp_path, doc)
    want = _error(path, None)
    assert _error(path, spill) == want
    assert os.listdir(spill) == [] if os.path.isdir(spill) else True
    with CocoReader(str(path), "/train", spill) as r, pytest.raises(ImportFormatError) as e:
        r.labels()
    assert e.value.message == want
    assert os.listdir(spill) == [] if os.path.isdir(spill) else True

