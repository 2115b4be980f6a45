"""Unit tests for dvstore.recipes: parsing, canonical form, compatibility, merge, remap."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dvstore.codec import decode, encode
from dvstore.errors import EXIT_INCOMPATIBLE, IncompatibleRecipesError, RecipeError, UsageError
from dvstore.recipes import (
    MAX_DEPTH,
    add_labels,
    canonical_ontology,
    check_compatible,
    compatible,
    default_recipe,
    flat_labels,
    load_recipe_file,
    ontology_hash,
    parse_label_map,
    parse_recipe,
    remap_annotation_labels,
    remap_label,
)
from dvstore.recipes_merge import diff_recipes, merge_recipes

RID = "a" * 24
RID2 = "b" * 24

PETS_FILE = {
    "title": "pets",
    "labels": [
        {"tag": "dog", "color": "#ff0000", "displayLabel": "Dog", "children": [{"tag": "puppy", "color": "#00ff00"}]},
        {"tag": "cat", "color": "#0000ff"},
    ],
    "attributes": [
        {"title": "Occluded", "key": "occ", "type": "checkbox", "values": ["yes", "partly"]},
        {"title": "Pose", "key": "pose", "type": "radio_button", "values": ["up", "down"], "scope": ["dog"]},
    ],
}

# The same ontology as Dataloop exports it.
PETS_ONTOLOGY = {
    "id": "65f0c0ffee0123456789abcd",
    "title": "pets",
    "roots": [
        {"value": {"tag": "cat", "displayLabel": "cat", "color": "#123456", "attributes": []}, "children": []},
        {
            "value": {"tag": "dog", "displayLabel": "dog", "color": "#654321", "attributes": [], "displayData": {}},
            "children": [{"value": {"tag": "puppy", "color": "#000000"}, "children": []}],
        },
    ],
    "attributes": [],
    "metadata": {
        "system": {"projectIds": ["p1"]},
        "attributes": [
            {"key": "pose", "title": "Pose", "type": "options", "multi": False, "values": ["down", "up"],
             "scope": ["dog"], "optional": True},
            {"key": "occ", "title": "Occluded", "type": "options", "multi": True, "values": ["partly", "yes"]},
        ],
    },
}


def recipe(labels: list[Any], attributes: list[Any] | None = None, *, rid: str = RID, **extra: Any) -> dict[str, Any]:
    return parse_recipe({"labels": labels, "attributes": attributes or [], **extra}, recipe_id=rid)


def tags(*names: str) -> list[dict[str, Any]]:
    """Label docs for flattened names (parents must be listed before their children)."""
    return add_labels({"labels": []}, names)["labels"]


# --------------------------------------------------------------------------------------
# parsing


def test_parse_cli_format_record_shape() -> None:
    r = parse_recipe(PETS_FILE, recipe_id=RID)
    assert r == {
        "id": RID,
        "title": "pets",
        "labels": [
            {"tag": "cat", "children": []},
            {"tag": "dog", "children": [{"tag": "puppy", "children": []}]},
        ],
        "attributes": [
            {"key": "occ", "title": "Occluded", "type": "options", "multi": True, "optional": True,
             "scope": ["*"], "values": ["partly", "yes"]},
            {"key": "pose", "title": "Pose", "type": "options", "multi": False, "optional": True,
             "scope": ["dog"], "values": ["down", "up"]},
        ],
        "ui": {
            "labels": {
                "cat": {"color": "#0000ff"},
                "dog": {"color": "#ff0000", "displayLabel": "Dog"},
                "dog.puppy": {"color": "#00ff00"},
            }
        },
    }
    assert decode(encode(r)) == r


def test_parse_dataloop_ontology_export() -> None:
    r = parse_recipe(PETS_ONTOLOGY)
    assert r["id"] == PETS_ONTOLOGY["id"]
    assert flat_labels(r) == ["cat", "dog", "dog.puppy"]
    assert r["ui"]["labels"]["dog"] == {"color": "#654321", "displayLabel": "dog", "displayData": {}}
    # Same ontology as the recipe file, different colours and order: compatible by hash.
    assert ontology_hash(r) == ontology_hash(parse_recipe(PETS_FILE))


def test_parse_recipe_export_wrapping_an_ontology() -> None:
    wrapped = {"id": RID2, "title": "recipe title", "ontologies": [PETS_ONTOLOGY], "instructions": "be careful"}
    r = parse_recipe(wrapped)
    assert r["id"] == RID2 and r["title"] == "recipe title"
    assert r["ui"]["instructions"] == "be careful"
    assert ontology_hash(r) == ontology_hash(parse_recipe(PETS_ONTOLOGY))
    assert flat_labels(parse_recipe({"ontology": PETS_FILE})) == ["cat", "dog", "dog.puppy"]
    assert parse_recipe({"ontologies": []})["labels"] == []


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"ontologies": ["65f0c0ffee0123456789abcd"]}, "ontology ids only"),
        ({"ontologies": [{}, {}]}, "2 ontologies"),
        ({"ontologies": {}}, "must be a list"),
        ({"ontology": []}, "must be an object"),
        ({"ontology": {}, "ontologies": []}, "both"),
        ({"ontology": {}, "labels": []}, "both inline"),
        ({"labels": [], "roots": []}, "both 'labels' and 'roots'"),
    ],
)
def test_parse_wrapper_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(doc)


def test_label_name_alias_and_nulls() -> None:
    r = parse_recipe({"labels": [{"label_name": "car", "color": None, "displayLabel": None, "children": None,
                                  "attributes": None}]})
    assert r["labels"] == [{"tag": "car", "children": []}]
    assert r["ui"] == {}


def test_v1_label_attributes_kept_sorted_and_ontology_level_v1_names_ignored() -> None:
    r = parse_recipe({"labels": [{"tag": "car", "attributes": ["b", "a", "a"]}], "attributes": ["a", "b"]})
    assert r["labels"] == [{"tag": "car", "attributes": ["a", "b"], "children": []}]
    assert r["attributes"] == []


def test_default_recipe() -> None:
    a, b = default_recipe(), default_recipe()
    assert a["title"] == "default" and a["labels"] == [] and a["attributes"] == []
    assert len(a["id"]) == 24 and int(a["id"], 16) >= 0
    assert a["id"] != b["id"]
    assert compatible(a, b)  # equal (empty) ontologies


def test_ids() -> None:
    assert parse_recipe({}, recipe_id=RID)["id"] == RID
    assert parse_recipe({"id": RID.upper()})["id"] == RID
    assert parse_recipe({"recipe_id": RID2})["id"] == RID2
    assert parse_recipe({"id": RID}, recipe_id=RID2)["id"] == RID2
    fresh = {parse_recipe({})["id"] for _ in range(3)}
    assert len(fresh) == 3
    with pytest.raises(RecipeError, match="24 hex"):
        parse_recipe({}, recipe_id="nope")
    with pytest.raises(RecipeError, match="24 hex"):
        parse_recipe({"id": 5})


def test_parse_is_idempotent_on_records() -> None:
    for doc in (PETS_FILE, PETS_ONTOLOGY, {"title": "t", "instructions": {"pdf": "x"}, "uiSettings": {"a": 1}}):
        r = parse_recipe(doc)
        assert parse_recipe(r) == r


def test_ui_entries_of_unknown_labels_are_dropped() -> None:
    r = parse_recipe({"labels": [{"tag": "a"}], "ui": {"labels": {"a": {"color": "#fff"}, "ghost": {"color": "#000"}}}})
    assert r["ui"] == {"labels": {"a": {"color": "#fff"}}}


def chain(depth: int) -> list[dict[str, Any]]:
    node: list[dict[str, Any]] = []
    for i in range(depth):
        node = [{"tag": f"l{i}", "children": node}]
    return node


def test_depth_limit() -> None:
    assert len(flat_labels(parse_recipe({"labels": chain(MAX_DEPTH)}))) == MAX_DEPTH
    with pytest.raises(RecipeError, match="deeper than 32"):
        parse_recipe({"labels": chain(MAX_DEPTH + 1)})
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 5):
        deep = {"k": deep}
    with pytest.raises(RecipeError, match="deeper than 32"):
        parse_recipe({"labels": [{"tag": "a", "displayData": deep}]})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "must be a JSON object, got list"),
        ("x", "must be a JSON object"),
        ({"labels": {}}, "labels must be a list"),
        ({"labels": ["dog"]}, "each label must be an object"),
        ({"labels": [{}]}, r"Invalid input - each label must have a tag \(at labels\[0\]\)"),
        ({"labels": [{"tag": ""}]}, "each label must have a tag"),
        ({"labels": [{"tag": 3}]}, "each label must have a tag"),
        ({"labels": [{"tag": "a", "children": [{"color": "#fff"}]}]}, r"at labels\[0\]\.children\[0\]"),
        ({"roots": [{"value": "dog"}]}, "'value' must be an object"),
        ({"labels": [{"tag": "a.b"}]}, "contains '.'"),
        ({"labels": [{"tag": "a"}, {"tag": "a"}]}, "duplicate label 'a'"),
        ({"labels": [{"tag": "p", "children": [{"tag": "a"}, {"tag": "a"}]}]}, "duplicate label 'a' under 'p'"),
        ({"labels": [{"tag": "\ud800"}]}, "not valid UTF-8"),
        ({"labels": [{"tag": "a", "color": 5}]}, "color must be"),
        ({"labels": [{"tag": "a", "color": [1, 2]}]}, "color must be"),
        ({"labels": [{"tag": "a", "color": [1, 2, 300]}]}, "color must be"),
        ({"labels": [{"tag": "a", "displayLabel": 1}]}, "displayLabel must be a string"),
        ({"labels": [{"tag": "a", "displayData": {"x": float("nan")}}]}, "finite"),
        ({"labels": [{"tag": "a", "displayData": {"x": 2**70}}]}, "out of range"),
        ({"labels": [{"tag": "a", "attributes": [1]}]}, "label attributes must be a list of strings"),
        ({"title": 3}, "title must be a string"),
        ({"metadata": []}, "metadata must be an object"),
        ({"ui": []}, "ui must be an object"),
        ({"ui": {"labels": []}}, "ui.labels must be an object"),
        ({"labels": [{"tag": "a"}], "ui": {"labels": {"a": 1}}}, "display data must be an object"),
        ({"attributes": {}}, "attributes must be a list"),
        ({"attributes": [3]}, "each attribute must be an object"),
    ],
)
def test_parse_errors(doc: Any, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe(doc)


def attr(**kw: Any) -> dict[str, Any]:
    return parse_recipe({"attributes": [{"title": "T", "type": "boolean", **kw}]})["attributes"][0]


def test_attribute_normalisation() -> None:
    assert attr() == {"key": "T", "title": "T", "type": "boolean", "optional": True, "scope": ["*"]}
    assert attr(type="checkbox", values=["b", "a"], multi=False)["multi"] is True
    assert attr(type="radio_button", values=["a"])["multi"] is False
    assert attr(type="options", values=["a"])["multi"] is False
    assert attr(type="yes_no")["type"] == "boolean"
    assert attr(type="freeText", values=["dropped"]) == {
        "key": "T", "title": "T", "type": "freeText", "optional": True, "scope": ["*"]}
    assert attr(scope=["b", "a", "a"])["scope"] == ["a", "b"]
    assert attr(scope=["a", "*"])["scope"] == ["*"]
    assert attr(scope=[])["scope"] == ["*"]
    assert attr(optional=False)["optional"] is False
    assert attr(type="range", range={"min": 0, "max": 1.5})["range"] == {"min": 0, "max": 1.5, "step": 1}
    assert attr(type="range", range={"min": 0, "max": 10, "step": 2})["range"]["step"] == 2


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"title": None}, "title must be provided"),
        ({"title": ""}, "title must be provided"),
        ({"title": 4}, "title must be a string"),
        ({"key": ""}, "key must be a non-empty string"),
        ({"type": "slider"}, "type must be one of"),
        ({"type": None}, "type must be one of"),
        ({"type": "options", "values": [1, 2]}, "Attributes values type must be list of strings"),
        ({"type": "options", "values": "ab"}, "Attributes values type must be list of strings"),
        ({"optional": "yes"}, "'optional' must be true or false"),
        ({"type": "options", "multi": 1}, "'multi' must be true or false"),
        ({"scope": "*"}, "scope must be a list"),
        ({"type": "range"}, "needs range"),
        ({"type": "range", "range": {"min": 0}}, "needs range"),
        ({"type": "range", "range": 5}, "needs range"),
        ({"type": "range", "range": {"min": True, "max": 1}}, "expected a number, got bool"),
        ({"type": "range", "range": {"min": 2, "max": 1}}, "min is greater than max"),
        ({"type": "range", "range": {"min": 0, "max": 1, "step": 0}}, "step must be positive"),
        ({"type": "range", "range": {"min": 0, "max": float("inf")}}, "finite"),
    ],
)
def test_attribute_errors(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_recipe({"attributes": [{"title": "T", "type": "boolean", **kw}]})


def test_duplicate_attribute_keys_across_v2_locations() -> None:
    doc = {"attributes": [{"title": "a", "type": "boolean"}], "metadata": {"attributes": [{"title": "a", "type": "freeText"}]}}
    with pytest.raises(RecipeError, match="duplicate attribute key 'a'"):
        parse_recipe(doc)


# --------------------------------------------------------------------------------------
# files


def test_load_recipe_file(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps(PETS_FILE), encoding="utf-8")
    assert flat_labels(load_recipe_file(p)) == ["cat", "dog", "dog.puppy"]
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(PETS_FILE).encode())  # a BOM, as Windows editors write
    assert load_recipe_file(str(p))["title"] == "pets"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "^recipe file .*r.json: cannot read: No such file"),
        (b"{", "^recipe file .*: not valid JSON: .* line 1"),
        (b"\xff\xfe\x00", "^recipe file .*: not UTF-8 text"),
        (b"[" * 100_000 + b"]" * 100_000, "^recipe file .*: JSON nested too deeply$"),
        (b'{"labels": [{}]}', "r.json: Invalid input - each label must have a tag"),
    ],
)
def test_load_recipe_file_errors_name_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    p = tmp_path / "r.json"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(RecipeError, match=message) as e:
        load_recipe_file(p)
    assert str(p) in str(e.value)


def test_load_recipe_file_directory(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="^recipe file .*: not a regular file$"):
        load_recipe_file(tmp_path)


# --------------------------------------------------------------------------------------
# canonical form and compatibility


def test_canonical_ontology_ignores_display_and_order() -> None:
    a = parse_recipe(PETS_FILE)
    shuffled = json.loads(json.dumps(PETS_FILE))
    shuffled["labels"].reverse()
    shuffled["attributes"].reverse()
    shuffled["attributes"][0]["values"].reverse()
    for label in shuffled["labels"]:
        label["color"] = "#abcdef"
        label["displayLabel"] = "x"
    shuffled["title"] = "other"
    shuffled["instructions"] = "read me"
    b = parse_recipe(shuffled)
    assert canonical_ontology(a) == canonical_ontology(b)
    assert ontology_hash(a) == ontology_hash(b)
    assert canonical_ontology(a) == {"labels": a["labels"], "attributes": a["attributes"]}
    # A record whose lists were reordered by hand has the same canonical form too.
    a2 = {**a, "labels": a["labels"][::-1], "attributes": a["attributes"][::-1]}
    assert ontology_hash(a2) == ontology_hash(a)


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["labels"].append({"tag": "bird"}),
        lambda d: d["labels"][0]["children"].clear(),
        lambda d: d["labels"][0].__setitem__("attributes", ["v1"]),
        lambda d: d["attributes"].pop(),
        lambda d: d["attributes"][0].__setitem__("type", "radio_button"),
        lambda d: d["attributes"][1].__setitem__("scope", ["cat"]),
        lambda d: d["attributes"][1].__setitem__("values", ["up"]),
        lambda d: d["attributes"][1].__setitem__("title", "Posture"),
    ],
)
def test_ontology_hash_sees_ontology_changes(change: Any) -> None:
    doc = json.loads(json.dumps(PETS_FILE))
    change(doc)
    assert ontology_hash(parse_recipe(doc)) != ontology_hash(parse_recipe(PETS_FILE))


def test_compatible() -> None:
    pets = parse_recipe(PETS_FILE, recipe_id=RID)
    other = recipe(tags("car"), rid=RID2)
    assert compatible(pets, pets)
    assert compatible(pets, recipe(tags("car"), rid=RID))  # same lineage, diverged ontology
    assert compatible(pets, parse_recipe(PETS_FILE, recipe_id=RID2))  # equal files
    assert not compatible(pets, other) and not compatible(other, pets)


def test_check_compatible_message() -> None:
    pets = parse_recipe(PETS_FILE, recipe_id=RID)
    cars = parse_recipe({"title": "cars", "labels": [{"tag": "car"}]}, recipe_id=RID2)
    check_compatible([])
    check_compatible([("a", pets)])
    check_compatible([("a", pets), ("b", parse_recipe(PETS_FILE, recipe_id=RID2))])
    with pytest.raises(IncompatibleRecipesError) as e:
        check_compatible([("train", pets), ("ok", pets), ("val", cars)])
    assert str(e.value) == (
        f"Cannot merge datasets with different recipes: train={RID}/pets vs val={RID2}/cars. "
        "Switch recipe first (dvs recipe switch)."
    )
    assert e.value.hint is not None and "dvs recipe switch val --from train" in e.value.hint
    assert e.value.exit_code == EXIT_INCOMPATIBLE


# --------------------------------------------------------------------------------------
# labels


def test_flat_labels() -> None:
    r = recipe([{"tag": "b", "children": [{"tag": "y"}, {"tag": "x", "children": [{"tag": "z"}]}]}, {"tag": "a"}])
    assert flat_labels(r) == ["a", "b", "b.x", "b.x.z", "b.y"]
    assert flat_labels(default_recipe()) == []


def test_add_labels() -> None:
    base = parse_recipe(PETS_FILE, recipe_id=RID)
    before = json.loads(json.dumps(base))
    r = add_labels(base, ["bird", "dog", "dog.adult", "vehicle.car.wheel"])
    assert base == before  # not mutated
    assert r["id"] == RID and r["ui"] == base["ui"] and r["attributes"] == base["attributes"]
    assert flat_labels(r) == ["bird", "cat", "dog", "dog.adult", "dog.puppy", "vehicle", "vehicle.car",
                              "vehicle.car.wheel"]
    assert parse_recipe(r) == r  # still a canonical record
    existing = add_labels(recipe([{"tag": "car", "attributes": ["v1"]}]), ["car", "car.door"])
    assert existing["labels"] == [{"tag": "car", "attributes": ["v1"], "children": [{"tag": "door", "children": []}]}]


@pytest.mark.parametrize("name", ["", "a..b", ".a", "a.", 3, "\ud800", ".".join(["x"] * (MAX_DEPTH + 1))])
def test_add_labels_rejects_bad_names(name: Any) -> None:
    with pytest.raises(RecipeError):
        add_labels(default_recipe(), [name])


# --------------------------------------------------------------------------------------
# three-way merge: one row per case


def names(r: dict[str, Any]) -> list[str]:
    return flat_labels(r)


MERGE_CASES = [
    # (case, base labels, ours labels, theirs labels, merged labels, conflict paths)
    ("add/add different labels union", ["a"], ["a", "b"], ["a", "c"], ["a", "b", "c"], []),
    ("add/add same label", ["a"], ["a", "b"], ["a", "b"], ["a", "b"], []),
    ("removed in ours, unchanged in theirs", ["a", "b"], ["a"], ["a", "b"], ["a"], []),
    ("removed in theirs, unchanged in ours", ["a", "b"], ["a", "b"], ["b"], ["b"], []),
    ("removed on both sides", ["a", "b"], ["a"], ["a"], ["a"], []),
    ("parent removed removes children", ["a", "a.x"], [], ["a", "a.x"], [], []),
    ("child added under a removed parent", ["a"], [], ["a", "a.y"], ["a", "a.y"], ["labels.a"]),
    ("nested add on both sides", ["a"], ["a", "a.x"], ["a", "a.y"], ["a", "a.x", "a.y"], []),
]


@pytest.mark.parametrize(("case", "b", "o", "t", "merged", "paths"), MERGE_CASES, ids=[c[0] for c in MERGE_CASES])
def test_merge_label_cases(case: str, b: list[str], o: list[str], t: list[str], merged: list[str],
                           paths: list[str]) -> None:
    result, conflicts = merge_recipes(recipe(tags(*b)), recipe(tags(*o)), recipe(tags(*t)))
    assert names(result) == merged
    assert [c["path"] for c in conflicts] == paths
    swapped, swapped_conflicts = merge_recipes(recipe(tags(*b)), recipe(tags(*t)), recipe(tags(*o)))
    assert names(swapped) == merged and [c["path"] for c in swapped_conflicts] == paths


def v1(tag: str, *attrs: str) -> dict[str, Any]:
    return {"tag": tag, "attributes": list(attrs)}


def test_merge_label_changed_differently_is_a_conflict() -> None:
    base, ours, theirs = recipe([v1("a")]), recipe([v1("a", "x")]), recipe([v1("a", "y")])
    merged, conflicts = merge_recipes(base, ours, theirs)
    assert conflicts == [{"kind": "recipe", "path": "labels.a", "detail": "changed differently on both sides",
                          "base": {}, "ours": {"attributes": ["x"]}, "theirs": {"attributes": ["y"]}}]
    assert merged["labels"] == ours["labels"]  # a conflict keeps ours


def test_merge_label_changed_one_side_removed_other() -> None:
    merged, conflicts = merge_recipes(recipe([v1("a")]), recipe([v1("a", "x")]), recipe([]))
    assert [(c["path"], c["detail"]) for c in conflicts] == [
        ("labels.a", "changed on one side and removed on the other")]
    merged, conflicts = merge_recipes(recipe([v1("a")]), recipe([v1("a")]), recipe([v1("a", "x")]))
    assert conflicts == [] and merged["labels"] == [v1("a", "x") | {"children": []}]


def test_merge_conflicted_label_under_removed_parent_is_one_conflict_in_either_order() -> None:
    base = recipe([{"tag": "a", "children": [v1("x")]}])
    removed = recipe([])
    changed = recipe([{"tag": "a", "children": [v1("x", "new")]}])
    m1, c1 = merge_recipes(base, removed, changed)
    m2, c2 = merge_recipes(base, changed, removed)
    assert [c["path"] for c in c1] == [c["path"] for c in c2] == ["labels.a.x"]
    assert names(m1) == [] and names(m2) == ["a", "a.x"]  # each keeps ours, as a whole tree


def test_merge_add_under_removed_grandparent() -> None:
    base = recipe(tags("a", "a.b"))
    merged, conflicts = merge_recipes(base, recipe([]), recipe(tags("a", "a.b", "a.b.c")))
    assert names(merged) == ["a", "a.b", "a.b.c"]
    assert [(c["path"], c["ours"], c["theirs"]) for c in conflicts] == [("labels.a", None, {}), ("labels.a.b", None, {})]
    assert conflicts[0]["detail"] == "removed on one side while the other side added labels under it"


def test_merge_without_base_is_a_union() -> None:
    ours = recipe([v1("a", "x"), v1("b")], [{"title": "k", "type": "boolean"}])
    theirs = recipe([v1("a", "y"), v1("c")], [{"title": "k", "type": "freeText"}, {"title": "m", "type": "boolean"}])
    merged, conflicts = merge_recipes(None, ours, theirs)
    assert names(merged) == ["a", "b", "c"]
    assert [a["key"] for a in merged["attributes"]] == ["k", "m"]
    assert [(c["path"], c["detail"]) for c in conflicts] == [
        ("attributes.k", "added on both sides with different definitions"),
        ("labels.a", "added on both sides with different definitions"),
    ]
    assert merge_recipes(None, ours, ours) == (ours, [])


def boolean(key: str, **kw: Any) -> dict[str, Any]:
    return {"title": key, "type": "boolean", **kw}


def test_merge_attributes() -> None:
    base = recipe([], [boolean("a"), boolean("b"), boolean("c")])
    ours = recipe([], [boolean("a", optional=False), boolean("b"), boolean("c", scope=["x"]), boolean("new1")])
    theirs = recipe([], [boolean("a"), boolean("c", scope=["y"]), boolean("new2")])
    merged, conflicts = merge_recipes(base, ours, theirs)
    by_key = {a["key"]: a for a in merged["attributes"]}
    assert sorted(by_key) == ["a", "c", "new1", "new2"]  # b removed by theirs
    assert by_key["a"]["optional"] is False
    assert [c["path"] for c in conflicts] == ["attributes.c"]
    assert conflicts[0]["ours"]["scope"] == ["x"] and conflicts[0]["theirs"]["scope"] == ["y"]


def test_merge_title_and_ui_never_conflict() -> None:
    def r(title: str, colors: dict[str, str], **extra: Any) -> dict[str, Any]:
        labels = [{"tag": t, "color": c} for t, c in colors.items()]
        return parse_recipe({"title": title, "labels": labels, **extra}, recipe_id=RID)

    base = r("base", {"a": "#000", "b": "#000"}, instructions="v1")
    ours = r("ours", {"a": "#111", "b": "#000"}, instructions="v1")
    theirs = r("base", {"a": "#000", "b": "#222"}, instructions="v2")
    merged, conflicts = merge_recipes(base, ours, theirs)
    assert conflicts == []
    assert merged["title"] == "ours"
    assert merged["ui"] == {"instructions": "v2", "labels": {"a": {"color": "#111"}, "b": {"color": "#222"}}}
    # Both sides changed: ours wins, and it is still not a conflict.
    merged, conflicts = merge_recipes(base, ours, r("theirs", {"a": "#333", "b": "#000"}))
    assert conflicts == [] and merged["title"] == "ours" and merged["ui"]["labels"]["a"] == {"color": "#111"}


def test_merge_drops_display_data_of_removed_labels_and_keeps_ours_id() -> None:
    base = parse_recipe({"labels": [{"tag": "a", "color": "#000"}, {"tag": "b"}]}, recipe_id=RID)
    ours = parse_recipe({"labels": [{"tag": "b"}]}, recipe_id=RID)
    theirs = parse_recipe({"labels": [{"tag": "a", "color": "#000"}, {"tag": "b"}]}, recipe_id=RID2)
    merged, conflicts = merge_recipes(base, ours, theirs)
    assert conflicts == [] and names(merged) == ["b"] and merged["ui"] == {} and merged["id"] == RID


def test_merge_result_is_a_canonical_record() -> None:
    base = parse_recipe(PETS_FILE, recipe_id=RID)
    ours = add_labels(base, ["bird.parrot"])
    theirs = add_labels(base, ["dog.adult"])
    merged, conflicts = merge_recipes(base, ours, theirs)
    assert conflicts == []
    assert parse_recipe(merged) == merged
    assert decode(encode(merged)) == merged
    assert decode(encode(conflicts)) == conflicts


# --------------------------------------------------------------------------------------
# diff


def test_diff_recipes() -> None:
    a = recipe([{"tag": "a", "children": [{"tag": "x"}]}, v1("b")], [boolean("k"), boolean("gone")])
    b = recipe([v1("b", "n"), {"tag": "c"}], [boolean("k", optional=False), boolean("new")], title="t2")
    d = diff_recipes(a, b)
    assert d == {
        "labels": {"added": ["c"], "removed": ["a", "a.x"], "changed": ["b"]},
        "attributes": {"added": ["new"], "removed": ["gone"], "changed": ["k"]},
        "title": {"a": "untitled", "b": "t2"},
        "compatible": True,
    }
    same = diff_recipes(a, a)
    assert same["labels"] == {"added": [], "removed": [], "changed": []} and same["title"] is None


# --------------------------------------------------------------------------------------
# label maps


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("old=new", {"old": "new"}),
        (" a = b , c=d.e ,", {"a": "b", "c": "d.e"}),
        ("a=b,a=b", {"a": "b"}),
        ("a=b,b=a", {"a": "b", "b": "a"}),
        ('{"a": "b", "x=y": "z"}', {"a": "b", "x=y": "z"}),
        ({"car": "vehicle.car"}, {"car": "vehicle.car"}),
        ({}, {}),
    ],
)
def test_parse_label_map(spec: Any, expected: dict[str, str]) -> None:
    assert parse_label_map(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty label map"),
        (" , ", "empty label map"),
        ("a", "must be old=new"),
        ("a=b=c", "must be old=new"),
        ("=b", "non-empty string"),
        ("a=", "non-empty string"),
        ("a=b,a=c", "mapped twice"),
        ("a..b=c", "empty component"),
        ("{not json", "not valid JSON"),
        ('{"a": "\ud800"}', "^label map: not UTF-8 text"),
        ({"a": 1}, "non-empty string"),
        ({"a": ""}, "non-empty string"),
        (["a", "b"], "must be a JSON object"),
        (3, "must be a JSON object"),
    ],
)
def test_parse_label_map_errors(spec: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_label_map(spec)


def test_remap_label() -> None:
    m = {"a": "x", "a.b": "y", "cat": "animal.cat"}
    assert remap_label("a", m) == "x"
    assert remap_label("a.z", m) == "x.z"
    assert remap_label("a.b", m) == "y"
    assert remap_label("a.b.c", m) == "y.c"
    assert remap_label("cat.kitten", m) == "animal.cat.kitten"
    assert remap_label("ab", m) == "ab"  # a prefix of the string, not of the name
    assert remap_label("b.a", m) == "b.a"


def test_remap_annotation_labels() -> None:
    anns = [
        {"id": "1", "label": "old", "attributes": ["keep"]},
        {"id": "2", "label": "old.child"},
        {"id": "3", "label": "other"},
        {"id": "4", "type": "note"},
        {"id": "5", "label": None},
    ]
    before = json.loads(json.dumps(anns))
    out = remap_annotation_labels(anns, parse_label_map("old=new"))
    assert anns == before
    assert [a.get("label") for a in out] == ["new", "new.child", "other", None, None]
    assert all(o is not a for o, a in zip(out, anns, strict=True))
    assert out[0]["attributes"] == ["keep"]
    with pytest.raises(UsageError, match="annotation #1 is not an object"):
        remap_annotation_labels([{}, "x"], {"a": "b"})
