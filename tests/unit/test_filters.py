"""Unit tests for dvstore.filters: the dtlpy builder, documents, defaults, evaluation, errors."""

from __future__ import annotations

import heapq
import json
from typing import Any

import pytest

from dvstore.errors import FilterError
from dvstore.filters import (
    ANNOTATION_TYPES,
    DEFAULT_ANNOTATION_TYPES,
    MAX_DEPTH,
    Filters,
    FiltersKnownFields,
    FiltersMethod,
    FiltersOperations,
    FiltersOrderByDirection,
    FiltersResource,
    Query,
    compile_query,
)
from dvstore.filters_glob import compile_glob, glob_to_regex, is_glob

ITEM_DEFAULTS = [{"hidden": False}, {"type": "file"}]
ANN_DEFAULT = {"type": {"$in": list(DEFAULT_ANNOTATION_TYPES)}}


def item(filename: str, **kw: Any) -> dict[str, Any]:
    d, _, n = filename.rpartition("/")
    base: dict[str, Any] = {
        "id": kw.pop("id", filename), "filename": filename, "dir": d or "/", "name": n, "type": "file",
        "hidden": False, "annotated": False, "annotationsCount": 0,
        "createdAt": "2024-01-01T00:00:00.000Z", "updatedAt": "2024-01-01T00:00:00.000Z",
        "metadata": {"system": {"mimetype": "image/jpeg"}, "user": {}},
    }
    base.update(kw)
    return base


def ann(label: str, type_: str = "box", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": f"a-{label}", "itemId": "x", "type": type_, "label": label, "coordinates": [],
                            "attributes": [], "creator": "me", "createdAt": "2024-01-01T00:00:00.000Z",
                            "metadata": {"system": {}, "user": {}}}
    base.update(kw)
    return base


def m(q: Any, doc: dict[str, Any], anns: list[dict[str, Any]] | None = None, **kw: Any) -> bool:
    return compile_query(q, **kw).match_item(doc, anns if anns is not None else [])


def raw(expr: dict[str, Any]) -> dict[str, Any]:
    """A document with no defaults, to test evaluation rules in isolation."""
    return {"filter": expr, "useDefaults": False}


# --------------------------------------------------------------------------- builder: exact dtlpy JSON


def test_default_items_prepare_is_exact_dtlpy_json() -> None:
    assert json.dumps(Filters().prepare()) == json.dumps(
        {"filter": {"$and": ITEM_DEFAULTS}, "page": 0, "pageSize": 1000, "resource": "items"}
    )


def test_field_in_constructor() -> None:
    assert Filters(field="dir", values="/dogs").prepare()["filter"] == {"$and": [*ITEM_DEFAULTS, {"dir": "/dogs"}]}


def test_and_on_unique_field_replaces_default_or_does_not() -> None:
    f = Filters()
    f.add(field="hidden", values=True)
    f.add(field="type", values="dir")
    assert f.prepare()["filter"] == {"$and": [{"hidden": True}, {"type": "dir"}]}
    g = Filters()
    g.add(field="hidden", values=True, method=FiltersMethod.OR)
    g.add(field="name", values="a.jpg", method="or")
    assert json.dumps(g.prepare()["filter"]) == json.dumps(
        {"$or": [{"hidden": True}, {"name": "a.jpg"}], "$and": ITEM_DEFAULTS}
    )


def test_non_unique_fields_accumulate() -> None:
    f = Filters(use_defaults=False)
    f.add("dir", "/a")
    f.add("dir", "/b")
    assert f.prepare()["filter"] == {"$and": [{"dir": "/a"}, {"dir": "/b"}]}


def test_use_defaults_false_gives_empty_filter() -> None:
    assert Filters(use_defaults=False).prepare() == {"filter": {}, "page": 0, "pageSize": 1000, "resource": "items"}


def test_annotation_defaults_exclude_note_in_sdk_order() -> None:
    assert "note" in ANNOTATION_TYPES and "note" not in DEFAULT_ANNOTATION_TYPES
    assert DEFAULT_ANNOTATION_TYPES[:3] == ("box", "cube", "cube_3d") and DEFAULT_ANNOTATION_TYPES[-1] == "ref_image"
    f = Filters(resource=FiltersResource.ANNOTATION)
    assert f.prepare() == {"filter": {"$and": [ANN_DEFAULT]}, "page": 0, "pageSize": 1000, "resource": "annotations"}
    f.add("type", "note")
    assert f.prepare()["filter"] == {"$and": [{"type": "note"}]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/dogs", "/dogs/**"),
        ("/dogs/", "/dogs/**"),
        ("/dogs/*", "/dogs/*"),
        ("/dogs/**", "/dogs/**"),
        ("/dogs/a.jpg", "/dogs/a.jpg"),
        ("/dogs/*.jpg", "/dogs/*.jpg"),
        ("/v1.0/x", "/v1.0/x/**"),
        ("/.hidden", "/.hidden/**"),
    ],
)
def test_recursive_filename(value: str, expected: str) -> None:
    assert Filters(field="filename", values=value).prepare()["filter"]["$and"][-1] == {"filename": expected}


def test_recursive_filename_lists_and_operators_and_scope() -> None:
    vals = ["/a", "/b.png"]
    f = Filters(field="filename", values=vals, operator="in")
    assert f.prepare()["filter"]["$and"][-1] == {"filename": {"$in": ["/a/**", "/b.png"]}}
    assert vals == ["/a", "/b.png"]  # dtlpy mutates the caller's list; we do not
    a = Filters(resource="annotations", field="filename", values="/a")
    assert a.prepare()["filter"]["$and"][-1] == {"filename": "/a"}
    j = Filters()
    j.add_join("filename", "/a")
    assert j.prepare()["join"]["filter"] == {"$and": [{"filename": "/a"}]}
    r = Filters()
    r.recursive = False
    r.add("filename", "/a")
    assert r.prepare()["filter"]["$and"][-1] == {"filename": "/a"}


@pytest.mark.parametrize("op", ["eq", "$eq", FiltersOperations.EQUAL])
def test_operator_spellings(op: Any) -> None:
    assert Filters(field="name", values="x", operator=op).prepare()["filter"]["$and"][-1] == {"name": {"$eq": "x"}}


def test_operator_constants() -> None:
    names = {"EQUAL": "eq", "NOT_EQUAL": "ne", "GREATER_THAN": "gt", "LESS_THAN": "lt", "IN": "in", "NOT_IN": "nin",
             "NIN": "nin", "EXISTS": "exists", "MATCH": "match", "GREATER_THAN_OR_EQUAL": "gte",
             "LESS_THAN_OR_EQUAL": "lte", "OR": "or", "AND": "and"}
    for name, value in names.items():
        assert FiltersOperations[name] == value
    assert FiltersOrderByDirection.ASCENDING == "ascending" and FiltersKnownFields.DIR == "dir"
    f = Filters(use_defaults=False)
    f.add("n", 1, operator=FiltersOperations.GREATER_THAN_OR_EQUAL)
    f.add("n", 9, operator=FiltersOperations.LESS_THAN_OR_EQUAL)
    f.add("t", ["a"], operator=FiltersOperations.NOT_IN)
    assert f.prepare()["filter"] == {"$and": [{"n": {"$gte": 1}}, {"n": {"$lte": 9}}, {"t": {"$nin": ["a"]}}]}


def test_unknown_operator_and_method_messages() -> None:
    with pytest.raises(FilterError, match=r"^Unknown operator \$xyz$"):
        Filters().add("a", 1, operator="xyz")
    with pytest.raises(FilterError, match=r"^Unknown operator \$or$"):
        Filters().add("a", 1, operator=FiltersOperations.OR)
    with pytest.raises(FilterError, match=r"^Unknown method xor, please select from: or/and$"):
        Filters().add("a", 1, method="xor")
    with pytest.raises(FilterError, match="field must be a string"):
        Filters().add(3, 1)  # type: ignore[arg-type]


def test_add_join_exact_json() -> None:
    f = Filters()
    f.add_join(field="label", values="dog")
    f.add_join(field="label", values=["cat"], operator=FiltersOperations.IN, method="or")
    assert json.dumps(f.prepare()) == json.dumps({
        "filter": {"$and": ITEM_DEFAULTS}, "page": 0, "pageSize": 1000, "resource": "items",
        "join": {"on": {"resource": "annotations", "local": "itemId", "forigen": "id"},
                 "filter": {"$and": [{"label": "dog"}], "$or": [{"label": {"$in": ["cat"]}}]}},
    })
    a = Filters(resource="annotations")
    a.add_join("dir", "/x")
    assert a.prepare()["join"]["on"] == {"resource": "items", "local": "id", "forigen": "itemId"}


def test_add_join_other_resource() -> None:
    with pytest.raises(FilterError, match="^Cannot join to datasets filters$"):
        Filters(resource="datasets").add_join("a", 1)


def test_sort_by() -> None:
    f = Filters()
    f.sort_by("createdAt", FiltersOrderByDirection.DESCENDING)
    f.sort_by("name")
    p = f.prepare()
    assert list(p) == ["filter", "sort", "page", "pageSize", "resource"]
    assert p["sort"] == {"createdAt": "descending", "name": "ascending"}
    with pytest.raises(FilterError, match="^Sort can be by ascending or descending order only$"):
        f.sort_by("name", "up")


def test_page_size_capped_and_custom_filter() -> None:
    assert Filters(page_size=5000).prepare()["pageSize"] == 1000
    custom = {"$and": [{"dir": "/a"}]}
    p = Filters(custom_filter=custom).prepare()
    assert p == {"filter": {"$and": [{"dir": "/a"}]}, "resource": "items", "page": 0, "pageSize": 1000}
    assert custom == {"$and": [{"dir": "/a"}]}
    full = {"filter": {"dir": "/a"}, "resource": "items", "join": {"filter": {"label": "x"}}}
    p2 = Filters(custom_filter=full).prepare()
    assert p2["join"]["on"] == {"resource": "annotations", "local": "itemId", "forigen": "id"}
    assert "on" not in full["join"]


def test_has_field_and_pop() -> None:
    f = Filters()
    assert f.has_field("hidden")
    f.pop("hidden")
    assert not f.has_field("hidden")
    assert f.prepare()["filter"] == {"$and": [{"type": "file"}]}


def test_prepare_returns_fresh_copies() -> None:
    f = Filters(field="tags", values=["a"], operator="in")
    f.prepare()["filter"]["$and"][-1]["tags"]["$in"].append("b")
    assert f.prepare()["filter"]["$and"][-1] == {"tags": {"$in": ["a"]}}


# --------------------------------------------------------------------------- inputs and defaults


def test_input_forms_agree() -> None:
    docs = [item("/a/x.jpg"), item("/a/y.jpg", hidden=True), item("/b/z.jpg"), item("/a", type="dir")]
    f = Filters(field="dir", values="/a")
    forms: list[Any] = [f, f.prepare(), json.dumps(f.prepare()), json.dumps(f.prepare()).encode(),
                        {"$and": [{"dir": "/a"}]}, {"dir": "/a"}, {"filter": {"dir": "/a"}}, compile_query(f)]
    for form in forms:
        assert [d["filename"] for d in docs if m(form, d)] == ["/a/x.jpg"], form


def test_none_means_everything_under_defaults() -> None:
    docs = [item("/a.jpg"), item("/h.jpg", hidden=True), item("/d", type="dir")]
    assert [d["filename"] for d in docs if m(None, d)] == ["/a.jpg"]
    assert [d["filename"] for d in docs if m(None, d, purpose="clone")] == ["/a.jpg", "/h.jpg"]
    assert [d["filename"] for d in docs if m(None, d, use_defaults=False)] == ["/a.jpg", "/h.jpg", "/d"]


def test_query_constraining_a_default_field_suppresses_it() -> None:
    h = item("/h.jpg", hidden=True)
    assert m({"hidden": True}, h)
    assert m({"$or": [{"hidden": True}, {"name": "zzz"}]}, h)
    assert m({"type": {"$in": ["file", "dir"]}}, item("/d", type="dir"))
    assert not m({"name": "d"}, item("/d", type="dir"))


def test_use_defaults_sources() -> None:
    h = item("/h.jpg", hidden=True)
    assert not m({}, h)
    assert m({"useDefaults": False}, h)
    assert m(Filters(use_defaults=False), h)
    assert not m(Filters(use_defaults=False), h, use_defaults=True)
    assert m({"filter": {}}, h, use_defaults=False)
    with pytest.raises(FilterError, match="useDefaults"):
        compile_query({"useDefaults": "no"})


def test_clone_strips_hidden_false_but_keeps_explicit_hidden_true() -> None:
    h = item("/h.jpg", hidden=True)
    assert m(Filters(), h, purpose="clone")
    assert m(Filters(field="dir", values="/"), h, purpose="clone")
    assert m({"hidden": False, "dir": "/"}, h, purpose="clone")
    only_hidden = Filters()
    only_hidden.add("hidden", True)
    assert m(only_hidden, h, purpose="clone") and not m(only_hidden, item("/v.jpg"), purpose="clone")
    assert compile_query(Filters(), purpose="clone").canonical() == {"filter": {"$and": [{"type": "file"}]},
                                                                      "resource": "items"}


def test_clone_ignores_sort_and_needs_items() -> None:
    f = Filters()
    f.sort_by("name")
    assert compile_query(f, purpose="clone").sort == ()
    assert compile_query(f).sort == (("name", "ascending"),)
    with pytest.raises(FilterError, match="clone filter must select items"):
        compile_query(Filters(resource="annotations"), purpose="clone")
    with pytest.raises(ValueError, match="purpose"):
        compile_query(None, purpose="merge")  # type: ignore[arg-type]


def test_annotation_default_and_explicit_type() -> None:
    note, box = ann("x", "note"), ann("x", "box")
    q = compile_query({"resource": "annotations", "filter": {"label": "x"}})
    assert q.match_annotation(box) and not q.match_annotation(note)
    q2 = compile_query({"resource": "annotations", "filter": {"type": "note"}})
    assert q2.match_annotation(note)
    unknown = ann("x", "item_description")
    assert not q.match_annotation(unknown)  # as the SDK: the default lists known types only


def test_join_default_excludes_notes_unless_type_given() -> None:
    d = item("/a.jpg")
    f = Filters()
    f.add_join("label", "x")
    assert not compile_query(f).match_item(d, [ann("x", "note")])
    assert compile_query(f).match_item(d, [ann("x", "note"), ann("x", "box")])
    g = Filters()
    g.add_join("type", "note")
    assert compile_query(g).match_item(d, [ann("x", "note")])


def test_join_is_exists_and_the_not_equal_trap() -> None:
    f = Filters()
    f.add_join(field="label", values="cat", operator=FiltersOperations.NOT_EQUAL)
    q = compile_query(f)
    d = item("/a.jpg")
    assert q.match_item(d, [ann("cat"), ann("dog")])  # "has an annotation that is not cat"
    assert not q.match_item(d, [ann("cat")])
    assert not q.match_item(d, [])
    with pytest.raises(ValueError, match="annotations"):
        q.match_item(d, None)


def test_annotations_resource_join_on_items() -> None:
    f = Filters(resource="annotations", field="label", values="dog")
    f.add_join("dir", "/train")
    q = compile_query(f)
    a = ann("dog")
    assert q.match_annotation(a, item("/train/a.jpg")) and not q.match_annotation(a, item("/val/a.jpg"))
    with pytest.raises(ValueError, match="item"):
        q.match_annotation(a)
    with pytest.raises(ValueError, match="match_annotation"):
        q.match_item(item("/a.jpg"), [])
    with pytest.raises(ValueError, match="match_item"):
        compile_query(None).match_annotation(a)


def test_needs_annotations() -> None:
    assert not compile_query(None).needs_annotations
    assert compile_query({"annotated": True}).needs_annotations
    assert compile_query({"$or": [{"annotationsCount": {"$gt": 2}}, {"name": "x"}]}).needs_annotations
    assert compile_query({"filter": {}, "join": {"filter": {"label": "x"}}}).needs_annotations
    assert not compile_query({"resource": "annotations", "join": {"filter": {"annotated": True}}}).needs_annotations
    assert not compile_query({"metadata.system.refs": {"$match": {"annotated": True}}}).needs_annotations


def test_annotated_is_derived_from_given_annotations() -> None:
    d = item("/a.jpg", annotated=False, annotationsCount=0)
    q = compile_query({"annotated": True})
    assert q.match_item(d, [ann("x", "note")])  # G22: notes count
    assert not q.match_item(d, [])
    assert not q.match_item(d, None)  # falls back to the view's own field
    assert compile_query({"annotationsCount": 2}).match_item(d, [ann("a"), ann("b")])


# --------------------------------------------------------------------------- evaluation rules


def test_bare_value_list_and_operator_object() -> None:
    d = item("/a/x.jpg", metadata={"user": {"n": 5, "s": "b"}})
    assert m(raw({"metadata.user.n": 5}), d)
    assert m(raw({"metadata.user.n": [4, 5]}), d)
    assert not m(raw({"metadata.user.n": [4, 6]}), d)
    assert m(raw({"metadata.user.n": {"$gt": 4, "$lt": 6}}), d)
    assert not m(raw({"metadata.user.n": {"$gt": 4, "$lt": 5}}), d)
    assert m(raw({"metadata.user.n": 5, "metadata.user.s": "b"}), d)
    assert not m(raw({"metadata.user.n": 5, "metadata.user.s": "c"}), d)


def test_and_or_not_and_mongo_meaning_of_and_plus_or() -> None:
    d = item("/a/x.jpg")
    assert m(raw({"$and": [{"name": "x.jpg"}, {"dir": "/a"}]}), d)
    assert m(raw({"$or": [{"name": "nope"}, {"dir": "/a"}]}), d)
    assert not m(raw({"$not": {"dir": "/a"}}), d)
    assert m(raw({"$not": {"$or": [{"dir": "/b"}, {"name": "y"}]}}), d)
    assert not m(raw({"$and": [{"dir": "/a"}], "$or": [{"name": "nope"}]}), d)
    assert m(raw({"$and": [{"dir": "/a"}], "$or": [{"name": "nope"}, {"name": "x.jpg"}]}), d)
    assert m(raw({"$and": [{"$and": [{"$or": [{"dir": "/a"}]}]}]}), d)


def test_dotted_paths_and_arrays_any_element() -> None:
    refs = [{"type": "assignment", "id": "t1", "metadata": {"status": "completed"}},
            {"type": "task", "id": "t2", "metadata": {"status": "approved"}}]
    d = item("/a.jpg", metadata={"system": {"refs": refs}, "user": {"tags": ["a", "b"], "m": [[1, 2], 3]}})
    assert m(raw({"metadata.system.refs.id": "t2"}), d)
    assert m(raw({"metadata.system.refs.metadata.status": "approved"}), d)
    assert m(raw({"metadata.system.refs.id": {"$in": ["x", "t1"]}}), d)
    assert not m(raw({"metadata.system.refs.id": "t3"}), d)
    assert m(raw({"metadata.system.refs.id": "t1", "metadata.system.refs.type": "task"}), d)  # across elements
    assert m(raw({"metadata.user.tags": "a"}), d)  # a leaf array matches by element
    assert m(raw({"metadata.user.tags": ["a", "b"]}), d) and m(raw({"metadata.user.tags": ["z", "b"]}), d)
    assert m(raw({"metadata.user.tags": {"$eq": ["a", "b"]}}), d)  # or as a whole
    assert not m(raw({"metadata.user.tags": {"$eq": ["b", "a"]}}), d)
    assert m(raw({"metadata.user.tags": {"$ne": "z"}}), d) and not m(raw({"metadata.user.tags": {"$ne": "a"}}), d)
    assert m(raw({"metadata.user.m": {"$eq": [1, 2]}}), d) and m(raw({"metadata.user.m": 3}), d)
    assert not m(raw({"metadata.user.m": 1}), d)  # arrays are expanded one level only
    assert not m(raw({"metadata.user.tags.x": {"$exists": True}}), d)


def test_paths_through_non_dicts_and_dict_subclasses() -> None:
    from collections import OrderedDict

    d = item("/a.jpg", metadata=OrderedDict(user={"s": "x"}, system="flat"))
    assert m(raw({"metadata.user.s": "x"}), d)
    assert not m(raw({"metadata.system.mimetype": {"$exists": True}}), d)
    deep = item("/a.jpg", x={"a": {"b": {"c": {"d": 1}}}}, y=[{"a": {"b": [{"c": {"d": 2}}]}}])
    assert m(raw({"x.a.b.c.d": 1}), deep) and m(raw({"y.a.b.c.d": 2}), deep) and not m(raw({"x.a.b.c.d": 2}), deep)


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"$exists": False}, True), ({"$exists": True}, False), ({"$ne": 1}, True), ({"$nin": [1]}, True),
        ({"$eq": 1}, False), ({"$eq": None}, False), ({"$gt": 0}, False), ({"$lt": "z"}, False), ({"$in": [None]}, False),
        ({"$match": {"a": 1}}, False), ({"$not": {"$eq": 1}}, True),
    ],
)
def test_missing_path(cond: dict[str, Any], expected: bool) -> None:
    assert m(raw({"metadata.user.nope": cond}), item("/a.jpg")) is expected


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        (None, True), ({"$eq": None}, True), ({"$exists": True}, True), ({"$ne": None}, False), ({"$ne": 1}, True),
        ({"$in": [None, 1]}, True), ({"$nin": [None]}, False), ({"$gt": 0}, False), ({"$lte": "z"}, False),
        (0, False), (False, False), ("", False),
    ],
)
def test_null_value(cond: Any, expected: bool) -> None:
    assert m(raw({"metadata.user.v": cond}), item("/a.jpg", metadata={"user": {"v": None}})) is expected


@pytest.mark.parametrize(
    ("value", "cond", "expected"),
    [
        (True, 1, False), (1, True, False), (0, False, False), (True, {"$gt": 0}, False), (True, [1], False),
        (1, [True], False), (1, 1.0, True), (2.5, {"$gte": 2}, True), ("5", {"$gt": 1}, False),
        (5, {"$gt": "1"}, False), ("b", {"$gt": "a"}, True), ("2024-02-01T00:00:00Z", {"$gt": "2024-01-31"}, True),
        ([1, 5], {"$gt": 4}, True), ([1, 2], {"$gt": 4}, False), ({"a": 1}, {"a": 1}, True),
        ({"a": 1, "b": [1]}, {"b": [1], "a": 1}, True), ({"a": True}, {"a": 1}, False), ({"a": 1}, {"a": 1, "b": 2}, False),
        ([True], {"$eq": [1]}, False), (float("nan"), {"$gt": 0}, False),
    ],
)
def test_type_strict_comparisons(value: Any, cond: Any, expected: bool) -> None:
    assert m(raw({"metadata.user.v": cond}), item("/a.jpg", metadata={"user": {"v": value}})) is expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*.jpg", "a.jpg", True), ("*.jpg", "a.png", False), ("*.jpg", "d/a.jpg", False), ("a*", "abc", True),
        ("/train/**", "/train/a/b.jpg", True), ("/train/**", "/train/", True), ("/train/**", "/trainx/a", False),
        ("/train/*", "/train/a/b.jpg", False), ("/train/*", "/train/a.jpg", True), ("**.png", "/a/b/c.png", True),
        ("/a/**/b.jpg", "/a/x/y/b.jpg", True), ("/a/**/b.jpg", "/a/b.jpg", False), ("a**b", "ab", True),
        ("ab**b", "ab", False), ("/a/*/c", "/a//c", True), ("/*/*.jpg", "/a/b.jpg", True), ("*", "a/b", False),
        ("**", "a/b", True), ("a.b*", "axb", False), ("a?*", "ab", False), ("a?*", "a?b", True),
        ("[a]*", "[a]x", True), ("(x|y)*", "x", False), (r"a\*b", "a*b", True), (r"a\*b", "axb", False),
        (r"a\*", "a*", True), (r"a\\*", "a\\*", True), (r"a\\*", "a\\x", False), ("a\\b*", "a\\bc", True),
        ("a*", "a\nb", True), ("*x", "\nx", True), ("^*$", "^a$", True),
    ],
)
def test_globs(pattern: str, name: str, expected: bool) -> None:
    assert is_glob(pattern)
    assert compile_glob(pattern)(name) is expected
    assert m(raw({"x": pattern}), {"x": name}) is expected
    assert m(raw({"x": {"$ne": pattern}}), {"x": name}) is not expected
    assert m(raw({"x": {"$in": ["zzz", pattern]}}), {"x": name}) is expected
    assert m(raw({"x": {"$nin": [pattern]}}), {"x": name}) is not expected


def test_glob_only_applies_to_strings_and_regex_translation() -> None:
    assert not compile_glob("*")(5) and not compile_glob("a*")(["a"])
    assert glob_to_regex("a*b**c") == "a[^/]*b.*c"
    assert not m(raw({"x": "*"}), {"x": 1})
    assert m(raw({"x": "a*"}), {"x": ["b", "ab"]})


def test_dir_is_exact_parent_and_derived_when_absent() -> None:
    nested = item("/dogs/puppies/a.jpg")
    assert not m({"dir": "/dogs"}, nested) and m({"dir": "/dogs/puppies"}, nested)
    assert m({"filename": "/dogs/**"}, nested)
    assert m(Filters(field="filename", values="/dogs"), nested)  # recursive default
    bare = {"filename": "/dogs/a.jpg", "type": "file", "hidden": False}
    assert m({"dir": "/dogs", "name": "a.jpg"}, bare)
    assert m({"dir": "/"}, {"filename": "/a.jpg", "type": "file", "hidden": False})
    assert m(raw({"name": {"$in": ["a.jpg"]}}), bare) and not m(raw({"dir": {"$exists": True}}), {"x": 1})


def test_match_is_elem_match() -> None:
    refs = [{"type": "assignment", "id": "t1", "metadata": {"status": "completed"}},
            {"type": "task", "id": "t2", "metadata": {}}, "junk", 7]
    d = item("/a.jpg", metadata={"system": {"refs": refs, "scores": [3, 8, 12], "one": {"id": "t1"}}})
    assert not m(raw({"metadata.system.refs": {"$match": {"id": "t1", "type": "task"}}}), d)
    assert m(raw({"metadata.system.refs": {"$match": {"id": "t1", "type": "assignment"}}}), d)
    assert not m(raw({"metadata.system.refs": {"$match": {"id": "t2", "metadata.status": {"$exists": True}}}}), d)
    assert m(raw({"metadata.system.refs": {"$match": {"$not": {"type": "task"}}}}), d)
    assert m(raw({"metadata.system.scores": {"$match": {"$gt": 5, "$lt": 10}}}), d)
    assert not m(raw({"metadata.system.scores": {"$match": {"$gt": 8, "$lt": 12}}}), d)
    assert not m(raw({"metadata.system.one": {"$match": {"id": "t1"}}}), d)  # must be an array
    assert m(raw({"metadata.system.refs": {"$match": {}}}), d)  # an empty expression matches any object element


def test_field_level_not() -> None:
    d = item("/a.jpg", metadata={"user": {"n": 5}})
    assert m(raw({"metadata.user.n": {"$not": {"$gt": 6}}}), d)
    assert not m(raw({"metadata.user.n": {"$not": {"$gt": 4}}}), d)
    assert m(raw({"metadata.user.zz": {"$not": {"$gt": 4}}}), d)


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ({"$nor": []}, r"^Unknown operator \$nor$"),
        ({"a": {"$regex": "x"}}, r"^Unknown operator \$regex$"),
        ({"a": {"$xyz": 1, "$eq": 2}}, r"^Unknown operator \$xyz$"),
        ({"a": {"$in": "x"}}, r"\$in needs a list, got str"),
        ({"a": {"$nin": 1}}, r"\$nin needs a list, got int"),
        ({"$and": {"a": 1}}, r"\$and must be a non-empty list"),
        ({"$and": []}, r"\$and must be a non-empty list"),
        ({"$or": "x"}, r"\$or must be a non-empty list"),
        ({"$and": [1]}, "an expression must be an object, got int"),
        ({"$not": []}, "an expression must be an object, got list"),
        ({"a": {"$exists": 1}}, r"\$exists needs true or false, got int"),
        ({"a": {"$match": [1]}}, r"\$match on 'a' needs an object, got list"),
        ({"a": {"$gt": None}}, r"\$gt needs a number or a string, got null"),
        ({"a": {"$lte": True}}, r"\$lte needs a number or a string, got bool"),
        ({"a": {"$gt": [1]}}, r"\$gt needs a number or a string, got list"),
        ({"a": {"$not": 3}}, r"\$not on field 'a' needs an operator object"),
        ({"a": {"$eq": 1, "b": 2}}, "cannot mix operators and fields"),
        ({"": 1}, "invalid field name ''"),
        ({"a..b": 1}, "invalid field name 'a..b'"),
        ({"a.": 1}, "invalid field name"),
        ({"resource": "datasets"}, "Unsupported resource 'datasets'"),
        ({"resource": "datasets", "join": {}}, "^Cannot join to datasets filters$"),
        ({"join": {"on": {"resource": "items"}}}, "^Cannot join to items filters$"),
        ({"join": {"on": {"resource": "annotations", "local": "id", "forigen": "id"}}}, "unsupported join.on"),
        ({"join": {"filter": {}, "x": 1}}, "Unknown join key 'x'"),
        ({"join": []}, "join must be an object"),
        ({"join": {"filter": []}}, "join.filter must be an object"),
        ({"filter": [], "resource": "items"}, "filter must be an object, got list"),
        ({"filter": {}, "bogus": 1}, "Unknown query key 'bogus'"),
        ({"filter": {}, "sort": {"a": "up"}}, "^Sort can be by ascending or descending order only$"),
        ({"filter": {}, "sort": ["a"]}, "sort must be an object"),
        ({"filter": {}, "sort": {"a..b": "ascending"}}, "invalid sort field"),
        ({"filter": {}, "page": -1}, "page must be a non-negative integer"),
        ({"filter": {}, "pageSize": True}, "pageSize must be a non-negative integer"),
        ("{not json", "^the filter: not valid JSON: Expecting property name"),
        ('{"a": "\ud800"}', "^the filter: not UTF-8 text \\(byte 7\\)$"),
        ("[1, 2]", "must be a Filters entity or a DQL object. got: list"),
        (42, "must be a Filters entity or a DQL object. got: int"),
        ({"a": {1, 2}}, "not a JSON value: set"),
        ({1: 2}, "field names must be strings, got int"),
        ({"a": {"$eq": object()}}, "not a JSON value: object"),
    ],
)
def test_errors(q: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_query(q)


def test_depth_limit_and_cycles() -> None:
    deep: dict[str, Any] = {"a": 1}
    for _ in range(100):
        deep = {"$not": deep}
    with pytest.raises(FilterError, match="nested deeper"):
        compile_query(deep)
    cyc: dict[str, Any] = {}
    cyc["a"] = cyc
    with pytest.raises(FilterError, match="nested deeper"):
        compile_query(cyc)
    with pytest.raises(FilterError, match="^the filter: JSON nested too deeply$"):
        compile_query("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("key", ["$and", "$or", "$not", "match", "join"])
def test_deep_valid_queries_stop_at_the_nesting_limit(key: str) -> None:
    expr: Any = {"filename": "/a/**"}
    for _ in range(900):
        if key == "match":
            expr = {"a": {"$match": expr}}
        else:
            expr = {"$not": expr} if key == "$not" else {"$or" if key == "$or" else "$and": [expr]}
    query = {"join": {"filter": expr}} if key == "join" else expr
    with pytest.raises(FilterError, match=f"^query nested deeper than {MAX_DEPTH} levels$"):
        compile_query(query)


def test_dtlpy_extra_keys_and_enum_values_are_tolerated() -> None:
    q = compile_query({"filter": {"dir": "/a"}, "context": {"projects": ["p"]}, "systemSpace": False})
    assert q.match_item(item("/a/x.jpg"), [])
    assert m({FiltersKnownFields.DIR: {"$in": ["/a"]}}, item("/a/x.jpg"))
    assert m({"type": FiltersResource.ITEM}, item("/a/x.jpg", type="items"))


# --------------------------------------------------------------------------- canonical, sort


def test_canonical_form() -> None:
    f = Filters(field="dir", values="/a")
    f.add_join("label", "dog")
    f.sort_by("name")
    c = compile_query(f, purpose="clone").canonical()
    assert c == {
        "filter": {"$and": [{"type": "file"}, {"dir": "/a"}]},
        "join": {"filter": {"$and": [ANN_DEFAULT, {"label": "dog"}]},
                 "on": {"forigen": "id", "local": "itemId", "resource": "annotations"}},
        "resource": "items",
    }
    assert json.dumps(c) == json.dumps(c, sort_keys=True)
    c["filter"]["$and"].clear()
    assert compile_query(f, purpose="clone").canonical()["filter"]["$and"]
    nd = compile_query({"dir": "/a"}, use_defaults=False).canonical()
    assert nd == {"filter": {"dir": "/a"}, "resource": "items", "useDefaults": False}
    assert "Query(" in repr(compile_query(nd))


def test_canonical_round_trip_and_isolation_from_input() -> None:
    docs = [item("/a/x.jpg"), item("/a/h.jpg", hidden=True), item("/b/y.jpg"), item("/a", type="dir")]
    for q in [None, {"dir": "/a"}, {"useDefaults": False, "filter": {"dir": "/a"}}, {"hidden": True}]:
        for purpose in ("list", "clone"):
            c1 = compile_query(q, purpose=purpose)  # type: ignore[arg-type]
            c2 = compile_query(c1.canonical(), purpose=purpose)  # type: ignore[arg-type]
            assert [c1.match_item(d, []) for d in docs] == [c2.match_item(d, []) for d in docs]
            assert c2.canonical() == c1.canonical()
    src = {"filter": {"tags": {"$in": ["a"]}}}
    q = compile_query(src)
    src["filter"]["tags"]["$in"].append("b")
    assert not q.match_item(item("/x.jpg", tags=["b"]), [])


def test_query_passthrough_and_recompile() -> None:
    q = compile_query({"dir": "/a"})
    assert compile_query(q) is q
    c = compile_query(q, purpose="clone")
    assert c.purpose == "clone" and c.canonical()["filter"] == {"$and": [{"type": "file"}], "dir": "/a"}
    assert isinstance(c, Query)


def test_sort_items() -> None:
    docs = [item("/b.jpg", createdAt="2024-01-02", metadata={"user": {"s": 2}}),
            item("/a.jpg", createdAt="2024-01-01", metadata={"user": {"s": 2}}),
            item("/c.jpg", createdAt="2024-01-03", metadata={"user": {}}),
            item("/d.jpg", createdAt="2024-01-03", metadata={"user": {"s": "x"}}),
            item("/e.jpg", createdAt="2024-01-03", metadata={"user": {"s": True}})]
    names = lambda ds: [d["name"] for d in ds]  # noqa: E731
    assert names(compile_query({"sort": {"createdAt": "ascending"}}).sort_items(docs)) == [
        "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]
    assert names(compile_query({"sort": {"createdAt": "descending", "name": "ascending"}}).sort_items(docs)) == [
        "c.jpg", "d.jpg", "e.jpg", "b.jpg", "a.jpg"]
    # missing < numbers < strings < booleans; ties keep input order (stable)
    assert names(compile_query({"sort": {"metadata.user.s": "ascending"}}).sort_items(docs)) == [
        "c.jpg", "b.jpg", "a.jpg", "d.jpg", "e.jpg"]
    assert names(compile_query({"sort": {"metadata.user.s": "descending"}}).sort_items(docs)) == [
        "e.jpg", "d.jpg", "b.jpg", "a.jpg", "c.jpg"]
    assert names(compile_query(None).sort_items(docs)) == names(docs)
    q = compile_query({"sort": {"name": "descending"}})
    merged = heapq.merge(q.sort_items(docs[:2]), q.sort_items(docs[2:]), key=q.sort_key)
    assert names(merged) == ["e.jpg", "d.jpg", "c.jpg", "b.jpg", "a.jpg"]
    bare = [{"filename": "/z/a.jpg"}, {"filename": "/a/b.jpg"}]
    assert [d["filename"] for d in compile_query({"sort": {"dir": "ascending"}}).sort_items(bare)] == [
        "/a/b.jpg", "/z/a.jpg"]
    odd = [{"v": [1]}, {"v": {"a": 1}}, {"v": float("nan")}, {"v": None}, {"v": 1}]
    assert [d["v"] for d in compile_query({"sort": {"v": "ascending"}}).sort_items(odd)][-2:] == [{"a": 1}, [1]]


# --------------------------------------------------------------------------- SEMANTICS §4.2 examples

SEMANTICS_EXAMPLES = [
    ({"resource": "items", "filter": {"$and": [{"dir": "/dogs"}]}}, ["/dogs/a.jpg"]),
    ({"resource": "items", "filter": {"$and": [{"filename": "/train/**"}, {"metadata.user.score": {"$gt": 0.5}}]}},
     ["/train/deep/b.png"]),
    ({"resource": "items", "filter": {"$and": [{"type": "file"}]},
      "join": {"on": {"resource": "annotations", "local": "itemId", "forigen": "id"},
               "filter": {"$and": [{"label": {"$in": ["dog"]}}]}}}, ["/dogs/a.jpg"]),
    ({"resource": "items", "filter": {"$or": [{"metadata.system.mimetype": "image/*"}, {"name": "*.png"}]}},
     ["/dogs/a.jpg", "/train/c.jpg", "/train/deep/b.png"]),
    ({"resource": "items", "filter": {"metadata.system.refs": {"$match": {
        "id": "task-1", "type": "task", "metadata.status": {"$exists": True}}}}}, ["/train/c.jpg"]),
]


@pytest.fixture
def dataset() -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    items = [
        item("/dogs/a.jpg", metadata={"system": {"mimetype": "image/jpeg"}, "user": {"score": 0.2}}),
        item("/dogs/puppies/p.txt", metadata={"system": {"mimetype": "text/plain"}, "user": {}}),
        item("/train/c.jpg", metadata={"system": {"mimetype": "image/jpeg", "refs": [
            {"type": "task", "id": "task-1", "metadata": {"status": "completed"}}]}, "user": {"score": 0.4}}),
        item("/train/deep/b.png", metadata={"system": {"mimetype": "application/x-png"}, "user": {"score": 0.9}}),
        item("/train/h.jpg", hidden=True, metadata={"system": {"mimetype": "image/jpeg"}, "user": {"score": 0.9}}),
    ]
    anns = {"/dogs/a.jpg": [ann("dog", metadata={"system": {"status": "approved"}, "user": {}})],
            "/train/c.jpg": [ann("dog", "note"), ann("cat")]}
    return items, anns


@pytest.mark.parametrize(("q", "expected"), SEMANTICS_EXAMPLES)
def test_semantics_examples(q: dict[str, Any], expected: list[str], dataset: Any) -> None:
    items, anns = dataset
    cq = compile_query(q)
    assert [d["filename"] for d in items if cq.match_item(d, anns.get(d["filename"], []))] == expected


def test_semantics_annotation_example(dataset: Any) -> None:
    items, anns = dataset
    q = compile_query({"resource": "annotations", "filter": {"$and": [{"label": "dog"},
                                                                       {"metadata.system.status": "approved"}]}})
    hits = [(d["filename"], a["type"]) for d in items for a in anns.get(d["filename"], []) if q.match_annotation(a, d)]
    assert hits == [("/dogs/a.jpg", "box")]
