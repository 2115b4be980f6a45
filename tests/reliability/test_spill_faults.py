"""A large edit's scratch file (spill.py): a crash or a full disk loses nothing and leaves
nothing that gc does not clear."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dvstore.errors import StorageError
from dvstore.fsck import check
from dvstore.storage.db import SCRATCH_PREFIX, Scratch
from tests.reliability.helpers import assert_clean_error, heads, make_store, run_dvs, write_tree


def _scratch_files(d: str) -> list[str]:
    return [n for n in os.listdir(os.path.join(d, "tmp")) if n.startswith(SCRATCH_PREFIX)]


@pytest.mark.parametrize("n", [1, 3])
def test_kill_while_spilling_leaves_the_old_version(tmp_path: Path, n: int) -> None:
    d = make_store(tmp_path / "s", 10, n_large=0)
    src = tmp_path / "src"
    files = write_tree(src, 60, 0, seed=3)
    old = heads(d)
    env = {"DVS_SPILL_LIMIT": "7", "DVS_TEST_CRASH_AT": f"spill:{n}"}
    p = run_dvs(d, "add", "d", str(src), "--to", "/new", env=env)
    assert p.returncode == -9, p.stderr
    assert heads(d) == old and check(d).ok
    assert _scratch_files(d)  # the killed process's file is left ...
    gc = run_dvs(d, "gc", "--expire", "now")
    assert gc.returncode == 0, gc.stderr
    assert not _scratch_files(d)  # ... and gc clears it
    ok = run_dvs(d, "add", "d", str(src), "--to", "/new", env={"DVS_SPILL_LIMIT": "7"})
    assert ok.returncode == 0, ok.stderr
    assert not _scratch_files(d) and check(d, read_data=True).ok
    ls = run_dvs(d, "ls", "d", "--json")
    names = {i["filename"] for i in json.loads(ls.stdout)}
    assert {"/new/" + rel for rel in files} <= names and len(names) == len(files) + 10


def test_scratch_on_a_full_disk_is_an_error_not_a_crash(small_tmpfs: Path) -> None:
    sc = Scratch(str(small_tmpfs / "tmp"))
    with pytest.raises(StorageError, match="scratch"):
        sc.put_many([(b"k%d" % i, b"v" * 100) for i in range(1000)])
    sc.close()
    assert os.listdir(small_tmpfs / "tmp") == []


def test_add_with_spill_on_a_full_disk_exits_6(small_tmpfs: Path, tmp_path: Path) -> None:
    d = make_store(small_tmpfs / "s", 5, n_large=0)
    src = tmp_path / "src"
    write_tree(src, 40, 0, seed=5)
    old = heads(d)
    p = run_dvs(d, "add", "d", str(src), "--to", "/new", env={"DVS_SPILL_LIMIT": "7"})
    assert_clean_error(p, 6)
    assert heads(d) == old and check(d).ok
    assert not _scratch_files(d)
