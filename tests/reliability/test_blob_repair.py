"""Repairing a damaged blob (docs/reliability.md section 5), end to end through ``dvs``.

Blobs are write-once, so adding the original file again cannot replace a copy whose bytes
do not match its name. ``dvs fsck --read-data --rebuild`` moves such copies (blob files and
small blobs in LMDB) to ``.dvs/quarantine/``; the blob is then missing, ``dvs add`` of the
original stores it again, fsck is clean and checkout gives the original bytes. A kill at any
point of the move leaves the damaged copy in place or in the quarantine (never neither), fsck
runs, and the same steps finish the repair.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from dvstore.hashing import hash_bytes
from dvstore.storage.db import Database
from tests.reliability.helpers import (
    LARGE,
    SMALL,
    STRACE,
    assert_clean_error,
    payload,
    rewrite_file,
    run_dvs,
    strace_prefix,
)

FILES = {"big.bin": payload(7, 0, LARGE + 11), "big2.bin": payload(7, 1, LARGE + 11),
         "small.bin": payload(7, 2, SMALL), "small2.bin": payload(7, 3, SMALL + 1)}


def _blob_file(d: str, data: bytes) -> str:
    h = hash_bytes(data).hex()
    return os.path.join(d, "blobs", h[:2], h[2:])


def _flip(b: bytes) -> bytes:
    return b[:len(b) // 2] + bytes([b[len(b) // 2] ^ 1]) + b[len(b) // 2 + 1:]


def _put_small(d: str, data: bytes, fn: Callable[[bytes], bytes]) -> None:
    key = hash_bytes(data)
    Database(os.path.join(d, "db")).write(lambda t: t.put("blobs", key, fn(data)))


def f_file_corrupt(d: str) -> None:
    rewrite_file(_blob_file(d, FILES["big.bin"]), _flip)


def f_file_truncated(d: str) -> None:
    rewrite_file(_blob_file(d, FILES["big.bin"]), lambda b: b[:1000])


def f_file_zero(d: str) -> None:
    rewrite_file(_blob_file(d, FILES["big.bin"]), lambda b: b"")


def f_files_swapped(d: str) -> None:
    a, b = _blob_file(d, FILES["big.bin"]), _blob_file(d, FILES["big2.bin"])
    tmp = a + ".swap"
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def f_small_corrupt(d: str) -> None:
    _put_small(d, FILES["small.bin"], _flip)


def f_small_wrong_size(d: str) -> None:
    _put_small(d, FILES["small.bin"], lambda b: b[:100])


FAULTS: dict[str, tuple[Callable[[str], None], set[str], list[str]]] = {
    # name: (inject, kinds `fsck --read-data` reports, files to add again)
    "blob file corrupt": (f_file_corrupt, {"blob-hash"}, ["big.bin"]),
    "blob file truncated": (f_file_truncated, {"blob-hash", "blob-size"}, ["big.bin"]),
    "blob file zero-length": (f_file_zero, {"blob-hash", "blob-size"}, ["big.bin"]),
    "blob files swapped": (f_files_swapped, {"blob-hash"}, ["big.bin", "big2.bin"]),
    "small blob corrupt": (f_small_corrupt, {"blob-hash"}, ["small.bin"]),
    "small blob wrong size": (f_small_wrong_size, {"blob-hash", "blob-size"}, ["small.bin"]),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with dataset d holding FILES (added by ``dvs add``), and the files' folder."""
    root = tmp_path_factory.mktemp("repair")
    src = root / "src"
    src.mkdir()
    for name, data in FILES.items():
        (src / name).write_bytes(data)
    (root / "s").mkdir()
    d = str(root / "s" / ".dvs")
    assert run_dvs(None, "init", str(root / "s")).returncode == 0
    assert run_dvs(d, "create", "d").returncode == 0
    p = run_dvs(d, "add", "d", str(src))
    assert p.returncode == 0, p.stderr
    assert run_dvs(d, "fsck", "--read-data").returncode == 0
    return root


def _copy(pristine: Path, dest: Path) -> tuple[str, Path]:
    shutil.copytree(pristine, dest)
    return str(dest / "s" / ".dvs"), dest / "src"


def _kinds(p: object) -> set[str]:
    return {f["kind"] for f in json.loads(p.stdout)["findings"]}  # type: ignore[attr-defined]


def _readd_and_verify(d: str, src: Path, names: list[str], tmp: Path) -> None:
    """The documented last steps: add the originals again (here: copies, to a scratch
    dataset), then fsck is clean and checkout gives the original bytes."""
    scratch = tmp / "originals"
    scratch.mkdir(exist_ok=True)
    for n in names:
        shutil.copyfile(src / n, scratch / n)
    if run_dvs(d, "datasets", "--json").stdout.count('"scratch"') == 0:
        assert run_dvs(d, "create", "scratch").returncode == 0
    p = run_dvs(d, "add", "scratch", str(scratch))
    assert p.returncode == 0, p.stderr
    p = run_dvs(d, "fsck", "--read-data", "--json")
    assert p.returncode == 0, p.stdout
    doc = json.loads(p.stdout)
    assert doc["ok"] and "quarantined" in {n["kind"] for n in doc["notes"]}
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)
    p = run_dvs(d, "checkout", "d", str(out))
    assert p.returncode == 0, p.stderr
    for name, data in FILES.items():
        assert (out / "items" / name).read_bytes() == data, name


@pytest.mark.parametrize("name", list(FAULTS))
def test_corrupt_blob_repaired_by_the_documented_steps(name: str, pristine: Path, tmp_path: Path) -> None:
    inject, kinds, readd = FAULTS[name]
    d, src = _copy(pristine, tmp_path / "c")
    inject(d)
    # fsck finds it, and its hint names the repair.
    p = run_dvs(d, "fsck", "--read-data", "--json")
    assert p.returncode == 6 and _kinds(p) == kinds, p.stdout
    assert_clean_error(p, 6)
    assert "fsck --read-data --rebuild" in p.stderr and "add their original files again" in p.stderr
    assert_clean_error(run_dvs(d, "checkout", "d", str(tmp_path / "bad")), 6)
    # Adding the original again alone does not help: the damaged copy is never replaced.
    assert run_dvs(d, "add", "d", str(src)).returncode == 0
    assert _kinds(run_dvs(d, "fsck", "--read-data", "--json")) == kinds
    # The repair: move the damaged copies aside; they are now missing blobs...
    p = run_dvs(d, "fsck", "--read-data", "--rebuild", "--json")
    assert p.returncode == 6 and _kinds(p) == {"blob-missing"}, p.stdout
    assert "add their original files again" in p.stderr and "--rebuild" not in p.stderr
    moved = json.loads(p.stdout)["rebuilt"]["quarantined"]
    assert {m["blob"] for m in moved} == {hash_bytes(FILES[n]).hex() for n in readd}
    for m in moved:  # the damaged bytes are kept, under their content's name
        kept = Path(d, m["kept"]).read_bytes()
        assert m["kept"].endswith("." + hash_bytes(kept).hex())
    # ...which adding the original files restores.
    _readd_and_verify(d, src, readd, tmp_path)


def test_readding_to_the_dataset_itself_also_restores(pristine: Path, tmp_path: Path) -> None:
    """'dvs add' to the dataset that holds the item: no new version, but the blob is back."""
    d, src = _copy(pristine, tmp_path / "c")
    f_file_corrupt(d)
    f_small_corrupt(d)
    assert run_dvs(d, "fsck", "--read-data", "--rebuild").returncode == 6
    p = run_dvs(d, "add", "d", str(src))
    assert p.returncode == 0 and "No changes" in p.stdout, (p.stdout, p.stderr)
    assert run_dvs(d, "fsck", "--read-data").returncode == 0


def test_rebuild_without_read_data_moves_blobs_of_the_wrong_size(pristine: Path, tmp_path: Path) -> None:
    d, src = _copy(pristine, tmp_path / "c")
    f_file_truncated(d)
    f_small_wrong_size(d)
    p = run_dvs(d, "fsck", "--json")
    assert _kinds(p) == {"blob-size"} and "fsck --read-data --rebuild" in p.stderr
    p = run_dvs(d, "fsck", "--rebuild", "--json")
    assert p.returncode == 6 and _kinds(p) == {"blob-missing"}, p.stdout
    _readd_and_verify(d, src, ["big.bin", "small.bin"], tmp_path)


def test_a_sound_blob_of_the_wrong_size_is_not_moved(pristine: Path, tmp_path: Path) -> None:
    """Only bytes that fail their hash leave: a blob-size finding whose blob hashes right
    (a damaged item record, not a damaged blob) keeps its blob."""
    from dvstore.repo import Repository

    d, _ = _copy(pristine, tmp_path / "c")
    repo = Repository(d)
    assert repo.blobs.quarantine(hash_bytes(FILES["big.bin"])) == []
    assert repo.blobs.quarantine(hash_bytes(FILES["small.bin"])) == []
    assert repo.blobs.quarantine(hash_bytes(b"not stored")) == []
    assert not os.path.exists(os.path.join(d, "quarantine"))


def _damaged_copies(d: str) -> tuple[bool, bool]:
    """(the damaged big.bin file is in place, a copy of its bytes is in the quarantine)."""
    path = _blob_file(d, FILES["big.bin"])
    in_place = os.path.exists(path)
    qdir = os.path.join(d, "quarantine")
    prefix = hash_bytes(FILES["big.bin"]).hex() + "."
    kept = os.path.isdir(qdir) and any(n.startswith(prefix) for n in os.listdir(qdir))
    return in_place, kept


def _small_damaged_copies(d: str) -> tuple[bool, bool]:
    key = hash_bytes(FILES["small.bin"])
    in_place = Database(os.path.join(d, "db")).get("blobs", key) is not None
    qdir = os.path.join(d, "quarantine")
    kept = os.path.isdir(qdir) and any(n.startswith(key.hex() + ".") for n in os.listdir(qdir))
    return in_place, kept


def _after_kill(d: str, src: Path, tmp: Path) -> None:
    """A killed repair: the damaged bytes are somewhere, fsck runs and names only the two
    blobs, and running the steps again finishes the repair."""
    for in_place, kept in (_damaged_copies(d), _small_damaged_copies(d)):
        assert in_place or kept, "the damaged bytes vanished"
    p = run_dvs(d, "fsck", "--read-data", "--json")
    assert p.returncode == 6 and "Traceback" not in p.stderr
    subjects = {f["subject"] for f in json.loads(p.stdout)["findings"]}
    assert subjects == {hash_bytes(FILES[n]).hex() for n in ("big.bin", "small.bin")}
    assert _kinds(p) <= {"blob-hash", "blob-missing"}
    p = run_dvs(d, "fsck", "--read-data", "--rebuild", "--json")
    assert _kinds(p) == {"blob-missing"}, p.stdout
    _readd_and_verify(d, src, ["big.bin", "small.bin"], tmp)


@pytest.mark.parametrize("n", [1, 2])
def test_kill_at_the_crash_point(n: int, pristine: Path, tmp_path: Path) -> None:
    """Killed after the n-th copy into the quarantine (blobs are repaired in id order):
    the blobs before it are moved, the n-th is in both places, the rest untouched."""
    d, src = _copy(pristine, tmp_path / "c")
    f_file_corrupt(d)
    f_small_corrupt(d)
    p = run_dvs(d, "fsck", "--read-data", "--rebuild", env={"DVS_TEST_CRASH_AT": f"quarantine_after_copy:{n}"})
    assert_clean_error(p, 6)
    assert "SIGKILL" in p.stderr
    states = {hash_bytes(FILES["big.bin"]).hex(): _damaged_copies(d),
              hash_bytes(FILES["small.bin"]).hex(): _small_damaged_copies(d)}
    first, second = (states[k] for k in sorted(states))
    assert (first, second) == (((True, True), (True, False)) if n == 1 else ((False, True), (True, True)))
    _after_kill(d, src, tmp_path)


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
@pytest.mark.parametrize("call,n", [
    ("link", 1), ("unlink", 1), ("unlink", 2), ("fsync", 3), ("fsync", 5),
    *(pytest.param(c, k, marks=pytest.mark.slow) for c, k in [("link", 2), ("fsync", 1), ("fsync", 2), ("fsync", 4)]),
])
def test_kill_at_a_syscall(call: str, n: int, pristine: Path, tmp_path: Path) -> None:
    """SIGKILL at the n-th call of a store-changing syscall of each process of the repair
    (the quarantine child's links, unlinks and directory fsyncs: every state between
    "damaged copy in place" and "moved"; the slow tier adds the rest)."""
    d, src = _copy(pristine, tmp_path / "c")
    f_file_corrupt(d)
    f_small_corrupt(d)
    p = run_dvs(d, "fsck", "--read-data", "--rebuild", prefix=strace_prefix(call, n))
    assert "Traceback" not in p.stderr
    _after_kill(d, src, tmp_path)
