"""The layer trie against a plain dict: same content, same root, whatever the edit order."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dvstore import tree
from dvstore.storage.objects import MemoryObjectStore
from tests.property.strategies import item_ids

small_vals = st.one_of(st.integers(0, 5), st.text(max_size=3), st.dictionaries(st.sampled_from("ab"), st.integers(0, 2), max_size=2))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(item_ids, small_vals, max_size=300), st.randoms(), st.integers(1, 50))
def test_root_is_history_independent(d, rnd, batch):
    s = MemoryObjectStore()
    direct = tree.build(s, d.items())
    keys = list(d)
    rnd.shuffle(keys)
    root = tree.EMPTY
    # Insert in random batches, with some detours through deletion.
    for i in range(0, len(keys), batch):
        chunk = keys[i:i + batch]
        root = tree.apply(s, root, {k: "tmp" for k in chunk})
        root = tree.apply(s, root, {k: d[k] for k in chunk})
    assert root == direct
    assert tree.count(s, root) == len(d)
    assert dict(tree.items(s, root)) == d


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(item_ids, small_vals, max_size=200), st.dictionaries(item_ids, small_vals, max_size=200))
def test_diff_matches_dict_diff(a, b):
    s = MemoryObjectStore()
    ra, rb = tree.build(s, a.items()), tree.build(s, b.items())
    got = {k: (x, y) for k, x, y in tree.diff(s, ra, rb)}
    want = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k) or (k in a) != (k in b)}
    assert got == want


class TreeVsDict(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.s = MemoryObjectStore()
        self.root = tree.EMPTY
        self.model: dict[bytes, object] = {}

    @rule(changes=st.dictionaries(item_ids, small_vals, max_size=80))
    def put_many(self, changes):
        self.root = tree.apply(self.s, self.root, changes)
        self.model.update(changes)

    @rule(data=st.data())
    def delete_some(self, data):
        if not self.model:
            return
        ks = data.draw(st.lists(st.sampled_from(sorted(self.model)), max_size=40, unique=True))
        self.root = tree.apply(self.s, self.root, {k: tree.DELETE for k in ks})
        for k in ks:
            del self.model[k]

    @rule(k=item_ids)
    def get_missing_or_present(self, k):
        assert tree.get(self.s, self.root, k) == self.model.get(k)

    @invariant()
    def same_content_and_canonical_root(self):
        assert tree.count(self.s, self.root) == len(self.model)
        assert tree.build(self.s, self.model.items()) == self.root
        for k in list(self.model)[:20]:
            assert tree.get(self.s, self.root, k) == self.model[k]


TestTreeVsDict = TreeVsDict.TestCase
TestTreeVsDict.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)


# Keys that share long prefixes: deep nodes and leaves that overflow several levels down,
# which uniformly random ids of a few hundred keys never reach.
clustered_ids = st.builds(lambda head, tail: bytes(head) + tail,
                          st.lists(st.sampled_from([0x00, 0x0F, 0xF0, 0xFF]), min_size=0, max_size=14),
                          st.binary(min_size=2, max_size=16)).map(lambda k: k[:16].ljust(16, b"\0"))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(clustered_ids, st.integers(0, 3), max_size=400),
       st.dictionaries(clustered_ids, st.one_of(st.integers(0, 3), st.just(tree.DELETE)), max_size=400))
def test_streamed_apply_matches_build(base, changes):
    """``apply_sorted`` (the bounded-memory path) gives the canonical root of the result."""
    s = MemoryObjectStore()
    root = tree.build(s, base.items())
    got = tree.apply_sorted(s, root, sorted(changes.items()))
    want = {k: v for k, v in {**base, **changes}.items() if v is not tree.DELETE}
    assert got == tree.build(s, want.items())
    assert tree.count(s, got) == len(want)
    assert dict(tree.items(s, got)) == want


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(clustered_ids, st.one_of(st.integers(0, 3), st.just(tree.DELETE)), max_size=400))
def test_a_new_tree_from_a_list_equals_one_from_a_stream(changes):
    """A first build takes ranges of a list (``_build_range``) or streams an iterator
    (``_build_stream``): the same root, the same nodes."""
    listed, streamed = MemoryObjectStore(), MemoryObjectStore()
    batch = sorted(changes.items())
    got = tree.apply_sorted(listed, tree.EMPTY, batch)
    assert got == tree.apply_sorted(streamed, tree.EMPTY, iter(batch))
    assert listed.pending == streamed.pending
    assert dict(tree.items(listed, got)) == {k: v for k, v in changes.items() if v is not tree.DELETE}


def test_streamed_apply_refuses_unsorted_changes():
    s = MemoryObjectStore()
    with pytest.raises(ValueError):
        tree.apply_sorted(s, tree.EMPTY, [(b"\2" * 16, 1), (b"\1" * 16, 2)])
    with pytest.raises(ValueError):
        tree.apply_sorted(s, tree.EMPTY, [(b"\1" * 16, 1), (b"\1" * 16, 2)])
    for bad in ([(b"\2" * 16, 1), (b"\1" * 16, 2)], [(b"\1" * 15, 1)], [("a" * 16, 1)]):
        with pytest.raises(ValueError):
            tree.apply_sorted(s, tree.EMPTY, iter(bad))
        with pytest.raises(ValueError):
            tree.apply_sorted(s, tree.EMPTY, list(bad))
