"""Test-only crash and pause points, enabled by environment variables only.

``DVS_TEST_CRASH_AT=label:n`` kills the process with SIGKILL at the n-th pass of ``label``;
``DVS_TEST_PAUSE_AT=label`` blocks at ``label`` until the file named by
``DVS_TEST_PAUSE_FILE`` exists. With neither set, ``point`` is one dict lookup.
"""

from __future__ import annotations

import os
import signal
import time

_CRASH = os.environ.get("DVS_TEST_CRASH_AT", "")
_PAUSE = os.environ.get("DVS_TEST_PAUSE_AT", "")
_counts: dict[str, int] = {}


def point(label: str) -> None:
    if not _CRASH and not _PAUSE:
        return
    if _CRASH:
        want, _, n = _CRASH.partition(":")
        if want == label:
            _counts[label] = _counts.get(label, 0) + 1
            if _counts[label] >= int(n or "1"):
                os.kill(os.getpid(), signal.SIGKILL)
    if _PAUSE == label:
        release = os.environ.get("DVS_TEST_PAUSE_FILE", "")
        marker = os.environ.get("DVS_TEST_PAUSED_FILE", "")
        if marker:
            with open(marker, "w") as f:
                f.write(str(os.getpid()))
        while release and not os.path.exists(release):
            time.sleep(0.01)
