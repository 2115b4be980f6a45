"""COCO lists parsed a run of elements at a time by orjson (``coco._stream``'s ``batch``) give
exactly what parsing one element at a time with json gives: the same import, or the same
error message, whatever the file's text, its whitespace and where the chunks and runs end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvstore.errors import ImportFormatError
from dvstore.io import coco
from dvstore.io.coco import CocoImport, load_coco

pytestmark = pytest.mark.skipif(coco._fast_loads is None, reason="orjson is not installed: no runs to test")

# Strings that look like the end of an element to a search that does not know it is in one.
TRICKY = ["a}, {b", '}, {"id": 1}', "}]", "x\\y", "\u00e9\u20ac", "", " ", "{", "]}, {"]


@contextmanager
def runs(size: int, counted: list[int] | None = None) -> Iterator[None]:
    """Runs of about ``size`` characters, tried wherever the window holds any; ``counted``
    gets the number of runs that parsed."""
    real = coco._fast_loads
    assert real is not None

    def loads(text: str) -> Any:
        out = real(text)
        if counted is not None:
            counted[0] += 1
        return out

    with mock.patch.object(coco, "_BATCH", size), mock.patch.object(coco, "_BATCH_MIN", 1), \
            mock.patch.object(coco, "_fast_loads", loads):
        yield


@contextmanager
def no_runs() -> Iterator[None]:
    with mock.patch.object(coco, "_fast_loads", None):
        yield


def _norm(imp: CocoImport) -> tuple[Any, ...]:
    """The import without its fresh annotation ids."""
    return (imp.labels, imp.images, imp.categories, imp.image_count,
            {k: [dict(a, id=None) for a in v] for k, v in imp.by_file.items()})


def _encoded(imp: CocoImport) -> tuple[Any, ...]:
    return (imp.labels, imp.image_count,
            {k: [(a.coco_id, *a.split()) for a in v] for k, v in imp.by_file.items()})


def _outcome(path: Path, chunk: int, encoded: bool) -> Any:
    try:
        imp = load_coco(path, chunk=chunk, encoded=encoded)
    except ImportFormatError as e:
        return ("error", e.message)
    return _encoded(imp) if encoded else _norm(imp)


def _name_part(i: int) -> str:
    return TRICKY[i % len(TRICKY)].replace("/", "").replace("\\", "")


def _doc(n: int) -> dict[str, Any]:
    anns: list[Any] = []
    for i in range(n):
        kind = i % 5
        a: dict[str, Any] = {"id": 1000 + i, "image_id": i % 7, "category_id": 1 + i % 2, "area": 2.5,
                             "bbox": [1.5, 2, 3.25, 4], "iscrowd": 0, "segmentation": []}
        if kind == 1:
            a["segmentation"] = [[0.5, 1.5, 2.5, 3.5, 4.5, 5.5], [1, 2, 3, 4, 5, 6]]
        elif kind == 2:
            a["iscrowd"] = 1
            a["segmentation"] = {"size": [3, 4], "counts": [2, 5, 5]}
        elif kind == 3:
            a["attributes"] = [{"k": TRICKY[i % len(TRICKY)]}, {"k": {"deep": [[]]}}]
        anns.append(a)
    return {"info": {"note": "}, {"},
            "images": [{"id": i, "file_name": f"d/{_name_part(i)}{i}.jpg",
                        "width": 640, "height": 480, "extra": {"k": [1, {"x": TRICKY[i % 3]}]}} for i in range(7)],
            "annotations": anns,
            "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog", "supercategory": "}, {"}]}


@pytest.mark.parametrize("encoded", [True, False])
@pytest.mark.parametrize("style", [{}, {"indent": 2}, {"separators": (",", ":")}, {"indent": 0, "ensure_ascii": False}])
def test_runs_give_the_import_one_element_at_a_time_gives(tmp_path: Path, encoded: bool, style: dict[str, Any]) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(120), **style), encoding="utf-8")
    with no_runs():
        want = _outcome(path, 1 << 20, encoded)
    assert want[0] != "error"
    for size in (40, 300, 5000):
        for chunk in (97, 1 << 20):
            counted = [0]
            with runs(size, counted):
                assert _outcome(path, chunk, encoded) == want, (size, chunk)
            if chunk > size > 200:
                assert counted[0] > 0  # the runs were really taken


def test_a_too_deep_element_in_a_run_is_refused_as_before(tmp_path: Path) -> None:
    doc = _doc(30)
    deep: Any = 1
    for _ in range(120):
        deep = [deep]
    doc["annotations"][17]["attributes"] = deep
    doc["images"][5]["extra"] = deep
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with no_runs():
        want = _outcome(path, 1 << 20, True)
    assert want[0] == "error" and "deep" in want[1]
    with runs(200):
        assert _outcome(path, 1 << 20, True) == want


@pytest.mark.parametrize("extra", [2**70, "\U0001F600"])
def test_text_json_and_orjson_read_differently_turns_runs_off(tmp_path: Path, extra: Any) -> None:
    # orjson reads an integer beyond 64 bits as a float, and refuses a lone surrogate that
    # json takes: text that could hold either (here, a surrogate pair's escapes) is never
    # given to it.
    doc = _doc(30)
    doc["images"][3]["extra"] = extra
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with no_runs():
        want = _outcome(path, 1 << 20, False)
    counted = [0]
    with runs(200, counted):
        assert _outcome(path, 1 << 20, False) == want
    assert counted[0] == 0


# Mostly text where runs are taken (no integer beyond 64 bits, no 3-digit exponent, nothing
# escaped as a surrogate pair: see the test above), and in some examples one odd element or
# one changed character.
_text = st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",)), max_size=6)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.integers(-10**9, 10**9).map(lambda k: k / 1024), st.sampled_from(TRICKY), _text)
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                          st.dictionaries(st.sampled_from(["a", "b", "id", "x"]), inner,
                                                                          max_size=3)), max_leaves=8)
_points = st.lists(st.floats(-1e4, 1e4), min_size=3, max_size=4).map(lambda xs: [v for x in xs for v in (x, x + 1)])
_plain = st.fixed_dictionaries({
    "id": st.integers(0, 10**6), "image_id": st.integers(0, 5), "category_id": st.integers(1, 2),
    "area": st.floats(0, 1e6), "bbox": st.lists(st.floats(0, 1e4), min_size=4, max_size=4), "iscrowd": st.just(0),
    "segmentation": st.one_of(st.just([]), st.lists(_points, min_size=1, max_size=2))})
_odd = st.one_of(
    st.dictionaries(st.sampled_from(["id", "image_id", "category_id", "bbox", "segmentation", "attributes"]), _values,
                    max_size=6),
    _plain.map(lambda a: dict(a, attributes=[{"k": "}, {"}, {"k": [1]}])),
    _plain.map(lambda a: dict(a, image_id="a}, {")),
    _values,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images=st.lists(st.fixed_dictionaries({"file_name": st.sampled_from(["a.jpg", "b/c.png", "}, {.jpg"]),
                                              "extra": _values}), min_size=6, max_size=8),
       anns=st.lists(_plain, max_size=40), odd=st.one_of(st.none(), st.tuples(st.integers(0, 40), _odd)),
       style=st.sampled_from([{}, {"indent": 1}, {"separators": (",", ":")}, {"ensure_ascii": False}]),
       cut=st.one_of(st.none(), st.none(), st.tuples(st.integers(0, 10**6),
                                                     st.sampled_from(["", "x", ",", "}", "{", "\"", "]", "1", " "]))),
       size=st.integers(10, 3000), chunk=st.sampled_from([13, 200, 1 << 20, 1 << 20]), encoded=st.booleans())
def test_runs_agree_with_json_on_any_text(tmp_path: Path, images: list[dict[str, Any]], anns: list[Any],
                                          odd: tuple[int, Any] | None, style: dict[str, Any],
                                          cut: tuple[int, str] | None, size: int, chunk: int, encoded: bool) -> None:
    if odd is not None:
        anns = [*anns[:odd[0]], odd[1], *anns[odd[0]:]]
    doc = {"images": [dict(img, id=i, file_name=f"{i}/{img['file_name']}") for i, img in enumerate(images)],
           "annotations": anns, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    text = json.dumps(doc, **style)
    if cut is not None:  # one character replaced (or dropped): broken or different JSON
        at, put = cut[0] % (len(text) + 1), cut[1]
        text = text[:at] + put + text[at + 1:]
    path = tmp_path / "c.json"
    path.write_text(text, encoding="utf-8")
    with no_runs():
        want = _outcome(path, chunk, encoded)
    with runs(size):
        assert _outcome(path, chunk, encoded) == want


@settings(max_examples=500, deadline=None)
@given(digits=st.text("0123456789", min_size=1, max_size=18), point=st.integers(0, 18),
       exponent=st.one_of(st.none(), st.integers(-99, 99)), negative=st.booleans())
def test_orjson_reads_the_numbers_runs_may_hold_as_json_does(digits: str, point: int, exponent: int | None,
                                                             negative: bool) -> None:
    # Runs hold no 19-digit run and no 3-digit exponent (``suspect``): within that, every
    # number must read as json reads it, to the bit.
    whole, frac = digits[:point].lstrip("0") or "0", digits[point:]
    text = ("-" if negative else "") + whole + (f".{frac}" if frac else "") + ("" if exponent is None else f"e{exponent}")
    assert coco._fast_loads is not None
    got, want = coco._fast_loads(f"[{text}]")[0], json.loads(text)
    assert type(got) is type(want) and got == want and str(got) == str(want)
