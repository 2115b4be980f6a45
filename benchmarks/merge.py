"""Merge benchmark: the cost of a three-way merge follows what changed, not the dataset size.

    python benchmarks/merge.py [--large 1000000] [--small 10000] [--changes 1000]
                               [--more-changes 10000] [--repeat 5] [--workdir DIR] [--out FILE.md]

For each size it builds a dataset through the library (metadata-only synthetic items sharing
four real blobs, one version published with its filename index; every item has metadata,
every other one an annotation set), clones it twice (O(1)), changes ``--changes`` items on
each clone through ``Dataset.edit`` (one new annotation and one metadata key per item; the
sides pick their items independently, so a few items are changed on both sides and merge
leaf-wise), then times ``store.datasets.merge(NEW, [clone1, clone2])`` end to end (merge
base, recipe check, the layer walk, path collisions, publishing the version) ``--repeat``
times, each into a new dataset, with the decoded-object cache emptied before each run. The
bar: median(large) / median(small) <= 2. A last row merges ``--more-changes`` changes per
side on the large dataset, to show the cost growing with the changes instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dvstore import tree  # noqa: E402
from dvstore.api import Dataset, Store  # noqa: E402
from dvstore.hashing import hash_bytes  # noqa: E402
from dvstore.merge import ANNSET, path_key  # noqa: E402
from dvstore.model import Commit, default_author, now_iso  # noqa: E402


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}"


def build_dataset(store: Store, name: str, n: int) -> Dataset:
    """A dataset of ``n`` items published as one version, its tries built directly."""
    ds = store.datasets.create(name)
    with ds.edit("blobs") as e:
        for k in range(4):
            e.add_bytes(f"/seed/{k}.jpg", bytes([k]) * 1024)
    repo = store.repo
    objs = repo.objects
    head = ds.head_id
    first = repo.commit(head)
    seeds = [(r["blob"], r["size"]) for _, r in tree.items(objs, first.layers["items"] or tree.EMPTY)]
    annsets = []
    for k in range(8):  # a few shared annotation sets: content addressing stores each once
        aid = f"{k:024x}"
        annsets.append(objs.put(ANNSET, {aid: {"id": aid, "type": "box", "label": "dog" if k % 2 else "cat",
                                                "coordinates": [{"x": k, "y": k}, {"x": k + 9, "y": k + 9}],
                                                "attributes": {}, "metadata": {"system": {}, "user": {}}}}))
    created = now_iso()
    items, paths, anns, meta = [], [], [], []
    for i in range(n):
        iid = hash_bytes(f"{name}:{i}".encode())[:16]
        fn = f"/train/{i % 1000:03d}/img{i:07d}.jpg"
        blob, size = seeds[i % 4]
        items.append((iid, {"filename": fn, "blob": blob, "size": size, "mimetype": "image/jpeg",
                            "system": {"width": 640, "height": 480}, "hidden": False, "createdAt": created}))
        paths.append((path_key(fn), [fn, iid]))
        meta.append((iid, {"user": {"score": i % 100}}))
        if i % 2 == 0:
            anns.append((iid, annsets[i % 8]))
    layers: dict[str, bytes | None] = {"items": tree.build(objs, items), "annotations": tree.build(objs, anns),
                                       "metadata": tree.build(objs, meta), "status": tree.EMPTY}
    path_root = tree.build(objs, paths)
    c = Commit(layers=layers, recipe=first.recipe, parents=(head,), op="commit", info={},
               author=default_author(), message=f"{n} synthetic items", time=now_iso())
    items_root = layers["items"]
    assert items_root is not None
    with repo.lock():
        repo.publish(ds=ds.record, expected_head=head, commit=c, path_index=(items_root, path_root))
    return store.datasets.get(name)


def change(ds: Dataset, n_items: int, count: int, seed: int, side: str) -> float:
    """Add an annotation and a metadata key to ``count`` random items; returns seconds."""
    rnd = random.Random(seed)
    picks = rnd.sample(range(n_items), count)
    t = time.perf_counter()
    with ds.edit(f"{side}: {count} items") as e:
        for i in picks:
            fn = f"/train/{i % 1000:03d}/img{i:07d}.jpg"
            e.add_annotation(fn, {"type": "point", "label": side, "coordinates": {"x": i, "y": i}})
            e.update_metadata(fn, user={f"reviewed_by_{side}": True})
    return time.perf_counter() - t


def clear_cache(store: Store) -> None:
    cache = getattr(store.repo.objects, "_cache", None)
    if cache is not None:
        cache.clear()


def run_case(work: str, label: str, n: int, changes: int, repeat: int) -> dict[str, Any]:
    path = os.path.join(work, label)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    store = Store.init(path)
    t = time.perf_counter()
    src = build_dataset(store, "src", n)
    built = time.perf_counter() - t
    left, right = src.clone("left"), src.clone("right")
    edit_s = change(left, n, changes, 1, "left") + change(right, n, changes, 2, "right")
    times, plan_times = [], []
    result: dict[str, Any] = {}
    from dvstore import merging

    for r in range(repeat):
        clear_cache(store)
        t = time.perf_counter()
        plan = merging.plan_merge(store, [left, right], merge_name=f"m{r}")
        plan_times.append(time.perf_counter() - t)
        stats = plan.stats
        store.repo.objects.discard()
        clear_cache(store)
        t = time.perf_counter()
        merged = store.datasets.merge(f"merged{r}", [left, right])
        times.append(time.perf_counter() - t)
        result = {"items": stats["items"], "modified": stats["modified"], "conflicts": len(plan.conflicts)}
        assert merged.version.layers == plan.layers
    out = {"label": label, "n": n, "changes": changes, "build_s": built, "edit_s": edit_s,
           "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
           "plan_median_s": statistics.median(plan_times), "runs": times, **result}
    print(f"{label:>13}: {n:>9,} items, {changes:>6,} changes/side: merge median {out['median_s'] * 1000:8.1f} ms "
          f"(min {out['min_s'] * 1000:.1f}, max {out['max_s'] * 1000:.1f}; plan only {out['plan_median_s'] * 1000:.1f} ms)"
          f"  [build {built:.1f} s, edits {edit_s:.1f} s, {result['modified']} items modified]", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--changes", type=int, default=1_000)
    ap.add_argument("--more-changes", type=int, default=10_000, help="0 to skip the last row")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None, help="write the markdown report here too")
    a = ap.parse_args()
    if a.repeat < 3:
        ap.error("--repeat must be at least 3 (the report gives medians)")
    work = a.workdir or tempfile.mkdtemp(prefix="dvs-bench-merge-")
    os.makedirs(work, exist_ok=True)
    print(f"machine: {machine()}\nworkdir: {work}\n", flush=True)
    rows = [run_case(work, "small", a.small, a.changes, a.repeat),
            run_case(work, "large", a.large, a.changes, a.repeat)]
    if a.more_changes:
        rows.append(run_case(work, "large, more", a.large, a.more_changes, a.repeat))
    ratio = rows[1]["median_s"] / rows[0]["median_s"]
    plan_ratio = rows[1]["plan_median_s"] / rows[0]["plan_median_s"]
    verdict = "PASS" if ratio <= 2 else "FAIL"
    print(f"\nlarge/small merge median: {ratio:.2f}x (bar <= 2x: {verdict}); plan only {plan_ratio:.2f}x")
    lines = [
        f"# Merge benchmark, {date.today().isoformat()}",
        "",
        f"machine: {machine()}",
        "",
        f"`python benchmarks/merge.py --large {a.large} --small {a.small} --changes {a.changes} "
        f"--more-changes {a.more_changes} --repeat {a.repeat}`",
        "",
        "Two clones of one dataset, each with an annotation and a metadata key added on `changes` random items, "
        "merged into a new dataset (`store.datasets.merge`, end to end, version published). "
        f"Median of {a.repeat} runs, object cache emptied before each; plan only = `merging.plan_merge`, the "
        "same merge computed but not written.",
        "",
        "| dataset | items | changes per side | items modified | merge median | min | max | plan-only median |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['label']} | {r['n']:,} | {r['changes']:,} | {r['modified']:,} | "
                     f"{r['median_s'] * 1000:.1f} ms | {r['min_s'] * 1000:.1f} ms | {r['max_s'] * 1000:.1f} ms | "
                     f"{r['plan_median_s'] * 1000:.1f} ms |")
    lines += ["", f"**large/small = {ratio:.2f}x** (bar: <= 2x, {verdict}); plan only {plan_ratio:.2f}x.", ""]
    report = "\n".join(lines)
    print("\n" + report)
    if a.out:
        with open(a.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
