"""The COCO file read by a forked child gives exactly what reading it in-process gives."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dvstore.errors import ImportFormatError
from dvstore.io.coco import load_coco
from dvstore.io.coco_child import CocoReader


def _doc(n: int) -> dict:
    return {
        "images": [{"id": i, "file_name": f"d{i % 7}/img{i}.jpg"} for i in range(n)],
        "annotations": [{"id": 10 * i + k, "image_id": i, "category_id": 1 + k % 2, "bbox": [i, k, 3, 4]}
                        for i in range(n) for k in range(i % 3)],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }


def _flat(imp) -> tuple:  # type: ignore[no-untyped-def]
    """Labels and, per file, each annotation as [coco_id, head, tail] (the reader's form)."""
    return imp.labels, {k: [a if isinstance(a, list) else [a.coco_id, *a.split()] for a in v]
                        for k, v in imp.by_file.items()}


@pytest.mark.parametrize("poll_first", [False, True])
def test_child_result_matches_in_process(tmp_path: Path, poll_first: bool) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(3000)))  # well over a pipe's buffer
    with CocoReader(str(path)) as r:
        assert r._pid  # really forked
        if poll_first:
            deadline = time.monotonic() + 30
            while r._labels is None and time.monotonic() < deadline:
                r.poll()
                time.sleep(0.01)
            assert r._labels == ["cat", "dog"]
        got = r.result()
    assert _flat(got) == _flat(load_coco(path, encoded=True))
    assert r._pid == 0  # reaped


def test_child_error_is_the_same_error(tmp_path: Path) -> None:
    doc = _doc(5)
    doc["annotations"][2]["image_id"] = 99
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ImportFormatError) as want:
        load_coco(path, encoded=True)
    with CocoReader(str(path)) as r, pytest.raises(ImportFormatError) as got:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # poll() raises once the child has answered
            r.poll()
            time.sleep(0.01)
    assert got.value.message == want.value.message and "image_id 99" in got.value.message


def test_without_fork_it_reads_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(50)))
    monkeypatch.setenv("DVS_NO_FORK", "1")
    r = CocoReader(str(path))
    assert r._pid == 0
    assert _flat(r.result()) == _flat(load_coco(path, encoded=True))


def test_close_stops_a_running_child(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(3000)))
    r = CocoReader(str(path))
    pid = r._pid
    r.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)  # already reaped: no zombie left
