"""Item names: the fast path of ``normalize_filename`` against its full rules."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dvstore.errors import InvalidNameError
from dvstore.model import _normalize_full, normalize_filename

# Pieces that hit every rule: dots and "..", reserved names, empty components, backslashes,
# control characters, drive letters, non-ASCII (NFD), over-long components.
_PIECES = st.sampled_from(list("ab.Z9_-/ :\\\x00é") + [".dvs", "..", "e\u0301", "x" * 255, "C:"])


def _verdict(fn, name: str) -> object:  # type: ignore[no-untyped-def]
    try:
        return fn(name)
    except InvalidNameError as e:
        return ("refused", e.message)


@settings(max_examples=3000)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_fast_path_says_what_the_full_rules_say(name: str) -> None:
    assert _verdict(normalize_filename, name) == _verdict(_normalize_full, name)


def test_plain_names_take_the_fast_path_and_odd_ones_do_not() -> None:
    from dvstore import model

    assert model._PLAIN.fullmatch("/train/img_0001.jpg") and model._PLAIN.fullmatch("a/b-c_d.e")
    for odd in ("/.dvs/x", "a/../b", "a//b", "a/", "é.jpg", "C:/x", "a b", "/" + "x" * 256):
        assert not model._PLAIN.fullmatch(odd), odd
    assert normalize_filename("a/b.jpg") == "/a/b.jpg" and normalize_filename("/a/b.jpg") == "/a/b.jpg"
