"""Recipes: the label ontology a dataset version is annotated against.

This module owns the recipe record (parsing and validating recipe files and Dataloop ontology
exports into it), the canonical ontology and its hash, recipe compatibility (SEMANTICS §3.3,
G8) and label remapping for imports and merges; the three-way ontology merge (G17) and
recipe diffs are in ``recipes_merge``. It is pure: no store, no lmdb, no click, and no I/O
except ``load_recipe_file``, which reads one JSON file. It never decides *when* recipes are checked or merged; that is
the caller's job (repo / merge orchestration).

A recipe record is a plain canonical value, stored as a content-addressed object::

    {"id": "<24 hex>",             # lineage id: kept across edits, clones and merges
     "title": str,
     "labels": [LABEL, ...],       # sorted by tag at every level
     "attributes": [ATTR, ...],    # v2 attributes, sorted by key
     "ui": {"labels": {"<flat name>": {"color"?, "displayLabel"?, "displayData"?}},
            "instructions"?: JSON, "uiSettings"?: JSON}}   # keys only when non-empty

    LABEL = {"tag": str, "children": [LABEL, ...], "attributes"?: [v1 name, ...]}
    ATTR  = {"key", "title", "type": "options"|"range"|"boolean"|"freeText", "optional": bool,
             "scope": ["*"] | [label, ...], "multi"?: bool, "values"?: [str],   # options
             "range"?: {"min", "max", "step"}}                                 # range

Display data lives in ``ui``, keyed by the flattened label name (Dataloop's ``parent.child``),
so the ``labels``/``attributes`` part of a record *is* its ontology: colours, display names
and instructions can never leak into compatibility. Order carries no meaning anywhere in a
record (sibling labels, attributes, option values, scope), so equal files give equal records.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from dvstore.codec import encode
from dvstore.errors import IncompatibleRecipesError, RecipeError, UsageError
from dvstore.hashing import hash_bytes
from dvstore.io.dataloop import parse_json_bytes, read_file_bytes

__all__ = [
    "ATTRIBUTE_TYPES",
    "LABEL_DISPLAY_FIELDS",
    "MAX_DEPTH",
    "add_labels",
    "canonical_ontology",
    "check_compatible",
    "compatible",
    "default_recipe",
    "describe_recipe",
    "flat_labels",
    "load_recipe_file",
    "new_recipe_id",
    "ontology_hash",
    "parse_label_map",
    "parse_recipe",
    "remap_annotation_labels",
    "remap_label",
]

MAX_DEPTH = 32
"""Deepest label nesting (and JSON nesting inside display data) a recipe may have."""
MAX_FILE_SIZE = 64 * 1024 * 1024
ATTRIBUTE_TYPES = ("options", "range", "boolean", "freeText")
# Dataloop's UI names for attribute types, and what the SDK sends for them.
_TYPE_ALIASES: dict[str, tuple[str, bool | None]] = {
    "checkbox": ("options", True),
    "radio_button": ("options", False),
    "yes_no": ("boolean", None),
}
LABEL_DISPLAY_FIELDS = ("color", "displayLabel", "displayData")
# Recipe-level presentation data kept (opaque) under ``ui``.
_UI_FIELDS = ("instructions", "uiSettings")
_ID_RE = re.compile(r"^[0-9a-fA-F]{24}$")
# msgpack holds int64 and uint64; anything wider cannot be stored.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_NO_TAG = "Invalid input - each label must have a tag"


def _fail(where: str, message: str) -> NoReturn:
    raise RecipeError(f"{message} (at {where})" if where else message)


# --- ids and the default recipe ---


def new_recipe_id() -> str:
    """A fresh recipe lineage id in Dataloop's 24-hex form."""
    return os.urandom(12).hex()


def default_recipe() -> dict[str, Any]:
    """The recipe a dataset gets when none is given: title "default", no labels, a fresh id."""
    return {"id": new_recipe_id(), "title": "default", "labels": [], "attributes": [], "ui": {}}


def describe_recipe(recipe: Mapping[str, Any]) -> str:
    """How a recipe is named in messages: ``<id>/<title>``."""
    return f"{recipe.get('id')}/{recipe.get('title')}"


# --- parsing untrusted documents ---


def _check_str(value: str, where: str) -> str:
    # Lone surrogates (json.loads accepts "\ud800") cannot be encoded, so refuse them here
    # rather than let the codec fail when the record is stored.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        _fail(where, f"string is not valid UTF-8: {value[:40]!r}")
    return value


def _number(value: Any, where: str) -> int | float:
    if type(value) is int:
        if not _INT_MIN <= value <= _INT_MAX:
            _fail(where, "number out of range")
        return value
    if type(value) is float:
        if not math.isfinite(value):
            _fail(where, "number must be finite")
        return value
    _fail(where, f"expected a number, got {type(value).__name__}")


def _json_value(value: Any, where: str, depth: int = 0) -> Any:
    """Validate opaque JSON (display data, instructions) and return a private copy."""
    if depth > MAX_DEPTH:
        _fail(where, f"nested deeper than {MAX_DEPTH} levels")
    if value is None or type(value) is bool:
        return value
    if type(value) is str:
        return _check_str(value, where)
    if type(value) in (int, float):
        return _number(value, where)
    if type(value) is list:
        return [_json_value(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if type(value) is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                _fail(where, "object keys must be strings")
            out[_check_str(k, where)] = _json_value(v, f"{where}.{k}", depth + 1)
        return out
    _fail(where, f"unsupported value of type {type(value).__name__}")


def _string_list(value: Any, where: str, message: str) -> list[str]:
    if type(value) is not list or any(type(v) is not str for v in value):
        _fail(where, message)
    return sorted({_check_str(v, where) for v in value})


def _display(fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The display data of one label (colour, display name, display data); nulls dropped."""
    out: dict[str, Any] = {}
    for name in LABEL_DISPLAY_FIELDS:
        value = fields.get(name)
        if value is None:
            continue
        if name == "color":
            # Dataloop accepts "#rrggbb" or an RGB triple.
            if type(value) is list:
                if len(value) != 3 or any(type(c) is not int or not 0 <= c <= 255 for c in value):
                    _fail(where, "label color must be a string or [r, g, b] with 0-255 ints")
                value = list(value)
            elif type(value) is not str:
                _fail(where, "label color must be a string or [r, g, b]")
        elif name == "displayLabel" and type(value) is not str:
            _fail(where, "label displayLabel must be a string")
        out[name] = _json_value(value, f"{where}.{name}")
    return out


def _parse_labels(
    nodes: Any, where: str, depth: int, prefix: str, ui_labels: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    if nodes is None:
        return []
    if type(nodes) is not list:
        _fail(where, "labels must be a list")
    if nodes and depth > MAX_DEPTH:
        _fail(where, f"labels nested deeper than {MAX_DEPTH} levels")
    out: dict[str, dict[str, Any]] = {}
    for i, node in enumerate(nodes):
        here = f"{where}[{i}]"
        if type(node) is not dict:
            _fail(here, "each label must be an object")
        # Dataloop's ontology shape is {"value": {tag, color, ...}, "children": [...]};
        # the recipe-file shape puts the same fields on the node itself.
        fields = node.get("value", node)
        if type(fields) is not dict:
            _fail(here, "label 'value' must be an object")
        tag = fields.get("tag", fields.get("label_name"))
        if type(tag) is not str or tag == "":
            _fail(here, _NO_TAG)
        _check_str(tag, here)
        if "." in tag:
            _fail(here, f"label tag {tag!r} contains '.', which separates nested labels; use children")
        if tag in out:
            parent = f" under {prefix[:-1]!r}" if prefix else ""
            _fail(here, f"duplicate label {tag!r}{parent}")
        label: dict[str, Any] = {"tag": tag}
        attrs = fields.get("attributes")
        if attrs is not None:
            names = _string_list(
                attrs, f"{here}.attributes", "label attributes must be a list of strings"
            )
            if names:
                label["attributes"] = names
        display = _display(fields, here)
        if display:
            ui_labels[prefix + tag] = display
        children = node.get("children") if "children" in node else fields.get("children")
        label["children"] = _parse_labels(
            children, f"{here}.children", depth + 1, prefix + tag + ".", ui_labels
        )
        out[tag] = label
    return [out[t] for t in sorted(out)]


def _parse_attribute(a: Any, where: str) -> dict[str, Any]:
    if type(a) is not dict:
        _fail(where, "each attribute must be an object")
    title = a.get("title")
    if title is None or title == "":
        _fail(where, "title must be provided")
    if type(title) is not str:
        _fail(where, "attribute title must be a string")
    key = a.get("key", title)
    if type(key) is not str or key == "":
        _fail(where, "attribute key must be a non-empty string")
    where = f"{where} ({key!r})"
    kind = a.get("type")
    forced_multi: bool | None = None
    if type(kind) is str and kind in _TYPE_ALIASES:
        kind, forced_multi = _TYPE_ALIASES[kind]
    if type(kind) is not str or kind not in ATTRIBUTE_TYPES:
        allowed = ", ".join([*ATTRIBUTE_TYPES, *_TYPE_ALIASES])
        _fail(where, f"attribute type must be one of {allowed}; got {kind!r}")
    optional = a.get("optional")
    if optional is None:
        optional = True  # Dataloop attributes are optional unless marked required
    if type(optional) is not bool:
        _fail(where, "attribute 'optional' must be true or false")
    scope = a.get("scope")
    if scope is None:
        scope = ["*"]
    scope = _string_list(scope, where, "attribute scope must be a list of label names")
    if not scope or "*" in scope:
        scope = ["*"]  # "*" already covers every label; [] would scope to none, which Dataloop lacks
    values = a.get("values")
    if values is not None:
        values = _string_list(values, where, "Attributes values type must be list of strings")
    rec: dict[str, Any] = {
        "key": _check_str(key, where),
        "title": _check_str(title, where),
        "type": kind,
        "optional": optional,
        "scope": scope,
    }
    if kind == "options":
        multi = a.get("multi") if forced_multi is None else forced_multi
        if multi is None:
            multi = False
        if type(multi) is not bool:
            _fail(where, "attribute 'multi' must be true or false")
        rec["multi"] = multi
        rec["values"] = values or []
    elif kind == "range":
        r = a.get("range")
        if type(r) is not dict or "min" not in r or "max" not in r:
            _fail(where, "a range attribute needs range: {min, max, step?}")
        lo, hi = _number(r["min"], f"{where}.range.min"), _number(r["max"], f"{where}.range.max")
        step = _number(r["step"], f"{where}.range.step") if r.get("step") is not None else 1
        if lo > hi:
            _fail(where, "range min is greater than max")
        if step <= 0:
            _fail(where, "range step must be positive")
        rec["range"] = {"min": lo, "max": hi, "step": step}
    return rec


def _parse_attributes(sources: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for where, items in sources:
        if items is None:
            continue
        if type(items) is not list:
            _fail(where, "attributes must be a list")
        for i, a in enumerate(items):
            if type(a) is str:
                # A v1 ontology-level attribute: only a catalogue of the names labels list
                # in their own "attributes", which the labels keep.
                continue
            rec = _parse_attribute(a, f"{where}[{i}]")
            if rec["key"] in out:
                _fail(f"{where}[{i}]", f"duplicate attribute key {rec['key']!r}")
            out[rec["key"]] = rec
    return [out[k] for k in sorted(out)]


def _unwrap(doc: dict[str, Any]) -> dict[str, Any]:
    """The ontology part of a document: itself, or the one a recipe export wraps."""
    has_list, has_one = "ontologies" in doc, "ontology" in doc
    if not (has_list or has_one):
        return doc
    if has_list and has_one:
        _fail("", "a recipe cannot have both 'ontologies' and 'ontology'")
    if "labels" in doc or "roots" in doc:
        _fail("", "a recipe cannot have labels both inline and in an ontology")
    if has_one:
        body = doc["ontology"]
        if type(body) is not dict:
            _fail("ontology", "ontology must be an object")
        return body
    onts = doc["ontologies"]
    if type(onts) is not list:
        _fail("ontologies", "ontologies must be a list")
    if not onts:
        return {}
    if len(onts) > 1:
        _fail("ontologies", f"a recipe with {len(onts)} ontologies is not supported; keep one")
    if type(onts[0]) is not dict:
        _fail("ontologies[0]", "the recipe lists ontology ids only; export the ontology itself")
    return onts[0]


def _parse_ui(
    doc: Mapping[str, Any], labels: list[dict[str, Any]], ui_labels: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The ``ui`` of a record: a given ``ui`` map (a record re-parsed) plus what labels carry."""
    ui: dict[str, Any] = {}
    given = doc.get("ui")
    if given is not None:
        if type(given) is not dict:
            _fail("ui", "ui must be an object")
        ui = _json_value(given, "ui")
        given_labels = ui.pop("labels", None)
        if given_labels is not None and type(given_labels) is not dict:
            _fail("ui.labels", "ui.labels must be an object keyed by label name")
        known = set(flat_labels({"labels": labels}))
        for name, fields in (given_labels or {}).items():
            if type(fields) is not dict:
                _fail(f"ui.labels.{name}", "label display data must be an object")
            display = _display(fields, f"ui.labels.{name}")
            # Display data follows labels: entries of labels the recipe lacks are dropped,
            # and fields written on a label itself win.
            if name in known and display:
                ui_labels[name] = {**display, **ui_labels.get(name, {})}
    for key in _UI_FIELDS:
        if doc.get(key) is not None:
            ui[key] = _json_value(doc[key], key)
    if ui_labels:
        ui["labels"] = ui_labels
    return ui


def _parse_id(value: Any, where: str) -> str:
    if type(value) is not str or not _ID_RE.match(value):
        _fail(where, f"recipe id must be 24 hex characters, got {value!r}")
    return value.lower()


def parse_recipe(doc: Any, *, recipe_id: str | None = None) -> dict[str, Any]:
    """Validate a recipe document and return its canonical record.

    Accepts the recipe-file format of CLI.md (``{"title", "labels": [...], "attributes"}``),
    Dataloop's ontology export (``{"roots": [{"value": {...}, "children": [...]}],
    "metadata": {"attributes": [...]}}``), a recipe export wrapping one ontology
    (``{"ontologies": [{...}]}`` or ``{"ontology": {...}}``) and a record this function made
    (``parse_recipe(r) == r``).

    Args:
        doc: The decoded JSON document.
        recipe_id: The lineage id to give the record. Defaults to the document's own
            ``id``/``recipe_id`` (so re-importing an export keeps its lineage), else a fresh id.

    Returns:
        The canonical recipe record (see the module docstring).

    Raises:
        RecipeError: The document is malformed; the message says what and where.
    """
    if type(doc) is not dict:
        _fail("", f"a recipe must be a JSON object, got {type(doc).__name__}")
    body = _unwrap(doc)
    if "labels" in body and "roots" in body:
        _fail("", "a recipe cannot have both 'labels' and 'roots'")
    # An explicit id wins; then the export's own (a recipe's before its ontology's), so
    # re-importing an export keeps its lineage.
    given = [(n, src[n]) for src in (doc, body) for n in ("id", "recipe_id") if src.get(n) is not None]
    if recipe_id is not None:
        given.insert(0, ("recipe_id", recipe_id))
    rid = _parse_id(given[0][1], given[0][0]) if given else new_recipe_id()
    title = doc.get("title") if doc.get("title") is not None else body.get("title")
    if title is None:
        title = "untitled"
    if type(title) is not str:
        _fail("title", "recipe title must be a string")

    ui_labels: dict[str, dict[str, Any]] = {}
    labels_key = "roots" if "roots" in body else "labels"
    labels = _parse_labels(body.get(labels_key), labels_key, 1, "", ui_labels)
    metadata = body.get("metadata")
    if metadata is not None and type(metadata) is not dict:
        _fail("metadata", "metadata must be an object")
    attributes = _parse_attributes(
        [
            ("attributes", body.get("attributes")),
            ("metadata.attributes", (metadata or {}).get("attributes")),
        ]
    )

    ui = _parse_ui(doc, labels, ui_labels)
    return {
        "id": rid,
        "title": _check_str(title, "title"),
        "labels": labels,
        "attributes": attributes,
        "ui": ui,
    }


def load_recipe_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON recipe or ontology file and parse it (``parse_recipe``).

    Raises:
        RecipeError: The file cannot be read, is not a regular file, is not JSON (the rules of
            ``dataloop.read_json_file``), or is not a valid recipe; the message names the file.
    """
    name = os.fspath(path)
    display = f"recipe file {name}"
    data = read_file_bytes(name, display, error=RecipeError, limit=MAX_FILE_SIZE + 1)
    if len(data) > MAX_FILE_SIZE:
        raise RecipeError(f"recipe file {name} is larger than {MAX_FILE_SIZE} bytes")
    doc = parse_json_bytes(data, display, error=RecipeError)
    try:
        return parse_recipe(doc)
    except RecipeError as e:
        raise RecipeError(f"recipe file {name}: {e.message}", hint=e.hint) from None


# --- canonical ontology and compatibility ---


def _require_record(recipe: Any) -> Mapping[str, Any]:
    if not isinstance(recipe, Mapping):
        raise RecipeError(f"expected a recipe record, got {type(recipe).__name__}")
    if type(recipe.get("labels", [])) is not list or type(recipe.get("attributes", [])) is not list:
        raise RecipeError("malformed recipe record: labels and attributes must be lists")
    return recipe


def _label_defs(recipe: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flattened name -> the label's own ontology definition (children and display data out)."""
    out: dict[str, dict[str, Any]] = {}
    stack: list[tuple[str, Any]] = [("", n) for n in reversed(_require_record(recipe).get("labels", []))]
    while stack:
        prefix, node = stack.pop()
        name = prefix + node["tag"]
        attrs = sorted(set(node.get("attributes") or ()))
        out[name] = {"attributes": attrs} if attrs else {}
        stack.extend((name + ".", c) for c in reversed(node.get("children") or ()))
    return out


def _build_tree(defs: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sorted label tree of a set of flattened names; every parent must be in ``defs``."""
    top: list[dict[str, Any]] = []
    nodes: dict[str, dict[str, Any]] = {}
    # Sorting by the list of components puts each parent before its children and keeps
    # siblings in tag order, so no second sorting pass is needed.
    for name in sorted(defs, key=lambda n: n.split(".")):
        parent, _, tag = name.rpartition(".")
        node = {"tag": tag, "children": [], **defs[name]}
        nodes[name] = node
        (nodes[parent]["children"] if parent else top).append(node)
    return top


def _attribute_defs(recipe: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for a in _require_record(recipe).get("attributes", []):
        a = dict(a)
        for field in ("values", "scope"):  # sets, whatever order a hand-built record used
            if field in a:
                a[field] = sorted(set(a[field]))
        out[a["key"]] = a
    return out


def canonical_ontology(recipe: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a recipe that decides compatibility: labels tree and v2 attributes.

    Sibling order, attribute order and all display data (colours, display labels,
    instructions, title, id) are left out; lists are sorted.
    """
    attrs = _attribute_defs(recipe)
    return {"labels": _build_tree(_label_defs(recipe)), "attributes": [attrs[k] for k in sorted(attrs)]}


def ontology_hash(recipe: Mapping[str, Any]) -> bytes:
    """blake3 of the canonical encoding of ``canonical_ontology(recipe)``."""
    return hash_bytes(encode(canonical_ontology(recipe)))


def compatible(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether datasets with these recipes may be merged: same lineage id or same ontology."""
    return a.get("id") == b.get("id") or ontology_hash(a) == ontology_hash(b)


def check_compatible(named: list[tuple[str, Mapping[str, Any]]]) -> None:
    """Check every recipe against the first one (merge precondition, SEMANTICS §3.3).

    Args:
        named: ``(dataset name, recipe record)`` pairs in merge order.

    Raises:
        IncompatibleRecipesError: A recipe is incompatible with the first; names both.
    """
    if not named:
        return
    first_name, first = named[0]
    for name, recipe in named[1:]:
        if not compatible(first, recipe):
            raise IncompatibleRecipesError(
                f"Cannot merge datasets with different recipes: {first_name}={describe_recipe(first)} "
                f"vs {name}={describe_recipe(recipe)}. Switch recipe first (dvs recipe switch).",
                hint=f"give {name} the recipe of {first_name}: "
                f"dvs recipe switch {name} --from {first_name}",
            )


# --- labels ---


def flat_labels(recipe: Mapping[str, Any]) -> list[str]:
    """Every label's flattened name (``parent.child``), parents first, siblings by tag."""
    return list(_label_defs(recipe))


def _split_label_name(name: Any, error: type[UsageError]) -> list[str]:
    if type(name) is not str or name == "":
        raise error(f"a label name must be a non-empty string, got {name!r}")
    parts = name.split(".")
    if any(p == "" for p in parts):
        raise error(f"label name {name!r} has an empty component")
    if len(parts) > MAX_DEPTH:
        raise error(f"label name {name[:60]!r} is nested deeper than {MAX_DEPTH} levels")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise error(f"label name is not valid UTF-8: {name[:40]!r}") from None
    return parts


def add_labels(recipe: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A new recipe with the given labels added (importers: COCO categories become labels).

    ``"a.b"`` adds ``b`` under ``a``, adding ``a`` if needed. Labels that exist are left
    as they are (their attributes and display data too). The id is kept.

    Raises:
        RecipeError: A name is empty, has an empty component or is nested too deep.
    """
    defs = _label_defs(recipe)
    for name in names:
        parts = _split_label_name(name, RecipeError)
        for i in range(1, len(parts) + 1):
            defs.setdefault(".".join(parts[:i]), {})
    return {**recipe, "labels": _build_tree(defs)}


# --- label remapping (--map-labels) ---


def _add_pair(out: dict[str, str], old: Any, new: Any) -> None:
    for side in (old, new):
        _split_label_name(side, UsageError)
    if out.get(old, new) != new:
        raise UsageError(f"label {old!r} is mapped twice: to {out[old]!r} and to {new!r}")
    out[old] = new


def parse_label_map(spec: str | Mapping[str, Any]) -> dict[str, str]:
    """Parse a label mapping: ``"old=new,old2=new2"``, a JSON object string, or a mapping.

    Mappings apply once and all at the same time: ``a=b,b=c`` sends ``a`` to ``b`` and
    ``b`` to ``c``, never ``a`` to ``c``. Names may be flattened (``vehicle.car``).

    Raises:
        UsageError: The spec is empty or malformed, a name is empty, or a label is mapped
            to two different names.
    """
    out: dict[str, str] = {}
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("{"):
            spec = parse_json_bytes(text.encode("utf-8", "surrogatepass"), "label map", error=UsageError)
        else:
            pairs = [p.strip() for p in text.split(",") if p.strip()]
            if not pairs:
                raise UsageError("empty label map", hint="use --map-labels old=new[,old2=new2...]")
            for pair in pairs:
                if pair.count("=") != 1:
                    raise UsageError(
                        f"label map entry {pair!r} must be old=new",
                        hint="for names containing '=' or ',' pass a JSON mapping file",
                    )
                old, new = (s.strip() for s in pair.split("="))
                _add_pair(out, old, new)
            return out
    if not isinstance(spec, Mapping):
        raise UsageError(
            f"a label map must be a JSON object of old -> new names, got {type(spec).__name__}"
        )
    for old, new in spec.items():
        _add_pair(out, old, new)
    return out


def remap_label(label: str, mapping: Mapping[str, str]) -> str:
    """Map one label name; a mapped parent carries its flattened children with it.

    The longest mapped prefix wins: with ``{"a": "x", "a.b": "y"}``, ``a.b.c`` becomes
    ``y.c`` and ``a.z`` becomes ``x.z``.
    """
    if label in mapping:
        return mapping[label]
    parts = label.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in mapping:
            return mapping[prefix] + label[len(prefix) :]
    return label


def remap_annotation_labels(
    annotations: Iterable[Any], mapping: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Return copies of the annotations with their ``label`` remapped; inputs are untouched.

    Raises:
        UsageError: An annotation is not an object.
    """
    out = []
    for i, ann in enumerate(annotations):
        if not isinstance(ann, Mapping):
            raise UsageError(f"annotation #{i} is not an object")
        copy = dict(ann)
        label = copy.get("label")
        if type(label) is str and mapping:
            copy["label"] = remap_label(label, mapping)
        out.append(copy)
    return out
