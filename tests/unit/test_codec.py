import math

import pytest

from dvstore import codec
from dvstore.errors import CorruptObjectError, UsageError


def test_maps_are_sorted_and_tuples_become_lists():
    a = codec.encode({"b": 1, "a": (1, 2)})
    b = codec.encode({"a": [1, 2], "b": 1})
    assert a == b
    assert codec.decode(a) == {"a": [1, 2], "b": 1}


def test_ints_and_floats_stay_distinct():
    assert codec.encode(1) != codec.encode(1.0)
    assert codec.encode(True) != codec.encode(1)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(bad):
    with pytest.raises(UsageError):
        codec.encode({"x": bad})


def test_non_string_keys_are_refused():
    with pytest.raises(UsageError):
        codec.encode({1: "x"})


def test_unsupported_types_are_refused():
    with pytest.raises(UsageError):
        codec.encode({"x": object()})


@pytest.mark.parametrize("bomb", [
    b"\xdd\xff\xff\xff\xff",            # array32 declaring 2^32-1 elements
    b"\xdf\xff\xff\xff\xff",            # map32 declaring 2^32-1 entries
    b"\xdb\xff\xff\xff\xff",            # str32 declaring 4 GiB
    b"\x91" * 100_000,                  # nesting depth 10^5
    b"\x80" * 5_000_000,                # 5 MB of empty maps
    b"\xc7\x01\x05x",                   # an extension type
    b"",                                # nothing
])
def test_decode_bombs_are_rejected(bomb):
    with pytest.raises(CorruptObjectError):
        codec.decode(bomb)
