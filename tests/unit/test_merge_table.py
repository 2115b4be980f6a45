"""The case table of docs/merge.md, one test per row and strategy column.

The table is the specification: this module parses it and gives each symbol of each
component a concrete value (``FIXTURES``), builds base, ours and theirs as layer tries,
merges them with ``dvstore.merge`` and compares the result with the value the table names.
A row without a fixture, or a fixture without a row, fails.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dvstore import tree
from dvstore.merge import (
    ANNSET,
    MergeOptions,
    Scope,
    empty_layers,
    merge_layers,
    path_key,
    resolve_paths,
    scoped_side,
)
from dvstore.merge_item import union_annotation_id
from dvstore.model import LAYERS
from dvstore.storage.objects import MemoryObjectStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "merge.md"
K = bytes(range(16))
K2 = bytes(range(1, 17))
THEIRS_ID = "7" * 32
B0, BX, BY = b"\x00" * 32, b"\x11" * 32, b"\x22" * 32
ABSENT = "–"
NOT_HELD = "·"

Side = dict[bytes, dict[str, Any]]  # item id -> layer -> value (annotation sets as dicts)


def parse_cases() -> list[dict[str, str]]:
    text = DOC.read_text(encoding="utf-8")
    body = text.split("<!-- cases:start -->")[1].split("<!-- cases:end -->")[0]
    rows = []
    for line in body.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        n, component, base, ours, theirs, result, s_ours, s_theirs, s_union = cells
        rows.append({"n": n, "component": component, "base": base, "ours": ours, "theirs": theirs,
                     "fail": result, "ours_s": s_ours or result, "theirs_s": s_theirs or result,
                     "union_s": s_union or result})
    return rows


# --------------------------------------------------------------------------------------
# what each symbol means, per component


def rec(**kw: Any) -> dict[str, Any]:
    r = {"filename": "/a.jpg", "blob": B0, "size": 1, "mimetype": "image/jpeg", "system": {}, "hidden": False,
         "createdAt": "2024-01-01T00:00:00.000Z"}
    r.update(kw)
    return r


def ann(aid: str, label: str) -> dict[str, Any]:
    return {"id": aid, "type": "box", "label": label, "coordinates": [1, 2],
            "metadata": {"system": {}, "user": {}}}


BASE_ITEM: dict[str, Any] = {"items": rec(), "annotations": None, "metadata": {"user": {"keep": 1}}, "status": None}


def item(**layers: Any) -> Side:
    it = copy.deepcopy(BASE_ITEM)
    it.update(layers)
    return {K: it}


def meta(**user: Any) -> dict[str, Any]:
    return {"user": {"keep": 1, **user}}


def system(**sysmeta: Any) -> dict[str, Any]:
    return {"user": {"keep": 1}, "system": sysmeta}


A = "a" * 24
A2 = "b" * 24


def by_symbol(values: dict[str, Any], absent: Any = None) -> Callable[[str], Any]:
    def f(sym: str) -> Any:
        return absent if sym == ABSENT else values[sym]
    return f


COMPONENTS: dict[str, Callable[[str], Side]] = {
    "item": lambda s: {} if s == ABSENT else {
        "b": item(), "x": item(items=rec(blob=BX)), "y": item(metadata=meta(k=2)),
        "x+y": item(items=rec(blob=BX), metadata=meta(k=2))}[s],
    "binary": lambda s: item(items=rec(blob={"b": B0, "x": BX, "y": BY}[s])),
    "filename": lambda s: item(items=rec(filename={"b": "/a.jpg", "x": "/x.jpg", "y": "/y.jpg"}[s])),
    "hidden": lambda s: item(items=rec(hidden=s != "b")),
    "metadata": lambda s: item(metadata=meta() if s == ABSENT else meta(k={"b": 0, "x": 1, "y": 2}[s])),
    "metadata keys": lambda s: item(metadata={"b": meta(), "x": meta(a=1), "y": meta(c=1), "x+y": meta(a=1, c=1)}[s]),
    "metadata nested": lambda s: item(metadata=meta(d={"b": {"p": 0, "q": 0}, "x": {"p": 1, "q": 0},
                                                       "y": {"p": 0, "q": 1}, "x+y": {"p": 1, "q": 1}}[s])),
    "metadata list": lambda s: item(metadata=meta(k={"b": [1], "x": [1, 2], "y": [1, 3]}[s])),
    "tags": lambda s: item(metadata=system(tags={"b": {"train": True}, "x": {"validation": True},
                                                 "y": {"test": True}}[s])),
    "collections": lambda s: item(metadata=meta() if s == ABSENT else system(collections={
        "b": {"c0": {"n": 0}}, "x": {"c0": {"n": 0}, "c1": {"n": 1}}, "y": {"c0": {"n": 0}, "c2": {"n": 2}},
        "x+y": {"c0": {"n": 0}, "c1": {"n": 1}, "c2": {"n": 2}}}[s])),
    "annotation": lambda s: item(annotations=None if s == ABSENT else {
        "b": {A: ann(A, "dog")}, "x": {A: ann(A, "cat")}, "y": {A: ann(A, "bird")},
        "x+y": {A: ann(A, "cat"), union_annotation_id(A, THEIRS_ID): ann(union_annotation_id(A, THEIRS_ID), "bird")},
    }[s]),
    "annotations": lambda s: item(annotations={ABSENT: None, "x": {A: ann(A, "cat")}, "y": {A2: ann(A2, "bird")},
                                               "x+y": {A: ann(A, "cat"), A2: ann(A2, "bird")}}[s]),
    "annotation content and QA status": lambda s: item(
        annotations={A: ann(A, "cat" if s in ("x", "x+y") else "dog")},
        status={"annotations": {A: "approved" if s in ("y", "x+y") else "review"}}),
    "QA status": lambda s: item(annotations={A: ann(A, "dog")},
                                status=None if s == ABSENT else {"annotations": {
                                    A: {"b": "review", "x": "approved", "y": "issue"}[s]}}),
    "QA status of a deleted annotation": lambda s: item() if s == ABSENT else item(
        annotations={A: ann(A, "dog")}, status={"annotations": {A: {"b": "review", "y": "approved"}[s]}}),
    "task status": lambda s: item(status=None if s == ABSENT else {"tasks": {
        "t1": {"status": {"b": "completed", "x": "approved", "y": "discard"}[s]}}}),
    "task statuses": lambda s: item(status={ABSENT: None, "x": {"tasks": {"t1": {"status": "completed"}}},
                                            "y": {"tasks": {"t2": {"status": "discard"}}},
                                            "x+y": {"tasks": {"t1": {"status": "completed"},
                                                              "t2": {"status": "discard"}}}}[s]),
    "path": lambda s: {ABSENT: {}, "x": {K: dict(BASE_ITEM, items=rec(blob=BX))},
                       "y": {K2: dict(BASE_ITEM, items=rec(blob=BY))},
                       "x+y": {K: dict(BASE_ITEM, items=rec(blob=BX)),
                               K2: dict(BASE_ITEM, items=rec(blob=BY, filename="/a_1.jpg"))}}[s],
    # Ours adds the item /img, theirs /img/b.jpg: the item that is also a folder is renamed.
    "item and folder": lambda s: {ABSENT: {}, "x": {K: dict(BASE_ITEM, items=rec(filename="/img", blob=BX))},
                                  "y": {K2: dict(BASE_ITEM, items=rec(filename="/img/b.jpg", blob=BY))},
                                  "x+y": {K: dict(BASE_ITEM, items=rec(filename="/img_1", blob=BX)),
                                          K2: dict(BASE_ITEM, items=rec(filename="/img/b.jpg", blob=BY))}}[s],
}
# Modifiers in the component column: the same values, merged differently.
MODIFIERS = {
    "keep-deleted": {"keep_deleted": True},
    "path-collision fail": {"policy": "fail"},
    "sparse theirs": {"scope": Scope(items=frozenset())},
    "layer dropped by theirs": {"drop_theirs": "metadata"},
    "no-metadata": {"project_out": "metadata"},
}


def split_component(name: str) -> tuple[str, dict[str, Any]]:
    m = re.fullmatch(r"(.+?) \((.+)\)", name)
    if not m:
        return name, {}
    return m.group(1), MODIFIERS[m.group(2)]


# --------------------------------------------------------------------------------------
# building and reading tries


def to_layers(store: MemoryObjectStore, side: Side) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for layer in LAYERS:
        entries = []
        for k, it in side.items():
            v = it.get(layer)
            if v is None:
                continue
            if layer == "annotations":
                v = store.put(ANNSET, v)
            entries.append((k, v))
        out[layer] = tree.build(store, entries)
    return out


def from_layers(store: MemoryObjectStore, layers: dict[str, bytes | None]) -> Side:
    side: Side = {}
    for k, r in tree.items(store, layers["items"] or tree.EMPTY):
        side[k] = {"items": r}
    for layer in ("annotations", "metadata", "status"):
        root = layers.get(layer)
        for k, v in (tree.items(store, root) if root else ()):
            assert k in side, f"{layer} value for an item that is not in the result"
            side[k][layer] = dict(store.get(v, ANNSET)) if layer == "annotations" else v
    for it in side.values():
        for layer in LAYERS:
            it.setdefault(layer, None)
    return side


def run(case: dict[str, str], strategy: str) -> tuple[Side, dict[str, bytes | None], list[Any]]:
    comp, mods = split_component(case["component"])
    fix = COMPONENTS[comp]
    store = MemoryObjectStore()
    # An absent item in the base is the empty version (no common ancestor), as merging does.
    base_layers = empty_layers() if comp in ("item", "path", "item and folder") and case["base"] == ABSENT \
        else to_layers(store, fix(case["base"]))
    ours = to_layers(store, fix(case["ours"]))
    if case["theirs"] == NOT_HELD:
        theirs: dict[str, bytes | None]
        if "scope" in mods:
            theirs = to_layers(store, {})
            theirs = scoped_side(store, base_layers, theirs, mods["scope"])
        else:
            theirs = to_layers(store, fix("b"))
            theirs[mods["drop_theirs"]] = None
            theirs = scoped_side(store, base_layers, theirs, None)
    else:
        theirs = to_layers(store, fix(case["theirs"]))
    if "project_out" in mods:
        for side in (base_layers, ours, theirs):
            side[mods["project_out"]] = None
    res = merge_layers(store, base_layers, ours, theirs,
                       MergeOptions(strategy=strategy, keep_deleted=mods.get("keep_deleted", False),
                                    theirs_id=THEIRS_ID))
    ours_paths = tree.build(store, ((path_key(r["filename"]), [r["filename"], k])
                                    for k, r in tree.items(store, ours["items"] or tree.EMPTY)))
    paths = resolve_paths(store, ours["items"] or tree.EMPTY, ours_paths, res.layers["items"] or tree.EMPTY,
                          policy=mods.get("policy", "rename"))
    layers = dict(res.layers, items=paths.items)
    if not paths.conflicts:
        want_paths = {path_key(r["filename"]): [r["filename"], k] for k, r in tree.items(store, paths.items)}
        assert dict(tree.items(store, paths.paths)) == want_paths, "derived path index out of step"
    return from_layers(store, layers), layers, res.conflicts + paths.conflicts


def expected(case: dict[str, str], sym: str) -> Side:
    comp, _ = split_component(case["component"])
    if sym == NOT_HELD:
        want = COMPONENTS[comp]("b")
        for it in want.values():
            it["metadata"] = None
        return want
    return COMPONENTS[comp](sym)


CASES = parse_cases()
STRATEGY_COLUMNS = {"fail": "fail", "ours": "ours_s", "theirs": "theirs_s", "union": "union_s"}


def test_table_is_numbered_and_covered() -> None:
    assert [int(c["n"]) for c in CASES] == list(range(1, len(CASES) + 1))
    used = {split_component(c["component"])[0] for c in CASES}
    assert used == set(COMPONENTS), "every fixture has rows and every row a fixture"
    mods = {m for c in CASES for m in re.findall(r"\((.+)\)", c["component"])}
    assert mods == set(MODIFIERS)


@pytest.mark.parametrize("strategy", list(STRATEGY_COLUMNS))
@pytest.mark.parametrize("case", CASES, ids=[f"{c['n']}-{c['component']}" for c in CASES])
def test_case(case: dict[str, str], strategy: str) -> None:
    want = case[STRATEGY_COLUMNS[strategy]]
    got, layers, conflicts = run(case, strategy)
    if want.startswith("CONFLICT"):
        kind = want.split()[1]
        assert kind in {c.kind for c in conflicts}, conflicts
        if strategy == "fail" or kind == "path":
            assert any(c.resolution is None for c in conflicts)
        return
    unresolved = [c for c in conflicts if c.resolution is None]
    assert not unresolved, unresolved
    if strategy != "fail" and case["fail"].startswith("CONFLICT"):
        assert conflicts and all(c.resolution == strategy for c in conflicts)
    assert got == expected(case, want)
    if want == NOT_HELD:
        assert layers["metadata"] is None
