"""COCO files read a chunk at a time: every chunk boundary gives the whole-text result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvstore.errors import ImportFormatError
from dvstore.io.coco import CocoImport, load_coco
from dvstore.io.dataloop import JsonChunks

WHOLE = 1 << 20
SMALL = [*range(1, 13), 17, 31, 64]


def _doc(n: int = 4) -> dict[str, Any]:
    return {
        "info": {"v": [0, -1, 12345678901, 2.5e-3, -1.25E+2, True, False, None, "q\"\\/\b\f\n\r\t\u0001"]},
        "images": [{"id": i, "file_name": f"d\u00e9/\u20ac{i}\U0001F600.jpg", "width": 1234567, "height": 0.5}
                   for i in range(n)],
        "annotations": [{"id": 100 + i, "image_id": i, "category_id": 1 + i % 2, "bbox": [1.5, 20000, 3e2, 4],
                         "note": "\\u00e9 \u00e9 \U0001F600 \\ud83d\\ude00"} for i in range(n)],
        "categories": [{"id": 1, "name": "c\u00e9"}, {"id": 2, "name": "\u72ac"}],
    }


def _norm(imp: CocoImport) -> tuple[Any, ...]:
    """The import without its fresh annotation ids."""
    return (imp.labels, imp.images, imp.categories,
            {k: [dict(a, id=None) for a in v] for k, v in imp.by_file.items()})


def _message(path: Path, chunk: int) -> str:
    try:
        load_coco(path, chunk=chunk)
    except ImportFormatError as e:
        return e.message.split(": ", 1)[1]
    return "ok"


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("indent", [None, 0, 3])
@pytest.mark.parametrize("ascii_only", [False, True])
def test_every_chunk_size_gives_the_same_import(tmp_path: Path, bom: bool, indent: int | None, ascii_only: bool) -> None:
    path = tmp_path / "c.json"
    text = json.dumps(_doc(), indent=indent, ensure_ascii=ascii_only).replace(", ", " ,\t\r\n ")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    want = _norm(load_coco(path, chunk=WHOLE))
    assert want[0] == ["c\u00e9", "\u72ac"]
    for chunk in SMALL:
        assert _norm(load_coco(path, chunk=chunk)) == want, chunk


def test_numbers_and_literals_cut_by_a_boundary(tmp_path: Path) -> None:
    # Top-level values end where the text ends: a cut one would still decode.
    for value in ["12345", "-0.125", "1.5e-3", "1E+10", "true", "false", "null", '"x\\u00e9y"', "[1, 22, 333]"]:
        path = tmp_path / "c.json"
        path.write_text('{"images": [], "x": ' + value + "}")
        for chunk in SMALL:
            assert _message(path, chunk) == "ok", (value, chunk)


def test_chunks_read_the_text_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    text = "\u00e9a\U0001F600\u20ac" * 5
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    for chunk in SMALL:
        with JsonChunks(path, chunk) as src:
            parts = []
            while part := src.read():
                parts.append(part)
            assert "".join(parts) == text and src.eof


@pytest.mark.parametrize("text", [
    '{"images": [{"id": 1, "file_name": "a"}, , ]}',
    '{\n "images": [\n  {"id": 1, "file_name": "a"}\n  x]}',
    '{"images": [], "x": tru}',
    '{"images": [], "x": 1.}',
    '{"images": [], "x": -}',
    '{"images": [], "x": "abc',
    '{"images": [], "x": "a\\qb"}',
    '{"images": [], "x": "a\\u12"}',
    '{"images": [], "x": "a\nb"}',
    '{"images": [] "x": 1}',
    '{"images": []',
    '\n\n   {"images": [], 7: 1}',
    '[1, 2',
    '',
])
def test_json_errors_name_the_same_line_and_column(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(json.JSONDecodeError) as e:
        json.loads(text)
    want = f"not valid JSON: {e.value.msg} at line {e.value.lineno} column {e.value.colno}"
    for chunk in [*SMALL, WHOLE]:
        assert _message(path, chunk) == want, chunk


@pytest.mark.parametrize("text, fragment", [
    ('{"images": [], "x": NaN}', "NaN is not a storable number"),
    ('{"images": [], "x": -Infinity}', "-Infinity is not a storable number"),
    ('{"images": [], "x": 1e999}', "$.x: inf is not a finite number"),
    ('{"images": [], "x": [123456789012345678901234]}', "$.x[0]: integer 123456789012345678901234 does not fit"),
    ('{"images": [], "x": "\\ud800"}', "$.x: string is not valid Unicode (lone surrogate)"),
    ('{"images": [{"id": 1, "file_name": "a", "w": 18446744073709551616}]}', "$.images[0].w: integer"),
])
def test_unstorable_values_cut_by_a_boundary(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(text)
    for chunk in [*SMALL, WHOLE]:
        assert fragment in _message(path, chunk), chunk


@pytest.mark.parametrize("raw, byte", [
    (b'{"images": ["\xc3\xa9\xff"]}', 15),
    (b'\xef\xbb\xbf{"images": ["\xe2\x82"]}', 13),
    (b'{"images": ["\xf0\x9f\x98\x80\x80"]}', 17),
    (b"\xef\xbb", 0),
])
def test_not_utf8_names_the_byte_whatever_the_chunks(tmp_path: Path, raw: bytes, byte: int) -> None:
    path = tmp_path / "c.json"
    path.write_bytes(raw)
    with pytest.raises(UnicodeDecodeError) as e:
        raw.decode("utf-8-sig")
    assert e.value.start == byte
    for chunk in [*SMALL, WHOLE]:
        assert _message(path, chunk) == f"not UTF-8 text (byte {byte})", chunk


def test_extra_data_is_named_where_the_object_ends(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('  \n\n {"images": []} \n\n   x')
    for chunk in [*SMALL, WHOLE]:
        assert _message(path, chunk) == "not valid JSON: Extra data at line 3 column 16", chunk


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
_NAME = st.text(st.sampled_from("ab\u00e9\u20ac\U0001F600_-."), min_size=1, max_size=8).map(lambda s: "x" + s)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)


@st.composite
def _cocos(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(_NAME, min_size=1, max_size=5, unique=True))
    images = [{"id": i, "file_name": n, "extra": draw(_JSON)} for i, n in enumerate(names)]
    cats = [{"id": c, "name": f"c{c}\u00e9"} for c in range(1, draw(st.integers(1, 3)) + 1)]
    anns = [{"id": k, "image_id": draw(st.integers(0, len(names) - 1)),
             "category_id": draw(st.integers(1, len(cats))),
             "bbox": [draw(st.integers(0, 99)), draw(st.floats(0, 1e6)), 1, draw(st.integers(0, 10**12))],
             "extra": draw(_JSON)} for k in range(draw(st.integers(0, 6)))]
    parts = [("images", images), ("annotations", anns), ("categories", cats), ("info", draw(_JSON))]
    return dict(draw(st.permutations(parts)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=_cocos(), chunk=st.integers(1, 40), indent=st.sampled_from([None, 1, 2]), ascii_only=st.booleans(),
       bom=st.booleans())
def test_chunked_parse_equals_the_whole_text(tmp_path: Path, doc: dict[str, Any], chunk: int, indent: int | None,
                                             ascii_only: bool, bom: bool) -> None:
    path = tmp_path / "c.json"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + json.dumps(doc, indent=indent, ensure_ascii=ascii_only).encode())
    assert _norm(load_coco(path, chunk=chunk)) == _norm(load_coco(path, chunk=WHOLE))


_numbers = st.one_of(st.integers(-(2**53), 2**53), st.floats(-1e9, 1e9, allow_nan=False))
_sizes = st.one_of(st.integers(0, 2**31), st.floats(0, 1e9, allow_nan=False))


# Polygons: parts of float points (the struct path, runs of more than 128 points included),
# with an int somewhere (the maps path), or both in one annotation.
_points = st.one_of(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1, max_size=300),
                    st.lists(_numbers, min_size=1, max_size=20))
_polygons = st.lists(_points.map(lambda p: p + p[-1:] if len(p) % 2 else p), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(x=_numbers, y=_numbers, w=_sizes, h=_sizes, area=_numbers, crowd=st.integers(0, 1),
       seg=st.one_of(st.sampled_from([[], [[]]]), _polygons),
       ann_id=st.one_of(st.integers(0, 2**40), st.text(min_size=1, max_size=8)), cat=st.integers(1, 5))
def test_the_plain_fast_path_encodes_what_the_general_path_does(x, y, w, h, area, crowd, seg, ann_id,  # type: ignore[no-untyped-def]
                                                                 cat) -> None:
    from dvstore.codec import encode_canonical
    from dvstore.io.coco import _HEAD, _ID_KEY, _TAIL_COCO, _TAIL_TYPE, _annotation, _Builder

    ann = {"id": ann_id, "image_id": 1, "category_id": cat, "bbox": [x, y, w, h], "area": area,
           "iscrowd": crowd, "segmentation": seg}
    kind, coordinates, record = _annotation(dict(ann), "f.json", "annotations[0]")
    assert kind == ("box" if seg in ([], [[]]) else "segment")
    head = _HEAD + encode_canonical(coordinates) + _ID_KEY
    tail = _TAIL_COCO + encode_canonical(record) + _TAIL_TYPE[kind]
    b = _Builder("f.json", keep_images=False)
    assert b._plain(ann)
    [a] = b.by_image[1]
    assert (a.coco_id, a.label, a.body[:a.cut], a.body[a.cut:]) == (ann_id, cat, head, tail)


@pytest.mark.parametrize("points", [1, 127, 128, 129, 256, 300])
def test_long_float_polygons_encode_as_their_maps(points: int) -> None:
    # _float_points packs runs of 128 points; the cut between runs must not show.
    from dvstore.codec import encode_canonical
    from dvstore.io.coco import _float_points

    part = [i + 0.25 for i in range(2 * points)]
    assert _float_points(part) == encode_canonical([{"x": part[k], "y": part[k + 1], "z": 0}
                                                    for k in range(0, len(part), 2)])


@pytest.mark.parametrize("change", [
    {"bbox": [1, 2, -3, 4]}, {"bbox": [1, 2, 3]}, {"bbox": [1, "2", 3, 4]}, {"bbox": [1, 2, 3, True]},
    {"bbox": None, "segmentation": [[1.0, 2.0]]}, {"segmentation": {"size": [2, 2], "counts": [4]}},
    {"segmentation": [[1.0, 2.0, 3.0]]}, {"segmentation": [[1.0, 2.0], []]}, {"segmentation": [[], [1.0, 2.0]]},
    {"segmentation": [[1.0, True]]}, {"segmentation": [[1.0, "2"]]}, {"segmentation": [[1.0, None]]},
    {"segmentation": [(1.0, 2.0)]}, {"segmentation": [[[1.0, 2.0]]]}, {"segmentation": "1 2"},
    {"area": "big"}, {"iscrowd": True}, {"iscrowd": 1.0},
    {"id": ""}, {"id": True}, {"image_id": 1.5}, {"category_id": None},
])
def test_anything_but_a_plain_box_or_polygon_takes_the_general_path(change: dict[str, Any]) -> None:
    from dvstore.io.coco import _Builder

    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "area": 12, "iscrowd": 0,
           "segmentation": [], **change}
    b = _Builder("f.json", keep_images=False)
    assert not b._plain(ann)
    assert not b.by_image
