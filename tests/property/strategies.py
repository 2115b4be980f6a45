"""Shared Hypothesis strategies."""

from __future__ import annotations

from hypothesis import strategies as st

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20), st.binary(max_size=20),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(max_size=8), children, max_size=5)),
    max_leaves=25,
)
item_ids = st.binary(min_size=16, max_size=16)
