#!/usr/bin/env python3
"""Diff benchmark: the cost of ``dvs diff`` must follow the differences, not the dataset.

Two datasets, N = 1,000,000 and N = 10,000 items, each with two versions that differ in the
same 1,000 items (400 new binaries, 200 annotation changes, 200 metadata changes, 100
deletions, 100 additions). The bar: diffing the large pair takes at most 2x the small pair.

    .venv/bin/python benchmarks/diff.py                      # build (once) and measure
    .venv/bin/python benchmarks/diff.py --quick              # 100,000 vs 10,000, 3 repeats
    .venv/bin/python benchmarks/diff.py --md benchmarks/results/diff-$(date +%F).md

Building: a million items through ``dvs add`` would measure ingest, not diff, so version 1 is
made directly: the four layer tries are built with ``tree.build`` over the store's object
store and published as one version with ``Repository.publish`` (with its filename index).
Items share 10,000 distinct small blobs and annotations share 1,000 annotation sets (blob and
annotation-set contents do not enter the diff's cost; the tries are full size). Version 2
is one ordinary ``ds.edit()`` block making the 1,000 changes. Stores are kept under
--workdir and reused when their parameters match.

Measured, interleaved (each repeat runs every size in turn):
  warm     ``history.diff(big@v1, big)`` in this process, with a fresh ``Store`` (an empty
           object cache) per run; the OS page cache is warm (the store was just read).
  cold     the same call timed inside a fresh process (what one ``dvs diff`` pays).
  cli      ``dvs diff big@v1 big --json`` as a subprocess, wall clock (Python start-up,
           store open, revision parsing and JSON output included).
  reads    objects (trie nodes and annotation sets) the library diff reads, counted once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
sys.path.insert(0, str(PROJECT))

from dvstore import history, tree  # noqa: E402
from dvstore.api import Store  # noqa: E402
from dvstore.hashing import hash_bytes  # noqa: E402
from dvstore.model import Commit, now_iso  # noqa: E402
from dvstore.repo import ANNSET, path_key  # noqa: E402

SEED = 20240601
N_BLOBS = 10_000
N_ANNSETS = 1_000
LABELS = ["cat", "dog", "car", "person", "tree"]
# The shape of the 1,000 changes.
MIX = {"binary": 400, "annotations": 200, "metadata": 200, "delete": 100, "add": 100}
BUILD_VERSION = 2


def item_id(i: int) -> bytes:
    """Deterministic random-looking 16-byte ids, as real (random) item ids are."""
    return hash_bytes(b"item %d" % i)[:16]


def filename(i: int) -> str:
    return f"/img/{i // 1000:04d}/{i:07d}.jpg"


def build(path: Path, n: int, seed: int) -> dict[str, Any]:
    """Create (or reuse) a store at ``path`` with dataset "big": tags v1 (n items) and v2."""
    params = {"n": n, "seed": seed, "mix": MIX, "version": BUILD_VERSION}
    manifest = path / "MANIFEST.json"
    try:
        info: dict[str, Any] = json.loads(manifest.read_text())
        if info.get("params") == params:
            return info
    except (OSError, ValueError):
        pass
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    t0 = time.perf_counter()
    store = Store.init(str(path))
    ds = store.datasets.create("big")
    repo = store.repo
    objs = repo.objects
    head = ds.head_id
    base = repo.commit(head)
    rng = random.Random(f"{seed}-{n}")
    blobs = [repo.blobs.add_bytes(b"blob %d " % k * 16) for k in range(N_BLOBS)]
    annsets = []
    for k in range(N_ANNSETS):
        anns = {}
        for j in range(2):  # the same count everywhere, so both sizes report equal diffs
            aid = f"{k:012x}{j:012x}"
            anns[aid] = {
                "id": aid,
                "type": "box",
                "label": LABELS[(k + j) % len(LABELS)],
                "coordinates": [[k % 640, j * 10], [k % 640 + 20, j * 10 + 30]],
                "attributes": [],
                "metadata": {"system": {}, "user": {}},
            }
        annsets.append(objs.put(ANNSET, anns))
    created = now_iso()
    layers: dict[str, bytes | None] = {
        "items": tree.build(
            objs,
            (
                (
                    item_id(i),
                    {
                        "filename": filename(i),
                        "blob": blobs[i % N_BLOBS],
                        "size": 128,
                        "mimetype": "image/jpeg",
                        "system": {"width": 640, "height": 480},
                        "hidden": False,
                        "createdAt": created,
                    },
                )
                for i in range(n)
            ),
        ),
        "annotations": tree.build(objs, ((item_id(i), annsets[i % N_ANNSETS]) for i in range(n))),
        "metadata": tree.build(
            objs, ((item_id(i), {"user": {"split": "train" if i % 5 else "val", "score": i % 100}}) for i in range(n))
        ),
        "status": tree.build(
            objs, ((item_id(i), {"tasks": {"review": {"status": "completed"}}}) for i in range(0, n, 10))
        ),
    }
    items_root = layers["items"]
    assert items_root is not None
    paths = tree.build(objs, ((path_key(filename(i)), [filename(i), item_id(i)]) for i in range(n)))
    commit = Commit(
        layers=layers,
        recipe=base.recipe,
        parents=(head,),
        op="commit",
        info={},
        author="benchmark",
        message=f"{n} items",
        time=now_iso(),
    )
    with repo.lock():
        repo.publish(ds=ds.record, expected_head=head, commit=commit, path_index=(items_root, paths))
    history.tag(ds, "v1")
    built_v1 = time.perf_counter() - t0

    # Version 2: one ordinary edit making the 1,000 changes.
    t1 = time.perf_counter()
    chosen = rng.sample(range(n), sum(MIX.values()) - MIX["add"])
    groups: dict[str, list[int]] = {}
    at = 0
    for kind in ("binary", "annotations", "metadata", "delete"):
        groups[kind] = chosen[at : at + MIX[kind]]
        at += MIX[kind]
    with ds.edit("1,000 changes") as e:
        for i in groups["binary"]:
            e.add_bytes(filename(i), b"new bytes for item %d" % i)
        for i in groups["annotations"]:
            e.add_annotation(filename(i), {"type": "box", "label": rng.choice(LABELS), "coordinates": [[1, 2], [3, 4]]})
        for i in groups["metadata"]:
            e.update_metadata(filename(i), user={"score": -1, "reviewed": True})
        for i in groups["delete"]:
            e.delete(filename(i))
        for k in range(MIX["add"]):
            e.add_bytes(f"/new/{k:04d}.jpg", b"added item %d" % k)
    history.tag(ds, "v2")
    info = {
        "params": params,
        "items": n,
        "build_v1_s": round(built_v1, 1),
        "build_v2_s": round(time.perf_counter() - t1, 2),
        "store_bytes": du(path),
    }
    manifest.write_text(json.dumps(info, indent=1))
    return info


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class Counting:
    """Wraps an object store's ``get_any`` (under every typed read) to count the objects a diff reads."""

    def __init__(self, store: Store) -> None:
        self.reads = 0
        objs = store.repo.objects
        inner = objs.get_any

        def get_any(oid: bytes) -> tuple[bytes, Any]:
            self.reads += 1
            return inner(oid)

        objs.get_any = get_any  # type: ignore[method-assign]


def run_library(path: Path, count: bool = False) -> tuple[float, float, dict[str, Any], int]:
    """One in-process diff: (wall seconds, CPU seconds of this process, the diff, objects read)."""
    store = Store(str(path / ".dvs"))  # a fresh object cache every run
    counter = Counting(store) if count else None
    big = store.datasets.get("big")
    a = big.at("v1")
    gc.collect()  # earlier runs' stores and caches must not be traced by this run's collections
    t0, c0 = time.perf_counter(), time.process_time()
    doc = history.diff(a, big)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, doc, counter.reads if counter else 0


COLD = r"""
import json, sys, time
from dvstore import history
from dvstore.api import Store
big = Store(sys.argv[1]).datasets.get("big")
a = big.at("v1")
t0, c0 = time.perf_counter(), time.process_time()
history.diff(a, big)
print(json.dumps([time.perf_counter() - t0, time.process_time() - c0]))
"""


def run_cold(path: Path) -> float:
    """The diff alone in a fresh process: nothing of the store mapped or cached yet."""
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    p = subprocess.run([sys.executable, "-c", COLD, str(path / ".dvs")], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"cold diff failed: {p.stderr}")
    wall: float = json.loads(p.stdout)[0]
    return wall


def run_cli(path: Path) -> float:
    cmd = [sys.executable, "-m", "dvstore", "--store", str(path / ".dvs"), "diff", "big@v1", "big", "--json"]
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"dvs diff failed: {p.stderr}")
    json.loads(p.stdout)
    return elapsed


def summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": len(xs)}


def machine_info(workdir: Path) -> dict[str, Any]:
    def first(path: str, key: str) -> str:
        try:
            for line in open(path):
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    import lmdb

    df = subprocess.run(["df", "-hT", str(workdir)], capture_output=True, text=True).stdout.splitlines()
    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpu": first("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "ram": f"{int(mem_kib) / 1024 / 1024:.1f} GiB" if mem_kib.isdigit() else "?",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "lmdb": lmdb.version(),
        "py-lmdb": lmdb.__version__,
        "filesystem": " ".join(df[-1].split()[:2]) if df else "?",
    }


def counts(doc: dict[str, Any]) -> str:
    s = history.stat(doc)
    i, a = s["items"], s["annotations"]
    return (
        f"items +{i['added']} -{i['removed']} ~{i['modified']}, annotations +{a['added']} -{a['removed']}, "
        f"metadata {s['metadata']['items']} items"
    )


def to_markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    big, small = res["sizes"]
    rows = []
    for n in res["sizes"]:
        r = res["results"][str(n)]
        lib, cpu, cold, cli = r["library"], r["library_cpu"], r["cold"], r["cli"]
        rows.append(
            f"| {n:,} | {lib['median'] * 1000:.1f} | {lib['min'] * 1000:.1f}–{lib['max'] * 1000:.1f} | "
            f"{cpu['median'] * 1000:.1f} | {cold['median'] * 1000:.1f} | {cold['min'] * 1000:.1f}–{cold['max'] * 1000:.1f} | "
            f"{cli['median'] * 1000:.0f} | {cli['min'] * 1000:.0f}–{cli['max'] * 1000:.0f} | "
            f"{r['reads']:,} | {r['build']['build_v1_s']} s | {r['build']['store_bytes'] / 2**20:,.0f} MiB |"
        )
    ratio = res["ratio"]
    verdict = "PASS" if max(ratio["library"], ratio["cold"], ratio["cli"]) <= 2 else "FAIL"
    return "\n".join(
        [
            f"# Diff benchmark — {res['date']}",
            "",
            f"Two versions differing in the same 1,000 items ({', '.join(f'{v} {k}' for k, v in MIX.items())}), "
            f"diffed on a {big:,}-item and a {small:,}-item dataset. Bar: the large diff takes at most 2x the small "
            f"one. Median of {res['repeats']} interleaved runs; spread is min–max.",
            "",
            "| items | warm median (ms) | warm spread (ms) | warm CPU median (ms) | cold median (ms) "
            "| cold spread (ms) | CLI median (ms) | CLI spread (ms) | objects read | build v1 | store size |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"**Ratio {big:,} / {small:,}: warm {ratio['library']:.2f}x (CPU {ratio['library_cpu']:.2f}x), "
            f"cold {ratio['cold']:.2f}x, CLI {ratio['cli']:.2f}x — {verdict}** (bar: ≤ 2x on every median).",
            "",
            f"Diff found: {res['found']}.",
            "",
            "- warm: `history.diff(big@v1, big)` in this process, a fresh `Store` (empty object cache) per run; the "
            "store's LMDB map stays mapped and Python's heap grown from earlier runs. CPU: this process's CPU time "
            "over the same call (less sensitive to other load).",
            "- cold: the same call timed inside a fresh process (store opened, revisions resolved, then the diff "
            "alone): every object read faults its LMDB page into the process, so this is the one-off `dvs diff` cost.",
            "- CLI: `dvs diff big@v1 big --json` as a subprocess, wall clock, Python start-up included.",
            "- objects read: trie nodes plus annotation sets the library diff loads (one counted run).",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram']} RAM, Linux {m['kernel']}, Python {m['python']}, "
            f"LMDB {'.'.join(map(str, m['lmdb']))} (py-lmdb {m['py-lmdb']}), {m['filesystem']}.",
            "",
            f"Command: `{res['command']}`",
            "",
        ]
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/work/scratch/bench-diff", type=Path)
    ap.add_argument("--sizes", default="1000000,10000", help="comma-separated item counts, largest first")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="100,000 vs 10,000 items, 3 repeats")
    ap.add_argument("--json", dest="json_out", type=Path)
    ap.add_argument("--md", type=Path)
    args = ap.parse_args()
    sizes = [100_000, 10_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    repeats = 3 if args.quick else args.repeats
    if repeats < 3:
        raise SystemExit("use at least 3 repeats")
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"free space: {shutil.disk_usage(args.workdir).free / 2**30:.0f} GiB under {args.workdir}", file=sys.stderr)

    builds = {}
    for n in sizes:
        print(f"building {n:,} items ...", file=sys.stderr, flush=True)
        builds[n] = build(args.workdir / f"n{n}", n, SEED)
        print(f"  {builds[n]}", file=sys.stderr)

    lib: dict[int, list[float]] = {n: [] for n in sizes}
    lib_cpu: dict[int, list[float]] = {n: [] for n in sizes}
    cold: dict[int, list[float]] = {n: [] for n in sizes}
    cli: dict[int, list[float]] = {n: [] for n in sizes}
    reads: dict[int, int] = {}
    found: dict[int, str] = {}
    for n in sizes:  # one untimed warm-up per size (page cache), which also counts the reads
        _, _, doc, reads[n] = run_library(args.workdir / f"n{n}", count=True)
        found[n] = counts(doc)
    for r in range(repeats):
        for n in sizes:
            t, cpu, _, _ = run_library(args.workdir / f"n{n}")
            lib[n].append(t)
            lib_cpu[n].append(cpu)
            cold[n].append(run_cold(args.workdir / f"n{n}"))
            cli[n].append(run_cli(args.workdir / f"n{n}"))
            print(
                f"run {r + 1}/{repeats} n={n:,}: library {t * 1000:.1f} ms, cold {cold[n][-1] * 1000:.1f} ms, "
                f"cli {cli[n][-1] * 1000:.0f} ms",
                file=sys.stderr,
                flush=True,
            )
    if len(set(found.values())) != 1:
        raise SystemExit(f"the diffs differ between sizes: {found}")
    big, small = sizes[0], sizes[-1]
    res = {
        "date": dt.date.today().isoformat(),
        "sizes": sizes,
        "repeats": repeats,
        "machine": machine_info(args.workdir),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "found": found[big],
        "results": {
            str(n): {
                "library": summary(lib[n]),
                "library_cpu": summary(lib_cpu[n]),
                "cold": summary(cold[n]),
                "cli": summary(cli[n]),
                "reads": reads[n],
                "build": builds[n],
            }
            for n in sizes
        },
        "ratio": {
            "library": statistics.median(lib[big]) / statistics.median(lib[small]),
            "library_cpu": statistics.median(lib_cpu[big]) / statistics.median(lib_cpu[small]),
            "cold": statistics.median(cold[big]) / statistics.median(cold[small]),
            "cli": statistics.median(cli[big]) / statistics.median(cli[small]),
        },
    }
    md = to_markdown(res)
    print(md)
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=1, default=str))
    if args.md:
        args.md.write_text(md)


if __name__ == "__main__":
    main()
