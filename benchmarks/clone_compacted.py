"""Unfiltered clone in a 1,000,000-item store as built and after LMDB compaction.

    python benchmarks/clone_compacted.py

Right after a bulk build every LMDB commit in the environment pays for re-saving a long
free-page list (~1 ms) whatever it writes. Compacting the environment (what a future
`dvs gc --compact` would do) removes that and shows the clone's own cost. It resets a private
registry to reopen the swapped environment in-process: a benchmark, not an API.
"""

import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, synthetic_dataset  # noqa: E402

import dvstore.storage.db as dbm  # noqa: E402
from dvstore import Store  # noqa: E402

print(machine())
d = tempfile.mkdtemp(prefix="dvs-bench-compact-")
s = Store.init(d)
src = synthetic_dataset(s, "src", 1_000_000)


def med(store: Store, k: int = 21, tag: str = "u") -> float:
    ds = store.datasets.get("src")
    ts = []
    for i in range(k):
        t = time.perf_counter()
        ds.clone(clone_name=f"{tag}{i}")
        ts.append(time.perf_counter() - t)
    return round(statistics.median(ts) * 1000, 3)


print("unfiltered clone median ms, as built:", med(s))
env = s.repo.db.env
os.makedirs(d + "/compact")
env.copy(d + "/compact", compact=True)
del s, src, env
dbm._REGISTRY.clear()
os.rename(d + "/.dvs/db", d + "/olddb")
os.rename(d + "/compact", d + "/.dvs/db")
s2 = Store(d + "/.dvs")
print("unfiltered clone median ms, compacted:", med(s2, tag="c"))
shutil.rmtree(d)
