"""Shared helpers for the benchmark scripts: machine description, timing, synthetic stores."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def machine() -> str:
    cpu = "unknown cpu"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float, float, list[Any]]:
    """Run ``fn`` ``repeat`` times; return (median, min, max, results)."""
    times, results = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), max(times), results


def synthetic_dataset(store: Any, name: str, n: int, *, batch: int = 200_000) -> Any:
    """A dataset of ``n`` metadata-only items built through the library (a few shared blobs)."""
    ds = store.datasets.create(name)
    blobs = []
    with ds.edit("blobs") as e:
        for k in range(4):
            e.add_bytes(f"/seed/{k}.bin", bytes([k]) * 64)
    for it in ds.items.list():
        blobs.append((bytes.fromhex(it.binary), it.size))
    done = 4
    while done < n:
        with ds.edit(f"items {done}") as e:
            e.prefetch()  # a bulk edit: one walk of the filename index instead of a lookup per item
            for i in range(done, min(n, done + batch)):
                b, size = blobs[i % 4]
                fn = f"/train/{i % 1000:03d}/img{i:07d}.jpg" if i % 10 else f"/val/{i % 1000:03d}/img{i:07d}.jpg"
                iid = e.put_blob_item(fn, b, size, "image/jpeg", {"width": 640, "height": 480}, normalized=True)
                if i % 3 == 0:
                    e.changes["metadata"][iid] = {"user": {"score": (i % 100) / 100}}
            done = min(n, done + batch)
    return ds


def emit(lines: list[str], md: str | None) -> None:
    """Print a report, and write it to ``md`` too when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if md:
        Path(md).write_text(text)
