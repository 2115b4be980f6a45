"""The COCO file read by a forked child gives exactly what reading it in-process gives."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

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


def _expected(path: Path, prefix: str = "") -> tuple:
    """What the reader must give, from the in-process reading: labels, and each image under
    its item name with its annotations as [coco_id, head, tail]."""
    imp = load_coco(path, encoded=True)
    return imp.labels, {f"{prefix}/{name}": [[a.coco_id, *a.split()] for a in anns]
                        for name, anns in imp.by_file.items()}


def _got(r: CocoReader) -> tuple:
    entries = list(r.entries())
    names = [name for name, _ in entries]
    assert names == sorted(names)  # the order dvs add records files in
    return r.labels(), dict(entries)


@pytest.mark.parametrize("poll_first", [False, True])
def test_child_result_matches_in_process(tmp_path: Path, poll_first: bool) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(3000)))  # well over a pipe's buffer
    with CocoReader(str(path), "/train") as r:
        assert r._pid  # really forked
        if poll_first:
            deadline = time.monotonic() + 30
            while not r.ready and time.monotonic() < deadline:
                r.poll()
                time.sleep(0.01)
            assert r.labels() == ["cat", "dog"]
        got = _got(r)
    assert got == _expected(path, "/train")
    assert r._pid == 0  # reaped once every entry was read


def test_entries_are_read_off_the_pipe_as_they_are_needed(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(5000)))
    with CocoReader(str(path)) as r:
        it = r.entries()
        first = next(it)
        assert first[0] == min(_expected(path)[1]) and r._pid  # the reader waits with the rest
        assert len(list(it)) == 4999 and r._pid == 0


def test_two_file_names_for_one_item_are_an_error(tmp_path: Path) -> None:
    doc = _doc(2)
    doc["images"][0]["file_name"], doc["images"][1]["file_name"] = "caf\u00e9.jpg", "cafe\u0301.jpg"
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with CocoReader(str(path)) as r, pytest.raises(ImportFormatError, match="two images name the same item"):
        r.labels()


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
    assert _got(r) == _expected(path)


def test_close_stops_a_running_child(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(3000)))
    r = CocoReader(str(path))
    pid = r._pid
    r.close()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)  # already reaped: no zombie left


def test_a_reader_that_ends_before_its_end_frame_is_an_error_not_fewer_annotations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The pipe's end is not the end of the annotations: only the reader's "end" frame is. A
    # reader killed between two frames must fail the add, not publish what it had sent.
    from dvstore import childproc
    from dvstore.io import coco_child

    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(30)))

    def dies_after_one_frame(path: str, prefix: str, tmpdir: str | None, out: Any) -> None:
        frames = coco_child._frames(path, prefix, tmpdir)
        childproc.write_frame(out, next(frames))
        childproc.write_frame(out, next(frames))

    monkeypatch.setattr(coco_child, "_child", dies_after_one_frame)
    with CocoReader(str(path)) as r:
        assert r.labels() == ["cat", "dog"]
        got = []
        with pytest.raises(ImportFormatError, match="stopped before its last answer"):
            for entry in r.entries():
                got.append(entry)
        assert len(got) == 30  # every entry it sent, then the error


def test_a_reader_killed_while_sending_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(_doc(5000)))  # more frames than the pipe holds: the reader waits
    with CocoReader(str(path)) as r:
        it = r.entries()
        next(it)
        os.kill(r._pid, signal.SIGKILL)
        with pytest.raises(ImportFormatError, match="COCO reader('s answer was cut short| stopped before)"):
            for _ in it:
                pass
