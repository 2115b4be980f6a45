"""Dataloop item JSON: load, write back, round trip, and the json/ folder walk."""

from __future__ import annotations

import copy
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from dvstore.errors import CorruptionError, FilterError, ImportFormatError
from dvstore.io.dataloop import (
    JsonChunks,
    coordinates_problem,
    item_to_json,
    load_item_json,
    lookup_item_json,
    parse_json_bytes,
    read_json_file,
    walk_json_folder,
)
from dvstore.model import INTRINSIC_SYSTEM, VOLATILE_ANNOTATION_FIELDS

HEX24 = re.compile(r"^[0-9a-f]{24}$")


def dataloop_item() -> dict[str, Any]:
    """An item as Dataloop exports it to json/<name>.json (shape from Dataloop's docs)."""
    return {
        "id": "5f4d13e8cb9b964a49158464",
        "datasetId": "5f4d13ba4a958a49a7747cd9",
        "url": "https://gate.dataloop.ai/api/v1/items/5f4d13e8cb9b964a49158464",
        "dataset": "https://gate.dataloop.ai/api/v1/datasets/5f4d13ba4a958a49a7747cd9",
        "createdAt": "2020-08-31T15:14:48.000Z",
        "dir": "/items",
        "filename": "/items/000000000139.jpg",
        "type": "file",
        "hidden": False,
        "name": "000000000139.jpg",
        "metadata": {
            "fps": 25,
            "system": {
                "originalname": "file",
                "size": 161811,
                "encoding": "7bit",
                "mimetype": "image/jpeg",
                "height": 426,
                "width": 640,
                "isBinary": True,
                "exif": {},
                "tags": {"train": True, "validation": None},
                "taskStatusLog": [],
                "refs": [
                    {"type": "task", "id": "task-1", "metadata": {"status": "completed", "creator": "ann@x.io"}},
                    {"type": "assignment", "id": "asg-1", "metadata": {"status": None}},
                    {"type": "item", "id": "linked-item", "metadata": {}},
                ],
            },
            "user": {"split": "train", "weather": {"rain": 0.2}},
        },
        "annotations": [
            {
                "id": "61d5f0dfebda8c3885b7eae5",
                "datasetId": "61d5e83f5575066ffd58fcda",
                "type": "box",
                "label": "other",
                "attributes": [],
                "coordinates": [{"x": 288.81, "y": 845.49, "z": 0}, {"x": 2221.32, "y": 3528.24, "z": 0}],
                "metadata": {
                    "system": {
                        "status": "approved",
                        "startTime": 0,
                        "frame": 0,
                        "clientId": "ab0eaf4b-4dc5-471c-921f-f8928d54d1a1",
                        "automated": False,
                        "attributes": {"1": False},
                        "taskId": "task-1",
                    },
                    "user": {"note": "checked"},
                },
                "creator": "someone@example.com",
                "createdAt": "2022-01-05T19:26:23.252Z",
                "updatedBy": "someone@example.com",
                "updatedAt": "2022-01-05T19:26:23.252Z",
                "itemId": "61d5eb9d14b5b8ea83e18037",
                "url": "https://gate.dataloop.ai/api/v1/annotations/61d5f0dfebda8c3885b7eae5",
                "item": "https://gate.dataloop.ai/api/v1/items/61d5eb9d14b5b8ea83e18037",
                "dataset": "https://gate.dataloop.ai/api/v1/datasets/61d5e83f5575066ffd58fcda",
                "hash": "e8726832771219919976179815544bba59bf15d5",
                "source": "ui",
            },
            {
                "id": "61d5f0dfebda8c3885b7eae6",
                "type": "class",
                "label": "dog",
                "attributes": [],
                "metadata": {"system": {"status": None}},
            },
        ],
    }


ITEM_RECORD = {
    "filename": "/items/000000000139.jpg",
    "blob": bytes(range(32)),
    "size": 161811,
    "mimetype": "image/jpeg",
    "system": {"width": 640, "height": 426, "channels": 3},
    "hidden": False,
    "createdAt": "2024-01-01T00:00:00.000Z",
}


def to_records(loaded: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    annotations = {a["id"]: a for a in loaded["annotations"]}
    status = {"tasks": loaded["tasks"], "annotations": loaded["annotation_status"]}
    return annotations, loaded["metadata"], status


# --- load -----------------------------------------------------------------------------


def test_load_dataloop_export(tmp_path: Path) -> None:
    path = tmp_path / "000000000139.json"
    path.write_text(json.dumps(dataloop_item()), encoding="utf-8")
    got = load_item_json(path)
    assert set(got) == {"annotations", "annotation_status", "metadata", "tasks", "hidden"}
    assert got["hidden"] is False

    box, cls = got["annotations"]
    assert not (set(box) & VOLATILE_ANNOTATION_FIELDS)
    assert box == {
        "id": "61d5f0dfebda8c3885b7eae5",
        "type": "box",
        "label": "other",
        "attributes": [],
        "coordinates": [{"x": 288.81, "y": 845.49, "z": 0}, {"x": 2221.32, "y": 3528.24, "z": 0}],
        "metadata": {
            "system": {"startTime": 0, "frame": 0, "automated": False, "attributes": {"1": False}, "taskId": "task-1"},
            "user": {"note": "checked"},
        },
        "creator": "someone@example.com",
        "createdAt": "2022-01-05T19:26:23.252Z",
        "source": "ui",
    }
    assert "coordinates" not in cls  # a class annotation has none, and gets none
    assert cls["metadata"] == {"system": {}, "user": {}}
    assert got["annotation_status"] == {"61d5f0dfebda8c3885b7eae5": "approved"}

    assert got["tasks"] == {
        "task-1": {"type": "task", "status": "completed", "metadata": {"creator": "ann@x.io"}},
        "asg-1": {"type": "assignment", "status": None},
    }
    md = got["metadata"]
    assert md["user"] == {"split": "train", "weather": {"rain": 0.2}}
    assert md["fps"] == 25  # top-level metadata keys are kept
    assert not (set(md["system"]) & INTRINSIC_SYSTEM)
    assert md["system"] == {
        "exif": {},
        "tags": {"train": True, "validation": None},
        "taskStatusLog": [],
        "refs": [{"type": "item", "id": "linked-item", "metadata": {}}],
    }


def test_load_from_dict_does_not_mutate_input() -> None:
    doc = dataloop_item()
    before = copy.deepcopy(doc)
    load_item_json(doc)
    assert doc == before


def test_missing_ids_are_minted_and_parts_default() -> None:
    got = load_item_json({"annotations": [{"type": "point", "label": "eye", "coordinates": {"x": 1, "y": 2}}]})
    (a,) = got["annotations"]
    assert HEX24.match(a["id"])
    assert a["metadata"] == {"system": {}, "user": {}}
    assert got["metadata"] == {"system": {}, "user": {}}
    assert got["tasks"] == {} and got["annotation_status"] == {} and got["hidden"] is None


def test_minimal_and_empty_documents() -> None:
    assert load_item_json({})["annotations"] == []
    assert load_item_json({"annotations": None, "metadata": None})["metadata"] == {"system": {}, "user": {}}


def test_top_level_status_decides_tasks() -> None:
    doc = dataloop_item()
    doc["status"] = {"task-1": "discard", "task-new": "completed"}
    got = load_item_json(doc)
    assert got["tasks"] == {
        "task-1": {"type": "task", "status": "discard", "metadata": {"creator": "ann@x.io"}},
        "task-new": {"type": "task", "status": "completed"},
    }  # asg-1 was removed from "status", so it is gone


def test_ref_extra_fields_are_kept() -> None:
    doc = {"metadata": {"system": {"refs": [{"type": "task", "id": "t", "name": "labeling", "metadata": {}}]}}}
    got = load_item_json(doc)
    assert got["tasks"] == {"t": {"type": "task", "status": None, "ref": {"name": "labeling"}}}
    assert "refs" not in got["metadata"]["system"]


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ([], "must be an object"),
        ({"annotations": {}}, "annotations must be a list"),
        ({"annotations": ["x"]}, "annotations[0]"),
        ({"annotations": [{"label": "a"}]}, "type"),
        ({"annotations": [{"type": "box", "label": 3}]}, "label"),
        ({"annotations": [{"type": "box", "label": "a", "id": 5}]}, "annotations[0].id"),
        ({"annotations": [{"type": "box", "label": "a", "id": ""}]}, "annotations[0].id"),
        ({"annotations": [{"type": "box", "label": "a", "metadata": []}]}, "annotations[0].metadata"),
        ({"annotations": [{"type": "box", "label": "a", "metadata": {"system": 1}}]}, "metadata.system"),
        ({"annotations": [{"type": "b", "label": "a", "metadata": {"system": {"status": 3}}}]}, "status"),
        (
            {"annotations": [{"type": "b", "label": "a", "id": "x"}, {"type": "b", "label": "a", "id": "x"}]},
            "duplicate",
        ),
        ({"metadata": "x"}, "metadata"),
        ({"metadata": {"user": []}}, "metadata.user"),
        ({"metadata": {"system": {"refs": {}}}}, "refs must be a list"),
        ({"metadata": {"system": {"refs": [{"type": "task"}]}}}, "refs[0].id"),
        ({"metadata": {"system": {"refs": [{"type": "task", "id": "t", "metadata": {"status": 1}}]}}}, "status"),
        (
            {"metadata": {"system": {"refs": [{"type": "task", "id": "t"}, {"type": "assignment", "id": "t"}]}}},
            "duplicate",
        ),
        ({"status": ["done"]}, "status must be an object"),
        ({"status": {"t": 1}}, "status.t"),
        ({"status": {"": "completed"}}, "status key"),
        ({"hidden": "yes"}, "hidden"),
        ({"x": float("nan")}, "finite"),
        ({"x": 2**64}, "64 bits"),
        ({"x": (1, 2)}, "tuple"),
        ({"x": b"raw"}, "bytes"),
    ],
)
def test_malformed_documents(doc: Any, fragment: str) -> None:
    with pytest.raises(ImportFormatError) as info:
        load_item_json(doc)
    assert fragment in str(info.value)
    assert "<item json>" in str(info.value)


def test_malformed_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"annotations": [{"label": "x"}]}', encoding="utf-8")
    with pytest.raises(ImportFormatError, match=re.escape(str(path))):
        load_item_json(path)
    path.write_text("[1,", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="not valid JSON"):
        load_item_json(path)


@pytest.mark.timeout(20)
def test_reader_refuses_non_regular_files_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path, Path("/dev/null")):
        with pytest.raises(ImportFormatError, match=f"^{re.escape(str(path))}: not a regular file$"):
            read_json_file(path)
        with pytest.raises(ImportFormatError, match="not a regular file"):
            JsonChunks(path)
    with pytest.raises(FilterError, match="^filter file x: not a regular file$"):
        read_json_file(fifo, display="filter file x", error=FilterError)
    with pytest.raises(ImportFormatError, match="not a regular file"):
        load_item_json(fifo)
    with pytest.raises(ImportFormatError, match="cannot read: No such file"):
        read_json_file(tmp_path / "absent.json")
    link = tmp_path / "link.json"
    (tmp_path / "real.json").write_text('{"a": 1}')
    link.symlink_to(tmp_path / "real.json")  # the user's own path: followed
    assert read_json_file(link) == {"a": 1}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "in: JSON nested too deeply"),
        (b"[" * 101 + b"0" + b"]" * 101, "in: $" + "[0]" * 101 + ": nested deeper than 100 levels"),
        (b"{", "in: not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b'"\xff"', "in: not UTF-8 text (byte 1)"),
        (b"[NaN]", "in: NaN is not a storable number"),
        (b"[18446744073709551616]", "in: $[0]: integer 18446744073709551616 does not fit in 64 bits"),
    ],
)
def test_parse_json_bytes_raises_the_callers_error(raw: bytes, message: str) -> None:
    for error in (ImportFormatError, FilterError, CorruptionError):
        with pytest.raises(error) as info:
            parse_json_bytes(raw, "in", error=error)
        assert type(info.value) is error and info.value.message == message


# --- item_to_json ---------------------------------------------------------------------


def test_item_to_json_shape() -> None:
    loaded = load_item_json(dataloop_item())
    out = item_to_json(ITEM_RECORD, *to_records(loaded), item_id="00" * 16)
    assert {"id", "filename", "binary", "size", "metadata", "annotations", "status"} <= set(out)
    assert out["id"] == "00" * 16
    assert out["filename"] == "/items/000000000139.jpg"
    assert out["binary"] == bytes(range(32)).hex()
    assert out["size"] == 161811
    system = out["metadata"]["system"]
    assert {k: system[k] for k in ("width", "height", "channels", "size", "mimetype")} == {
        "width": 640,
        "height": 426,
        "channels": 3,
        "size": 161811,
        "mimetype": "image/jpeg",
    }
    assert system["refs"] == [
        {"type": "item", "id": "linked-item", "metadata": {}},
        {"type": "assignment", "id": "asg-1", "metadata": {"status": None}},
        {"type": "task", "id": "task-1", "metadata": {"creator": "ann@x.io", "status": "completed"}},
    ]
    assert out["status"] == {"asg-1": None, "task-1": "completed"}
    assert [a["id"] for a in out["annotations"]] == sorted(a["id"] for a in loaded["annotations"])
    statuses = {a["id"]: a["metadata"]["system"]["status"] for a in out["annotations"]}
    assert statuses == {"61d5f0dfebda8c3885b7eae5": "approved", "61d5f0dfebda8c3885b7eae6": None}
    for a in out["annotations"]:
        assert {"id", "type", "label", "attributes", "metadata"} <= set(a)
    json.dumps(out)  # plain JSON


def test_item_to_json_without_optional_layers() -> None:
    out = item_to_json(ITEM_RECORD, None, None, None, item_id="ab" * 16)
    assert out["annotations"] == [] and out["status"] == {}
    assert out["metadata"]["user"] == {}
    assert "refs" not in out["metadata"]["system"]


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    loaded = load_item_json(dataloop_item())
    out = item_to_json(ITEM_RECORD, *to_records(loaded), item_id="cd" * 16)
    path = tmp_path / "x.jpg.json"
    path.write_text(json.dumps(out, indent=2), encoding="utf-8")
    again = load_item_json(path)
    loaded["annotations"].sort(key=lambda a: a["id"])
    assert again == loaded


def test_edited_status_in_working_folder_is_seen() -> None:
    loaded = load_item_json(dataloop_item())
    out = item_to_json(ITEM_RECORD, *to_records(loaded), item_id="cd" * 16)
    out["status"]["task-1"] = "approved"
    out["annotations"][0]["metadata"]["system"]["status"] = "issue"
    out["annotations"].append({"type": "box", "label": "new", "coordinates": []})
    again = load_item_json(out)
    assert again["tasks"]["task-1"]["status"] == "approved"
    assert again["annotation_status"][out["annotations"][0]["id"]] == "issue"
    assert len(again["annotations"]) == 3 and HEX24.match(again["annotations"][2]["id"])


# --- walk_json_folder -----------------------------------------------------------------


def touch(path: Path, text: str = "{}") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_walk_json_folder(tmp_path: Path) -> None:
    root = tmp_path / "json"
    touch(root / "a.jpg.json")
    touch(root / "cats" / "1.png.json")
    touch(root / "cats" / "deep" / "x.json")
    touch(root / "cats" / "notes.txt")
    got = walk_json_folder(root)
    assert got == {
        "/a.jpg": root / "a.jpg.json",
        "/cats/1.png": root / "cats" / "1.png.json",
        "/cats/deep/x": root / "cats" / "deep" / "x.json",
    }
    assert list(got) == sorted(got)


def test_walk_empty_and_missing(tmp_path: Path) -> None:
    assert walk_json_folder(tmp_path) == {}
    with pytest.raises(ImportFormatError, match="not a directory"):
        walk_json_folder(tmp_path / "absent")
    touch(tmp_path / "file")
    with pytest.raises(ImportFormatError, match="not a directory"):
        walk_json_folder(tmp_path / "file")


@pytest.mark.parametrize(
    ("rel", "fragment"),
    [
        (".json", "empty"),
        ("sub/.json", "ends with '/'"),
        (".dvs/x.json", "reserved"),
        ("a/.dvs-checkout.json", "reserved"),
        ("bad\x01name.json", "control"),
        ("back\\slash.json", "backslash"),
    ],
)
def test_walk_rejects_hostile_names(tmp_path: Path, rel: str, fragment: str) -> None:
    touch(tmp_path / rel)
    with pytest.raises(ImportFormatError) as info:
        walk_json_folder(tmp_path)
    assert fragment in str(info.value)


def test_walk_rejects_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    touch(outside / "secret.json")
    root = tmp_path / "json"
    root.mkdir()
    os.symlink(outside / "secret.json", root / "link.json")
    with pytest.raises(ImportFormatError, match="symlink"):
        walk_json_folder(root)
    (root / "link.json").unlink()
    os.symlink(outside, root / "linkdir")
    with pytest.raises(ImportFormatError, match="symlink"):
        walk_json_folder(root)


def test_walk_rejects_names_equal_after_nfc(tmp_path: Path) -> None:
    composed = unicodedata.normalize("NFC", "\u00e9.jpg.json")
    decomposed = unicodedata.normalize("NFD", "\u00e9.jpg.json")
    touch(tmp_path / composed)
    touch(tmp_path / decomposed)
    if len(list(tmp_path.iterdir())) < 2:
        pytest.skip("file system normalises names itself")
    with pytest.raises(ImportFormatError, match="same item"):
        walk_json_folder(tmp_path)


def test_lookup_item_json(tmp_path: Path) -> None:
    mapping = {"/cats/1.jpg": tmp_path / "a", "/dogs/2": tmp_path / "b"}
    assert lookup_item_json(mapping, "/cats/1.jpg") == tmp_path / "a"
    assert lookup_item_json(mapping, "/dogs/2.png") == tmp_path / "b"  # Dataloop's stem naming
    assert lookup_item_json(mapping, "/dogs/3.png") is None
    assert lookup_item_json(mapping, "/cats/1") is None
    assert lookup_item_json({"/x": tmp_path}, "/x.d/.hidden") is None


# --- coordinates of the known annotation types ---------------------------------------

P = {"x": 1, "y": 2.5}


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("box", [[P, P], [P, {"x": 3, "y": 4, "z": 0}], [P, P, 30], [P, P, P, P]],
         ["zz", [], [P], [P, {"x": 1}], [P, {"x": "1", "y": 2}], [P, {"x": True, "y": 2}], [P, P, "a"],
          {"x": 1, "y": 2}, [P, {"x": 1, "y": 2, "z": None}], None]),
        ("point", [P, {"x": 0, "y": 0, "z": 0.5}], [[P], "p", {"x": 1}, None]),
        ("segment", [[[P, P, P]], [[P, P, P], [P, P, P]], [[], [P]]], [[P, P, P], [], [[P, "x"]], "s", None]),
        ("polyline", [[[P, P]]], [[P, P], None]),
        ("ellipse", [{"center": P, "rx": 1, "ry": 2, "angle": 0}], [{"center": P, "rx": 1, "ry": 2}, [P], None]),
        ("binary", ["data:image/png;base64,AAAA"], [[1, 2], {"size": [1, 1]}, None]),
        ("class", [None, []], [[P], {}, "x"]),
    ],
)
def test_coordinates_problem(kind: str, good: list[Any], bad: list[Any]) -> None:
    for value in good:
        assert coordinates_problem({"type": kind, "coordinates": value}) is None, value
    if kind == "class":
        assert coordinates_problem({"type": kind}) is None
    for value in bad:
        problem = coordinates_problem({"type": kind, "coordinates": value})
        assert problem is not None and problem.startswith(f"{kind} coordinates must be "), value
    assert coordinates_problem({"type": kind, "data": good[0]}) is None  # dtlpy's older name


def test_coordinates_of_other_types_are_not_checked() -> None:
    for kind in ("cube", "pose", "note", "text", "comparison", "polygon", "my-tool", 3, None):
        assert coordinates_problem({"type": kind, "coordinates": "anything"}) is None


def test_load_item_json_checks_coordinates_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "1.png.json"
    doc = {"annotations": [{"type": "box", "label": "cat", "coordinates": [P, P]},
                           {"type": "box", "label": "cat", "coordinates": "zz"}]}
    path.write_text(json.dumps(doc))
    assert len(load_item_json(path)["annotations"]) == 2  # stored faithfully unless asked
    with pytest.raises(ImportFormatError) as info:
        load_item_json(path, check_coordinates=True)
    assert info.value.message == f'{path}: annotations[1]: box coordinates must be [{{"x": number, "y": number}}, ' \
        '{"x": number, "y": number}] (top-left, bottom-right; a rotation angle may follow), got a string'
