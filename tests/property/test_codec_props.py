from hypothesis import given, settings
from hypothesis import strategies as st

from dvstore import codec
from dvstore.errors import CorruptObjectError
from tests.property.strategies import values


@given(values)
def test_round_trip_and_canonical(x):
    b = codec.encode(x)
    y = codec.decode(b)
    assert codec.encode(y) == b
    assert y == codec.canonical(x)
    assert codec.decode_own(b) == y  # scratch rows: the same values, without the limits


@given(st.dictionaries(st.text(max_size=6), st.integers(-(2**63), 2**63 - 1), max_size=8), st.randoms())
def test_key_order_does_not_matter(d, rnd):
    items = list(d.items())
    rnd.shuffle(items)
    assert codec.encode(dict(items)) == codec.encode(d)


@settings(max_examples=1000)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise_corrupt(data):
    try:
        codec.decode(data)
    except CorruptObjectError:
        pass


@settings(max_examples=1000)
@given(values, st.data())
def test_mutated_encodings_decode_or_raise_corrupt(x, data):
    b = bytearray(codec.encode(x))
    if b:
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(b)))
        b = b[:cut]
    try:
        codec.decode(bytes(b))
    except CorruptObjectError:
        pass


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
              st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=6)),
    lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(st.text(max_size=6), c, max_size=4)),
    max_leaves=25,
)


@given(json_like)
def test_sort_maps_is_canonical_for_json_values(x):
    from dvstore import codec

    assert codec.encode_canonical(codec.sort_maps(x)) == codec.encode(x)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), values, max_size=20))
def test_map_in_pieces_is_the_canonical_encoding(d):
    """map_header, then each key and value encoded on its own, in key order (how ingest builds
    an annotation set from annotations encoded in the COCO reader)."""
    d = codec.canonical(d)
    pieces = [codec.map_header(len(d))]
    pieces.extend(codec.encode_canonical(k) + codec.encode(d[k]) for k in sorted(d))
    assert b"".join(pieces) == codec.encode(d)
