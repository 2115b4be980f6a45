#!/usr/bin/env python3
"""COCO-shaped ingest: `dvs add` with an annotation file shaped like COCO's own train2017.

Plain script. ingest.py's annotation file holds 1-3 plain boxes per image; COCO's
instances_train2017.json holds ~7.3 annotations per image, nearly all of them polygons
(bbox + segmentation) with float coordinates, and ~1 % crowd annotations as uncompressed
RLE masks. This script generates (once, deterministically) a file of that shape for
ingest.py's small-file images, then measures, side by side in one run:

- floor: reading and hashing every image and the annotation file (blake3);
- floor+json, floor+orjson: the same plus parsing the annotation file whole with Python's
  json.loads, or with orjson.loads (the least any Python reader of it pays), the cyclic
  garbage collector paused as dvs pauses it (with it running, json.loads of the 537 MB
  train2017-shaped file took ~15 s, not ~6: the figure this script gave before 2026-12-05c);
- dvs add of the images alone;
- dvs add with the annotation file, as shipped (past 100,000 images and annotations the
  reader moves them to a scratch table: `coco_spill`);
- dvs add with the annotation file held in memory (DVS_COCO_SPILL set past its size), to
  show what the spill costs;
- dvs add with the same file without its crowd masks (polygons only, as COCO-format files
  made by other tools usually are): the case where reading the file, not rendering masks,
  is the longest path.

Median seconds, peak RSS and private memory of each, with the spread.

    .venv/bin/python benchmarks/ingest_coco.py                       # 118,287 images, 3 runs
    .venv/bin/python benchmarks/ingest_coco.py --images 20000 --repeat 5 --md out.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import math
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ingest as bench  # noqa: E402  (the sibling benchmark script: generator + sampler)
from common import emit, machine  # noqa: E402
from ingest_memory import dvs_add  # noqa: E402

TRAIN2017_IMAGES = 118_287
GEN = 3


def _categories() -> list[dict]:
    # COCO's 80 categories have ids 1..90 with gaps; names and supercategories are made up.
    ids = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    return [{"id": cid, "name": f"category_{cid:02d}", "supercategory": f"super_{cid // 10}"} for cid in ids]


def _polygon(rng: random.Random, w: int, h: int) -> tuple[list[float], list[float]]:
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    rx, ry = rng.uniform(4, w / 4), rng.uniform(4, h / 4)
    pts: list[float] = []  # floats, as COCO's own files have them (json writes 0.0, not 0)
    for _ in range(rng.randint(6, 50)):
        pts.append(round(min(max(cx + rng.uniform(-rx, rx), 0.0), float(w)), 2))
        pts.append(round(min(max(cy + rng.uniform(-ry, ry), 0.0), float(h)), 2))
    xs, ys = pts[0::2], pts[1::2]
    return pts, [round(min(xs), 2), round(min(ys), 2), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]


def _rle(rng: random.Random, w: int, h: int) -> dict:
    """A crowd mask as COCO writes it (uncompressed, column-major runs): a few overlapping
    ellipses, the shape of a crowd's region."""
    blobs = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, w / 3), rng.uniform(8, h / 3))
             for _ in range(rng.randint(2, 8))]
    counts, pos, value = [], 0, 0  # value: the pixel value of the run being counted
    for x in range(w):
        spans = []
        for cx, cy, rx, ry in blobs:
            if abs(x + 0.5 - cx) < rx:
                dy = ry * math.sqrt(1 - ((x + 0.5 - cx) / rx) ** 2)
                y0, y1 = max(0, round(cy - dy)), min(h, round(cy + dy))
                if y0 < y1:
                    spans.append((y0, y1))
        y = 0
        for y0, y1 in sorted(spans):
            if y1 <= y:
                continue
            y0 = max(y0, y)
            for target, upto in ((0, y0), (1, y1)):
                if upto > y:
                    if value != target:
                        counts.append(pos)
                        pos, value = 0, target
                    pos += upto - y
                    y = upto
        if y < h:
            if value != 0:
                counts.append(pos)
                pos, value = 0, 0
            pos += h - y
    counts.append(pos)
    return {"size": [h, w], "counts": counts}


def gen_coco(data: Path, seed: int) -> dict:
    """Write ``annotations/coco-train2017-shaped.json`` for the images of ``data`` (made by
    ``ingest.gen_small``); returns its manifest."""
    out = data / "annotations" / "coco-train2017-shaped.json"
    manifest = out.with_suffix(".manifest.json")
    params = {"seed": seed, "gen": GEN}
    if out.exists() and manifest.exists() and json.loads(manifest.read_text()).get("params") == params:
        return json.loads(manifest.read_text())
    base = json.loads((data / "annotations" / "coco.json").read_text())
    rng = random.Random(f"{seed}-coco-shaped")
    cats = _categories()
    images, annotations = [], []
    ann_id = 1
    for img in base["images"]:
        w, h = img["width"], img["height"]
        images.append({"license": rng.randint(1, 8), "file_name": img["file_name"],
                       "coco_url": f"http://images.example/{img['id']}.jpg", "height": h, "width": w,
                       "date_captured": "2013-11-14 11:18:45", "id": img["id"]})
        for _ in range(max(0, round(rng.expovariate(1 / 7.3)))):
            crowd = rng.random() < 0.01
            if crowd:
                seg: object = _rle(rng, w, h)
                x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
                bbox = [round(x, 2), round(y, 2), round(rng.uniform(1, w - x), 2), round(rng.uniform(1, h - y), 2)]
            else:
                parts, bbox = [], []
                for _ in range(1 if rng.random() < 0.9 else rng.randint(2, 3)):
                    pts, box = _polygon(rng, w, h)
                    parts.append(pts)
                    bbox = bbox or box
                seg = parts
            annotations.append({"segmentation": seg, "area": round(bbox[2] * bbox[3] * 0.6, 4),
                                "iscrowd": int(crowd), "image_id": img["id"], "bbox": bbox,
                                "category_id": rng.choice(cats)["id"], "id": ann_id})
            ann_id += 1
    doc = {"info": {"description": "dvs COCO-shaped benchmark (synthetic)", "year": 2017},
           "licenses": [{"url": "http://example/", "id": i, "name": f"license {i}"} for i in range(1, 9)],
           "images": images, "annotations": annotations, "categories": cats}
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(json.dumps(doc, separators=(",", ":")).encode())
    tmp.rename(out)
    info = {"params": params, "images": len(images), "annotations": len(annotations),
            "crowd": sum(a["iscrowd"] for a in annotations),
            "polygon_points": sum(len(p) // 2 for a in annotations if not a["iscrowd"] for p in a["segmentation"]),
            "bytes": out.stat().st_size}
    manifest.write_text(json.dumps(info))
    return info


def without_masks(coco: Path) -> Path:
    """``coco`` without its crowd annotations, written once beside it."""
    out = coco.with_name(coco.stem + "-nomask.json")
    if out.exists() and out.stat().st_mtime >= coco.stat().st_mtime:
        return out
    doc = json.loads(coco.read_bytes())
    doc["annotations"] = [a for a in doc["annotations"] if not a["iscrowd"]]
    tmp = out.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(doc, f)
    tmp.rename(out)
    return out


def _floor(data: Path, coco: Path, parse: str | None) -> float:
    import blake3

    loads = {None: None, "json": json.loads, "orjson": _orjson_loads()}[parse]
    gc.collect()
    gc.disable()
    try:
        t = time.perf_counter()
        for p in sorted((data / "images").rglob("*")):
            if p.is_file():
                blake3.blake3(p.read_bytes()).digest()
        raw = coco.read_bytes()
        blake3.blake3(raw).digest()
        if loads is not None:
            loads(raw)
        return time.perf_counter() - t
    finally:
        gc.enable()


def _orjson_loads() -> Any:
    import orjson  # dvstore's dependency: in the project's environment

    return orjson.loads


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=TRAIN2017_IMAGES)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", default="/work/scratch/bench-coco")
    ap.add_argument("--dvs", default=str(HERE.parent / ".venv" / "bin" / "dvs"))
    ap.add_argument("--md", help="also write the report here")
    a = ap.parse_args()
    work = Path(a.workdir)
    data = work / f"small-{a.images}"
    bench.gen_small(data, a.images, bench.SEED)
    info = gen_coco(data, bench.SEED)
    coco = data / "annotations" / "coco-train2017-shaped.json"
    print(f"data: {info['images']:,} images, {info['annotations']:,} annotations ({info['crowd']:,} crowd RLE), "
          f"{info['polygon_points']:,} polygon points, {info['bytes'] / 1e6:.0f} MB", flush=True)
    base_env = dict(os.environ)
    cases = [
        ("floor", None),
        ("floor+json", None),
        ("floor+orjson", None),
        ("dvs, images only", (None, base_env)),
        ("dvs + COCO", (coco, base_env)),
        ("dvs + COCO in memory", (coco, dict(base_env, DVS_COCO_SPILL=str(10**12)))),
        ("dvs + COCO without masks", (without_masks(coco), base_env)),
    ]
    runs: dict[str, list[dict]] = {name: [] for name, _ in cases}
    memory: dict[str, dict] = {}
    # One memory run per dvs case first, not timed: the sampler reads every process's smaps
    # every 50 ms, CPU taken from dvs on 2 cores (sampled, the 118,287-image COCO add took
    # 44.1 s against 38.1 s: the first version of this script sampled every run).
    for name, how in cases:
        if how is not None:
            memory[name] = dvs_add(a.dvs, data, how[0], work / "run", how[1], sample=True)
            print(f"memory {name:22s} RSS {memory[name]['rss_mib']:5.0f} MiB  "
                  f"private {memory[name]['anon_mib']:5.0f} MiB", flush=True)
    for r in range(a.repeat):
        for name, how in cases:  # interleaved: drift hits every case alike
            if how is None:
                res = {"seconds": _floor(data, coco, parse=name.partition("+")[2] or None)}
            else:
                res = dvs_add(a.dvs, data, how[0], work / "run", how[1], sample=False)
            runs[name].append(res)
            print(f"run {r + 1} {name:22s} {res['seconds']:7.2f} s", flush=True)
    floor = statistics.median(x["seconds"] for x in runs["floor"])
    out = [f"# COCO-shaped ingest — {dt.datetime.now():%Y-%m-%d %H:%M}", "",
           f"- machine: {machine()}; command: `{' '.join(sys.argv)}`",
           f"- data: {info['images']:,} images of 2-8 KiB; annotation file {info['bytes'] / 1e6:.0f} MB with "
           f"{info['annotations']:,} annotations ({info['crowd']:,} crowd RLE masks, the rest polygons with "
           f"{info['polygon_points']:,} points in all); page cache warm",
           f"- {a.repeat} interleaved timed runs per case, after one memory run per dvs case (not timed): peak RSS "
           "is ru_maxrss of `dvs add`, private the largest sum of Pss_Anon over it and its helpers, sampled every "
           "50 ms", "",
           "| case | median s | min–max s | ×floor | peak RSS MiB | private MiB |", "|---|---:|---:|---:|---:|---:|"]
    for name, _ in cases:
        xs = sorted(x["seconds"] for x in runs[name])
        m = memory.get(name)
        mem = ("–", "–") if m is None else (f"{m['rss_mib']:.0f}", f"{m['anon_mib']:.0f}")
        out.append(f"| {name} | {statistics.median(xs):.2f} | {xs[0]:.2f}–{xs[-1]:.2f} | "
                   f"{statistics.median(xs) / floor:.2f} | {mem[0]} | {mem[1]} |")
    emit(out, a.md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
