"""Store-wide locks on ``.dvs/lock`` with ``flock``: released by the kernel when the holder
dies, so a killed process never leaves a lock behind (the DVC stale-lock lesson).

Writers hold the lock shared for the length of an operation; gc and other root-changing
maintenance hold it exclusive. Waiting has a timeout and the error names the holder's pid.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from dvstore.errors import LockedError

DEFAULT_TIMEOUT = float(os.environ.get("DVS_LOCK_TIMEOUT", "10"))

# Descriptors of the locks this process holds: a forked helper closes its copies
# (``close_inherited``), or it would keep the lock held after its parent is gone.
_HELD: set[int] = set()


@contextmanager
def store_lock(path: str, *, exclusive: bool, timeout: float | None = None) -> Iterator[None]:
    """Hold the store lock (shared or exclusive) for the block."""
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _holder(path)
                    raise LockedError(
                        f"the store is locked{' by pid ' + holder if holder else ''} "
                        f"(waited {timeout:g} s)",
                        hint="wait for the other dvs process to finish, or raise DVS_LOCK_TIMEOUT",
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        if exclusive:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD.add(fd)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)  # releases the flock


def close_inherited() -> None:
    """In a forked child that never returns into its parent's code (``childproc``): close
    the store lock descriptors inherited from the parent. The parent's locks stay held: a
    ``flock`` belongs to the open file, which the parent's descriptor keeps open."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


def _holder(path: str) -> str:
    try:
        with open(path) as f:
            pid = f.read().strip()
        if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
            return pid
    except OSError:
        pass
    return ""
