"""A small deterministic sample dataset for demos, docs and tests: PNG images plus a COCO file.

``make_sample(dest)`` writes::

    dest/images/cats/cat_000.png      64x48 RGB images with a few flat shapes each
    dest/images/dogs/dog_001.png
    dest/images/mixed/person_002.png
    ...
    dest/annotations.coco.json        categories cat, dog, person; boxes and triangles

The COCO ``file_name`` values are relative to ``dest/images`` (the directory to add, as
CLI.md says), so the demo is ``dvs add pets dest/images --annotations
dest/annotations.coco.json``. Rectangles are annotated as boxes (empty ``segmentation``),
triangles as polygons; every eleventh image has no objects. The same ``seed`` and
``n_images`` give the same bytes on every machine: images are encoded here with zlib and
struct, without an imaging library.

It must not depend on the store or on anything outside the standard library and
``dvstore.io.imageinfo``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dvstore.io.imageinfo import encode_png

WIDTH, HEIGHT = 64, 48
CATEGORIES = (
    {"id": 1, "name": "cat", "supercategory": "animal"},
    {"id": 2, "name": "dog", "supercategory": "animal"},
    {"id": 3, "name": "person", "supercategory": "person"},
)
# (folder, file prefix, category id of the main object)
_FOLDERS = (("cats", "cat", 1), ("dogs", "dog", 2), ("mixed", "person", 3))
_COLORS = {1: (230, 140, 40), 2: (120, 80, 40), 3: (60, 90, 200)}
ANNOTATIONS_FILE = "annotations.coco.json"
IMAGES_DIR = "images"


@dataclass(frozen=True, slots=True)
class Sample:
    """Where ``make_sample`` wrote the dataset.

    Attributes:
        images_dir: The directory to add (``dest/images``).
        annotations: The COCO file (``dest/annotations.coco.json``).
        files: Every image written, relative to ``images_dir`` (POSIX), in order.
    """

    images_dir: Path
    annotations: Path
    files: tuple[str, ...]


def make_sample(dest_dir: str | os.PathLike[str], n_images: int = 24, seed: int = 0) -> Sample:
    """Write the sample dataset under ``dest_dir`` (created if missing; files overwritten).

    Args:
        dest_dir: Where to write ``images/`` and ``annotations.coco.json``.
        n_images: How many images, at least 0.
        seed: Varies colours and positions; equal arguments give equal bytes.

    Returns:
        The paths written.

    Raises:
        ValueError: ``n_images`` is negative.
    """
    if n_images < 0:
        raise ValueError("n_images must not be negative")
    rng = random.Random(seed)
    root = Path(dest_dir)
    images_dir = root / IMAGES_DIR
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    files: list[str] = []
    for i in range(n_images):
        folder, prefix, main_cat = _FOLDERS[i % len(_FOLDERS)]
        name = f"{folder}/{prefix}_{i:03d}.png"
        background = tuple(rng.randint(200, 250) for _ in range(3))
        pixels = bytearray(bytes(background) * (WIDTH * HEIGHT))
        n_objects = 0 if i % 11 == 10 else rng.choice((1, 1, 2))
        for j in range(n_objects):
            # The main object first; a second object is a person (a cat or dog in "mixed").
            cat = main_cat if j == 0 else (3 if main_cat != 3 else rng.choice((1, 2)))
            shade = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in _COLORS[cat])
            triangle = j == 0 and i % 6 == 2
            ann = _draw_triangle(pixels, rng, shade) if triangle else _draw_rect(pixels, rng, shade)
            ann.update({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat, "iscrowd": 0})
            annotations.append(ann)
        path = images_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = (bytes(pixels[y * WIDTH * 3 : (y + 1) * WIDTH * 3]) for y in range(HEIGHT))
        path.write_bytes(encode_png(WIDTH, HEIGHT, rows, channels=3))
        images.append({"id": i + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
        files.append(name)
    coco = {
        "info": {"description": "dvstore sample dataset", "version": "1", "seed": seed},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [dict(c) for c in CATEGORIES],
    }
    root.mkdir(parents=True, exist_ok=True)
    ann_path = root / ANNOTATIONS_FILE
    ann_path.write_text(json.dumps(coco, indent=2) + "\n", encoding="utf-8")
    return Sample(images_dir=images_dir, annotations=ann_path, files=tuple(files))


def _put(pixels: bytearray, x: int, y: int, color: tuple[int, ...]) -> None:
    at = 3 * (y * WIDTH + x)
    pixels[at : at + 3] = bytes(color)


def _draw_rect(pixels: bytearray, rng: random.Random, color: tuple[int, ...]) -> dict[str, Any]:
    w, h = rng.randint(8, 24), rng.randint(8, 18)
    x0, y0 = rng.randint(0, WIDTH - w), rng.randint(0, HEIGHT - h)
    for y in range(y0, y0 + h):
        for x in range(x0, x0 + w):
            _put(pixels, x, y, color)
    return {"bbox": [x0, y0, w, h], "area": w * h, "segmentation": []}


def _draw_triangle(pixels: bytearray, rng: random.Random, color: tuple[int, ...]) -> dict[str, Any]:
    x0, y0 = rng.randint(0, WIDTH - 20), rng.randint(0, HEIGHT - 16)
    pts = [
        (x0 + rng.randint(0, 6), y0 + 16),
        (x0 + 10 + rng.randint(-3, 3), y0),
        (x0 + 20 - rng.randint(0, 6), y0 + 16),
    ]
    (ax, ay), (bx, by), (cx, cy) = pts

    def side(px: float, py: float, qx: float, qy: float, rx: float, ry: float) -> float:
        return (px - rx) * (qy - ry) - (qx - rx) * (py - ry)

    for y in range(min(ay, by, cy), max(ay, by, cy)):
        for x in range(min(ax, bx, cx), max(ax, bx, cx)):
            # Pixel centres on the same side of all three edges are inside.
            px, py = x + 0.5, y + 0.5
            d1, d2, d3 = side(px, py, ax, ay, bx, by), side(px, py, bx, by, cx, cy), side(px, py, cx, cy, ax, ay)
            if not ((d1 < 0 or d2 < 0 or d3 < 0) and (d1 > 0 or d2 > 0 or d3 > 0)):
                _put(pixels, x, y, color)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    area = abs((bx - ax) * (cy - ay) - (cx - ax) * (by - ay)) / 2
    return {
        "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)],
        "area": area,
        "segmentation": [[v for p in pts for v in p]],
    }
