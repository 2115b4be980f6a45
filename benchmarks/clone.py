"""Clone benchmark: unfiltered clone cost at 10,000 and 1,000,000 items, and a filtered clone.

    python benchmarks/clone.py [--small 10000] [--large 1000000] [--repeat 5] [--workdir DIR]

Datasets are built through the library (metadata-only synthetic items sharing four blobs).
An unfiltered clone reuses the source's layer roots, so its time should not depend on the size:
the bar is large/small <= 2. The filtered clone selects 10 % of the items ("/val/**").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, synthetic_dataset, timed  # noqa: E402

from dvstore import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=21, help="unfiltered clones per size (sub-ms: fsync noise)")
    ap.add_argument("--filtered-repeat", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="dvs-bench-clone-")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    print(f"# clone benchmark\n\nmachine: {machine()}\nworkdir: {work}\n")
    results = {}
    for label, n in (("small", a.small), ("large", a.large)):
        store = Store.init(os.path.join(work, label))
        t = time.perf_counter()
        src = synthetic_dataset(store, "src", n)
        build = time.perf_counter() - t
        counter = iter(range(10**6))

        def unfiltered(src: Any = src, counter: Any = counter) -> None:
            src.clone(clone_name=f"u{next(counter)}")

        med, lo, hi, _ = timed(unfiltered, a.repeat)
        results[label] = {"items": n, "build_s": build, "unfiltered_median_s": med, "min": lo, "max": hi}
        print(f"{label}: {n:,} items (built in {build:.1f} s); unfiltered clone median {med * 1000:.2f} ms "
              f"(min {lo * 1000:.2f}, max {hi * 1000:.2f}, n={a.repeat})")
        if label == "large":
            def filtered(src: Any = src, counter: Any = counter, store: Any = store) -> int:
                c = src.clone(clone_name=f"f{next(counter)}", filters={"filename": "/val/**"})
                from dvstore import tree
                return tree.count(store.repo.objects, c.version.layers["items"])

            fmed, flo, fhi, counts = timed(filtered, a.filtered_repeat)
            results["filtered"] = {"items": n, "selected": counts[0], "median_s": fmed, "min": flo, "max": fhi}
            print(f"filtered clone of {n:,} items selecting {counts[0]:,}: median {fmed:.2f} s "
                  f"(min {flo:.2f}, max {fhi:.2f})")
    ratio = results["large"]["unfiltered_median_s"] / results["small"]["unfiltered_median_s"]
    results["ratio_large_small"] = ratio
    print(f"\nunfiltered clone, large/small: {ratio:.2f}x (bar: <= 2)")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump(results, f, indent=2)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
