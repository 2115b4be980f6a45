"""Forked helpers (``childproc``): frames, errors, and which pipe ends a child keeps."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import time
from typing import Any, BinaryIO

import pytest

from dvstore import childproc
from dvstore.errors import ImportFormatError, StorageError
from dvstore.locks import store_lock


def _cut() -> StorageError:
    return StorageError("cut short")


def test_a_child_does_not_keep_other_childrens_pipe_ends() -> None:
    # A storer holding another storer's input open would keep it from seeing the end of its
    # input when the parent dies.
    first = childproc.Child(lambda inp, out: inp.read() if inp else None, talk_back=True)
    assert first.inp is not None and first.out is not None
    theirs = [first.inp.fileno(), first.out.fileno()]

    def report(_inp: BinaryIO | None, out: BinaryIO) -> None:
        still_open = []
        for fd in theirs:
            try:
                os.fstat(fd)
                still_open.append(fd)
            except OSError:
                pass
        childproc.write_frame(out, ["open", still_open])

    second = childproc.Child(report, talk_back=True)
    try:
        assert second.out is not None
        frame = childproc.read_frame(second.out, _cut)
        assert frame == ["open", []]
        # and the first child sees its input end once the parent closes its side
        first.inp.close()
        first.inp = None
        assert childproc.read_frame(first.out, _cut) is None  # it exited, nothing said
    finally:
        first.close()
        second.close()


def test_a_childs_error_is_raised_as_the_same_error_class() -> None:
    def fail(_inp: BinaryIO | None, _out: BinaryIO) -> None:
        raise ImportFormatError("bad file", hint="fix it")

    child = childproc.Child(fail)
    try:
        assert child.out is not None
        frame = childproc.read_frame(child.out, _cut)
        with pytest.raises(ImportFormatError, match="bad file") as e:
            childproc.raise_error(frame, StorageError)
        assert e.value.hint == "fix it"
    finally:
        child.close()


def test_frames_round_trip_and_a_cut_frame_is_an_error(tmp_path: Any) -> None:
    path = tmp_path / "frames"
    with open(path, "wb") as f:
        childproc.write_frame(f, ["ok", [b"\x00" * 32, 5, "image/png", {"width": 1}]])
        childproc.write_frame(f, ["done"])
    data = path.read_bytes()
    with open(path, "rb") as f:
        assert childproc.read_frame(f, _cut) == ["ok", [b"\x00" * 32, 5, "image/png", {"width": 1}]]
        assert childproc.read_frame(f, _cut) == ["done"]
        assert childproc.read_frame(f, _cut) is None
    path.write_bytes(data[:-3])
    with open(path, "rb") as f:
        childproc.read_frame(f, _cut)
        with pytest.raises(StorageError, match="cut short"):
            childproc.read_frame(f, _cut)


def test_a_helpers_helper_does_not_keep_its_parents_pipe_to_the_main_process() -> None:
    # The COCO reader starts a mask renderer: if the renderer kept the reader's pipe to the
    # main process open, the main process would not see the reader's end while it lives.
    hold_r, hold_w = os.pipe()  # keeps the helper's helper alive until the test lets go

    def grandchild(_inp: BinaryIO | None, _out: BinaryIO) -> None:
        os.read(hold_r, 1)

    def child(_inp: BinaryIO | None, out: BinaryIO) -> None:
        childproc.Child(grandchild)
        childproc.write_frame(out, "started")

    first = childproc.Child(child)
    try:
        assert first.out is not None
        assert childproc.read_frame(first.out, _cut) == "started"
        poller = select.poll()
        poller.register(first.out.fileno(), select.POLLIN | select.POLLHUP)
        assert poller.poll(10_000)  # the end, while the grandchild still runs
        assert childproc.read_frame(first.out, _cut) is None
    finally:
        os.write(hold_w, b"x")
        os.close(hold_r)
        os.close(hold_w)
        first.close()


def test_a_child_does_not_keep_the_store_lock(tmp_path: Any) -> None:
    # A flock lasts while any descriptor of it is open: a helper that kept its inherited copy
    # would hold the store lock after the parent let go of it (or died).
    lock = str(tmp_path / "lock")
    hold_r, hold_w = os.pipe()

    def wait(_inp: BinaryIO | None, out: BinaryIO) -> None:
        childproc.write_frame(out, "started")
        out.flush()
        os.read(hold_r, 1)

    try:
        with store_lock(lock, exclusive=True, timeout=1):
            child = childproc.Child(wait)
        try:
            assert child.out is not None and childproc.read_frame(child.out, _cut) == "started"
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free, while the child runs
            finally:
                os.close(fd)
            assert not child.ready()  # still running
        finally:
            os.write(hold_w, b"x")
            child.close()
    finally:
        os.close(hold_r)
        os.close(hold_w)


def test_a_childs_copy_of_the_lock_is_not_the_parents_lock(tmp_path: Any) -> None:
    # Closing the inherited descriptor in the child leaves the parent's lock held.
    lock = str(tmp_path / "lock")
    with store_lock(lock, exclusive=True, timeout=1):
        child = childproc.Child(lambda _inp, out: childproc.write_frame(out, "closed"))
        try:
            assert child.out is not None and childproc.read_frame(child.out, _cut) == "closed"
        finally:
            child.close()
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


ORPHAN = """
import os, sys, time
from dvstore import childproc
child = childproc.Child(lambda _inp, _out: time.sleep(600))
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_its_parent() -> None:
    p = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        pid = int(p.stdout.readline())
        p.kill()
        p.wait()
        deadline = time.monotonic() + 5
        while _running(pid):
            assert time.monotonic() < deadline, "the helper outlived its parent"
            time.sleep(0.02)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is gone but not reaped
    except OSError:
        return False
