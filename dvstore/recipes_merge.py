"""Recipes, three-way: merging two recipes that share a lineage, and what changes from one
to another. Pure functions over the recipe records ``recipes`` parses and checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dvstore.recipes import _attribute_defs, _build_tree, _label_defs, compatible


def _merge3(base: Any, ours: Any, theirs: Any) -> tuple[Any, bool]:
    """Git's trivial three-way rule on whole values; a conflict keeps ours."""
    if ours == theirs:
        return ours, False
    if ours == base:
        return theirs, False
    if theirs == base:
        return ours, False
    return ours, True


def _conflict(path: str, base: Any, ours: Any, theirs: Any) -> dict[str, Any]:
    if base is None:
        detail = "added on both sides with different definitions"
    elif ours is None or theirs is None:
        detail = "changed on one side and removed on the other"
    else:
        detail = "changed differently on both sides"
    return {"kind": "recipe", "path": path, "detail": detail,
            "base": base, "ours": ours, "theirs": theirs}


def _merge_maps(
    prefix: str, base: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    out: dict[str, Any] = {}
    conflicts = []
    for key in sorted(set(base) | set(ours) | set(theirs)):
        b, o, t = base.get(key), ours.get(key), theirs.get(key)
        value, conflicted = _merge3(b, o, t)
        if conflicted:
            conflicts.append(_conflict(prefix + key, b, o, t))
        if value is not None:
            out[key] = value
    return out, conflicts


def _merge_ui(
    base: Mapping[str, Any], ours: Mapping[str, Any], theirs: Mapping[str, Any], labels: Iterable[str]
) -> dict[str, Any]:
    # Presentation never blocks a merge: field by field three-way, ours on a true conflict.
    out: dict[str, Any] = {}
    for key in sorted((set(base) | set(ours) | set(theirs)) - {"labels"}):
        value, _ = _merge3(base.get(key), ours.get(key), theirs.get(key))
        if value is not None:
            out[key] = value
    bl, ol, tl = base.get("labels", {}), ours.get("labels", {}), theirs.get("labels", {})
    merged_labels = {}
    for name in labels:
        fields, _ = _merge_maps("", bl.get(name, {}), ol.get(name, {}), tl.get(name, {}))
        if fields:
            merged_labels[name] = fields
    if merged_labels:
        out["labels"] = merged_labels
    return out


def _restore_parents(
    labels: dict[str, Any],
    base: Mapping[str, Any],
    ours: Mapping[str, Any],
    theirs: Mapping[str, Any],
    conflicted: set[str],
) -> list[dict[str, Any]]:
    """Put back parents one side removed while the merged result keeps labels under them.

    Only a clean add under a removed parent is a new conflict (on the parent). A label that
    is itself conflicted may sit under a removed parent in one merge order and not in the
    other (a conflict keeps ours), so its parent comes back silently: the conflicts stay
    the same whichever side is ours.
    """
    needed: set[str] = set()
    needed_by_clean: set[str] = set()
    for name in labels:
        parts = name.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent not in labels:
                needed.add(parent)
                if "labels." + name not in conflicted:
                    needed_by_clean.add(parent)
    conflicts = []
    for parent in sorted(needed):
        sides = (ours.get(parent), theirs.get(parent), base.get(parent))
        labels[parent] = next(d for d in sides if d is not None)
        if parent in needed_by_clean and "labels." + parent not in conflicted:
            c = _conflict("labels." + parent, base.get(parent), ours.get(parent), theirs.get(parent))
            c["detail"] = "removed on one side while the other side added labels under it"
            conflicts.append(c)
    return conflicts


def merge_recipes(
    base: Mapping[str, Any] | None, ours: Mapping[str, Any], theirs: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Three-way merge of two recipes that share a lineage (SEMANTICS G17). Pure.

    Labels (by flattened name) and attributes (by key) merge as whole values with git's
    trivial rule: both sides equal → that; one side unchanged → the other side (so an add
    on one side is kept and a removal on one side removes). Anything else is a conflict,
    and the result keeps ours for it. A label added by one side under a parent the other
    side removed is a conflict on the parent, which stays so the tree remains whole.
    The title and ``ui`` merge the same way, but being presentation they never conflict:
    ours wins a true conflict. The result keeps ours' id.

    Args:
        base: The recipe of the merge base, or None when there is no common ancestor (then
            it is a union, and the same key defined differently is a conflict).
        ours: The recipe of the first side.
        theirs: The recipe of the second side.

    Returns:
        ``(merged record, conflicts)``; each conflict is ``{"kind": "recipe", "path":
        "labels.<flat name>" | "attributes.<key>", "detail": str, "base", "ours",
        "theirs"}`` with the definitions on each side (None where absent), sorted by path.
    """
    empty: Mapping[str, Any] = {"labels": [], "attributes": [], "ui": {}}
    b = base if base is not None else empty
    bl, ol, tl = _label_defs(b), _label_defs(ours), _label_defs(theirs)
    labels, conflicts = _merge_maps("labels.", bl, ol, tl)
    conflicts.extend(_restore_parents(labels, bl, ol, tl, {c["path"] for c in conflicts}))
    attrs, attr_conflicts = _merge_maps(
        "attributes.", _attribute_defs(b), _attribute_defs(ours), _attribute_defs(theirs)
    )
    conflicts.extend(attr_conflicts)
    title, _ = _merge3(b.get("title"), ours.get("title"), theirs.get("title"))
    merged = {
        "id": ours["id"],
        "title": title,
        "labels": _build_tree(labels),
        "attributes": [attrs[k] for k in sorted(attrs)],
        "ui": _merge_ui(b.get("ui") or {}, ours.get("ui") or {}, theirs.get("ui") or {}, sorted(labels)),
    }
    conflicts.sort(key=lambda c: c["path"])
    return merged, conflicts


def _diff_maps(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(b) - set(a)),
        "removed": sorted(set(a) - set(b)),
        "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
    }


def diff_recipes(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """What changes from recipe ``a`` to recipe ``b`` (for ``dvs diff``).

    Returns:
        ``{"labels": {"added", "removed", "changed"}, "attributes": {"added", "removed",
        "changed"}, "title": None | {"a", "b"}, "compatible": bool}``. Labels are flattened
        names (a removed parent lists its children too); a label is changed when its own v1
        attributes are. Display data is not compared.
    """
    title_a, title_b = a.get("title"), b.get("title")
    return {
        "labels": _diff_maps(_label_defs(a), _label_defs(b)),
        "attributes": _diff_maps(_attribute_defs(a), _attribute_defs(b)),
        "title": None if title_a == title_b else {"a": title_a, "b": title_b},
        "compatible": compatible(a, b),
    }
