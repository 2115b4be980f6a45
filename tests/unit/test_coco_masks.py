"""COCO masks rendered by a helper process (``coco_masks.MaskRenderer``) are the masks
rendered in place, errors are still reported in file order, and a helper that dies is an
error, not a hang."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from dvstore.errors import ImportFormatError, StorageError
from dvstore.io import coco_child, coco_masks, coco_spill
from dvstore.io.coco import load_coco


def _runs(rng: random.Random, h: int, w: int, pieces: int) -> list[int]:
    cuts = sorted(rng.randrange(h * w + 1) for _ in range(pieces))
    return [b - a for a, b in zip([0, *cuts], [*cuts, h * w])]


def _doc(seed: int, images: int = 40) -> dict[str, Any]:
    rng = random.Random(seed)
    anns: list[dict[str, Any]] = []
    for i in range(images):
        for _ in range(rng.randrange(4)):
            kind = rng.randrange(3)
            a: dict[str, Any] = {"id": len(anns) + 1, "image_id": i, "category_id": 1, "area": 1.0,
                                 "bbox": [1.0, 2.0, 3.0, 4.0], "iscrowd": int(kind == 2), "segmentation": []}
            if kind == 1:
                a["segmentation"] = [[1.5, 2.5, 3.5, 4.5, 5.5, 6.5]]
            elif kind == 2:
                h, w = rng.randrange(1, 60), rng.randrange(1, 60)
                a["segmentation"] = {"size": [h, w], "counts": _runs(rng, h, w, rng.randrange(30))}
            anns.append(a)
    # One mask whose runs alone (a byte each) are more than the renderer keeps in flight.
    assert coco_masks.IN_FLIGHT < 700 * 750
    anns.append({"id": len(anns) + 1, "image_id": 0, "category_id": 1, "area": 1.0, "bbox": [0, 0, 1, 1],
                 "iscrowd": 1, "segmentation": {"size": [700, 750], "counts": [1] * (700 * 750)}})
    return {"images": [{"id": i, "file_name": f"img{i:03d}.png"} for i in range(images)],
            "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def _bodies(by_file: dict[str, list[Any]]) -> dict[str, list[tuple[Any, bytes, bytes]]]:
    return {name: [(a.coco_id, *a.split()) for a in anns] for name, anns in by_file.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_masks_rendered_by_the_helper_are_the_masks_rendered_in_place(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(seed)))
    masks = coco_masks.MaskRenderer()
    try:
        helped = load_coco(path, encoded=True, masks=masks)
        assert masks._child is not None  # really rendered elsewhere
    finally:
        masks.close()
    assert _bodies(helped.by_file) == _bodies(load_coco(path, encoded=True).by_file)


def test_a_file_without_masks_starts_no_helper(tmp_path: Path) -> None:
    doc = _doc(4)
    doc["annotations"] = [a for a in doc["annotations"] if not a["iscrowd"]]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    masks = coco_masks.MaskRenderer()
    load_coco(path, encoded=True, masks=masks)
    assert masks._child is None


@pytest.mark.parametrize("limit", [1, 3, 17])
def test_spilled_frames_with_helper_rendered_masks_are_the_in_memory_frames(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    # A spill takes the annotations as they are read: a mask still being rendered must be
    # filled in before it goes.
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(5)))
    expected = list(coco_child._frames(str(path), "/t", None))
    monkeypatch.setattr(coco_spill, "LIMIT", limit)
    monkeypatch.setattr(coco_spill, "FLUSH", 5)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    assert list(coco_child._frames(str(path), "/t", str(scratch), helper=True)) == expected
    assert os.listdir(scratch) == []


def test_a_spill_leaves_annotations_waiting_for_their_mask_until_a_later_take(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The reader does not wait for the masks in flight when it spills: the images whose
    # annotations still wait for one stay in memory, and go with a later take.
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(7, images=60)))
    expected = list(coco_child._frames(str(path), "/t", None))
    real_png_uri = coco_masks.png_uri

    def slow_png_uri(height: int, width: int, counts: list[int]) -> str:
        time.sleep(0.01)
        return real_png_uri(height, width, counts)

    monkeypatch.setattr(coco_masks, "png_uri", slow_png_uri)  # in the forked helper too
    monkeypatch.setattr(coco_spill, "LIMIT", 4)
    monkeypatch.setattr(coco_spill, "FLUSH", 4)
    left: list[int] = []
    real_take = coco_spill.CocoSpill.take

    def take(self: coco_spill.CocoSpill, b: Any) -> None:
        real_take(self, b)
        left.append(len(b.by_image))

    monkeypatch.setattr(coco_spill.CocoSpill, "take", take)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    assert list(coco_child._frames(str(path), "/t", str(scratch), helper=True)) == expected
    assert max(left) > 0 and left[-1] == 0  # some waited; the last take took everything


def test_a_bad_mask_after_good_ones_is_reported_as_in_place(tmp_path: Path) -> None:
    doc = _doc(6)
    doc["annotations"].append({"id": 999, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "iscrowd": 1,
                               "area": 1, "segmentation": {"size": [3, 3], "counts": [4, 4]}})
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ImportFormatError) as in_place:
        load_coco(path, encoded=True)
    masks = coco_masks.MaskRenderer()
    try:
        with pytest.raises(ImportFormatError) as helped:
            load_coco(path, encoded=True, masks=masks)
    finally:
        masks.close()
    assert helped.value.message == in_place.value.message
    assert "RLE counts cover 8 pixels" in helped.value.message


class _Target:
    def __init__(self) -> None:
        self.coordinates: bytes | None = None

    def fill(self, coordinates: bytes) -> None:
        self.coordinates = coordinates


def test_a_helper_that_died_is_an_error_not_a_hang() -> None:
    masks = coco_masks.MaskRenderer()
    try:
        first = _Target()
        masks.submit(first, 2, 2, [1, 2, 1])
        masks.settle()
        assert first.coordinates is not None
        child = masks._child
        assert child is not None
        os.kill(child.pid, signal.SIGKILL)
        os.waitpid(child.pid, 0)
        child.pid = 0
        with pytest.raises(StorageError, match="mask helper"):
            for _ in range(100):  # the first sends may still fit in the pipe
                masks.submit(_Target(), 2, 2, [1, 2, 1])
            masks.settle()
    finally:
        masks.close()


def test_a_helper_that_fails_reports_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any) -> str:
        raise MemoryError

    monkeypatch.setattr(coco_masks, "png_uri", fail)  # the forked helper has it too
    masks = coco_masks.MaskRenderer()
    try:
        masks.submit(_Target(), 2, 2, [1, 2, 1])
        with pytest.raises(StorageError, match="MemoryError"):
            masks.settle()
    finally:
        masks.close()
