"""G8/G9: decoders of untrusted bytes end in a value or a DvsError, never anything else, and
decode bombs are refused before they allocate.

Targets (1,000 Hypothesis examples each): ``codec.decode`` on arbitrary bytes and on
mutations of valid objects; ``model.Commit.from_record`` on arbitrary msgpack-shaped values
and on damaged commit records; object reads (``ObjectStore.get_any``, ``tree.read_node``)
of arbitrary stored bytes; the gc/fsck verifier ``maintenance.verify_object``. Bombs run in
a subprocess under RLIMIT_AS and must be rejected fast with little memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dvstore import codec, tree
from dvstore.errors import CorruptObjectError, DvsError
from dvstore.hashing import hash_bytes
from dvstore.maintenance import Issue, verify_object
from dvstore.model import Commit
from dvstore.storage.objects import MemoryObjectStore
from tests.property.strategies import values

FUZZ = settings(max_examples=1000, deadline=1000, suppress_health_check=[HealthCheck.too_slow])

_D = bytes(range(32))
VALID_COMMIT = Commit(layers={"items": _D, "annotations": None, "metadata": _D, "status": None}, recipe=_D,
                      parents=(_D,), op="commit", info={"k": 1}, author="a", message="m", time="t").to_record()
SAMPLES = [
    b"commit\0" + codec.encode(VALID_COMMIT),
    b"leaf\0" + codec.encode([[bytes(16), {"blob": _D, "filename": "/a", "size": 3}], [b"\x01" * 16, 5]]),
    b"node\0" + codec.encode([0b101, [_D, _D], 70]),
    b"annset\0" + codec.encode({"a1": {"id": "a1", "type": "box", "coordinates": [1, 2.5, None]}}),
    b"recipe\0" + codec.encode({"title": "r", "labels": [{"tag": "cat"}]}),
]


def _mutate(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    b = bytearray(data)
    for kind, pos, val in ops:
        if not b:
            break
        i = pos % len(b)
        if kind == 0:
            b[i] ^= 1 << (val % 8)
        elif kind == 1:
            b.insert(i, val % 256)
        elif kind == 2:
            del b[i]
        else:
            del b[i:]
    return bytes(b)


mutations = st.tuples(st.sampled_from(SAMPLES),
                      st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20), st.integers(0, 255)),
                               min_size=1, max_size=6)).map(lambda t: _mutate(*t))


@FUZZ
@given(st.binary(max_size=512))
def test_codec_decode_arbitrary_bytes(data: bytes) -> None:
    try:
        codec.decode(data)
    except CorruptObjectError:
        pass


@FUZZ
@given(mutations)
def test_codec_decode_mutated_objects(raw: bytes) -> None:
    _, _, payload = raw.partition(b"\0")
    try:
        codec.decode(payload)
    except CorruptObjectError:
        pass


@FUZZ
@given(values)
def test_commit_from_arbitrary_record(value: Any) -> None:
    try:
        Commit.from_record(value)
    except CorruptObjectError:
        pass


damaged_records = st.tuples(
    st.sampled_from(sorted(VALID_COMMIT)), values, st.booleans(),
).map(lambda t: {k: v for k, v in {**VALID_COMMIT, t[0]: t[1]}.items() if not (t[2] and k == t[0])})


@FUZZ
@given(damaged_records)
def test_commit_from_damaged_record(record: dict[str, Any]) -> None:
    try:
        c = Commit.from_record(record)
    except CorruptObjectError:
        return
    assert Commit.from_record(c.to_record()) == c


@FUZZ
@given(st.one_of(mutations, st.binary(max_size=300)), st.booleans())
# Found by this test: hash-valid nodes/leaves with malformed children or entries raised
# AttributeError/TypeError inside tree walks (fixed in tree.read_node).
@example(b"node\0" + codec.encode([0b11, [_D, 7], 70]), True)
@example(b"leaf\0" + codec.encode([[bytes(16), 1], 5]), True)
def test_object_reads(raw: bytes, keyed_by_hash: bool) -> None:
    """Whatever bytes sit in the object store, reads return a value or raise DvsError."""
    store = MemoryObjectStore()
    oid = hash_bytes(raw) if keyed_by_hash else hash_bytes(b"other" + raw)
    store.data[oid] = raw
    for fn in (lambda: store.get_any(oid), lambda: tree.read_node(store, oid),
               lambda: list(tree.items(store, oid)), lambda: list(tree.reachable(store, oid))):
        try:
            fn()
        except DvsError:
            pass
    got = verify_object(oid, raw)
    assert isinstance(got, (Issue, tuple))
    if not keyed_by_hash:
        assert isinstance(got, Issue) and got.kind == "object-hash"


BOMB = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from dvstore import codec
from dvstore.errors import CorruptObjectError
cases = {
    "array32 of 2^32-1": b"\xdd\xff\xff\xff\xff",
    "map32 of 2^32-1": b"\xdf\xff\xff\xff\xff",
    "str32 of 2^32-1": b"\xdb\xff\xff\xff\xff",
    "bin32 of 2^32-1": b"\xc6\xff\xff\xff\xff",
    "depth 1025": b"\x91" * 1025 + b"\xc0",
    "depth 100000": b"\x91" * 100000 + b"\xc0",
    "5 MB of empty maps": b"\xdd" + (5_000_000).to_bytes(4, "big") + b"\x80" * 5_000_000,
    "100 MB of nils": b"\xdd" + (100_000_000).to_bytes(4, "big") + b"\xc0" * 100_000_000,
    "ext type": b"\xd4\x01\x00",
}
out = {}
for name, data in cases.items():
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    try:
        codec.decode(data)
        result = "decoded"
    except CorruptObjectError:
        result = "rejected"
    except BaseException as e:
        result = type(e).__name__
    out[name] = {"result": result, "seconds": time.perf_counter() - t0,
                 "rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}
    del data
print(json.dumps(out))
"""


def test_decode_bombs_rejected_before_allocation() -> None:
    p = subprocess.run([sys.executable, "-c", BOMB], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    for name, r in out.items():
        assert r["result"] == "rejected", (name, r)
        assert r["seconds"] < 0.5, (name, r)
        assert r["rss_growth_mib"] < 64, (name, r)
