"""The DQL expression compiler: a filter expression in, one predicate closure out.

This module owns the evaluation rules of SEMANTICS §4.2 over JSON views: keys ANDed,
``$and``/``$or``/``$not``, bare value = ``$eq``, bare list = ``$in``, operator objects,
dotted paths with any-element semantics through arrays, the missing-path rules, ``$match``
(elemMatch), globs, and type-strict comparisons (bool is not a number, mixed types never
order, null only equals null). Everything is validated while compiling, so evaluating a
document never raises and never re-parses the query.

It must not know about query documents, defaults, resources, joins or the dtlpy builder
(``dvstore.filters`` owns those), and it must not do I/O.
"""

from __future__ import annotations

import operator as _op
from collections.abc import Callable, Sequence
from typing import Any, Final

from dvstore.errors import FilterError
from dvstore.filters_glob import compile_glob
from dvstore.model import split_filename

__all__ = ["FIELD_OPS", "MAX_DEPTH", "MISSING", "ExprContext", "Pred", "compile_expression", "type_name"]

Pred = Callable[[Any], bool]
# Deeper documents are refused, which also stops cyclic dicts and keeps recursion bounded.
MAX_DEPTH: Final = 64
FIELD_OPS: Final = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$match", "$not"})
_ORDER_OPS: Final = {"$gt": _op.gt, "$gte": _op.ge, "$lt": _op.lt, "$lte": _op.le}


def type_name(x: Any) -> str:
    """The JSON-ish name of a value's type, for error messages."""
    return "null" if x is None else type(x).__name__


class _Missing:
    """The value of a path that does not exist (distinct from a JSON null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Final = _Missing()


class _Many(tuple):  # type: ignore[type-arg]
    """Several values reached through an array on a dotted path (any-element semantics)."""

    __slots__ = ()


def _walk(v: Any, segs: tuple[str, ...], i: int) -> Any:
    """Resolve ``segs[i:]`` in ``v``: a value, ``MISSING``, or ``_Many`` through arrays."""
    n = len(segs)
    while i < n:
        if isinstance(v, dict):
            v = v.get(segs[i], MISSING)
            if v is MISSING:
                return v
            i += 1
        elif isinstance(v, list):
            found: list[Any] = []
            # Mongo semantics: step into the dict elements of one array level.
            for e in v:
                if isinstance(e, dict):
                    r = _walk(e, segs, i)
                    if type(r) is _Many:
                        found.extend(r)
                    elif r is not MISSING:
                        found.append(r)
            return _Many(found) if found else MISSING
        else:
            return MISSING
    return v


def _json_eq(a: Any, b: Any) -> bool:
    """JSON equality: bool is not a number (``true != 1``); ``1 == 1.0``."""
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool or a is None or b is None:
        return a is b
    if ta is str or tb is str:
        return ta is tb and bool(a == b)
    if ta in (int, float) and tb in (int, float):
        return bool(a == b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_eq(a[k], b[k]) for k in a)
    return False


def _eq_test(x: Any) -> Pred:
    """A test over one concrete value for ``$eq: x`` (globs for strings with a star)."""
    if type(x) is str:
        if "*" in x:
            return compile_glob(x)
        return lambda v: bool(v == x)  # only a str equals a str
    if x is True:
        return lambda v: v is True
    if x is False:
        return lambda v: v is False
    if x is None:
        return lambda v: v is None
    if type(x) in (int, float):
        return lambda v: (type(v) is int or type(v) is float) and bool(v == x)
    return lambda v: _json_eq(v, x)


def _in_test(xs: list[Any]) -> Pred:
    """A test for ``$in: xs``: sets for scalars, globs and deep equality for the rest."""
    strs = {x for x in xs if type(x) is str and "*" not in x}
    globs = tuple(compile_glob(x) for x in xs if type(x) is str and "*" in x)
    nums = {x for x in xs if type(x) in (int, float)}
    bools = {x for x in xs if type(x) is bool}
    has_null = any(x is None for x in xs)
    deep = [x for x in xs if type(x) in (list, dict)]

    if not globs and not nums and not bools and not has_null and not deep:
        return lambda v: type(v) is str and v in strs

    def test(v: Any) -> bool:
        t = type(v)
        if t is str:
            return v in strs or any(g(v) for g in globs)  # globs check the type themselves
        if t is bool:
            return v in bools
        if t is int or t is float:
            return v in nums
        if v is None:
            return has_null
        return any(_json_eq(v, d) for d in deep)

    return test


def _order_test(op: str, x: Any) -> Pred:
    cmp = _ORDER_OPS[op]
    if type(x) is str:
        return lambda v: type(v) is str and cmp(v, x)
    if type(x) in (int, float):
        return lambda v: (type(v) is int or type(v) is float) and cmp(v, x)
    raise FilterError(f"{op} needs a number or a string, got {type_name(x)}")


def _check(test: Pred, elements: bool = True) -> Pred:
    """Lift a test on one value to a resolved field: missing is False, any candidate counts,
    and (unless ``elements`` is False) a leaf array matches when one of its elements does."""

    def chk(v: Any) -> bool:
        if v is MISSING:
            return False
        if type(v) is _Many:
            return any(test(x) or (elements and type(x) is list and any(map(test, x))) for x in v)
        if test(v):
            return True
        return elements and type(v) is list and any(map(test, v))

    return chk


def _all(preds: Sequence[Pred]) -> Pred:
    # Unrolled for the common small cases: a loop over a list costs more per item.
    if not preds:
        return lambda d: True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        a, b = preds
        return lambda d: a(d) and b(d)
    if len(preds) == 3:
        a, b, c = preds
        return lambda d: a(d) and b(d) and c(d)
    ps = tuple(preds)

    def every(d: Any) -> bool:
        for p in ps:
            if not p(d):
                return False
        return True

    return every


def _any(preds: Sequence[Pred]) -> Pred:
    if len(preds) == 1:
        return preds[0]
    ps = tuple(preds)

    def some(d: Any) -> bool:
        for p in ps:
            if p(d):
                return True
        return False

    return some


class ExprContext:
    """What the compiler needs to know about the document being compiled."""

    __slots__ = ("fields", "item_view")

    def __init__(self, item_view: bool) -> None:
        self.item_view = item_view  # top-level of an item: dir/name derive from filename
        self.fields: set[str] = set()  # first path segments used, for needs_annotations


def _expr_list(key: str, v: Any) -> list[Any]:
    if not isinstance(v, list) or not v:
        raise FilterError(f"{key} must be a non-empty list of expressions, got {type_name(v)}")
    return v


def _conjuncts(expr: Any, ctx: ExprContext, depth: int) -> list[Pred]:
    """Compile an expression into the predicates it ANDs (nested ``$and`` flattened)."""
    if depth > MAX_DEPTH:
        raise FilterError(f"query nested deeper than {MAX_DEPTH} levels")
    if not isinstance(expr, dict):
        raise FilterError(f"an expression must be an object, got {type_name(expr)}")
    preds: list[Pred] = []
    for key, value in expr.items():
        if not isinstance(key, str):
            raise FilterError(f"field names must be strings, got {type_name(key)}")
        if key == "$and":
            for e in _expr_list(key, value):
                preds.extend(_conjuncts(e, ctx, depth + 1))
        elif key == "$or":
            preds.append(_any([_all(_conjuncts(e, ctx, depth + 1)) for e in _expr_list(key, value)]))
        elif key == "$not":
            preds.append(_negate(_all(_conjuncts(value, ctx, depth + 1))))
        elif key.startswith("$"):
            raise FilterError(f"Unknown operator {key}")
        else:
            preds.append(_field_pred(key, value, ctx, depth + 1))
    return preds


def _getter(path: str, ctx: ExprContext) -> tuple[Callable[[Any], Any], str | None]:
    """A resolver for ``path``, plus the plain key when the path is one top-level field."""
    segs = tuple(path.split("."))
    if not all(segs):
        raise FilterError(f"invalid field name {path!r}")
    ctx.fields.add(segs[0])
    if ctx.item_view and segs[0] in ("dir", "name"):
        # The view normally carries dir and name; derive them when a caller left them out.
        part = 0 if segs[0] == "dir" else 1

        def derived(d: Any) -> Any:
            v = d.get(segs[0], MISSING)
            if v is MISSING and isinstance(d.get("filename"), str):
                v = split_filename(d["filename"])[part]
            return v if len(segs) == 1 else _walk(v, segs, 1)

        return derived, None
    if len(segs) == 1:
        key = segs[0]
        return (lambda d: d.get(key, MISSING)), key

    if len(segs) in (2, 3):
        # Unrolled for metadata.user.x / metadata.system.x: dicts all the way is the norm.
        a, b, c = segs if len(segs) == 3 else (*segs, None)

        def get_short(d: Any) -> Any:
            v = d.get(a, MISSING)
            if type(v) is dict:
                w = v.get(b, MISSING)
                if c is None:
                    return w
                if type(w) is dict:
                    return w.get(c, MISSING)
                v = w
            return MISSING if v is MISSING or not isinstance(v, (dict, list)) else _walk(d, segs, 0)

        return get_short, None

    def get(d: Any) -> Any:
        v = d
        for s in segs:
            if type(v) is dict:
                v = v.get(s, MISSING)
            elif isinstance(v, (dict, list)):
                return _walk(d, segs, 0)  # an array (or dict subclass) on the path: slow path
            else:
                return MISSING
        return v

    return get, None


def _is_op_object(value: Any, path: str) -> bool:
    if not isinstance(value, dict) or not value:
        return False
    ops = [isinstance(k, str) and k.startswith("$") for k in value]
    if all(ops):
        return True
    if any(ops):
        raise FilterError(f"cannot mix operators and fields in the value of {path!r}")
    return False


def _field_pred(path: str, value: Any, ctx: ExprContext, depth: int) -> Pred:
    get, key = _getter(path, ctx)
    if _is_op_object(value, path):
        if len(value) == 1 and next(iter(value)) in _POSITIVE_OPS:
            op, x = next(iter(value.items()))
            t = _positive_test(op, x, path, depth)
            return _fused(key, t, op != "$match") if key is not None else _fused_path(get, t, op != "$match")
        checks = _op_checks(value, path, ctx, depth)
    elif isinstance(value, list):
        checks = [_check(_in_test(value))]  # a bare list means $in [DEC]
    elif key is not None:
        return _fused_eq(key, value)
    else:
        return _fused_path(get, _eq_test(value), True)
    if len(checks) == 1:
        c = checks[0]
        if key is not None:
            return lambda d: c(d.get(key, MISSING))
        return lambda d: c(get(d))
    cs = tuple(checks)

    def every(d: Any) -> bool:
        v = get(d)
        for c in cs:
            if not c(v):
                return False
        return True

    return every


# Positive tests are False on MISSING (it is no JSON type), which the fused forms rely on.
_POSITIVE_OPS: Final = frozenset({"$eq", "$in", "$gt", "$gte", "$lt", "$lte", "$match"})


def _positive_test(op: str, x: Any, path: str, depth: int) -> Pred:
    if op == "$eq":
        return _eq_test(x)
    if op == "$in":
        if not isinstance(x, list):
            raise FilterError(f"$in needs a list, got {type_name(x)}")
        return _in_test(x)
    if op == "$match":
        return _match_test(x, path, depth + 1)
    return _order_test(op, x)


def _fused(key: str, t: Pred, elements: bool) -> Pred:
    """``_check`` inlined for a top-level field: one call per document instead of three."""
    if not elements:
        return lambda d: t(d.get(key, MISSING))

    def p(d: Any) -> bool:
        v = d.get(key, MISSING)
        return t(v) or (type(v) is list and any(map(t, v)))

    return p


def _fused_path(get: Callable[[Any], Any], t: Pred, elements: bool) -> Pred:
    """``_check`` inlined for a dotted path."""

    def p(d: Any) -> bool:
        v = get(d)
        if t(v):
            return True
        tv = type(v)
        if tv is list:
            return elements and any(map(t, v))
        return tv is _Many and any(t(x) or (elements and type(x) is list and any(map(t, x))) for x in v)

    return p


def _fused_eq(key: str, x: Any) -> Pred:
    """``{key: x}`` for the values defaults and simple queries use, with no inner call."""
    if (type(x) is str and "*" not in x) or x is True or x is False:
        is_str = type(x) is str

        def p(d: Any) -> bool:
            v = d.get(key, MISSING)
            if v is x or (is_str and v == x):
                return True
            return type(v) is list and any((e is x or (is_str and e == x)) for e in v)

        return p
    return _fused(key, _eq_test(x), True)


def _op_checks(ops: dict[str, Any], path: str, ctx: ExprContext, depth: int) -> list[Pred]:
    """Compile an operator object into checks over a resolved field, one per operator."""
    if depth > MAX_DEPTH:
        raise FilterError(f"query nested deeper than {MAX_DEPTH} levels")
    checks: list[Pred] = []
    for op, x in ops.items():
        if op == "$eq":
            checks.append(_check(_eq_test(x)))
        elif op == "$ne":
            checks.append(_negate(_check(_eq_test(x))))
        elif op in ("$in", "$nin"):
            if not isinstance(x, list):
                raise FilterError(f"{op} needs a list, got {type_name(x)}")
            c = _check(_in_test(x))
            checks.append(c if op == "$in" else _negate(c))
        elif op in _ORDER_OPS:
            checks.append(_check(_order_test(op, x)))
        elif op == "$exists":
            if type(x) is not bool:
                raise FilterError(f"$exists needs true or false, got {type_name(x)}")
            checks.append((lambda v: v is not MISSING) if x else (lambda v: v is MISSING))
        elif op == "$match":
            checks.append(_check(_match_test(x, path, depth + 1), elements=False))
        elif op == "$not":
            if not _is_op_object(x, path):
                raise FilterError(f"$not on field {path!r} needs an operator object")
            checks.append(_negate(_all(_op_checks(x, path, ctx, depth + 1))))
        else:
            raise FilterError(f"Unknown operator {op}")
    return checks


def _negate(c: Pred) -> Pred:
    return lambda v: not c(v)


def _is_element_ops(sub: dict[str, Any]) -> bool:
    # {"$gt": 5} is the operator form; {"$not": {"type": "x"}} is an expression.
    return bool(sub) and all(
        k in FIELD_OPS and (k != "$not" or (isinstance(v, dict) and bool(v) and v.keys() <= FIELD_OPS))
        for k, v in sub.items()
    )


def _match_test(sub: Any, path: str, depth: int) -> Pred:
    """``$match`` (elemMatch): the value is an array and one element satisfies ``sub``."""
    if not isinstance(sub, dict):
        raise FilterError(f"$match on {path!r} needs an object, got {type_name(sub)}")
    if _is_element_ops(sub):
        # Operator form ({"$gt": 5}) tests the elements themselves, for arrays of scalars.
        elem = _all(_op_checks(sub, path, ExprContext(False), depth))
    else:
        # Expression form tests object elements; other elements never match.
        p = _all(_conjuncts(sub, ExprContext(False), depth))
        elem = lambda e: isinstance(e, dict) and p(e)  # noqa: E731

    def test(v: Any) -> bool:
        return type(v) is list and any(map(elem, v))

    return test


def compile_expression(expr: Any, ctx: ExprContext) -> Pred:
    """Compile a filter expression into one predicate over a JSON document (a dict).

    Args:
        expr: The expression: an object whose keys are ANDed.
        ctx: Where it is evaluated; collects the fields it uses.

    Returns:
        A predicate that never raises on a dict.

    Raises:
        FilterError: The expression is malformed or names an unknown operator.
    """
    return _all(_conjuncts(expr, ctx, 0))
