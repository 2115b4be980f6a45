"""Helpers shared by the reliability suite: make stores, digest them, run dvs, inject faults.

Stores are opened in-process through ``Database``; py-lmdb keeps one environment per path
and process (db.py), so every store a test builds must live at a path of its own.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dvstore.api import Store
from dvstore.repo import Repository
from dvstore.storage.db import Database

STRACE = shutil.which("strace") or ("/usr/bin/strace" if os.path.exists("/usr/bin/strace") else None)
SMALL = 3000
LARGE = 300 * 1024  # above blobs.SMALL_MAX: stored as a file


def payload(seed: int, i: int, size: int) -> bytes:
    """Deterministic pseudo-random bytes (distinct per (seed, i))."""
    return random.Random(seed * 1_000_003 + i).randbytes(size)


def write_tree(root: Path, n_small: int, n_large: int, *, seed: int = 0, prefix: str = "f") -> dict[str, bytes]:
    """Write ``n_small`` small and ``n_large`` large files under ``root``; return rel -> bytes."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(n_small + n_large):
        size = SMALL + i if i < n_small else LARGE + i
        rel = f"{prefix}{i:04d}.bin"
        data = payload(seed, i, size)
        (root / rel).write_bytes(data)
        out[rel] = data
    return out


def make_store(root: Path, n: int = 30, *, n_large: int = 2, name: str = "d", seed: int = 0) -> str:
    """A store at ``root/.dvs`` holding dataset ``name`` with ``n`` small and ``n_large`` large
    items (two versions: create, add). Returns the .dvs directory."""
    s = Store.init(str(root))
    ds = s.datasets.create(name)
    with ds.edit("seed") as e:
        for i in range(n + n_large):
            size = SMALL + i if i < n else LARGE + i
            e.add_bytes(f"/seed/{i:04d}.bin", payload(seed, i, size))
    return s.path


def heads(dvs_dir: str) -> dict[str, str]:
    """Dataset name -> head commit hex."""
    repo = Repository(dvs_dir)
    return {d.name: repo.head(d).hex() for d in repo.datasets()}


def store_digest(dvs_dir: str) -> dict[str, Any]:
    """refs -> commit ids, the object id set and the blob id set (small and files)."""
    db = Database(os.path.join(dvs_dir, "db"))
    names = {Repository._decode_ds(v).id: k.decode() for k, v in db.scan("datasets")}
    refs = {}
    for k, v in db.scan("refs"):
        if k.startswith(b"head:"):
            refs["head:" + names.get(k[5:], k[5:].hex())] = v.hex()
        else:
            refs["tag:" + names.get(k[4:20], k[4:20].hex()) + ":" + k[21:].decode()] = v.hex()
    objects = {k.hex() for rows in db.iter_batches("objects") for k, _ in rows}
    blobs = {k.hex() for rows in db.iter_batches("blobs", batch=256) for k, _ in rows}
    blob_root = os.path.join(dvs_dir, "blobs")
    for sub in os.listdir(blob_root) if os.path.isdir(blob_root) else []:
        for name in os.listdir(os.path.join(blob_root, sub)):
            blobs.add(sub + name)
    return {"refs": refs, "objects": objects, "blobs": blobs}


def tree_hash(path: str, *, exclude: Sequence[str] = ("lock.mdb",)) -> str:
    """Hash of a directory tree: names, modes, sizes and contents (not times)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            if name in exclude:
                continue
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            h.update(f"{os.path.relpath(p, path)}\0{st.st_mode:o}\0{st.st_size}\0".encode())
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()


def run_dvs(dvs_dir: str | None, *args: str, env: dict[str, str] | None = None, timeout: float = 120,
            preexec: Any = None, prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dvstore [--store DIR] ARGS``, optionally under ``prefix`` (strace)."""
    e = dict(os.environ)
    e.pop("DVS_DEBUG", None)
    e.pop("DVS_STORE", None)
    if env:
        e.update(env)
    store = ["--store", dvs_dir] if dvs_dir else []
    return subprocess.run([*prefix, sys.executable, "-m", "dvstore", *store, *args], env=e, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec)


def assert_clean_error(p: subprocess.CompletedProcess[str], code: int | tuple[int, ...]) -> None:
    """One ``error:`` line (plus an optional ``hint:``), the documented code, no traceback."""
    codes = (code,) if isinstance(code, int) else code
    assert p.returncode in codes, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, p.stderr
    assert all(ln.startswith(("error: ", "hint: ")) for ln in lines), p.stderr


def strace_prefix(syscall: str, n: int, action: str = "signal=KILL") -> list[str]:
    """strace arguments injecting ``action`` at the n-th ``syscall`` of each thread."""
    assert STRACE is not None
    return [STRACE, "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}", "-e",
            f"inject={syscall}:{action}:when={n}"]


def count_syscalls(argv: Sequence[str], syscalls: Sequence[str], env: dict[str, str] | None = None,
                   marker: str | None = None) -> dict[str, list[int]]:
    """Run ``argv`` once under strace; per syscall, the 1-based indices (main thread) to sweep.

    With ``marker``, an ``openat`` only counts once the main thread has opened a path
    containing it: the interpreter's imports come first and are not worth a kill each.
    """
    assert STRACE is not None
    log = f"/tmp/dvs-strace-{os.getpid()}-{random.randrange(1 << 30)}.log"
    e = dict(os.environ)
    e.pop("DVS_STORE", None)
    if env:
        e.update(env)
    subprocess.run([STRACE, "-f", "-o", log, "-e", "trace=" + ",".join(syscalls), *argv], env=e,
                   capture_output=True, timeout=120, check=True)
    counts: dict[str, int] = {}
    out: dict[str, list[int]] = {s: [] for s in syscalls}
    main_pid: str | None = None
    armed = marker is None
    with open(log) as f:
        for line in f:
            pid, _, rest = line.partition(" ")
            rest = rest.lstrip()
            name = rest.split("(", 1)[0]
            if name not in out:
                continue
            main_pid = main_pid or pid
            if pid != main_pid:
                continue
            counts[name] = counts.get(name, 0) + 1
            if marker is not None and marker in rest:
                armed = True
            if name != "openat" or armed:
                out[name].append(counts[name])
    os.unlink(log)
    return out


def sample(points: list[Any], k: int, seed: int = 0) -> list[Any]:
    """At most ``k`` of ``points``: always the first and last, the rest evenly spread."""
    if len(points) <= k:
        return list(points)
    if k <= 2:
        return points[:1] + points[-1:] if k == 2 else points[:k]
    step = (len(points) - 1) / (k - 1)
    return sorted({points[round(i * step)] for i in range(k)}, key=points.index)


def rewrite_file(path: str, fn: Callable[[bytes], bytes]) -> None:
    """Replace a read-only (0444) store file's bytes with ``fn(bytes)``: damage for a test."""
    os.chmod(path, 0o644)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(fn(data))
    os.chmod(path, 0o444)
