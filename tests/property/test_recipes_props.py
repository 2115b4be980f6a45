"""Hypothesis properties of dvstore.recipes: canonical form, compatibility, merge, parsing."""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dvstore.codec import decode, encode
from dvstore.errors import RecipeError
from dvstore.recipes import (
    canonical_ontology,
    compatible,
    flat_labels,
    ontology_hash,
    parse_recipe,
    remap_annotation_labels,
)
from dvstore.recipes_merge import diff_recipes, merge_recipes

RID = "0123456789abcdef01234567"
IDS = st.sampled_from([RID, "f" * 24, "e" * 24])
ONE_ID = st.just(RID)

# Small alphabets, so that independently drawn recipes overlap and merges meet every case.
TAGS = st.sampled_from(["a", "b", "c", "dog", "Cat"])
V1 = st.lists(st.sampled_from(["x", "y"]), max_size=2)
COLORS = st.one_of(
    st.none(),
    st.sampled_from(["#ff0000", "#00ff00", "red"]),
    st.lists(st.integers(0, 255), min_size=3, max_size=3),
)
FOREST = st.recursive(st.just({}), lambda kids: st.dictionaries(TAGS, kids, max_size=3), max_leaves=10)

ATTRIBUTES = st.one_of(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["k1", "k2", "k3"]),
            "title": st.sampled_from(["A", "B"]),
            "type": st.sampled_from(["checkbox", "radio_button", "options", "boolean", "freeText"]),
        },
        optional={
            "values": st.lists(st.sampled_from(["u", "v", "w"]), max_size=3),
            "scope": st.lists(st.sampled_from(["*", "a", "b"]), max_size=2),
            "optional": st.booleans(),
        },
    ),
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["k3", "r"]),
            "title": st.just("R"),
            "type": st.just("range"),
            "range": st.fixed_dictionaries({"min": st.integers(0, 2), "max": st.integers(2, 4)}),
        }
    ),
)


@st.composite
def recipe_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid recipe file (CLI.md format) with display data and arbitrary sibling order."""

    def build(tree: dict[str, Any]) -> list[dict[str, Any]]:
        labels = []
        for tag, sub in tree.items():
            label: dict[str, Any] = {"tag": tag, "children": build(sub)}
            if draw(st.booleans()):
                label["attributes"] = draw(V1)
            color = draw(COLORS)
            if color is not None:
                label["color"] = color
            if draw(st.booleans()):
                label["displayLabel"] = draw(st.sampled_from(["A", "B"]))
            labels.append(label)
        return labels

    doc: dict[str, Any] = {
        "title": draw(st.sampled_from(["t1", "t2"])),
        "labels": build(draw(FOREST)),
        "attributes": draw(st.lists(ATTRIBUTES, max_size=3, unique_by=lambda a: a["key"])),
    }
    if draw(st.booleans()):
        doc["instructions"] = draw(st.sampled_from(["i1", "i2"]))
    if draw(st.booleans()):
        doc["ui"] = {"labels": {draw(TAGS): {"color": draw(COLORS)}}, "uiSettings": {"k": [1, 2.5]}}
    return doc


@st.composite
def recipes(draw: st.DrawFn, ids: st.SearchStrategy[str] = ONE_ID) -> dict[str, Any]:
    return parse_recipe(draw(recipe_docs()), recipe_id=draw(ids))


def shuffle_and_recolor(doc: Any, rnd: random.Random) -> Any:
    """The same ontology: every list shuffled, every colour and display name changed."""
    if isinstance(doc, list):
        out = [shuffle_and_recolor(v, rnd) for v in doc]
        rnd.shuffle(out)
        return out
    if isinstance(doc, dict):
        out = {k: shuffle_and_recolor(v, rnd) for k, v in doc.items() if k not in ("color", "displayLabel")}
        if "tag" in doc and rnd.random() < 0.5:
            out["color"] = f"#{rnd.randrange(2**24):06x}"
            out["displayLabel"] = str(rnd.random())
        return out
    return doc


@given(recipe_docs(), st.randoms(use_true_random=False))
def test_canonical_form_ignores_order_and_display(doc: dict[str, Any], rnd: random.Random) -> None:
    other = shuffle_and_recolor(doc, rnd)
    other["title"] = "another title"
    a, b = parse_recipe(doc), parse_recipe(other)
    assert canonical_ontology(a) == canonical_ontology(b)
    assert ontology_hash(a) == ontology_hash(b)
    assert compatible(a, b)
    # Reordering the lists of a record by hand does not change the hash either.
    assert ontology_hash(shuffle_and_recolor(a, rnd)) == ontology_hash(a)


@given(recipes(IDS), recipes(IDS))
def test_compatible_is_reflexive_and_symmetric(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert compatible(a, a)
    assert compatible(a, b) == compatible(b, a)
    assert compatible(a, b) == (a["id"] == b["id"] or canonical_ontology(a) == canonical_ontology(b))


@given(recipes())
def test_records_are_canonical_values(r: dict[str, Any]) -> None:
    assert parse_recipe(r) == r
    assert decode(encode(r)) == r
    assert canonical_ontology(r) == {"labels": r["labels"], "attributes": r["attributes"]}
    assert diff_recipes(r, r)["labels"] == {"added": [], "removed": [], "changed": []}


@given(recipes(), recipes())
def test_merge_of_equal_sides_is_that_side(b: dict[str, Any], x: dict[str, Any]) -> None:
    assert merge_recipes(b, x, x) == (x, [])
    assert merge_recipes(None, x, x) == (x, [])


@given(recipes(), recipes())
def test_merge_with_one_side_unchanged_takes_the_other(b: dict[str, Any], x: dict[str, Any]) -> None:
    assert merge_recipes(b, b, x) == (x, [])
    assert merge_recipes(b, x, b) == (x, [])


@given(st.one_of(st.none(), recipes()), recipes(), recipes())
def test_merge_is_symmetric_and_always_a_valid_record(
    b: dict[str, Any] | None, o: dict[str, Any], t: dict[str, Any]
) -> None:
    m1, c1 = merge_recipes(b, o, t)
    m2, c2 = merge_recipes(b, t, o)
    assert [c["path"] for c in c1] == [c["path"] for c in c2]
    for c, d in zip(c1, c2, strict=True):
        assert (c["base"], c["ours"], c["theirs"]) == (d["base"], d["theirs"], d["ours"])
    if not c1:
        assert canonical_ontology(m1) == canonical_ontology(m2)
    # Even with conflicts, the result is a whole tree (no orphan labels) in canonical form.
    for m in (m1, m2):
        assert parse_recipe(m) == m
        assert decode(encode(m)) == m
    assert decode(encode(c1)) == c1


@given(recipes(), recipes(), recipes())
def test_clean_merge_keeps_every_unconflicted_change(b: dict[str, Any], o: dict[str, Any], t: dict[str, Any]) -> None:
    merged, conflicts = merge_recipes(b, o, t)
    if conflicts:
        return
    got, base = set(flat_labels(merged)), set(flat_labels(b))
    ours, theirs = set(flat_labels(o)), set(flat_labels(t))
    assert (ours - base) | (theirs - base) <= got
    assert not (got & ((base - ours) | (base - theirs)))


# Arbitrary JSON, and JSON built from the recipe vocabulary so that the fuzz gets deep.
KEYS = st.sampled_from(
    ["labels", "roots", "tag", "label_name", "children", "value", "attributes", "metadata", "title", "key",
     "type", "values", "range", "min", "max", "step", "scope", "multi", "optional", "color", "displayLabel",
     "displayData", "ui", "id", "recipe_id", "ontologies", "ontology", "instructions", "uiSettings"]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.sampled_from(["*", "options", "checkbox", "range", "boolean", "a.b", "", RID, "\ud800", "#fff"]),
)
JSON = st.recursive(
    SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.one_of(KEYS, st.text(max_size=3)), kids, max_size=5),
    ),
    max_leaves=30,
)


def check_parse(doc: Any) -> None:
    try:
        r = parse_recipe(doc)
    except RecipeError as e:
        assert str(e)
        return
    assert parse_recipe(r) == r
    assert decode(encode(r)) == r
    assert isinstance(flat_labels(r), list)
    assert isinstance(ontology_hash(r), bytes)


@given(st.one_of(JSON, st.dictionaries(KEYS, JSON, max_size=4)))
@settings(max_examples=500)
def test_parse_arbitrary_json_raises_only_recipe_error(doc: Any) -> None:
    check_parse(doc)


def fuzzed(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, JSON)


ATTRIBUTE_FIELDS = ["title", "key", "type", "values", "range", "scope", "multi", "optional"]


@st.composite
def fuzzed_attributes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid attribute with one field replaced by junk or removed: reaches each branch."""
    a = dict(draw(ATTRIBUTES))
    field = draw(st.sampled_from(ATTRIBUTE_FIELDS))
    if draw(st.booleans()):
        a.pop(field, None)
    else:
        a[field] = draw(JSON)
    return a


FUZZ_ATTRIBUTE = fuzzed_attributes()
FUZZ_LABEL = st.recursive(
    st.fixed_dictionaries({"tag": fuzzed(TAGS)}, optional={"color": fuzzed(COLORS), "attributes": fuzzed(V1)}),
    lambda kids: st.fixed_dictionaries(
        {"tag": fuzzed(TAGS), "children": fuzzed(st.lists(kids, max_size=3))},
        optional={"displayLabel": JSON, "displayData": JSON},
    ),
    max_leaves=8,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "labels": fuzzed(st.lists(FUZZ_LABEL, max_size=3)),
            "attributes": fuzzed(st.lists(FUZZ_ATTRIBUTE, max_size=3)),
            "metadata": fuzzed(st.fixed_dictionaries({"attributes": st.lists(FUZZ_ATTRIBUTE, max_size=2)})),
            "ui": fuzzed(st.fixed_dictionaries({"labels": fuzzed(st.dictionaries(TAGS, JSON, max_size=2))})),
        },
    )
)
@settings(max_examples=500)
def test_parse_fuzzed_fields_raises_only_recipe_error(doc: dict[str, Any]) -> None:
    check_parse(doc)


@given(st.lists(FUZZ_ATTRIBUTE, min_size=1, max_size=2))
@settings(max_examples=500)
def test_parse_fuzzed_attributes_raises_only_recipe_error(attributes: list[Any]) -> None:
    check_parse({"attributes": attributes})


@given(recipe_docs(), JSON, st.randoms(use_true_random=False))
@settings(max_examples=300)
def test_parse_mutated_recipes_raises_only_recipe_error(doc: dict[str, Any], junk: Any, rnd: random.Random) -> None:
    # Replace one value somewhere inside a valid document with arbitrary JSON.
    doc = copy.deepcopy(doc)
    spots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            spots.extend((node, k) for k in node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            spots.extend((node, i) for i in range(len(node)))
            for v in node:
                walk(v)

    walk(doc)
    container, key = rnd.choice(spots)
    container[key] = junk
    check_parse(doc)
    check_parse(json.loads(json.dumps({"ontologies": [doc]})))


@given(st.lists(st.fixed_dictionaries({"label": st.sampled_from(["a", "a.b", "b", "ab", "c.a"])}), max_size=5))
def test_remap_only_touches_mapped_names(anns: list[dict[str, Any]]) -> None:
    before = copy.deepcopy(anns)
    out = remap_annotation_labels(anns, {"a": "z"})
    assert anns == before
    for old, new in zip(before, out, strict=True):
        label = old["label"]
        expected = "z" + label[1:] if label == "a" or label.startswith("a.") else label
        assert new["label"] == expected
