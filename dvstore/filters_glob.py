"""Glob patterns for DQL string values: compile once, match many.

This module owns the one glob dialect of dvstore filters (SEMANTICS §4.2): ``*`` matches
any run of characters except ``/``, ``**`` any run including ``/``, and ``\\*`` a literal
star. Every other character, a lone backslash included, stands for itself, so a glob never
needs escaping beyond the star. Patterns match the whole string.

It must not know about queries, items or I/O: ``dvstore.filters`` calls it while compiling
a query and keeps the returned tests in its closures, so nothing is parsed per item.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

__all__ = ["ValueTest", "compile_glob", "glob_to_regex", "is_glob"]

ValueTest = Callable[[object], bool]

# Token kinds of a parsed glob: a literal run, "*" and "**".
_STAR = object()
_DSTAR = object()


def is_glob(value: str) -> bool:
    """Return True if ``value`` is matched as a glob rather than compared for equality.

    Any star makes a glob, an escaped one too: ``"a\\*b"`` is the glob that matches only
    the literal ``"a*b"``, which plain equality could not express.
    """
    return "*" in value


def _tokens(pattern: str) -> list[object]:
    out: list[object] = []
    lit: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n and pattern[i + 1] == "*":
            lit.append("*")
            i += 2
            continue
        if c != "*":
            lit.append(c)
            i += 1
            continue
        if lit:
            out.append("".join(lit))
            lit = []
        if i + 1 < n and pattern[i + 1] == "*":
            out.append(_DSTAR)
            i += 2
        else:
            out.append(_STAR)
            i += 1
    if lit:
        out.append("".join(lit))
    return out


def glob_to_regex(pattern: str) -> str:
    """Translate a glob to an equivalent regular expression for ``re.fullmatch``.

    Args:
        pattern: A DQL glob.

    Returns:
        The regex source; compile it with ``re.DOTALL`` so that stars also span newlines.
    """
    parts: list[str] = []
    for tok in _tokens(pattern):
        if tok is _DSTAR:
            parts.append(".*")
        elif tok is _STAR:
            parts.append("[^/]*")
        else:
            assert isinstance(tok, str)
            parts.append(re.escape(tok))
    return "".join(parts)


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> ValueTest:
    """Compile a glob into a test that is True for a string the whole of which matches.

    The test takes any value and is False for non-strings, so callers need no type check
    of their own (one call fewer per document). The shapes that dominate real queries
    (``/train/**``, ``**.png``, ``/a/**/b.jpg``) become ``startswith``/``endswith`` checks,
    several times faster than a regex; everything else is one precompiled regex. Results
    are cached because the same globs come back in every query a session compiles.

    Args:
        pattern: A DQL glob.

    Returns:
        A function ``value -> bool``.
    """
    toks = _tokens(pattern)
    if all(isinstance(t, str) for t in toks):
        literal = "".join(t for t in toks if isinstance(t, str))
        return lambda s: type(s) is str and s == literal
    if len(toks) == 1 and toks[0] is _DSTAR:
        return lambda s: type(s) is str
    if len(toks) == 2 and toks[1] is _DSTAR and isinstance(toks[0], str):
        prefix: str = toks[0]
        return lambda s: type(s) is str and s.startswith(prefix)
    if len(toks) == 2 and toks[0] is _DSTAR and isinstance(toks[1], str):
        suffix: str = toks[1]
        return lambda s: type(s) is str and s.endswith(suffix)
    if len(toks) == 3 and toks[1] is _DSTAR and isinstance(toks[0], str) and isinstance(toks[2], str):
        head: str = toks[0]
        tail: str = toks[2]
        need = len(head) + len(tail)
        # The length check stops head and tail from overlapping ("ab" vs "a**b" on "ab").
        return lambda s: type(s) is str and len(s) >= need and s.startswith(head) and s.endswith(tail)
    if len(toks) == 2 and toks[0] is _STAR and isinstance(toks[1], str) and "/" not in toks[1]:
        # "*.png" (a name glob): the suffix, and no "/" before it.
        star_suffix: str = toks[1]
        cut = len(star_suffix)
        return lambda s: type(s) is str and s.endswith(star_suffix) and "/" not in s[: len(s) - cut]
    rx = re.compile(glob_to_regex(pattern), re.DOTALL)
    return lambda s: type(s) is str and rx.fullmatch(s) is not None
