"""COCO import: coordinate conventions, RLE masks, labels, and every malformed input."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from dvstore.errors import ImportFormatError
from dvstore.io.coco import PNG_DATA_URI, CocoImport, load_coco, parse_coco, rle_counts, rle_to_png
from dvstore.io.sample import make_sample

HEX24 = re.compile(r"^[0-9a-f]{24}$")


def write(tmp_path: Path, doc: Any, name: str = "coco.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def coco(annotations: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "images": [
            {"id": 1, "file_name": "a/1.jpg", "width": 10, "height": 8},
            {"id": 2, "file_name": "b.png", "width": 4, "height": 3},
        ],
        "categories": [
            {"id": 1, "name": "cat", "supercategory": "animal"},
            {"id": 2, "name": "dog", "supercategory": "animal"},
        ],
        "annotations": annotations or [],
    }
    doc.update(extra)
    return doc


def ann(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 12.5}
    base.update(fields)
    return base


def decode_mask(uri: str) -> tuple[int, int, list[list[int]]]:
    """Decode a Dataloop binary-annotation PNG (RGBA, filter 0) into its alpha rows."""
    assert uri.startswith(PNG_DATA_URI)
    data = base64.b64decode(uri[len(PNG_DATA_URI) :])
    pos, idat = 8, b""
    width = height = 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, _, color_type = struct.unpack(">IIBB", body[:10])
            assert color_type == 6
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 4 * width + 1
    rows = []
    for y in range(height):
        row = raw[y * stride + 1 : (y + 1) * stride]
        assert all(row[i] == row[i + 3] for i in range(0, len(row), 4))  # white where opaque
        rows.append([1 if row[4 * x + 3] == 255 else 0 for x in range(width)])
    return width, height, rows


def encode_counts(counts: list[int]) -> str:
    """pycocotools ``rleToString``, ported for the test."""
    out = []
    for i, c in enumerate(counts):
        x = c - counts[i - 2] if i > 2 else c
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if ch & 0x10 else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


# --- shapes ---------------------------------------------------------------------------


def test_box_convention(tmp_path: Path) -> None:
    result = load_coco(write(tmp_path, coco([ann(bbox=[10, 20.5, 30, 40], segmentation=[])])))
    (a,) = result.by_file["a/1.jpg"]
    assert a["type"] == "box"
    assert a["label"] == "cat"
    assert a["coordinates"] == [{"x": 10, "y": 20.5, "z": 0}, {"x": 40, "y": 60.5, "z": 0}]
    assert a["attributes"] == {}
    assert a["metadata"] == {
        "system": {
            "coco": {
                "id": 7,
                "category_id": 1,
                "iscrowd": 0,
                "area": 12.5,
                "bbox": [10, 20.5, 30, 40],
                "segmentation": [],
            }
        },
        "user": {},
    }
    assert HEX24.match(a["id"])
    assert set(a) == {"id", "type", "label", "coordinates", "attributes", "metadata"}


def test_box_without_segmentation_key(tmp_path: Path) -> None:
    result = load_coco(write(tmp_path, coco([ann(bbox=[0, 0, 1, 1])])))
    assert result.by_file["a/1.jpg"][0]["type"] == "box"


def test_polygon_parts_become_one_segment(tmp_path: Path) -> None:
    seg = [[1, 2, 3, 4, 5, 6.5], [10, 10, 12, 10, 11, 14, 9, 12]]
    result = load_coco(write(tmp_path, coco([ann(bbox=[1, 2, 11, 12], segmentation=seg)])))
    (a,) = result.by_file["a/1.jpg"]
    assert a["type"] == "segment"
    assert a["coordinates"] == [
        [{"x": 1, "y": 2, "z": 0}, {"x": 3, "y": 4, "z": 0}, {"x": 5, "y": 6.5, "z": 0}],
        [{"x": 10, "y": 10, "z": 0}, {"x": 12, "y": 10, "z": 0}, {"x": 11, "y": 14, "z": 0}, {"x": 9, "y": 12, "z": 0}],
    ]
    coco_md = a["metadata"]["system"]["coco"]
    assert "segmentation" not in coco_md  # the coordinates hold it exactly
    assert coco_md["bbox"] == [1, 2, 11, 12]
    # Nothing lost: the COCO polygon comes back from the coordinates.
    assert [[v for p in part for v in (p["x"], p["y"])] for part in a["coordinates"]] == seg


def test_polygon_without_bbox(tmp_path: Path) -> None:
    doc = coco([{"id": 1, "image_id": 2, "category_id": 2, "segmentation": [[0, 0, 1, 0, 1, 1]]}])
    a = load_coco(write(tmp_path, doc)).by_file["b.png"][0]
    assert (a["type"], a["label"]) == ("segment", "dog")


def test_empty_polygon_list_falls_back_to_box(tmp_path: Path) -> None:
    a = load_coco(write(tmp_path, coco([ann(bbox=[0, 0, 2, 2], segmentation=[[]])]))).by_file["a/1.jpg"][0]
    assert a["type"] == "box"


def test_uncompressed_rle_becomes_binary_mask(tmp_path: Path) -> None:
    # 3 rows x 4 columns, column-major runs: zeros 1, ones 2, zeros 4, ones 3, zeros 2.
    rle = {"size": [3, 4], "counts": [1, 2, 4, 3, 2]}
    doc = coco([ann(image_id=2, bbox=[0, 0, 4, 3], segmentation=rle, iscrowd=1)])
    a = load_coco(write(tmp_path, doc)).by_file["b.png"][0]
    assert a["type"] == "binary"
    width, height, rows = decode_mask(a["coordinates"])
    assert (width, height) == (4, 3)
    # column 0: 0,1,1 ; column 1: 0,0,0 ; column 2: 0,1,1 ; column 3: 1,0,0
    assert rows == [[0, 0, 0, 1], [1, 0, 1, 0], [1, 0, 1, 0]]
    assert a["metadata"]["system"]["coco"]["segmentation"] == rle  # the original, verbatim
    assert a["metadata"]["system"]["coco"]["iscrowd"] == 1


def test_compressed_rle_hand_checked() -> None:
    assert rle_counts({"size": [2, 3], "counts": "321"}) == (2, 3, [3, 2, 1])
    assert rle_counts({"size": [10, 5], "counts": ":d05K"}) == (10, 5, [10, 20, 5, 15])


def test_compressed_rle_matches_port_of_encoder() -> None:
    counts = [0, 5, 100, 3, 1, 0, 2000, 77, 12, 1]
    rle = {"size": [sum(counts), 1], "counts": encode_counts(counts)}
    assert rle_counts(rle)[2] == counts


def test_compressed_rle_mask(tmp_path: Path) -> None:
    counts = [1, 2, 4, 3, 2]
    rle = {"size": [3, 4], "counts": encode_counts(counts)}
    a = load_coco(write(tmp_path, coco([ann(image_id=2, segmentation=rle)]))).by_file["b.png"][0]
    assert decode_mask(a["coordinates"])[2] == [[0, 0, 0, 1], [1, 0, 1, 0], [1, 0, 1, 0]]


def test_rle_png_is_deterministic() -> None:
    rle = {"size": [5, 5], "counts": [3, 4, 18]}
    assert rle_to_png(rle) == rle_to_png(dict(rle))


def test_extra_fields_are_kept(tmp_path: Path) -> None:
    extra = {"attributes": {"occluded": True}, "score": 0.9, "keypoints": [1, 2, 2], "num_keypoints": 1}
    a = load_coco(write(tmp_path, coco([ann(bbox=[0, 0, 1, 1], **extra)]))).by_file["a/1.jpg"][0]
    for k, v in extra.items():
        assert a["metadata"]["system"]["coco"][k] == v
    assert "image_id" not in a["metadata"]["system"]["coco"]
    assert a["attributes"] == {}


# --- files, labels, ids ---------------------------------------------------------------


def test_images_without_annotations_are_listed(tmp_path: Path) -> None:
    result = load_coco(write(tmp_path, coco([ann(bbox=[0, 0, 1, 1])])))
    assert set(result.by_file) == {"a/1.jpg", "b.png"}
    assert result.by_file["b.png"] == []


def test_missing_annotations_and_categories_keys(tmp_path: Path) -> None:
    doc = {"images": [{"id": 1, "file_name": "x.jpg"}]}
    result = load_coco(write(tmp_path, doc))
    assert result == CocoImport(labels=[], by_file={"x.jpg": []}, images={"x.jpg": {"id": 1, "file_name": "x.jpg"}})


def test_labels_in_category_id_order_and_unique(tmp_path: Path) -> None:
    doc = coco()
    doc["categories"] = [
        {"id": 9, "name": "person"},
        {"id": 2, "name": "dog", "supercategory": "animal"},
        {"id": 4, "name": "cat", "supercategory": "animal"},
        {"id": 5, "name": "dog", "supercategory": "toy"},
    ]
    doc["annotations"] = [ann(category_id=5, bbox=[0, 0, 1, 1])]
    result = load_coco(write(tmp_path, doc))
    assert result.labels == ["dog", "cat", "person"]
    assert [c["id"] for c in result.categories] == [2, 4, 5, 9]
    assert result.categories[2]["supercategory"] == "toy"
    a = result.by_file["a/1.jpg"][0]
    assert a["label"] == "dog"
    assert a["metadata"]["system"]["coco"]["category_id"] == 5  # which "dog" it was


def test_string_ids(tmp_path: Path) -> None:
    doc = {
        "images": [{"id": "img-1", "file_name": "x.jpg"}],
        "categories": [{"id": "c", "name": "cat"}],
        "annotations": [{"id": "a1", "image_id": "img-1", "category_id": "c", "bbox": [1, 1, 1, 1]}],
    }
    assert load_coco(write(tmp_path, doc)).by_file["x.jpg"][0]["metadata"]["system"]["coco"]["id"] == "a1"


def test_annotation_ids_are_fresh_and_unique(tmp_path: Path) -> None:
    anns = [ann(id=i, bbox=[0, 0, 1, 1]) for i in range(50)]
    result = load_coco(write(tmp_path, coco(anns)))
    ids = [a["id"] for a in result.by_file["a/1.jpg"]]
    assert len(set(ids)) == 50 and all(HEX24.match(i) for i in ids)


def test_utf8_bom_and_unicode_names(tmp_path: Path) -> None:
    doc = {
        "images": [{"id": 1, "file_name": "chats/\u00e9t\u00e9.jpg"}],
        "categories": [{"id": 1, "name": "chat \U0001f431"}],
    }
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    result = load_coco(path)
    assert result.labels == ["chat \U0001f431"]
    assert list(result.by_file) == ["chats/\u00e9t\u00e9.jpg"]


def test_sample_dataset_loads(tmp_path: Path) -> None:
    sample = make_sample(tmp_path, n_images=24, seed=3)
    result = load_coco(sample.annotations)
    assert result.labels == ["cat", "dog", "person"]
    assert sorted(result.by_file) == sorted(sample.files)
    types = {a["type"] for anns in result.by_file.values() for a in anns}
    assert types == {"box", "segment"}
    assert any(anns == [] for anns in result.by_file.values())
    for name in sample.files:
        assert (sample.images_dir / name).is_file()


def test_parse_coco_accepts_documents() -> None:
    assert parse_coco(coco()).labels == ["cat", "dog"]


# --- malformed input ------------------------------------------------------------------


def expect_error(tmp_path: Path, doc: Any, *fragments: str) -> ImportFormatError:
    path = write(tmp_path, doc)
    with pytest.raises(ImportFormatError) as info:
        load_coco(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text("{nope", encoding="utf-8")
    with pytest.raises(ImportFormatError, match="not valid JSON"):
        load_coco(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(b'{"images": ["\xff"]}')
    with pytest.raises(ImportFormatError, match="UTF-8"):
        load_coco(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImportFormatError, match="cannot read"):
        load_coco(tmp_path / "absent.json")


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(f'{{"images": [], "x": {text}}}', encoding="utf-8")
    with pytest.raises(ImportFormatError):
        load_coco(path)


def test_huge_int_and_deep_nesting(tmp_path: Path) -> None:
    expect_error(tmp_path, coco(info={"big": 2**70}), "64 bits")
    deep: Any = 0
    for _ in range(150):
        deep = [deep]
    expect_error(tmp_path, coco(info=deep), "nested")


def test_lone_surrogate(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"images": [], "info": "\\ud800"}', encoding="utf-8")
    with pytest.raises(ImportFormatError, match="surrogate"):
        load_coco(path)


@pytest.mark.parametrize(
    "doc", [[], "x", 3, None, {"annotations": []}, {"images": {}}, {"images": [], "annotations": {}}]
)
def test_wrong_top_level(tmp_path: Path, doc: Any) -> None:
    expect_error(tmp_path, doc)


@pytest.mark.parametrize(
    ("file_name", "fragment"),
    [
        ("/etc/passwd", "absolute"),
        ("../escape.jpg", "'..'"),
        ("a/../../b.jpg", "'..'"),
        ("a/./b.jpg", "'.'"),
        ("a\\b.jpg", "backslash"),
        ("C:/x.jpg", "drive"),
        ("a//b.jpg", "empty component"),
        ("a/\x00.jpg", "control"),
        (".dvs/objects", "reserved"),
        ("", "file_name"),
        (17, "file_name"),
    ],
)
def test_hostile_file_names(tmp_path: Path, file_name: Any, fragment: str) -> None:
    doc = {"images": [{"id": 5, "file_name": file_name}]}
    expect_error(tmp_path, doc, "images[0]", fragment)


def test_duplicate_image_id_and_file_name(tmp_path: Path) -> None:
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]}
    expect_error(tmp_path, doc, "images[1]", "duplicate image id")
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "a.jpg"}]}
    expect_error(tmp_path, doc, "images[1]", "appears twice")


def test_duplicate_category_id(tmp_path: Path) -> None:
    doc = coco()
    doc["categories"].append({"id": 1, "name": "other"})
    expect_error(tmp_path, doc, "categories[2]", "duplicate category id")


@pytest.mark.parametrize(
    "category",
    [{"name": "x"}, {"id": 3}, {"id": 3, "name": ""}, {"id": 3, "name": 4}, {"id": True, "name": "x"},
     {"id": 3, "name": "x", "supercategory": 1}, "cat"],
)  # fmt: skip
def test_bad_category(tmp_path: Path, category: Any) -> None:
    doc = coco()
    doc["categories"].append(category)
    expect_error(tmp_path, doc, "categories[2]")


def test_unknown_image_and_category(tmp_path: Path) -> None:
    expect_error(tmp_path, coco([ann(image_id=99, bbox=[0, 0, 1, 1])]), "annotations[0] (id 7)", "image_id 99")
    expect_error(tmp_path, coco([ann(category_id=42, bbox=[0, 0, 1, 1])]), "annotations[0] (id 7)", "category_id 42")


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"bbox": [0, 0, 1]}, "bbox"),
        ({"bbox": [0, 0, "1", 1]}, "bbox"),
        ({"bbox": [0, 0, True, 1]}, "bbox"),
        ({"bbox": [0, 0, -1, 1]}, "negative"),
        ({"bbox": {"x": 1}}, "bbox"),
        ({}, "neither"),
        ({"segmentation": []}, "neither"),
        ({"segmentation": [[1, 2, 3]]}, "segmentation[0]"),
        ({"segmentation": [[1, 2, "3", 4]]}, "segmentation[0]"),
        ({"segmentation": [1, 2, 3, 4]}, "segmentation"),
        ({"segmentation": "abc"}, "segmentation"),
        ({"segmentation": {"size": [2, 2], "counts": [1, 1]}}, "cover"),
        ({"segmentation": {"size": [2, 2], "counts": [5, -1]}}, "negative"),
        ({"segmentation": {"size": [2], "counts": [4]}}, "size"),
        ({"segmentation": {"size": [2, 2], "counts": {"a": 1}}}, "counts"),
        ({"segmentation": {"size": [2, 2], "counts": "4 "}}, "invalid character"),
        ({"segmentation": {"size": [2, 2], "counts": "d"}}, "mid-number"),
        ({"segmentation": {"size": [0, 0], "counts": []}}, "empty"),
        ({"segmentation": {"size": [100000, 100000], "counts": [10**10]}}, "larger"),
    ],
)
def test_bad_annotation(tmp_path: Path, fields: dict[str, Any], fragment: str) -> None:
    a = {"id": 3, "image_id": 1, "category_id": 1, **fields}
    expect_error(tmp_path, coco([a]), "annotations[0] (id 3)", fragment)


@pytest.mark.parametrize("missing", ["id", "image_id", "category_id"])
def test_annotation_missing_key(tmp_path: Path, missing: str) -> None:
    a = ann(bbox=[0, 0, 1, 1])
    del a[missing]
    expect_error(tmp_path, coco([a]), "annotations[0]", repr(missing))


def test_annotation_not_an_object(tmp_path: Path) -> None:
    expect_error(tmp_path, coco(["box"]), "annotations[0]")  # type: ignore[list-item]


def test_encoded_annotations_encode_exactly_the_stored_form(tmp_path: Path) -> None:
    """``load_coco(encoded=True)`` (bulk ingest) encodes the same annotations, canonically."""
    from dvstore import codec

    anns = [
        ann(id=1, bbox=[1, 2, 3, 4]),
        ann(id=2, image_id=1, category_id=2, segmentation=[[0, 0, 4, 0, 4, 3], [5, 5, 6, 6, 7, 5]], bbox=[0, 0, 7, 6]),
        ann(id="s3", image_id=2, iscrowd=1, segmentation={"size": [3, 4], "counts": [2, 3, 7]}, tool={"é": [1.5]}),
    ]
    path = write(tmp_path, coco(anns))
    plain, enc = load_coco(path), load_coco(path, encoded=True)
    assert enc.labels == plain.labels and enc.images == {} and set(enc.by_file) == set(plain.by_file)
    for name, dicts in plain.by_file.items():
        assert [e.coco_id for e in enc.by_file[name]] == [d["metadata"]["system"]["coco"]["id"] for d in dicts]
        for d, e in zip(dicts, enc.by_file[name]):
            raw = e.encode("abc123")
            assert codec.decode(raw) == dict(d, id="abc123")
            assert raw == codec.encode(codec.decode(raw))  # spliced, yet canonical


def test_bad_reference_is_the_first_in_file_order_whatever_the_key_order(tmp_path: Path) -> None:
    """Annotations may come before the images and categories they name: the error still
    names the first bad one as the file has them."""
    anns = [ann(id=1, bbox=[0, 0, 1, 1]), ann(id=2, image_id=5, bbox=[0, 0, 1, 1]),
            ann(id=3, category_id=9, bbox=[0, 0, 1, 1])]
    doc = coco(anns)
    text = json.dumps({"annotations": doc["annotations"], "categories": doc["categories"], "images": doc["images"]})
    path = tmp_path / "late.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ImportFormatError, match=re.escape("annotations[1] (id 2): image_id 5 names no image")):
        load_coco(path)
    del anns[1]
    path.write_text(json.dumps({"annotations": anns, **{k: v for k, v in coco().items() if k != "annotations"}}))
    with pytest.raises(ImportFormatError, match=re.escape("annotations[1] (id 3): category_id 9 names no category")):
        load_coco(path)
    with pytest.raises(ImportFormatError, match="missing 'images'"):
        parse_coco({"annotations": anns})


def test_a_streamed_list_given_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.json"
    path.write_text('{"images": [], "images": []}', encoding="utf-8")
    with pytest.raises(ImportFormatError, match="'images' appears twice"):
        load_coco(path)
