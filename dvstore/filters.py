"""DQL filters: the dtlpy-compatible ``Filters`` builder and the query compiler.

This module owns the filter language of SEMANTICS §4: the builder that emits exactly the
JSON dtlpy's ``Filters.prepare()`` emits (§4.1), and ``compile_query``, which validates a
query document once, applies the defaults for its purpose (listing or clone, §2.3.2 / G11)
and turns it into nested closures that evaluate items and annotations given as their JSON
views (§4.2). Every malformed query is a ``FilterError``; no other exception escapes for
any JSON input.

It must not do I/O, know how items are stored or loaded, or import lmdb, msgpack, blake3 or
click: callers hand it plain dicts. Glob matching lives in ``dvstore.filters_glob``.
"""

from __future__ import annotations

import copy
import json
import posixpath
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any, Final, Literal

from dvstore.errors import FilterError
from dvstore.filters_eval import FIELD_OPS, MAX_DEPTH, MISSING, ExprContext, Pred, compile_expression
from dvstore.filters_eval import type_name as _tname
from dvstore.io.dataloop import parse_json_bytes
from dvstore.model import split_filename

__all__ = [
    "ANNOTATION_TYPES",
    "DEFAULT_ANNOTATION_TYPES",
    "MAX_DEPTH",
    "FilterError",
    "Filters",
    "FiltersKnownFields",
    "FiltersMethod",
    "FiltersOperations",
    "FiltersOrderByDirection",
    "FiltersResource",
    "Purpose",
    "Query",
    "compile_query",
    "items_query_error",
]

# dtlpy 1.126.5 entities/annotation.py AnnotationType, in its order: the annotation default
# is "every one of these except note", emitted as a list in this order.
ANNOTATION_TYPES: Final[tuple[str, ...]] = (
    "box", "cube", "cube_3d", "class", "comparison", "ellipse", "note", "point", "segment",
    "polyline", "pose", "binary", "subtitle", "text_mark", "gis", "ref_semantic_3d",
    "polyline_3d", "text", "ref_image",
)  # fmt: skip
DEFAULT_ANNOTATION_TYPES: Final[tuple[str, ...]] = tuple(t for t in ANNOTATION_TYPES if t != "note")
MAX_PAGE_SIZE: Final = 1000

Purpose = Literal["list", "clone"]

_RESOURCES: Final = ("items", "annotations")
_JOIN_ON: Final = {
    "items": {"resource": "annotations", "local": "itemId", "forigen": "id"},
    "annotations": {"resource": "items", "local": "id", "forigen": "itemId"},
}
_DOC_KEYS: Final = frozenset({"filter", "resource", "join", "sort", "page", "pageSize", "useDefaults"})
# Keys dtlpy may add to a prepared query that do not change which items match.
_IGNORED_DOC_KEYS: Final = frozenset({"context", "systemSpace"})
# Item fields that only the item's annotations can answer truthfully (G22).
_ANNOTATION_FIELDS: Final = frozenset({"annotated", "annotationsCount"})


# --------------------------------------------------------------------------- dtlpy names


class FiltersResource(str, Enum):
    """The resources dvstore can filter (dtlpy has more; they are refused here)."""

    ITEM = "items"
    ANNOTATION = "annotations"


class FiltersOperations(str, Enum):
    """dtlpy's operator names; ``add(..., operator=...)`` also takes ``"eq"`` or ``"$eq"``."""

    OR = "or"
    AND = "and"
    IN = "in"
    NOT_EQUAL = "ne"
    EQUAL = "eq"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"
    EXISTS = "exists"
    MATCH = "match"
    NIN = "nin"
    NOT_IN = "nin"  # an alias of NIN: older docs and the dvstore brief use this name
    GREATER_THAN_OR_EQUAL = "gte"
    LESS_THAN_OR_EQUAL = "lte"


class FiltersMethod(str, Enum):
    """How ``add`` combines a condition: into the top-level ``$and`` or ``$or`` list."""

    OR = "or"
    AND = "and"


class FiltersOrderByDirection(str, Enum):
    """Sort directions accepted by ``sort_by`` and by a query's ``sort`` object."""

    DESCENDING = "descending"
    ASCENDING = "ascending"


class FiltersKnownFields(str, Enum):
    """Item fields dtlpy names as constants."""

    DIR = "dir"
    ANNOTATED = "annotated"
    FILENAME = "filename"
    CREATED_AT = "createdAt"
    UPDATED_AT = "updatedAt"
    LABEL = "label"
    NAME = "name"
    HIDDEN = "hidden"
    TYPE = "type"


def _plain(x: Any) -> Any:
    # str-mixin enums must become their value: json.dumps would, and equality must agree.
    if isinstance(x, Enum):
        return x.value
    return x


# --------------------------------------------------------------------------- the builder


class _Single:
    """One ``add`` call, kept raw until ``prepare`` (dtlpy's SingleFilter)."""

    __slots__ = ("field", "operator", "values")

    def __init__(self, field: str, values: Any, operator: str | None) -> None:
        self.field = field
        self.values = values
        self.operator = operator

    def prepare(self, recursive: bool = False) -> dict[str, Any]:
        values = copy.deepcopy(self.values)
        if recursive and self.field == "filename":
            if isinstance(values, str):
                values = _add_recursive(values)
            elif isinstance(values, list):
                values = [_add_recursive(v) if isinstance(v, str) else v for v in values]
        if self.operator is None:
            return {self.field: values}
        return {self.field: {self.operator: values}}


def _add_recursive(value: str) -> str:
    # dtlpy's rule: a folder-looking filename (no extension, no trailing star) means
    # "everything under it". posixpath, not os.path, so Windows gives the same JSON.
    if not value.endswith("*") and not posixpath.splitext(value)[-1].startswith("."):
        return value + "**" if value.endswith("/") else value + "/**"
    return value


def _norm_operator(operator: Any) -> str | None:
    if operator is None:
        return None
    op = _plain(operator)
    if not isinstance(op, str):
        raise FilterError(f"operator must be a string, got {_tname(op)}")
    op = op if op.startswith("$") else "$" + op
    if op not in FIELD_OPS:
        raise FilterError(f"Unknown operator {op}")
    return op


def _norm_method(method: Any) -> str:
    m = _plain(method)
    if m not in ("or", "and"):
        raise FilterError(f"Unknown method {m}, please select from: or/and")
    return str(m)


class Filters:
    """A dtlpy-compatible filter builder whose ``prepare()`` emits dtlpy's JSON exactly.

    Example:
        >>> f = Filters(field="dir", values="/dogs")
        >>> f.prepare()["filter"]
        {'$and': [{'hidden': False}, {'type': 'file'}, {'dir': '/dogs'}]}

    Args:
        field: Optional first condition's field (dotted path).
        values: Its value: a scalar, a list or a glob string.
        operator: ``None`` (bare value), a ``FiltersOperations`` member, ``"eq"`` or ``"$eq"``.
        method: ``"and"`` (default) or ``"or"``.
        custom_filter: A raw query dict used as-is by ``prepare`` (wrapped in ``filter`` if
            it has no ``filter`` key).
        resource: ``"items"`` or ``"annotations"``; other dtlpy resources are accepted here
            but refused by ``compile_query``.
        use_defaults: Add the resource defaults (items: ``hidden: false``, ``type: file``;
            annotations: every type except ``note``).
        page_size: Page size for listing; capped at 1000 by ``prepare``.
    """

    def __init__(
        self,
        field: str | None = None,
        values: Any = None,
        operator: str | FiltersOperations | None = None,
        method: str | FiltersMethod | None = None,
        custom_filter: dict[str, Any] | None = None,
        resource: str | FiltersResource = "items",
        use_defaults: bool = True,
        page_size: int | None = None,
    ) -> None:
        self._resource = str(_plain(resource))
        self.or_filter_list: list[_Single] = []
        self.and_filter_list: list[_Single] = []
        self._unique_fields: list[str] = []
        self.custom_filter = custom_filter
        self.page = 0
        self.page_size = MAX_PAGE_SIZE if page_size is None else page_size
        self.method = "and"
        self.sort: dict[str, str] = {}
        self.join: dict[str, Any] | None = None
        self.recursive = True
        self._use_defaults = use_defaults
        self._add_defaults()
        if field is not None:
            self.add(field=field, values=values, operator=operator, method=method)

    @property
    def resource(self) -> str:
        """The resource this filter selects (``"items"`` or ``"annotations"``)."""
        return self._resource

    @property
    def use_defaults(self) -> bool:
        """Whether the resource defaults were added (and apply when compiling)."""
        return self._use_defaults

    def _add_defaults(self) -> None:
        if not self._use_defaults:
            return
        if self._resource == "items":
            self._unique_fields = ["type", "hidden"]
            self.add(field="hidden", values=False, method="and")
            self.add(field="type", values="file", method="and")
        elif self._resource == "annotations":
            self._unique_fields = ["type"]
            self.add(field="type", values=list(DEFAULT_ANNOTATION_TYPES), operator="in", method="and")

    def add(
        self,
        field: str,
        values: Any,
        operator: str | FiltersOperations | None = None,
        method: str | FiltersMethod | None = None,
    ) -> None:
        """Add a condition to the top-level ``$and`` (default) or ``$or`` list.

        An AND condition on a default field (``hidden``/``type`` for items, ``type`` for
        annotations) replaces the default, as in dtlpy.

        Raises:
            FilterError: Unknown method or operator, or a non-string field.
        """
        field = _plain(field)
        if not isinstance(field, str):
            raise FilterError(f"field must be a string, got {_tname(field)}")
        m = _norm_method(self.method if method is None else method)
        single = _Single(field, _plain(values), _norm_operator(operator))
        if m == "or":
            self.or_filter_list.append(single)
            return
        if field in self._unique_fields:
            self.and_filter_list = [s for s in self.and_filter_list if s.field != field]
        self.and_filter_list.append(single)

    def add_join(
        self,
        field: str,
        values: Any,
        operator: str | FiltersOperations | None = None,
        method: str | FiltersMethod = "and",
    ) -> None:
        """Add a condition on the joined resource (annotations of an item, or its item).

        Raises:
            FilterError: ``Cannot join to <resource> filters`` for other resources, or an
                unknown method or operator.
        """
        if self._resource not in _RESOURCES:
            raise FilterError(f"Cannot join to {self._resource} filters")
        field = _plain(field)
        if not isinstance(field, str):
            raise FilterError(f"field must be a string, got {_tname(field)}")
        key = "$" + _norm_method(method)
        single = _Single(field, _plain(values), _norm_operator(operator))
        if self.join is None:
            self.join = {}
        self.join.setdefault("on", dict(_JOIN_ON[self._resource]))
        self.join.setdefault("filter", {}).setdefault(key, []).append(single.prepare())

    def sort_by(self, field: str, value: str | FiltersOrderByDirection = "ascending") -> None:
        """Sort listings by ``field``; later calls add tie-breakers.

        Raises:
            FilterError: ``Sort can be by ascending or descending order only``.
        """
        v = _plain(value)
        if v not in ("ascending", "descending"):
            raise FilterError("Sort can be by ascending or descending order only")
        self.sort[str(_plain(field))] = v

    def has_field(self, field: str) -> bool:
        """Return True if a top-level AND or OR condition uses ``field``."""
        return any(s.field == field for s in (*self.or_filter_list, *self.and_filter_list))

    def pop(self, field: str) -> None:
        """Remove every top-level condition on ``field`` (as dtlpy's clone pops ``hidden``)."""
        self.or_filter_list = [s for s in self.or_filter_list if s.field != field]
        self.and_filter_list = [s for s in self.and_filter_list if s.field != field]

    def prepare(self) -> dict[str, Any]:
        """Return the query document dtlpy would send, as a fresh dict.

        Key order follows dtlpy (``filter``, ``sort``, ``page``, ``pageSize``, ``resource``,
        ``join``; ``$or`` before ``$and``) so that ``json.dumps`` output matches too.
        """
        if self.custom_filter is not None:
            return self._custom_query()
        recursive = self.recursive and self._resource == "items"
        flt: dict[str, Any] = {}
        if self.or_filter_list:
            flt["$or"] = [s.prepare(recursive) for s in self.or_filter_list]
        if self.and_filter_list:
            flt["$and"] = [s.prepare(recursive) for s in self.and_filter_list]
        out: dict[str, Any] = {"filter": flt}
        if self.sort:
            out["sort"] = dict(self.sort)
        out["page"] = self.page
        out["pageSize"] = min(self.page_size, MAX_PAGE_SIZE)
        out["resource"] = self._resource
        if self.join is not None:
            out["join"] = copy.deepcopy(self.join)
        return out

    def _custom_query(self) -> dict[str, Any]:
        custom = copy.deepcopy(self.custom_filter)
        q: dict[str, Any] = custom if isinstance(custom, dict) and "filter" in custom else {"filter": custom}
        q.setdefault("resource", self._resource)
        q.setdefault("page", self.page)
        q.setdefault("pageSize", self.page_size)
        if self.join is not None and "join" not in q:
            q["join"] = copy.deepcopy(self.join)
        if isinstance(q.get("join"), dict) and "on" not in q["join"] and self._resource in _JOIN_ON:
            q["join"]["on"] = dict(_JOIN_ON[self._resource])
        return q


# --------------------------------------------------------------------------- documents


def _canon(x: Any, depth: int = 0) -> Any:
    """Deep-copy a JSON value with sorted keys, refusing anything that is not JSON."""
    if depth > MAX_DEPTH:
        raise FilterError(f"query nested deeper than {MAX_DEPTH} levels")
    if isinstance(x, Enum):
        x = x.value
    t = type(x)
    if x is None or t is bool or t is int or t is float or t is str:
        return x
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    if isinstance(x, list):
        return [_canon(v, depth + 1) for v in x]
    if isinstance(x, dict):
        out: dict[str, Any] = {}
        for k in x:
            kk = _plain(k)
            if not isinstance(kk, str):
                raise FilterError(f"field names must be strings, got {_tname(kk)}")
            out[str.__str__(kk)] = x[k]
        return {k: _canon(out[k], depth + 1) for k in sorted(out)}
    raise FilterError(f"not a JSON value: {_tname(x)}")


def _constrained(expr: Any, depth: int = 0) -> set[str]:
    """Field names an expression mentions anywhere outside ``$match`` (default suppression)."""
    out: set[str] = set()
    if not isinstance(expr, dict) or depth > MAX_DEPTH:
        return out
    for k, v in expr.items():
        if k in ("$and", "$or") and isinstance(v, list):
            for e in v:
                out |= _constrained(e, depth + 1)
        elif k == "$not":
            out |= _constrained(v, depth + 1)
        elif isinstance(k, str) and not k.startswith("$"):
            out.add(k)
    return out


def _with_defaults(expr: dict[str, Any], defaults: list[dict[str, Any]]) -> dict[str, Any]:
    if not defaults:
        return expr
    out = dict(expr)
    existing = out.get("$and")
    if existing is None:
        out["$and"] = defaults
    elif isinstance(existing, list) and existing:
        out["$and"] = defaults + existing  # dtlpy puts the defaults first
    return out  # a malformed $and is left for the compiler to report


def _strip_hidden(expr: dict[str, Any]) -> dict[str, Any]:
    """Drop top-level ``hidden: false`` conditions, as dtlpy's clone pops ``hidden`` (G11)."""
    out = dict(expr)
    if "hidden" in out and out["hidden"] is False:
        del out["hidden"]
    conj = out.get("$and")
    if isinstance(conj, list):
        kept = [e for e in conj if not (isinstance(e, dict) and len(e) == 1 and e.get("hidden", 0) is False)]
        if kept:
            out["$and"] = kept
        else:
            del out["$and"]
    return out


def _page_number(doc: dict[str, Any], key: str, default: int) -> int:
    v = doc.get(key, default)
    if type(v) is not int or v < 0:
        raise FilterError(f"{key} must be a non-negative integer, got {v!r}")
    return v


def _sort_spec(sort: Any) -> tuple[tuple[str, str], ...]:
    if sort is None:
        return ()
    if not isinstance(sort, dict):
        raise FilterError(f"sort must be an object, got {_tname(sort)}")
    for field, direction in sort.items():
        if not field or not all(field.split(".")):
            raise FilterError(f"invalid sort field {field!r}")
        if direction not in ("ascending", "descending"):
            raise FilterError("Sort can be by ascending or descending order only")
    return tuple(sort.items())


def _to_document(q: Any) -> tuple[dict[str, Any], bool | None]:
    """Normalise any accepted query form to (document, use_defaults or None if unsaid)."""
    flag: bool | None = None
    if q is None:
        q = {}
    elif isinstance(q, Filters):
        flag = q.use_defaults
        q = q.prepare()
    elif isinstance(q, (str, bytes)):
        raw = q.encode("utf-8", "surrogatepass") if isinstance(q, str) else q
        q = parse_json_bytes(raw, "the filter", error=FilterError)
    if not isinstance(q, dict):
        raise FilterError(f'"filters" must be a Filters entity or a DQL object. got: {_tname(q)}')
    doc = _canon(q)
    if not (doc.keys() & _DOC_KEYS):
        doc = {"filter": doc}  # a bare expression, as dtlpy wraps a custom filter
    unknown = doc.keys() - _DOC_KEYS - _IGNORED_DOC_KEYS
    if unknown:
        raise FilterError(f"Unknown query key {sorted(unknown)[0]!r}")
    return doc, flag


def items_query_error(resource: str, what: str) -> FilterError:
    """The error for a query of another resource where items are selected (a clone, a
    listing): ``what`` names the filter ("a clone filter")."""
    return FilterError(f"{what} must select items, not {resource}",
                       hint='to select the items that have a matching annotation, put the annotation '
                            'filter in a join: {"join": {"filter": {...}}}')


def compile_query(
    q: Filters | dict[str, Any] | str | Query | None,
    *,
    purpose: Purpose = "list",
    use_defaults: bool | None = None,
) -> Query:
    """Validate a query once and compile it into a ``Query`` of closures.

    Args:
        q: A ``Filters``, a query document (``{"filter": ..., "resource": ..., "join": ...}``),
            a bare filter expression, its JSON text, a compiled ``Query``, or None (all items
            under the defaults).
        purpose: ``"list"`` applies the item defaults ``hidden: false`` and ``type: file``;
            ``"clone"`` keeps ``type: file``, adds no ``hidden`` default and strips top-level
            ``hidden: false`` conditions (SEMANTICS §2.3.2, G11); clone needs ``items``.
        use_defaults: Overrides the query's own setting (``Filters.use_defaults`` or the
            document key ``useDefaults``); True when nobody says.

    Returns:
        The compiled query.

    Raises:
        FilterError: The query is malformed, names an unknown operator or resource, or
            joins to anything but items/annotations.
        ValueError: ``purpose`` is not ``"list"`` or ``"clone"``.
    """
    if purpose not in ("list", "clone"):
        raise ValueError(f"purpose must be 'list' or 'clone', got {purpose!r}")
    if isinstance(q, Query):
        if q.purpose == purpose and use_defaults in (None, q.use_defaults):
            return q
        q = q.canonical()
    doc, flag = _to_document(q)
    if "useDefaults" in doc and type(doc["useDefaults"]) is not bool:
        raise FilterError("useDefaults must be true or false")
    defaults_on = use_defaults if use_defaults is not None else doc.get("useDefaults", flag is not False)

    resource = doc.get("resource", "items")
    join = doc.get("join")
    if join is not None and resource not in _RESOURCES:
        raise FilterError(f"Cannot join to {resource} filters")
    if resource not in _RESOURCES:
        raise FilterError(f"Unsupported resource {resource!r}: dvstore filters 'items' and 'annotations'")
    if purpose == "clone" and resource != "items":
        raise items_query_error(resource, "a clone filter")
    expr = doc.get("filter", {})
    if not isinstance(expr, dict):
        raise FilterError(f"filter must be an object, got {_tname(expr)}")
    if purpose == "clone":
        expr = _strip_hidden(expr)
    if defaults_on:
        expr = _with_defaults(expr, _defaults(resource, purpose, _constrained(expr)))

    canonical: dict[str, Any] = {"filter": expr, "resource": resource}
    ctx = ExprContext(item_view=resource == "items")
    pred = compile_expression(expr, ctx)
    join_pred: Pred | None = None
    if join is not None:
        join_expr, on = _join_parts(join, resource)
        if defaults_on and resource == "items":
            join_expr = _with_defaults(join_expr, _defaults("annotations", purpose, _constrained(join_expr)))
        join_pred = compile_expression(join_expr, ExprContext(item_view=resource == "annotations"))
        canonical["join"] = {"filter": join_expr, "on": on}
    if not defaults_on:
        canonical["useDefaults"] = False
    return Query(
        resource=resource,
        purpose=purpose,
        use_defaults=bool(defaults_on),
        canonical=_canon(canonical),
        pred=pred,
        join_pred=join_pred,
        annotation_fields=resource == "items" and bool(ctx.fields & _ANNOTATION_FIELDS),
        sort=_sort_spec(doc.get("sort")),
        page=_page_number(doc, "page", 0),
        page_size=_page_number(doc, "pageSize", MAX_PAGE_SIZE),
    )


def _defaults(resource: str, purpose: Purpose, constrained: set[str]) -> list[dict[str, Any]]:
    if resource == "annotations":
        return [] if "type" in constrained else [{"type": {"$in": list(DEFAULT_ANNOTATION_TYPES)}}]
    out: list[dict[str, Any]] = []
    if purpose == "list" and "hidden" not in constrained:
        out.append({"hidden": False})
    if "type" not in constrained:
        out.append({"type": "file"})
    return out


def _join_parts(join: Any, resource: str) -> tuple[dict[str, Any], dict[str, str]]:
    if not isinstance(join, dict):
        raise FilterError(f"join must be an object, got {_tname(join)}")
    extra = join.keys() - {"on", "filter"}
    if extra:
        raise FilterError(f"Unknown join key {sorted(extra)[0]!r}")
    expected = _JOIN_ON[resource]
    on = join.get("on", expected)
    if not isinstance(on, dict):
        raise FilterError(f"join.on must be an object, got {_tname(on)}")
    if on.get("resource", expected["resource"]) != expected["resource"]:
        raise FilterError(f"Cannot join to {on.get('resource')} filters")
    if {k: on.get(k, v) for k, v in expected.items()} != expected or on.keys() - expected.keys():
        raise FilterError(f"unsupported join.on {on!r}: expected {expected!r}")
    expr = join.get("filter", {})
    if not isinstance(expr, dict):
        raise FilterError(f"join.filter must be an object, got {_tname(expr)}")
    return expr, dict(expected)


# --------------------------------------------------------------------------- the result


def _sort_rank(v: Any) -> tuple[int, Any]:
    # A total order across JSON types (Mongo's: null < numbers < strings < objects < arrays
    # < booleans) so that one odd value never makes sorting raise.
    if v is None or v is MISSING:
        return (0, 0)
    t = type(v)
    if t is bool:
        return (5, v)
    if t is int or t is float:
        return (1, float("-inf") if v != v else v)
    if t is str:
        return (2, v)
    return (3 if t is dict else 4, json.dumps(v, sort_keys=True, default=repr))


class _SortKey:
    """Orders documents by several fields, each ascending or descending."""

    __slots__ = ("desc", "ranks")

    def __init__(self, ranks: tuple[tuple[int, Any], ...], desc: tuple[bool, ...]) -> None:
        self.ranks = ranks
        self.desc = desc

    def __lt__(self, other: _SortKey) -> bool:
        for a, b, d in zip(self.ranks, other.ranks, self.desc, strict=True):
            if a != b:
                return a > b if d else a < b
        return False


class Query:
    """A compiled query: evaluate items or annotations, sort listings, record it.

    Build one with ``compile_query``; it holds closures, so evaluation never re-parses.

    Attributes:
        resource: ``"items"`` or ``"annotations"``.
        purpose: ``"list"`` or ``"clone"``.
        use_defaults: Whether resource defaults were applied.
        needs_annotations: True iff ``match_item`` needs the item's annotations (a join,
            or the fields ``annotated``/``annotationsCount``).
        sort: ``((field, "ascending"|"descending"), ...)`` for listing; empty for clone.
        page: Requested page (listing only).
        page_size: Requested page size (listing only).
    """

    __slots__ = (
        "_annotation_fields", "_canonical", "_join", "_pred", "needs_annotations", "page",
        "page_size", "purpose", "resource", "sort", "use_defaults",
    )  # fmt: skip

    def __init__(
        self,
        *,
        resource: str,
        purpose: Purpose,
        use_defaults: bool,
        canonical: dict[str, Any],
        pred: Pred,
        join_pred: Pred | None,
        annotation_fields: bool,
        sort: tuple[tuple[str, str], ...],
        page: int,
        page_size: int,
    ) -> None:
        self.resource = resource
        self.purpose = purpose
        self.use_defaults = use_defaults
        self._canonical = canonical
        self._pred = pred
        self._join = join_pred
        self._annotation_fields = annotation_fields
        self.needs_annotations = resource == "items" and (join_pred is not None or annotation_fields)
        self.sort = sort if purpose == "list" else ()
        self.page = page
        self.page_size = page_size

    def __repr__(self) -> str:
        return f"Query({json.dumps(self._canonical, sort_keys=True)}, purpose={self.purpose!r})"

    def match_item(self, item: dict[str, Any], annotations: Sequence[dict[str, Any]] | None = None) -> bool:
        """Return True if the item (its JSON view) is selected.

        Args:
            item: The item view: ``filename``, ``dir``, ``name``, ``type``, ``hidden``,
                ``metadata``... (``dir``/``name`` are derived from ``filename`` if absent).
            annotations: The item's annotations. Required for a join; when given, they
                also define ``annotated`` and ``annotationsCount`` (G22).

        Raises:
            ValueError: This is an annotations query, or it has a join and
                ``annotations`` is None.
        """
        if self.resource != "items":
            raise ValueError("match_item needs an items query; use match_annotation")
        if self._annotation_fields and annotations is not None:
            item = {**item, "annotated": len(annotations) > 0, "annotationsCount": len(annotations)}
        if not self._pred(item):
            return False
        join = self._join
        if join is None:
            return True
        if annotations is None:
            raise ValueError("this query joins annotations: pass the item's annotations")
        return any(isinstance(a, dict) and join(a) for a in annotations)

    def match_annotation(self, annotation: dict[str, Any], item: dict[str, Any] | None = None) -> bool:
        """Return True if the annotation is selected by this annotations query.

        Args:
            annotation: The annotation's JSON view.
            item: Its item's view; required when the query joins items.

        Raises:
            ValueError: This is an items query, or it joins items and ``item`` is None.
        """
        if self.resource != "annotations":
            raise ValueError("match_annotation needs an annotations query; use match_item")
        if not self._pred(annotation):
            return False
        if self._join is None:
            return True
        if item is None:
            raise ValueError("this query joins items: pass the annotation's item")
        return self._join(item)

    def fields(self) -> set[str]:
        """The dotted fields the item filter mentions (a caller may skip loading the rest)."""
        return _constrained(self._canonical.get("filter", {}))

    def canonical(self) -> dict[str, Any]:
        """The effective query (defaults written out, keys sorted, no page or sort).

        ``compile_query(q.canonical(), purpose=q.purpose)`` selects exactly what ``q``
        does; a clone version records this form.
        """
        return copy.deepcopy(self._canonical)

    def sort_key(self, doc: dict[str, Any]) -> _SortKey:
        """A key for ``sorted``/``heapq.merge`` that orders documents by ``sort``."""
        ranks = []
        for field, _ in self.sort:
            v: Any = doc
            for seg in field.split("."):
                v = v.get(seg, MISSING) if isinstance(v, dict) else MISSING
            if v is MISSING and self.resource == "items" and field in ("dir", "name"):
                fn = doc.get("filename")
                if isinstance(fn, str):
                    v = split_filename(fn)[0 if field == "dir" else 1]
            ranks.append(_sort_rank(v))
        return _SortKey(tuple(ranks), tuple(d == "descending" for _, d in self.sort))

    def sort_items(self, docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the documents ordered by ``sort`` (stable; input order if no sort)."""
        if not self.sort:
            return list(docs)
        return sorted(docs, key=self.sort_key)
