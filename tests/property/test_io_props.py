"""Properties of the importers: total on garbage, lossless on round trips."""

from __future__ import annotations

import json
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvstore.errors import ImportFormatError
from dvstore.io.coco import CocoImport, load_coco, parse_coco, rle_counts, rle_to_png
from dvstore.io.dataloop import item_to_json, load_item_json
from dvstore.io.imageinfo import sniff
from dvstore.model import INTRINSIC_SYSTEM

# --- strategies -------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
# Values a hostile or sloppy tool might write where a COCO field goes.
sloppy = st.one_of(
    json_scalars,
    st.integers(0, 5),
    st.sampled_from(["a.jpg", "x/y.png", "/abs.jpg", "../up.jpg", "cat", ""]),
    st.lists(st.one_of(st.integers(-3, 20), st.floats(-5, 50, allow_nan=False)), max_size=8),
    st.lists(st.lists(st.integers(0, 20), max_size=8), max_size=3),
    st.fixed_dictionaries({"size": st.lists(st.integers(0, 4), max_size=3), "counts": st.one_of(
        st.lists(st.integers(-1, 16), max_size=6), st.text(alphabet="0123456789:;<=>?@ABCdefo ", max_size=6))}),
    json_values,
)  # fmt: skip


def records_of(keys: list[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(st.dictionaries(st.sampled_from(keys), sloppy, max_size=len(keys)), max_size=4)


coco_ish = st.fixed_dictionaries(
    {},
    optional={
        "images": st.one_of(records_of(["id", "file_name", "width", "height"]), sloppy),
        "annotations": st.one_of(
            records_of(["id", "image_id", "category_id", "bbox", "segmentation", "iscrowd", "area"]), sloppy
        ),
        "categories": st.one_of(records_of(["id", "name", "supercategory"]), sloppy),
    },
)


def _encode_counts(counts: list[int]) -> str:
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


@st.composite
def rles(draw: st.DrawFn) -> dict[str, Any]:
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    cuts = sorted(draw(st.lists(st.integers(0, h * w), max_size=6)))
    counts = [b - a for a, b in zip([0, *cuts], [*cuts, h * w])]
    return {"size": [h, w], "counts": draw(st.sampled_from([counts, _encode_counts(counts)]))}


@st.composite
def valid_coco(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed COCO document, then (sometimes) one field replaced by a sloppy value."""
    n_img, n_cat = draw(st.integers(0, 4)), draw(st.integers(1, 3))
    names = draw(st.lists(st.sampled_from(["a.jpg", "b/c.png", "d/e/f.jpg", "g.bmp", "h i.jpg"]),
                          min_size=n_img, max_size=n_img, unique=True))  # fmt: skip
    images = [{"id": i + 1, "file_name": n, "width": 6, "height": 6} for i, n in enumerate(names)]
    categories = [{"id": 10 + c, "name": draw(st.sampled_from(["cat", "dog", "person"])), "supercategory": "x"}
                  for c in range(n_cat)]  # fmt: skip
    anns = []
    for k in range(draw(st.integers(0, 6)) if images else 0):
        a: dict[str, Any] = {"id": k, "image_id": draw(st.integers(1, n_img)), "category_id": 10 + draw(
            st.integers(0, n_cat - 1)), "iscrowd": 0, "area": draw(st.floats(0, 100))}  # fmt: skip
        a["bbox"] = [draw(st.integers(0, 5)), draw(st.floats(0, 5)), draw(st.integers(0, 5)), 1.5]
        a["segmentation"] = draw(st.one_of(
            st.just([]),
            st.lists(st.lists(st.integers(0, 6), min_size=2, max_size=8).filter(lambda p: len(p) % 2 == 0),
                     min_size=1, max_size=2),
            rles(),
        ))  # fmt: skip
        anns.append(a)
    doc: dict[str, Any] = {"images": images, "annotations": anns, "categories": categories}
    if draw(st.booleans()):
        section = draw(st.sampled_from(["images", "annotations", "categories"]))
        if doc[section]:
            record = doc[section][draw(st.integers(0, len(doc[section]) - 1))]
            record[draw(st.sampled_from(sorted(record)))] = draw(sloppy)
    return doc


short_ids = st.text(alphabet="abcdef0123456789", min_size=1, max_size=6)
plain_keys = st.text(min_size=1, max_size=6).filter(lambda k: k not in INTRINSIC_SYSTEM and k != "refs")
plain_dicts = st.dictionaries(plain_keys, json_values, max_size=3)


@st.composite
def annotations(draw: st.DrawFn) -> dict[str, Any]:
    ann: dict[str, Any] = {
        "id": draw(short_ids),
        "type": draw(st.sampled_from(["box", "segment", "class", "point", "binary"])),
        "label": draw(st.text(max_size=8)),
        "metadata": {"system": draw(plain_dicts.map(lambda d: {k: v for k, v in d.items()
                                                              if k not in ("status", "clientId")})),
                     "user": draw(plain_dicts)},
    }  # fmt: skip
    if draw(st.booleans()):
        ann["coordinates"] = draw(json_values)
    if draw(st.booleans()):
        ann["attributes"] = draw(st.one_of(st.just([]), st.just({}), plain_dicts))
    extra = draw(st.dictionaries(st.sampled_from(["creator", "createdAt", "source", "description"]), json_scalars))
    ann.update(extra)
    return ann


@st.composite
def tasks(draw: st.DrawFn) -> dict[str, Any]:
    task: dict[str, Any] = {
        "type": draw(st.sampled_from(["task", "assignment"])),
        "status": draw(st.one_of(st.none(), st.sampled_from(["completed", "approved", "discard", "custom"]))),
    }
    md = draw(st.dictionaries(st.sampled_from(["creator", "timestamp", "taskId"]), json_scalars, max_size=2))
    if md:
        task["metadata"] = md
    rest = draw(st.dictionaries(st.sampled_from(["name", "extra"]), json_scalars, max_size=2))
    if rest:
        task["ref"] = rest
    return task


@st.composite
def loaded_items(draw: st.DrawFn) -> dict[str, Any]:
    """What ``load_item_json`` returns: annotations sorted by id (the order checkout writes)."""
    anns = draw(st.lists(annotations(), max_size=4, unique_by=lambda a: a["id"]))
    anns.sort(key=lambda a: a["id"])
    ids = [a["id"] for a in anns]
    ann_status = draw(st.dictionaries(st.sampled_from(ids), st.sampled_from(["issue", "approved", "review"])) if ids
                      else st.just({}))  # fmt: skip
    system = draw(plain_dicts)
    other_refs = draw(st.lists(st.fixed_dictionaries({"type": st.sampled_from(["item", "link"]), "id": short_ids}),
                               max_size=2))  # fmt: skip
    if other_refs:
        system["refs"] = other_refs
    metadata = {"system": system, "user": draw(plain_dicts)}
    metadata.update(draw(st.dictionaries(st.sampled_from(["fps", "startTime", "description"]), json_values)))
    return {
        "annotations": anns,
        "annotation_status": ann_status,
        "metadata": metadata,
        "tasks": draw(st.dictionaries(short_ids, tasks(), max_size=3)),
        "hidden": draw(st.booleans()),
    }


item_records = st.fixed_dictionaries(
    {
        "filename": st.just("/dir/item.jpg"),
        "blob": st.binary(min_size=32, max_size=32),
        "size": st.integers(0, 2**40),
        "mimetype": st.sampled_from(["image/png", "image/jpeg", "application/octet-stream"]),
        "system": st.fixed_dictionaries({}, optional={"width": st.integers(1, 9999), "height": st.integers(1, 9999),
                                                      "channels": st.integers(1, 4)}),
        "createdAt": st.just("2024-05-01T10:00:00.000Z"),
    }
)  # fmt: skip


def to_records(loaded: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    return (
        {a["id"]: a for a in loaded["annotations"]},
        loaded["metadata"],
        {"tasks": loaded["tasks"], "annotations": loaded["annotation_status"]},
    )


# --- imageinfo ------------------------------------------------------------------------

IMAGE_HEADS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"BM" + bytes(12) + b"\x28\x00\x00\x00",  # "BM" plus a BITMAPINFOHEADER size
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
    b"RIFF\x00\x00\x00\x00WEBPVP8X",
    b"II*\x00",
    b"MM\x00*",
]


@given(st.binary(max_size=512), st.text(max_size=20))
def test_sniff_never_raises(head: bytes, name: str) -> None:
    mimetype, fields = sniff(head, name)
    assert isinstance(mimetype, str) and mimetype
    assert set(fields) <= {"width", "height", "channels"}
    assert all(type(v) is int and v > 0 for v in fields.values())


@given(st.sampled_from(IMAGE_HEADS), st.binary(max_size=256), st.text(max_size=10))
def test_sniff_never_raises_after_a_valid_magic(magic: bytes, rest: bytes, name: str) -> None:
    mimetype, fields = sniff(magic + rest, name)
    assert mimetype.startswith("image/")
    assert all(type(v) is int and v > 0 for v in fields.values())


# --- coco -----------------------------------------------------------------------------


def _coco_outcome(doc: Any) -> CocoImport | None:
    try:
        return parse_coco(doc)
    except ImportFormatError:
        return None


@given(json_values)
def test_coco_arbitrary_json_is_success_or_import_error(doc: Any) -> None:
    _coco_outcome(doc)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(coco_ish)
def test_coco_shaped_json_is_success_or_import_error(doc: Any) -> None:
    result = _coco_outcome(doc)
    if result is not None:
        # On success every image is listed and every annotation is in the stored shape.
        assert len(result.by_file) == len(doc.get("images", []))
        for anns in result.by_file.values():
            for a in anns:
                assert a["type"] in ("box", "segment", "binary")
                assert a["metadata"]["system"]["coco"].keys() >= {"id", "category_id"}
                assert a["label"] in result.labels


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(valid_coco())
def test_coco_valid_or_corrupted_is_success_or_import_error(doc: Any) -> None:
    result = _coco_outcome(doc)
    if result is not None:
        assert sorted(result.by_file) == sorted(img["file_name"] for img in doc["images"])
        assert sum(map(len, result.by_file.values())) == len(doc["annotations"])
        ids = [a["id"] for anns in result.by_file.values() for a in anns]
        assert len(ids) == len(set(ids))
        for anns in result.by_file.values():
            for a in anns:
                assert a["metadata"]["system"]["coco"]["id"] in [x["id"] for x in doc["annotations"]]


@settings(max_examples=50)
@given(st.one_of(coco_ish, valid_coco(), json_values), st.booleans())
def test_coco_files_are_success_or_import_error(doc: Any, allow_nan: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "coco.json"
        path.write_text(json.dumps(doc, allow_nan=allow_nan), encoding="utf-8")
        try:
            load_coco(path)
        except ImportFormatError:
            pass


@settings(max_examples=50)
@given(st.binary(max_size=200))
def test_coco_garbage_bytes_are_import_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "coco.json"
        path.write_bytes(data)
        try:
            load_coco(path)
        except ImportFormatError:
            pass


@given(st.lists(st.integers(0, 10**6), max_size=30))
def test_compressed_rle_round_trip(counts: list[int]) -> None:
    total = sum(counts)
    rle = {"size": [total, 1], "counts": _encode_counts(counts)}
    assert rle_counts(rle) == (total, 1, counts)


# --- dataloop -------------------------------------------------------------------------


@given(json_values.filter(lambda v: not isinstance(v, str)))  # a str argument is a path
def test_item_json_arbitrary_is_success_or_import_error(doc: Any) -> None:
    try:
        load_item_json(doc)
    except ImportFormatError:
        pass


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(loaded_items(), item_records)
def test_item_json_round_trip(loaded: dict[str, Any], item: dict[str, Any]) -> None:
    item = {**item, "hidden": loaded["hidden"]}
    out = item_to_json(item, *to_records(loaded), item_id="ab" * 16)
    assert load_item_json(out) == loaded
    # And through the bytes a working folder holds.
    assert load_item_json(json.loads(json.dumps(out))) == loaded


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "annotations": st.lists(st.one_of(annotations(), json_values), max_size=3),
            "metadata": st.one_of(
                st.fixed_dictionaries({}, optional={"system": plain_dicts, "user": plain_dicts}), json_values
            ),
            "status": st.one_of(st.dictionaries(short_ids, st.one_of(st.none(), st.text(max_size=5))), json_values),
            "hidden": st.one_of(st.booleans(), json_values),
        },
    ),
    item_records,
)
def test_item_json_load_is_a_fixed_point(doc: dict[str, Any], item: dict[str, Any]) -> None:
    try:
        loaded = load_item_json(doc)
    except ImportFormatError:
        return
    loaded["annotations"].sort(key=lambda a: a["id"])
    loaded["hidden"] = bool(loaded["hidden"])
    out = item_to_json({**item, "hidden": loaded["hidden"]}, *to_records(loaded), item_id="cd" * 16)
    assert load_item_json(out) == loaded


# --- the fast storability check ------------------------------------------------------------

# Texts near every edge the fast path skips the full walk on: big ints, huge exponents,
# surrogate escapes, deep nesting.
edgy_fragments = st.sampled_from([
    "18446744073709551615", "18446744073709551616", "-9223372036854775808", "-9223372036854775809",
    "1234567890123456789", "1e308", "1e309", "1E+400", "-1e400", "1e-400", "1.5e-3", "0.1",
    '"\\ud800"', '"\\uDFFF"', '"\\ud83d\\ude00"', '"\\u00e9"', '"plain"', "true", "null",
])


@st.composite
def json_texts(draw: Any) -> str:
    if draw(st.booleans()):
        return json.dumps(draw(json_values))
    frags = draw(st.lists(edgy_fragments, min_size=1, max_size=4))
    depth = draw(st.sampled_from([0, 1, 50, 99, 100, 101, 150]))
    inner = "[" + ", ".join(frags) + "]"
    return "[" * depth + inner + "]" * depth


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(json_texts())
def test_fast_storability_check_agrees_with_the_full_walk(text: str) -> None:
    from dvstore.io.dataloop import check_storable, parse_json_bytes

    def full() -> str | None:
        try:
            check_storable(json.loads(text), "f")
        except ImportFormatError as e:
            return e.message
        except RecursionError:
            return "deep"
        return None

    try:
        parse_json_bytes(text.encode(), "f")
        got = None
    except ImportFormatError as e:
        got = e.message
    want = full()
    assert (got is None) == (want is None), (text[:200], got, want)
    if want is not None and want != "deep":
        assert got == want


def _without_ids(result: CocoImport) -> tuple[Any, ...]:
    files = {k: [{f: v for f, v in a.items() if f != "id"} for a in anns] for k, anns in result.by_file.items()}
    return result.labels, files, result.images, result.categories


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(st.one_of(valid_coco(), coco_ish), st.sampled_from([None, 0, 2]), st.booleans())
def test_coco_stream_reader_agrees_with_the_document_parser(doc: Any, indent: int | None, sort: bool) -> None:
    """``load_coco`` reads the file record by record; it must say what ``parse_coco`` says of
    the parsed document, whatever the layout and key order of the text."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "coco.json"
        path.write_text(json.dumps(doc, indent=indent, sort_keys=sort), encoding="utf-8")
        try:
            streamed: CocoImport | None = load_coco(path)
        except ImportFormatError:
            streamed = None
    parsed = _coco_outcome(doc)
    assert (streamed is None) == (parsed is None)
    if streamed is not None and parsed is not None:
        assert _without_ids(streamed) == _without_ids(parsed)


@st.composite
def masks(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """A mask as COCO's column-major runs, big enough for many rows and long runs."""
    h, w = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    cuts = sorted(draw(st.lists(st.integers(0, h * w), max_size=30)))
    return h, w, [b - a for a, b in zip([0, *cuts], [*cuts, h * w])]


@given(masks())
def test_rle_png_holds_the_mask(mask: tuple[int, int, list[int]]) -> None:
    # Against a plain model: pixel i of the column-major runs is set when its run's index is
    # odd; the PNG's row y, column x is pixel x * h + y, white and opaque where set.
    h, w, counts = mask
    model = []
    for k, run in enumerate(counts):
        model += [k % 2] * run
    png = rle_to_png({"size": [h, w], "counts": counts})
    pos, idat = 8, b""
    while pos < len(png):
        (length,) = struct.unpack_from(">I", png, pos)
        if png[pos + 4 : pos + 8] == b"IHDR":
            assert struct.unpack_from(">IIBB", png, pos + 8) == (w, h, 8, 6)
        elif png[pos + 4 : pos + 8] == b"IDAT":
            idat += png[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw, stride = zlib.decompress(idat), 4 * w + 1
    assert len(raw) == h * stride
    for y in range(h):
        assert raw[y * stride] == 0  # filter: none
        row = raw[y * stride + 1 : (y + 1) * stride]
        assert row == bytes(255 * model[x * h + y] for x in range(w) for _ in range(4))
