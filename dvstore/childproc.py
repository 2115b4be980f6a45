"""Forked helper processes: starting one, the frames it exchanges with its parent, stopping it.

``dvs add`` runs two CPU-bound jobs beside its main loop: reading the COCO file
(``io.coco_child``) and reading, hashing and storing the small files (``storer``). Python
threads would take turns on one interpreter lock, so each runs in a process made with
``fork`` (nothing to pickle, nothing to import again).

Frames are length-prefixed canonical msgpack. A child reports a failure as
``["error", error class name, message, hint]``; ``raise_error`` raises it in the parent as
the same ``DvsError`` subclass. A child never returns into the parent's code: it leaves
with ``os._exit``, so no ``atexit`` handler, finaliser or buffered output of the parent runs
twice.

A child never outlives its parent: on Linux it asks the kernel for SIGKILL when the parent
dies (``prctl(PR_SET_PDEATHSIG)``; the parent may have died before that call, so the child
then checks that it still has the same parent), so a ``dvs add`` killed with kill -9 leaves
no helper reading a big COCO file for minutes. It also closes the store lock descriptors it
inherited (``locks.close_inherited``): a ``flock`` lasts while any descriptor of it is open,
and the lock is the parent's to hold. The signal is sent when the *thread* that forked the
child ends, so a ``Child`` is made by a thread that outlives it (here always the main thread).
"""

from __future__ import annotations

import os
import select
import signal
import struct
import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any, BinaryIO, NoReturn

from dvstore import codec, errors, locks, testhooks
from dvstore.errors import DvsError

_LEN = struct.Struct(">I")
MAX_FRAME = 1 << 30
PIPE_BUFFER = 1 << 20

# Every running child, whose pipe ends a new child closes: fork copies them all, and a
# storer holding another storer's input open would keep that one from seeing the end of its
# input when the parent dies.
_CHILDREN: weakref.WeakSet[Child] = weakref.WeakSet()
# In a child, its own ends of the pipes to its parent, which a child of its own must close:
# a helper's helper holding its grandparent's pipe open would hide its parent's end.
_OWN_PIPES: tuple[int, ...] = ()


def can_fork() -> bool:
    """Whether helper processes are used: ``fork`` exists and ``DVS_NO_FORK`` is not ``1``."""
    return hasattr(os, "fork") and os.environ.get("DVS_NO_FORK") != "1"


class Child:
    """A forked process running ``target(inp, out)``: ``inp`` reads what the parent sends
    (None for a child that needs nothing), ``out`` writes what the parent reads."""

    def __init__(self, target: Callable[[BinaryIO | None, BinaryIO], None], *, talk_back: bool = False) -> None:
        r, w = os.pipe()
        r2, w2 = os.pipe() if talk_back else (-1, -1)
        parent = os.getpid()
        die_with_parent = _pdeathsig()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            global _OWN_PIPES
            # The parent's SIGTERM handler (the CLI's clean exit) is not the child's to run.
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            except ValueError:  # forked by a thread that Python does not take for the main one
                pass
            if die_with_parent is not None:
                die_with_parent()
            if os.getppid() != parent:  # the parent died already (before the request above)
                os._exit(1)
            locks.close_inherited()
            os.close(r)
            if talk_back:
                os.close(w2)
            for other in list(_CHILDREN):
                for f in (other.inp, other.out):
                    if f is not None and not f.closed:
                        os.close(f.fileno())
            _CHILDREN.clear()  # its parent's children, not its own
            for fd in _OWN_PIPES:  # a helper's helper: its parent's pipes to the main process
                os.close(fd)
            _OWN_PIPES = tuple(fd for fd in (r2, w) if fd >= 0)
            _run(target, r2, w)
        os.close(w)
        if talk_back:
            os.close(r2)
        self.pid = pid
        # Unbuffered: ``ready`` asks the pipe itself whether the child has said more.
        self.out: BinaryIO | None = os.fdopen(r, "rb", buffering=0)  # from the child
        self.inp: BinaryIO | None = os.fdopen(w2, "wb", buffering=PIPE_BUFFER) if talk_back else None
        _CHILDREN.add(self)

    def ready(self) -> bool:
        """Has the child written something not read yet (or closed its end)?"""
        if self.out is None:
            return True
        poller = select.poll()  # not select(): descriptors past 1024 are fine
        poller.register(self.out.fileno(), select.POLLIN | select.POLLHUP)
        return bool(poller.poll(0))

    def release(self) -> None:
        """Let go of a child that has said its last word and is leaving by itself: its pipes
        are closed, and it is reaped by a background thread, so that its exit (unmapping a
        store's map and a heap of tens of MiB) overlaps the caller's work instead of being
        waited for: at the end of a 20,000-file add, reading the two storers' last answers
        and reaping them took 8-32 ms."""
        self._close_pipes()
        if self.pid:
            threading.Thread(target=_reap, args=(self.pid,), daemon=True).start()
            self.pid = 0

    def close(self) -> None:
        """Stop the child if it still runs, and reap it."""
        self._close_pipes()
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = 0

    def _close_pipes(self) -> None:
        for f in (self.inp, self.out):
            if f is not None:
                try:
                    f.close()
                except OSError:  # a child gone before reading what was buffered for it
                    pass
        self.inp = self.out = None


_PRCTL: list[Callable[[], None] | None] = []


def _pdeathsig() -> Callable[[], None] | None:
    """A function a child calls to be killed with SIGKILL when its parent dies, or None where
    there is none (not Linux, no libc). Loaded in the parent, once, so children do not each
    import ctypes (~2 ms)."""
    if not _PRCTL:
        _PRCTL.append(_load_pdeathsig())
    return _PRCTL[0]


def _load_pdeathsig() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1  # <linux/prctl.h>

    def request() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)  # best effort: 0 or -1, nothing raised

    return request


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped elsewhere
        pass


def _run(target: Callable[[BinaryIO | None, BinaryIO], None], r: int, w: int) -> NoReturn:
    code = 0
    try:
        with os.fdopen(w, "wb", buffering=PIPE_BUFFER) as out:
            inp = os.fdopen(r, "rb", buffering=PIPE_BUFFER) if r >= 0 else None
            try:
                testhooks.point("helper_start")
                target(inp, out)
            except DvsError as e:
                write_frame(out, ["error", type(e).__name__, e.message, e.hint])
            except (MemoryError, RecursionError) as e:
                write_frame(out, ["error", "StorageError", f"a helper process failed: {type(e).__name__}", None])
    except BaseException:  # the parent went away (EPIPE) or a signal: nobody to tell
        code = 1
    finally:
        os._exit(code)


def write_frame(out: BinaryIO, value: Any) -> None:
    write_frame_bytes(out, codec.encode_canonical(value))


def write_frame_bytes(out: BinaryIO, data: bytes) -> None:
    """``write_frame`` of a value encoded already."""
    out.write(_LEN.pack(len(data)))
    out.write(data)


def read_frame(pipe: BinaryIO, cut_short: Callable[[], DvsError], *, own: bool = False) -> Any:
    """The next frame, or None at the end of the pipe; ``cut_short()`` is raised for a
    frame that ends early. ``own``: the frame comes from this process's parent, which
    encoded it: decoded without ``codec.decode``'s limits (a frame of objects to store can
    hold an object as big as those limits allow, and then some)."""
    head = _read_exact(pipe, _LEN.size)
    if not head:
        return None
    (n,) = _LEN.unpack(head) if len(head) == _LEN.size else (-1,)
    data = _read_exact(pipe, n) if 0 <= n <= MAX_FRAME else b""
    if len(data) != n:
        raise cut_short()
    return codec.decode_own(data) if own else codec.decode(data, max_len=1 << 31)


def _read_exact(pipe: BinaryIO, n: int) -> bytes:
    """``n`` bytes, or fewer at the end of the pipe (a pipe gives what it holds per read)."""
    parts = []
    while n > 0 and (chunk := pipe.read(n)):
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def raise_error(frame: list[Any], default: type[DvsError]) -> NoReturn:
    """Raise the error a child reported (``["error", class name, message, hint]``)."""
    _, name, message, hint = frame
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, DvsError)):
        cls = default
    raise cls(message, hint=hint)
