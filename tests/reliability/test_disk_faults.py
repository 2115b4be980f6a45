"""G4: disk full and I/O errors give one clean error line, exit 6, and change nothing.

Three ways: strace error injection (ENOSPC and EIO on every store write, writev, pwrite64,
fsync and fdatasync of ``dvs add``), RLIMIT_FSIZE (EFBIG on a blob file and on LMDB's file
growth), and a real 8 MiB tmpfs filled up. After each fault: exit 6, one ``error:`` line and
no traceback, the head unchanged, fsck clean, no temp file left behind, and the same add
succeeds once the fault is gone.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dvstore.fsck import check
from tests.reliability.helpers import (
    STRACE,
    assert_clean_error,
    heads,
    make_store,
    run_dvs,
    strace_prefix,
    write_tree,
)

SYSCALLS = ("write", "writev", "pwrite64", "copy_file_range", "fsync", "fdatasync")


def _store_points(argv: list[str]) -> list[tuple[str, int]]:
    """(syscall, n) of every write-side call any thread makes on the store's files.

    strace counts ``when=n`` per thread, so a point is "the n-th such call of some thread";
    injecting it hits that call in every thread that makes n of them (helper threads sync
    large blobs and read ahead).
    """
    assert STRACE is not None
    log = f"/tmp/dvs-g4-{os.getpid()}.log"
    subprocess.run([STRACE, "-f", "-y", "-o", log, "-e", "trace=" + ",".join(SYSCALLS), *argv],
                   capture_output=True, check=True, timeout=120)
    counts: dict[tuple[str, str], int] = {}
    out: set[tuple[str, int]] = set()
    with open(log) as f:
        for line in f:
            tid, _, rest = line.partition(" ")
            name = rest.lstrip().split("(", 1)[0]
            if name not in SYSCALLS:
                continue
            n = counts[tid, name] = counts.get((tid, name), 0) + 1
            args = rest.split("(", 1)[1].split(", ")
            target = args[2] if name == "copy_file_range" else args[0]  # the fd written to
            if "/.dvs/" in target:  # the store's files: not stdout, not a pipe
                out.add((name, n))
    os.unlink(log)
    return sorted(out, key=lambda p: (SYSCALLS.index(p[0]), p[1]))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("g4")
    make_store(base / "p", 40, n_large=1)
    write_tree(base / "src", 15, 3, seed=9)
    return base / "p", base / "src"


def _after_fault(d: str, old: dict[str, str], src: Path, p: subprocess.CompletedProcess[str]) -> str:
    """Common assertions; returns "failed" or "survived"."""
    if p.returncode == 0:
        return "survived"  # the fault hit a call whose failure dvs tolerates (rare)
    assert_clean_error(p, 6)
    assert heads(d) == old, "the head moved although the operation failed"
    assert check(d).ok
    assert os.listdir(os.path.join(d, "tmp")) == [], "temp files left after the abort"
    retry = run_dvs(d, "add", "d", str(src), "--to", "/new")
    assert retry.returncode == 0, retry.stderr
    assert heads(d) != old
    assert check(d, read_data=True).ok
    return "failed"


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace): injection skipped")
@pytest.mark.parametrize("errno_name", ["ENOSPC", "EIO"])
def test_injected_write_errors(pristine: tuple[Path, Path], tmp_path: Path, errno_name: str) -> None:
    root, src = pristine
    probe = tmp_path / "probe"
    shutil.copytree(root, probe)
    points = _store_points([sys.executable, "-m", "dvstore", "--store", str(probe / ".dvs"), "add", "d", str(src),
                            "--to", "/new"])
    # LMDB writes with pwrite/writev, large blobs are copied with copy_file_range.
    assert {s for s, _ in points} >= {"copy_file_range", "fsync", "fdatasync"}, points

    def one(i: int, point: tuple[str, int]) -> str:
        w = tmp_path / f"w{i}"
        shutil.copytree(root, w)
        d = str(w / ".dvs")
        old = heads(d)
        syscall, n = point
        p = run_dvs(d, "add", "d", str(src), "--to", "/new",
                    prefix=strace_prefix(syscall, n, f"error={errno_name}"))
        return _after_fault(d, old, src, p)

    with ThreadPoolExecutor(2) as ex:
        results = list(ex.map(one, range(len(points)), points))
    assert results.count("failed") >= len(points) - 1, list(zip(points, results))


def _fsize(limit: int):  # type: ignore[no-untyped-def]
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def test_rlimit_fsize_on_a_blob_file(pristine: tuple[Path, Path], tmp_path: Path) -> None:
    root, src = pristine
    shutil.copytree(root, tmp_path / "s")
    d = str(tmp_path / "s" / ".dvs")
    old = heads(d)
    p = run_dvs(d, "add", "d", str(src), "--to", "/new", preexec=_fsize(100 * 1024))
    assert "no space" in p.stderr or "too large" in p.stderr.lower(), p.stderr
    assert _after_fault(d, old, src, p) == "failed"


def test_rlimit_fsize_on_lmdb_growth(tmp_path: Path) -> None:
    """Small files only (stored in LMDB): the failure is LMDB's file growth at commit."""
    d = make_store(tmp_path / "s", 10, n_large=0)
    src = tmp_path / "src"
    write_tree(src, 400, 0, seed=4)
    old = heads(d)
    limit = os.path.getsize(os.path.join(d, "db", "data.mdb")) + 64 * 1024
    p = run_dvs(d, "add", "d", str(src), "--to", "/new", preexec=_fsize(limit))
    assert _after_fault(d, old, src, p) == "failed"


def test_full_tmpfs(small_tmpfs: Path, tmp_path: Path) -> None:
    d = make_store(small_tmpfs / "s", 20, n_large=1)
    filler = small_tmpfs / "filler"
    free = shutil.disk_usage(small_tmpfs).free
    filler.write_bytes(b"\0" * (free - 700 * 1024))
    src = tmp_path / "src"
    write_tree(src, 100, 4, seed=8)  # ~1.5 MB: does not fit
    old = heads(d)
    p = run_dvs(d, "add", "d", str(src), "--to", "/new")
    assert_clean_error(p, 6)
    assert "no space" in p.stderr or "write failed" in p.stderr, p.stderr
    assert heads(d) == old
    assert check(d).ok
    assert os.listdir(os.path.join(d, "tmp")) == []
    filler.unlink()
    retry = run_dvs(d, "add", "d", str(src), "--to", "/new")
    assert retry.returncode == 0, retry.stderr
    assert check(d, read_data=True).ok
