"""G3: bit rot in blob files and in small blobs in LMDB is detected, and never read back.

A store of 300 blobs (large files and small LMDB values) gets K = 100 faults, each on its
own blob, drawn from: flip one bit, truncate, make zero-length, swap two blobs' contents,
delete, store under a wrong name; plus junk files under blobs/. ``fsck --read-data`` must
report exactly the damaged blobs (set equality on ids), and reading any damaged item
through the API raises instead of returning bytes. Clean stores give zero findings.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

from dvstore.api import Store
from dvstore.errors import CorruptObjectError, DvsError
from dvstore.fsck import check, fsck
from dvstore.hashing import hash_bytes
from dvstore.storage.db import Database
from tests.reliability.helpers import LARGE, SMALL, payload, run_dvs, tree_hash

N_FILES, N_SMALL, K = 40, 260, 100
KINDS = ("flip", "truncate", "zero", "swap", "delete", "wrong-name")


def _build(root: Path, seed: int, n_files: int = N_FILES, n_small: int = N_SMALL) -> tuple[str, dict[str, bytes]]:
    s = Store.init(str(root))
    ds = s.datasets.create("d")
    blobs: dict[str, bytes] = {}
    with ds.edit("rot") as e:
        for i in range(n_files + n_small):
            size = LARGE + (i * 37) % 5000 if i < n_files else SMALL + (i * 131) % 9000
            data = payload(seed, i, size)
            fn = f"/{'big' if i < n_files else 'small'}/{i:04d}.bin"
            e.add_bytes(fn, data)
            blobs[fn] = data
    return s.path, blobs


def _file(d: str, blob: bytes) -> str:
    h = blob.hex()
    return os.path.join(d, "blobs", h[:2], h[2:])


def _rewrite(path: str, data: bytes) -> None:
    os.chmod(path, 0o644)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o444)


def _inject(d: str, blobs: dict[str, bytes], rnd: random.Random) -> tuple[set[str], set[str]]:
    """Apply K faults; return (damaged item filenames, expected finding subjects)."""
    db = Database(os.path.join(d, "db"))
    names = sorted(blobs)
    rnd.shuffle(names)
    damaged: set[str] = set()
    subjects: set[str] = set()
    i = 0
    while len(damaged) < K:
        kind = KINDS[i % len(KINDS)]
        fn = names.pop()
        blob = hash_bytes(blobs[fn])
        large = fn.startswith("/big/")
        data = blobs[fn]
        if kind == "flip":
            pos = rnd.randrange(len(data))
            bad = data[:pos] + bytes([data[pos] ^ (1 << rnd.randrange(8))]) + data[pos + 1:]
        elif kind == "truncate":
            bad = data[: rnd.randrange(1, len(data))]
        elif kind == "zero":
            bad = b""
        elif kind == "swap":
            # Swap with another blob of the same placement; both are damaged.
            other = next(n for n in names if n.startswith("/big/" if large else "/small/"))
            names.remove(other)
            ob = hash_bytes(blobs[other])
            if large:
                _rewrite(_file(d, ob), data)
            else:
                db.write(lambda t, ob=ob, data=data: t.put("blobs", ob, data))
            damaged.add(other)
            subjects.add(ob.hex())
            bad = blobs[other]
        elif kind == "delete":
            bad = None
        else:  # wrong-name: the bytes move to a name that is not their hash
            wrong = hash_bytes(b"wrong" + blob)
            if large:
                dest = _file(d, wrong)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.rename(_file(d, blob), dest)
            else:
                db.write(lambda t, wrong=wrong, data=data, blob=blob: (t.put("blobs", wrong, data),
                                                                       t.delete("blobs", blob)) and None)
            subjects.add(wrong.hex())
            bad = None
            kind = "moved"
        if kind not in ("moved",):
            if large:
                if bad is None:
                    os.unlink(_file(d, blob))
                else:
                    _rewrite(_file(d, blob), bad)
            elif bad is None:
                db.write(lambda t, blob=blob: t.delete("blobs", blob) and None)
            else:
                db.write(lambda t, blob=blob, bad=bad: t.put("blobs", blob, bad))
        damaged.add(fn)
        subjects.add(blob.hex())
        i += 1
    # Junk under blobs/: notes, not findings.
    Path(d, "blobs", "README").write_text("junk")
    os.makedirs(os.path.join(d, "blobs", "xx"), exist_ok=True)
    Path(d, "blobs", "xx", "yy").write_text("junk")
    return damaged, subjects


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path_factory.mktemp("g3") / "clean"
    _, blobs = _build(root, seed=3)
    return root, blobs


def test_bitrot_detected_exactly(clean: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    root, blobs = clean
    shutil.copytree(root, tmp_path / "s")
    d = str(tmp_path / "s" / ".dvs")
    damaged, subjects = _inject(d, blobs, random.Random(1))
    before = tree_hash(d)
    rep = fsck(d, read_data=True)
    assert tree_hash(d) == before
    found = {f.subject for f in rep.findings}
    assert found == subjects, (sorted(found - subjects)[:5], sorted(subjects - found)[:5])
    assert rep.kinds() <= {"blob-hash", "blob-size", "blob-missing"}
    assert "stray-file" in rep.notes
    # The API never returns damaged bytes.
    ds = Store(d).datasets.get("d")
    by_name = {it.filename: it for it in ds.items.list()}
    outcomes: dict[str, int] = {}
    for fn in damaged:
        with pytest.raises(DvsError) as ei:
            by_name[fn].read()
        outcomes[type(ei.value).__name__] = outcomes.get(type(ei.value).__name__, 0) + 1
        assert isinstance(ei.value, CorruptObjectError) or "missing" in str(ei.value)
    for fn, data in blobs.items():
        if fn not in damaged:
            assert by_name[fn].read() == data
    # Without --read-data, every fault that changes presence or size is still caught.
    quick = {f.subject for f in check(d).findings}
    assert quick <= subjects
    p = run_dvs(d, "fsck", "--read-data")
    assert p.returncode == 6 and "Traceback" not in p.stderr
    assert {ln.split("\t")[1] for ln in p.stdout.splitlines() if ln.startswith("blob-")} == subjects


def _clean_stores(n: int, tmp: Path) -> None:
    for seed in range(n):
        d, _ = _build(tmp / f"c{seed}", seed=100 + seed, n_files=5 + seed % 4, n_small=40 + 7 * seed)
        rep = fsck(d, read_data=True)
        assert rep.ok, (seed, rep.findings)
        assert not {k for k in rep.notes if k != "stale-reader"}, rep.notes


def test_no_false_positives_on_clean_stores(tmp_path: Path) -> None:
    _clean_stores(5, tmp_path)


@pytest.mark.slow
def test_no_false_positives_on_20_clean_stores(tmp_path: Path) -> None:
    _clean_stores(20, tmp_path)


@pytest.mark.slow
def test_bitrot_many_seeds(clean: tuple[Path, dict[str, bytes]], tmp_path: Path) -> None:
    root, blobs = clean
    for seed in range(2, 7):
        shutil.copytree(root, tmp_path / f"s{seed}")
        d = str(tmp_path / f"s{seed}" / ".dvs")
        _, subjects = _inject(d, blobs, random.Random(seed))
        assert {f.subject for f in check(d, read_data=True).findings} == subjects


def test_verify_streams_large_blob(tmp_path: Path) -> None:
    """The read-data hash streams: a blob file far larger than the chunk size verifies."""
    s = Store.init(str(tmp_path / "big"))
    ds = s.datasets.create("d")
    data = os.urandom(24 * 1024 * 1024)
    with ds.edit() as e:
        e.add_bytes("/huge.bin", data)
    assert check(s.path, read_data=True).ok
    item: Any = ds.items.get(filepath="/huge.bin")
    assert item.read() == data
