"""Hypothesis properties of dvstore.filters: boolean algebra, builder/JSON agreement, globs,
canonical round trips, sorting, and "any JSON in, FilterError or a bool out"."""

from __future__ import annotations

import json
import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvstore.errors import FilterError
from dvstore.filters import Filters, FiltersOperations, compile_query
from dvstore.filters_glob import compile_glob, glob_to_regex

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)

# --------------------------------------------------------------------------- strategies (local: filter-specific)

STRINGS = ["", "a", "b", "a*", "*", "**", "/x/**", "/x", "x.jpg", "*.jpg", "/x/*", "task", "dog", "cat", "note"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(-3, 3, allow_nan=False), st.sampled_from(STRINGS),
)
FIELDS = ["name", "dir", "filename", "hidden", "type", "metadata.user.score", "metadata.user.tags",
          "metadata.user.nested.k", "metadata.system.refs.id", "metadata.system.refs", "metadata.user.missing"]
fields = st.sampled_from(FIELDS)
orderables = st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False), st.sampled_from(["", "a", "b", "/x"]))


def _cond(field: str, kind: str, v: Any) -> dict[str, Any]:
    return {field: v} if kind == "bare" else {field: {kind: v}}


conditions = st.one_of(
    st.builds(_cond, fields, st.sampled_from(["bare", "$eq", "$ne"]), scalars),
    st.builds(_cond, fields, st.sampled_from(["bare", "$in", "$nin"]), st.lists(scalars, max_size=3)),
    st.builds(_cond, fields, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), orderables),
    st.builds(_cond, fields, st.just("$exists"), st.booleans()),
    st.builds(lambda v: {"metadata.system.refs": {"$match": {"type": v}}}, st.sampled_from(["task", "assignment"])),
    st.builds(lambda a, b: {"metadata.user.tags": {"$gt": a, "$lt": b}}, orderables, orderables),
)
exprs = st.recursive(
    conditions,
    lambda ch: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(ch, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(ch, min_size=1, max_size=3)),
        st.builds(lambda x: {"$not": x}, ch),
    ),
    max_leaves=6,
)

_MISSING = object()


def _make_item(d: str, n: str, hidden: bool, type_: str, score: Any, tags: Any, nested: Any,
               refs: list[dict[str, Any]]) -> dict[str, Any]:
    user: dict[str, Any] = {}
    for k, v in (("score", score), ("tags", tags), ("nested", nested)):
        if v is not _MISSING:
            user[k] = v
    return {"id": f"{d}/{n}", "filename": (d.rstrip("/") + "/" + n), "dir": d, "name": n, "type": type_,
            "hidden": hidden, "annotated": False, "annotationsCount": 0,
            "metadata": {"system": {"refs": refs}, "user": user}}


def _optional(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.just(_MISSING), s)


items = st.builds(
    _make_item,
    st.sampled_from(["/", "/x", "/x/y"]), st.sampled_from(["a.jpg", "b.png", "x.jpg", "*"]), st.booleans(),
    st.sampled_from(["file", "dir"]), _optional(scalars), _optional(st.lists(scalars, max_size=3)),
    _optional(st.one_of(scalars, st.fixed_dictionaries({"k": scalars}), st.lists(st.fixed_dictionaries({"k": scalars}),
                                                                                  max_size=2))),
    st.lists(st.fixed_dictionaries({"id": st.sampled_from(["a", "b"]), "type": st.sampled_from(["task", "assignment"])}),
             max_size=2),
)
annotations = st.lists(
    st.fixed_dictionaries({"id": st.sampled_from(["1", "2"]), "type": st.sampled_from(["box", "note", "class"]),
                           "label": st.sampled_from(["dog", "cat"]),
                           "metadata": st.fixed_dictionaries({"system": st.fixed_dictionaries(
                               {"status": st.sampled_from([None, "approved", "issue"])})})}),
    max_size=3,
)
datasets = st.lists(st.tuples(items, annotations), min_size=1, max_size=10)


def select(q: Any, data: list[tuple[dict[str, Any], list[dict[str, Any]]]], **kw: Any) -> set[int]:
    cq = compile_query(q, **kw)
    return {i for i, (it, anns) in enumerate(data) if cq.match_item(it, anns)}


def raw(expr: dict[str, Any]) -> dict[str, Any]:
    return {"filter": expr, "useDefaults": False}


def outcome(q: Any, data: list[tuple[dict[str, Any], list[dict[str, Any]]]], **kw: Any) -> Any:
    try:
        return select(q, data, **kw)
    except FilterError as e:
        return ("FilterError", str(e))


# --------------------------------------------------------------------------- boolean algebra


@SETTINGS
@given(a=exprs, b=exprs, data=datasets)
def test_and_is_intersection(a: dict[str, Any], b: dict[str, Any], data: Any) -> None:
    assert select(raw({"$and": [a, b]}), data) == select(raw(a), data) & select(raw(b), data)
    assert select(raw({**a, **b}), data) <= select(raw(a), data) | select(raw(b), data)  # keys ANDed (when disjoint)


@SETTINGS
@given(a=exprs, b=exprs, data=datasets)
def test_or_is_union(a: dict[str, Any], b: dict[str, Any], data: Any) -> None:
    assert select(raw({"$or": [a, b]}), data) == select(raw(a), data) | select(raw(b), data)


@SETTINGS
@given(a=exprs, data=datasets)
def test_not_is_complement(a: dict[str, Any], data: Any) -> None:
    everything = set(range(len(data)))
    assert select(raw({"$not": a}), data) == everything - select(raw(a), data)
    assert select(raw({"$not": {"$not": a}}), data) == select(raw(a), data)


@SETTINGS
@given(field=fields, v=scalars, vs=st.lists(scalars, max_size=3), data=datasets)
def test_negated_operators_are_complements(field: str, v: Any, vs: list[Any], data: Any) -> None:
    everything = set(range(len(data)))
    assert select(raw({field: {"$ne": v}}), data) == everything - select(raw({field: {"$eq": v}}), data)
    assert select(raw({field: {"$nin": vs}}), data) == everything - select(raw({field: {"$in": vs}}), data)
    assert select(raw({field: vs}), data) == select(raw({field: {"$in": vs}}), data)
    assert select(raw({field: {"$in": vs}}), data) == (
        set().union(*(select(raw({field: {"$eq": x}}), data) for x in vs)) if vs else set())
    assert select(raw({field: {"$exists": False}}), data) == everything - select(raw({field: {"$exists": True}}), data)


# --------------------------------------------------------------------------- builder and its JSON

operators = st.sampled_from([None, "eq", "$ne", "in", "nin", "gt", "lte", "exists", FiltersOperations.EQUAL,
                             FiltersOperations.NOT_IN, FiltersOperations.GREATER_THAN_OR_EQUAL])
builder_values = st.one_of(scalars, st.lists(scalars, max_size=3))
builder_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), fields, builder_values, operators, st.sampled_from([None, "and", "or"])),
        st.tuples(st.just("join"), st.sampled_from(["label", "type", "metadata.system.status"]), builder_values,
                  operators, st.sampled_from(["and", "or"])),
        st.tuples(st.just("sort"), fields, st.sampled_from(["ascending", "descending"])),
    ),
    max_size=5,
)


@SETTINGS
@given(ops=builder_ops, use_defaults=st.booleans(), recursive=st.booleans(),
       purpose=st.sampled_from(["list", "clone"]), data=datasets)
def test_builder_and_prepared_json_agree(ops: list[Any], use_defaults: bool, recursive: bool, purpose: str,
                                         data: Any) -> None:
    f = Filters(use_defaults=use_defaults)
    f.recursive = recursive
    for op in ops:
        if op[0] == "add":
            f.add(field=op[1], values=op[2], operator=op[3], method=op[4])
        elif op[0] == "join":
            f.add_join(field=op[1], values=op[2], operator=op[3], method=op[4])
        else:
            f.sort_by(op[1], op[2])
    prepared = f.prepare()
    kw: dict[str, Any] = {"purpose": purpose}
    if not use_defaults:
        kw["use_defaults"] = False  # the JSON alone cannot say that defaults were turned off
    expected = outcome(f, data, purpose=purpose)
    assert outcome(prepared, data, **kw) == expected
    assert outcome(json.dumps(prepared), data, **kw) == expected
    if not isinstance(expected, tuple):
        assert prepared == f.prepare()  # compiling never mutates the builder's output
        canon = compile_query(f, purpose=purpose).canonical()  # type: ignore[arg-type]
        assert outcome(canon, data, purpose=purpose) == expected


@SETTINGS
@given(a=exprs, purpose=st.sampled_from(["list", "clone"]), data=datasets)
def test_canonical_round_trip(a: dict[str, Any], purpose: str, data: Any) -> None:
    q = compile_query(a, purpose=purpose)  # type: ignore[arg-type]
    c = q.canonical()
    assert json.loads(json.dumps(c)) == c
    assert select(c, data, purpose=purpose) == select(a, data, purpose=purpose)
    assert compile_query(c, purpose=purpose).canonical() == c  # type: ignore[arg-type]


# --------------------------------------------------------------------------- globs

plain = st.text(alphabet="ab./\\ \n", max_size=6).filter(lambda s: "*" not in s and not s.endswith("\\"))


@SETTINGS
@given(a=plain, b=plain, x=st.text(alphabet="ab./\n*", max_size=6))
def test_single_star_never_crosses_slash(a: str, b: str, x: str) -> None:
    pattern = a + "*" + b
    assert compile_glob(pattern)(a + x + b) == ("/" not in x)
    assert compile_glob(a + "**" + b)(a + x + b)


@SETTINGS
@given(tokens=st.lists(st.sampled_from(["a", "b", "/", ".", "*", "**", "\\*", "\\", "\n"]), max_size=6),
       s=st.text(alphabet="ab/.*\\\n", max_size=8))
def test_glob_fast_paths_agree_with_regex(tokens: list[str], s: str) -> None:
    pattern = "".join(tokens)
    expected = re.fullmatch(glob_to_regex(pattern), s, re.DOTALL) is not None
    assert compile_glob(pattern)(s) is expected


# --------------------------------------------------------------------------- sorting


@SETTINGS
@given(data=datasets, field=fields, desc=st.booleans())
def test_sort_is_stable_and_ordered(data: Any, field: str, desc: bool) -> None:
    q = compile_query({"sort": {field: "descending" if desc else "ascending"}})
    docs = [it for it, _ in data]
    out = q.sort_items(docs)
    assert sorted(map(id, out)) == sorted(map(id, docs))
    pos = {id(d): i for i, d in enumerate(docs)}
    keys = [q.sort_key(d) for d in out]
    for i in range(len(out) - 1):
        assert not keys[i + 1] < keys[i]
        if not keys[i] < keys[i + 1]:  # tie: input order kept
            assert pos[id(out[i])] < pos[id(out[i + 1])]


# --------------------------------------------------------------------------- any JSON: FilterError or a bool

KEYS = ["$and", "$or", "$not", "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$match", "$xyz",
        "filter", "resource", "join", "on", "local", "forigen", "sort", "page", "pageSize", "useDefaults", "name",
        "dir", "filename", "metadata.user.score", "metadata.system.refs", "label", "type", "hidden", "a..b", ""]
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["items", "annotations", "ascending", "descending", "a*", "**", "itemId", "id", "x"]),
    st.text(max_size=4),
)
json_docs = st.recursive(
    json_scalars,
    lambda ch: st.one_of(st.lists(ch, max_size=4),
                         st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=3)), ch, max_size=4)),
    max_leaves=20,
)


def _evaluate_anything(q: Any, purpose: str, data: Any) -> None:
    try:
        cq = compile_query(q, purpose=purpose)  # type: ignore[arg-type]
    except FilterError:
        return
    for it, anns in data:
        if cq.resource == "items":
            assert type(cq.match_item(it, anns)) is bool
        else:
            for a in anns:
                assert type(cq.match_annotation(a, it)) is bool
    assert type(cq.sort_items([it for it, _ in data])) is list
    json.dumps(cq.canonical())


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(doc=json_docs, purpose=st.sampled_from(["list", "clone"]), data=datasets)
def test_any_json_gives_filter_error_or_bool(doc: Any, purpose: str, data: Any) -> None:
    _evaluate_anything(doc, purpose, data)
    _evaluate_anything({"filter": doc}, purpose, data)
    _evaluate_anything({"filter": {}, "join": {"filter": doc}}, purpose, data)
    _evaluate_anything({"resource": "annotations", "filter": doc, "join": {"filter": doc}}, "list", data)
    _evaluate_anything({"metadata.system.refs": {"$match": doc}}, purpose, data)
    _evaluate_anything(json.dumps(doc), purpose, data)


@SETTINGS
@given(text=st.text(max_size=30), data=datasets)
def test_any_text_gives_filter_error_or_bool(text: str, data: Any) -> None:
    _evaluate_anything(text, "list", data)


@SETTINGS
@given(field=json_docs, values=json_docs, op=st.one_of(st.none(), st.text(max_size=4), json_docs),
       method=st.one_of(st.none(), json_docs), data=datasets)
def test_builder_junk_gives_filter_error(field: Any, values: Any, op: Any, method: Any, data: Any) -> None:
    f = Filters()
    try:
        f.add(field, values, operator=op, method=method)
        f.add_join(field, values, operator=op, method=method or "and")
    except FilterError:
        return
    _evaluate_anything(f, "list", data)
