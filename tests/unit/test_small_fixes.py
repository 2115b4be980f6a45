"""delete_tag takes the store lock; a lost report after a successful add is not "nothing changed"."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dvstore import history, locks
from dvstore.api import Store
from dvstore.errors import LockedError
from dvstore.locks import store_lock


def test_delete_tag_waits_for_gc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store.init(str(tmp_path / "s"))
    ds = s.datasets.create("d")
    ds.tag("t")
    monkeypatch.setattr(locks, "DEFAULT_TIMEOUT", 0.1)
    with store_lock(s.repo.lock_path, exclusive=True):  # what gc holds
        with pytest.raises(LockedError):
            history.delete_tag(ds, "t")
    history.delete_tag(ds, "t")
    assert history.tags(ds) == {}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_add_with_unwritable_stdout_does_not_claim_nothing_changed(tmp_path: Path) -> None:
    Store.init(str(tmp_path / "s")).datasets.create("d")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    env = {k: v for k, v in os.environ.items() if k not in ("DVS_STORE", "DVS_DEBUG")}
    with open("/dev/full", "w") as full:
        p = subprocess.run([sys.executable, "-m", "dvstore", "--store", str(tmp_path / "s"), "add", "d", str(src)],
                           stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert p.returncode == 6, p.stderr
    assert "nothing was changed" not in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert "cannot write the output" in p.stderr
    assert [it.filename for it in Store(str(tmp_path / "s")).datasets.get("d").items.list()] == ["/a.txt"]
