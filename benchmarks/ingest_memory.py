#!/usr/bin/env python3
"""Ingest memory: how `dvs add`'s peak memory grows with the number of files added at once.

Plain script. Generates (once, with ingest.py's deterministic generator) small-file datasets
of several sizes, runs `dvs add` on each into a fresh store, with and without the COCO file,
and reports peak RSS (ru_maxrss), peak private memory (sum of Pss_Anon over its processes,
sampled every 50 ms) and the growth per added item from each size to the next.

    .venv/bin/python benchmarks/ingest_memory.py                  # 20,000, 100,000 and 300,000 files
    .venv/bin/python benchmarks/ingest_memory.py --sizes 5000,20000 --md out.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ingest as bench  # noqa: E402  (the sibling benchmark script: generator + sampler)
from common import emit  # noqa: E402


def one(dvs: str, data: Path, coco: bool, scratch: Path) -> dict:
    return dvs_add(dvs, data, data / "annotations" / "coco.json" if coco else None, scratch, dict(os.environ))


def dvs_add(dvs: str, data: Path, annotations: Path | None, scratch: Path, env: dict, sample: bool = True) -> dict:
    """`dvs add` of ``data/images`` (with a COCO file) into a fresh store under ``scratch``:
    its seconds, peak RSS and (``sample``: sampled every 50 ms, which costs CPU) private
    memory in MiB. Also used by ingest_coco.py."""
    store = scratch / "store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    subprocess.run([dvs, "init", str(store)], check=True, capture_output=True)
    subprocess.run([dvs, "--store", str(store / ".dvs"), "create", "ds"], check=True, capture_output=True)
    os.sync()
    argv = [dvs, "--store", str(store / ".dvs"), "add", "ds", str(data / "images")]
    if annotations is not None:
        argv += ["--annotations", str(annotations), "--format", "coco"]
    log = scratch / "run.log"
    log.unlink(missing_ok=True)
    r = bench.measured(argv, scratch, env, log, timeout=3600, sample=sample)
    if r["rc"] != 0:
        raise SystemExit(f"dvs add failed: {log.read_text()[-2000:]}")
    return {"seconds": r["wall_s"], "rss_mib": r["maxrss_kib"] / 1024, "anon_mib": r["anon_peak_kib"] / 1024}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="20000,100000,300000")
    ap.add_argument("--workdir", default="/work/scratch/bench-mem")
    ap.add_argument("--dvs", default=str(HERE.parent / ".venv" / "bin" / "dvs"))
    ap.add_argument("--md", help="also write the report here")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",")]
    work = Path(a.workdir)
    rows = []
    for n in sizes:
        data = work / f"small-{n}"
        bench.gen_small(data, n, bench.SEED)
        for coco in (False, True):
            r = one(a.dvs, data, coco, work / "run")
            rows.append({"n": n, "coco": coco, **r})
            print(f"{n:>8} files coco={coco!s:5}: {r['seconds']:.2f} s, peak RSS {r['rss_mib']:.0f} MiB, "
                  f"private {r['anon_mib']:.0f} MiB", flush=True)
    out = [f"# Ingest memory — {dt.datetime.now():%Y-%m-%d %H:%M}", "",
           f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
           f"Python {platform.python_version()}; command: `{' '.join(sys.argv)}`",
           "- peak RSS = ru_maxrss of `dvs add` (counts pages of LMDB's map of the store: page "
           "cache); private = largest sum of Pss_Anon over the process and its helpers (two storers, the COCO reader), sampled every 50 ms. One run each.", "",
           "| files | COCO | seconds | peak RSS MiB | private MiB |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['n']:,} | {'yes' if r['coco'] else 'no'} | {r['seconds']:.2f} | {r['rss_mib']:.0f} "
                   f"| {r['anon_mib']:.0f} |")
    out.append("")
    # Growth from each size to the next: past dvs's spill threshold (32,768 pending changes),
    # only the per-file index should still grow.
    for lo, hi in zip(sizes, sizes[1:]):
        for coco in (False, True):
            a_, b_ = (next(r for r in rows if r["n"] == n and r["coco"] == coco) for n in (lo, hi))
            per_rss = (b_["rss_mib"] - a_["rss_mib"]) * 2**20 / (hi - lo)
            per_anon = (b_["anon_mib"] - a_["anon_mib"]) * 2**20 / (hi - lo)
            out.append(f"- growth per added item, {lo:,} -> {hi:,}{' (with COCO)' if coco else ''}: "
                       f"peak RSS {per_rss:,.0f} B, private {per_anon:,.0f} B")
    emit(out, a.md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
