"""G1: a process killed at any point of an operation leaves the old or the new version.

Three ways to kill, per operation (add, a library edit, clone, restore, merge, gc):
  * strace ``inject=SYSCALL:signal=KILL:when=N`` over write/writev/pwrite64/fsync/fdatasync/
    link/unlink/rename*/openat (every N of the store's own calls, openat sampled by default);
  * the labelled crash hooks (``DVS_TEST_CRASH_AT=label:n``);
  * SIGKILL at a random time.
After each kill: the dataset head is exactly the old or the new version (the new one
complete), fsck has no findings (garbage notes allowed), and the operation run again
succeeds. Checks run in a pool of spawned workers (in-process fsck, no interpreter start per
point) while the next kill runs. Default: a sample sized for CI; ``-m slow``: every point.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.helpers import (
    STRACE,
    count_syscalls,
    heads,
    make_store,
    sample,
    strace_prefix,
    write_tree,
)

pytestmark = [pytest.mark.crash, pytest.mark.timeout(900)]

SYSCALLS = ["write", "writev", "pwrite64", "fsync", "fdatasync", "link", "linkat", "unlink", "unlinkat",
            "rename", "renameat", "renameat2", "openat"]
HOOKS = ["after_blob_tmp_write", "after_blob_rename", "before_lmdb_commit", "after_lmdb_commit"]
GC_HOOKS = ["gc_after_mark", "gc_mid_sweep"]

# The library edit run in a child process (the "commit" operation): add, annotate, set
# metadata, delete. Exec'd again by the checker to re-run the operation.
COMMIT_SCRIPT = r'''
import sys
from dvstore.api import Store

def edit(dvs_dir):
    ds = Store(dvs_dir).datasets.get("d")
    with ds.edit("library edit") as e:
        for i in range(8):
            e.add_bytes(f"/lib/{i}.bin", bytes([i]) * (1000 + i))
        e.add_bytes("/lib/large.bin", bytes(range(256)) * 1200)
        for i in range(3):
            e.set_annotations(f"/seed/{i:04d}.bin", [{"type": "box", "label": "cat", "coordinates": [i, 0, 5, 5]}])
            e.update_metadata(f"/seed/{i + 3:04d}.bin", user={"split": "train", "n": i})
        e.delete("/seed/0010.bin")
        e.delete("/seed/0011.bin")

if __name__ == "__main__":
    edit(sys.argv[1])
'''


# -- checks (run in spawned workers) ---------------------------------------------------


def _items(dvs_dir: str, name: str) -> dict[str, str]:
    from dvstore.api import Store

    ds = Store(dvs_dir).datasets.get(name)
    return {it.filename: it.binary for it in ds.items.list()}


def _annotations(ds: Any) -> dict[str, list[str]]:
    """The annotation types of each item under /newc (the add-coco operation's)."""
    return {it.filename: sorted(a["type"] for a in it.annotations) for it in ds.items.list()
            if it.filename.startswith("/newc/")}


def _fsck_problems(dvs_dir: str) -> list[str]:
    from dvstore.fsck import check

    return [str(f) for f in check(dvs_dir).findings]


def verify_point(op: str, dvs_dir: str, ctx: dict[str, Any]) -> tuple[str, str | None]:
    """Check a store after a kill: (state "old"/"new", None or what failed)."""
    state = ["?"]
    try:
        failure = _verify(op, dvs_dir, ctx, state)
        return state[0], failure
    except Exception as e:  # the report, not a crash of the pool
        import traceback

        return state[0], f"checker raised {type(e).__name__}: {e}\n{traceback.format_exc()}"


def _verify(op: str, dvs_dir: str, ctx: dict[str, Any], out_state: list[str]) -> str | None:
    from dvstore.api import Store
    from dvstore.repo import Repository

    problems = _fsck_problems(dvs_dir)
    if problems:
        return f"fsck after the kill: {problems}"
    h = heads(dvs_dir)
    old = ctx["heads"]
    for name, cid in old.items():
        if name != ctx.get("target") and h.get(name) != cid:
            return f"head of {name} moved from {cid} to {h.get(name)}, although {op} does not touch it"
    repo = Repository(dvs_dir)
    target = ctx.get("target")
    state = out_state[0] = "old"
    if target is not None and h.get(target) != old.get(target):
        state = out_state[0] = "new"
        new = repo.commit(bytes.fromhex(h[target]))
        if old.get(target) is not None and [p.hex() for p in new.parents][:1] != [old[target]]:
            return f"new head of {target} does not descend from the old head"
        got = _items(dvs_dir, target)
        if got != ctx["expect_items"]:
            return f"new version of {target} is incomplete: {len(got)} items, expected {len(ctx['expect_items'])}"
    # Run the operation again (in-process): it must succeed and give the expected result.
    store = Store(dvs_dir)
    if op == "add":
        from dvstore.ingest import ingest

        with store.datasets.get("d").edit("rerun") as e:
            ingest(e, [ctx["src"]], to="/new")
        if _items(dvs_dir, "d") != ctx["expect_items"]:
            return "re-running add did not give the expected items"
    elif op == "add-coco":
        from dvstore import ingest as ingest_mod

        ds = store.datasets.get("d")
        if state == "new" and _annotations(ds) != ctx["expect_annotations"]:
            return "the new version's annotations are incomplete"
        ingest_mod.FLUSH_BYTES = int(ADD_COCO_ENV["DVS_WRITE_AHEAD_BYTES"])  # as the killed command ran
        with ds.edit("rerun") as e:
            ingest_mod.ingest(e, [ctx["src"]], to="/newc", annotations=ctx["coco"], fmt="coco")
        if _items(dvs_dir, "d") != ctx["expect_items"] or _annotations(ds) != ctx["expect_annotations"]:
            return "re-running add with annotations did not give the expected items and annotations"
    elif op == "commit":
        if state == "old":
            ns: dict[str, Any] = {}
            exec(COMMIT_SCRIPT, ns)
            ns["edit"](dvs_dir)
            if _items(dvs_dir, "d") != ctx["expect_items"]:
                return "re-running the edit did not give the expected items"
        else:
            with store.datasets.get("d").edit("follow-up") as e:
                e.add_bytes("/followup.bin", b"after the crash")
    elif op == "clone":
        from dvstore.clone import clone

        src = store.datasets.get("d")
        if state == "old":
            clone(src, clone_name="c", filters=ctx["filter"])
            if _items(dvs_dir, "c") != ctx["expect_items"]:
                return "re-running clone did not give the expected items"
        else:
            clone(src, clone_name="c2", filters=ctx["filter"])
    elif op == "restore":
        from dvstore import history

        if state == "old":
            history.restore(store.datasets.get("d"), ctx["rev"])
            if _items(dvs_dir, "d") != ctx["expect_items"]:
                return "re-running restore did not give the expected items"
    elif op == "merge":
        if state == "old":
            d = store.datasets.get("d")
            d.merge([store.datasets.get("e")])
            if _items(dvs_dir, "d") != ctx["expect_items"]:
                return "re-running merge did not give the expected items"
    elif op == "gc":
        from dvstore.fsck import check
        from dvstore.gc import collect

        collect(repo, expire="now")
        rep = check(dvs_dir)
        left = {k for k in rep.notes if k.startswith("unreferenced") or k == "tmp-file"}
        if left or heads(dvs_dir) != old:
            return f"gc re-run left {left} or moved heads"
        for name in old:
            for blob in _items(dvs_dir, name).values():
                store.read_blob(blob)  # raises if a live blob went missing or bad
    problems = _fsck_problems(dvs_dir)
    if problems:
        return f"fsck after the re-run: {problems}"
    return None


# -- operations ------------------------------------------------------------------------


@dataclass
class Op:
    name: str
    pristine: Path
    argv: Callable[[str], list[str]]
    ctx: dict[str, Any]
    hooks: list[str]
    duration: float = 0.5
    points: dict[str, list[int]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def _cli(*args: str) -> Callable[[str], list[str]]:
    return lambda dvs_dir: [sys.executable, "-m", "dvstore", "--store", dvs_dir, *args]


def _has_command(name: str) -> bool:
    from dvstore.cli.commands import cli

    return name in cli.commands  # type: ignore[attr-defined]


def _build(name: str, base: Path) -> Op:
    from dvstore.api import Store

    root = base / f"{name}-pristine"
    dvs_dir = make_store(root, 80, n_large=2)
    store = Store(dvs_dir)
    if name == "add":
        src = base / "add-src"
        files = write_tree(src, 20, 3, seed=11)
        expect = _items(dvs_dir, "d")
        from dvstore.hashing import hash_bytes

        expect.update({f"/new/{rel}": hash_bytes(data).hex() for rel, data in files.items()})
        ctx = {"target": "d", "src": str(src), "expect_items": expect}
        op = Op(name, root, _cli("add", "d", str(src), "--to", "/new"), ctx, HOOKS)
    elif name == "add-coco":
        # A COCO file of polygons and masks: the masks go through the reader's renderer
        # process, and with a tiny write-ahead size the annotation sets through the storers.
        import json

        src = base / "addc-src"
        files = write_tree(src, 20, 3, seed=13)
        expect = _items(dvs_dir, "d")
        from dvstore.hashing import hash_bytes

        expect.update({f"/newc/{rel}": hash_bytes(data).hex() for rel, data in files.items()})
        images, anns, types = [], [], {}
        for i, rel in enumerate(sorted(files)):
            images.append({"id": i, "file_name": rel, "width": 8, "height": 6})
            types[f"/newc/{rel}"] = []
            for k in range(i % 4):
                seg: Any = ({"size": [6, 8], "counts": [5, 10, 20, 13]} if k == 2
                            else [[1.5, 2.5, 3.5 + k, 4.5, 5.5, 0.5 * i]])
                anns.append({"id": 100 * i + k, "image_id": i, "category_id": 1 + k % 2, "bbox": [1, 1, 2, 2],
                             "area": 4.0, "iscrowd": int(k == 2), "segmentation": seg})
                types[f"/newc/{rel}"].append("binary" if k == 2 else "segment")
        coco = base / "addc.json"
        coco.write_text(json.dumps({"images": images, "annotations": anns,
                                    "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
        ctx = {"target": "d", "src": str(src), "coco": str(coco), "expect_items": expect,
               "expect_annotations": {k: sorted(v) for k, v in types.items()}}
        op = Op(name, root, _cli("add", "d", str(src), "--to", "/newc", "--annotations", str(coco), "--format",
                                 "coco"), ctx, HOOKS, env=dict(ADD_COCO_ENV))
    elif name == "commit":
        # Expected result: run the edit once on a scratch copy.
        scratch = base / "commit-scratch"
        shutil.copytree(root, scratch)
        ns: dict[str, Any] = {}
        exec(COMMIT_SCRIPT, ns)
        ns["edit"](str(scratch / ".dvs"))
        ctx = {"target": "d", "expect_items": _items(str(scratch / ".dvs"), "d")}
        op = Op(name, root, lambda d: [sys.executable, "-c", COMMIT_SCRIPT, d], ctx, HOOKS)
    elif name == "clone":
        flt = {"filename": "/seed/001*"}
        import json

        expect = {k: v for k, v in _items(dvs_dir, "d").items() if k.startswith("/seed/001")}
        ctx = {"target": "c", "filter": flt, "expect_items": expect}
        op = Op(name, root, _cli("clone", "d", "c", "--filter", json.dumps(flt)), ctx,
                ["before_lmdb_commit", "after_lmdb_commit"])
    elif name == "restore":
        rev = store.datasets.get("d").head_id.hex()
        expect = _items(dvs_dir, "d")
        with store.datasets.get("d").edit("to be undone") as e:
            for i in range(40):
                e.delete(f"/seed/{i:04d}.bin")
            e.add_bytes("/undo/big.bin", bytes(range(256)) * 1500)
        ctx = {"target": "d", "rev": rev, "expect_items": expect}
        op = Op(name, root, _cli("restore", "d", rev), ctx, ["before_lmdb_commit", "after_lmdb_commit"])
    elif name == "merge":
        store.datasets.get("d").clone("e")
        with store.datasets.get("e").edit("other side") as e:
            e.add_bytes("/other/x.bin", b"x" * 5000)
        expect = {**_items(dvs_dir, "d"), "/other/x.bin": _items(dvs_dir, "e")["/other/x.bin"]}
        ctx = {"target": "d", "expect_items": expect}
        op = Op(name, root, _cli("merge", "--into", "d", "e"), ctx, ["before_lmdb_commit"])
    elif name == "gc":
        # Garbage of every kind: a killed add's blob files and temp file, a deleted dataset
        # (kept by its reflog until --expire now), small blobs flushed ahead of a version.
        src = base / "gc-src"
        write_tree(src, 10, 3, seed=5)
        for label in ("after_blob_rename:2", "before_lmdb_commit:1"):
            subprocess.run([sys.executable, "-m", "dvstore", "--store", dvs_dir, "add", "d", str(src), "--to", "/g"],
                           env={**os.environ, "DVS_TEST_CRASH_AT": label}, capture_output=True, timeout=60)
        gone = store.datasets.create("gone")
        with gone.edit() as e:
            for i in range(100):
                e.add_bytes(f"/x/{i}.bin", random.Random(i).randbytes(2000))
        store.datasets.delete("gone")
        with open(os.path.join(dvs_dir, "tmp", "stale.partial"), "wb") as f:
            f.write(b"partial")
        ctx = {"target": None}
        op = Op(name, root, _cli("gc", "--expire", "now"), ctx, GC_HOOKS)
    else:
        raise AssertionError(name)
    op.ctx["heads"] = heads(dvs_dir)
    t0 = time.monotonic()
    scratch = base / f"{name}-timing"
    shutil.copytree(root, scratch)
    subprocess.run(op.argv(str(scratch / ".dvs")), capture_output=True, timeout=120,
                   env={**os.environ, **op.env})
    op.duration = time.monotonic() - t0
    if STRACE is not None:
        shutil.rmtree(scratch)
        shutil.copytree(root, scratch)
        op.points = count_syscalls(op.argv(str(scratch / ".dvs")), SYSCALLS, env=op.env, marker=".dvs")
    shutil.rmtree(scratch, ignore_errors=True)
    return op


OPS = ["add", "add-coco", "commit", "clone", "restore", "merge", "gc"]
# Points per operation by default (CI) for the strace sweep: every point of every syscall
# except openat, whose points (dominated by lazy imports) are sampled to this many.
OPENAT_SAMPLE = {"add": 120, "add-coco": 60, "commit": 170, "clone": 166, "restore": 166, "merge": 160, "gc": 150}
RANDOM_KILLS = {"add": 50, "add-coco": 30, "commit": 30, "clone": 30, "restore": 30, "merge": 30, "gc": 30}
ADD_COCO_ENV = {"DVS_WRITE_AHEAD_BYTES": "600"}
HELPER_DEATHS = ("the process storing the files stopped without an answer", "the COCO reader stopped",
                 "the COCO reader's answer was cut short", "the mask helper")


def _require(name: str) -> None:
    if name == "restore" and not _has_command("restore"):
        pytest.skip("restore: the history CLI (dvs restore) is not there yet")
    if name == "merge" and not _has_command("merge"):
        pytest.skip("merge: the merge CLI (dvs merge, dvstore.cli.merge_cmds) is not implemented yet")


@pytest.fixture(scope="module")
def pool() -> Iterator[Any]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2, maxtasksperchild=40) as p:
        yield p


_OPS_CACHE: dict[str, Op] = {}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("g1")


def _op(name: str, base: Path) -> Op:
    if name not in _OPS_CACHE:
        _OPS_CACHE[name] = _build(name, base)
    return _OPS_CACHE[name]


# -- running points --------------------------------------------------------------------


@dataclass
class Stats:
    points: int = 0
    old: int = 0
    new: int = 0
    survived: int = 0
    failures: list[str] = field(default_factory=list)


FIGURES: dict[str, dict[str, int]] = {}


def _run_point(op: Op, base: Path, idx: int, kind: str, spec: Any, pool: Any) -> tuple[str, str | None]:
    work = base / f"{op.name}-pt{idx}"
    shutil.copytree(op.pristine, work)
    dvs_dir = str(work / ".dvs")
    argv = op.argv(dvs_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("DVS_STORE", "DVS_DEBUG")}
    env["DVS_AHEAD_MIN"] = "8"  # add's items tree is built by its helper process, as in a big ingest
    env.update(op.env)
    try:
        if kind == "strace":
            syscall, n = spec
            p = subprocess.run(strace_prefix(syscall, n) + argv, env=env, capture_output=True, text=True, timeout=120)
            rc, err = p.returncode, p.stderr
        elif kind == "hook":
            p = subprocess.run(argv, env={**env, "DVS_TEST_CRASH_AT": spec}, capture_output=True, text=True,
                               timeout=120)
            rc, err = p.returncode, p.stderr
        else:
            proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(spec)
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=120)
            rc = proc.returncode
        # strace -f also kills ``dvs add``'s helper processes. A storer's, the COCO reader's or
        # its mask renderer's death fails the command with its one error line (exit 6 or 2),
        # which must leave the old version, as a kill does; the items-tree helper's is made up
        # for by building the tree here (exit 0).
        helper_killed = rc in (2, 6) and err.startswith("error: ") and any(m in err for m in HELPER_DEATHS)
        if rc not in (0, -signal.SIGKILL) and not helper_killed:
            return "bad", f"{kind} {spec}: unexpected exit {rc}: {err[-500:]}"
        survived = rc == 0
        state, result = pool.apply(verify_point, (op.name, dvs_dir, op.ctx))
        if result is not None:
            return "bad", f"{kind} {spec}: {result}"
        return ("survived" if survived else "killed") + ":" + state, None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sweep(op: Op, base: Path, pool: Any, plan: list[tuple[str, Any]]) -> Stats:
    st = Stats()
    with ThreadPoolExecutor(2) as ex:
        futs = [ex.submit(_run_point, op, base, i, kind, spec, pool) for i, (kind, spec) in enumerate(plan)]
        for f in futs:
            outcome, failure = f.result()
            st.points += 1
            if failure:
                st.failures.append(failure)
                continue
            st.survived += outcome.startswith("survived")
            st.new += outcome.endswith(":new")
            st.old += outcome.endswith(":old")
    fig = FIGURES.setdefault(op.name, {})
    for k, v in (("points", st.points), ("survived", st.survived), ("head_old", st.old),
                 ("head_new", st.new), ("failures", len(st.failures))):
        fig[k] = fig.get(k, 0) + v
    return st


def _strace_plan(op: Op, deep: bool) -> list[tuple[str, Any]]:
    plan: list[tuple[str, Any]] = []
    for syscall, ns in op.points.items():
        if syscall == "openat" and not deep:
            ns = sample(ns, OPENAT_SAMPLE[op.name])
        plan.extend(("strace", (syscall, n)) for n in ns)
    return plan


def _hook_plan(op: Op, deep: bool) -> list[tuple[str, Any]]:
    plan: list[tuple[str, Any]] = []
    for label in op.hooks:
        for n in range(1, (4 if label in ("after_blob_tmp_write", "after_blob_rename", "gc_mid_sweep") else 2)):
            plan.append(("hook", f"{label}:{n}"))
    rnd = random.Random(op.name)
    count = 50 if deep else RANDOM_KILLS[op.name]
    plan.extend(("random", round(rnd.uniform(0.05, 1.1) * op.duration, 3)) for _ in range(count))
    return plan


def _assert(st: Stats) -> None:
    assert not st.failures, f"{len(st.failures)}/{st.points} crash points broke G1:\n" + "\n".join(st.failures[:10])


@pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace): syscall sweeps skipped")
@pytest.mark.parametrize("name", OPS)
def test_strace_kill_sweep(name: str, base: Path, pool: Any) -> None:
    _require(name)
    op = _op(name, base)
    plan = _strace_plan(op, deep=False)
    assert plan, "no syscall points found"
    st = _sweep(op, base, pool, plan)
    _assert(st)
    # Some kills must land before the commit point, or the sweep tests nothing.
    assert st.survived < st.points


@pytest.mark.parametrize("name", OPS)
def test_hook_and_random_kills(name: str, base: Path, pool: Any) -> None:
    _require(name)
    op = _op(name, base)
    st = _sweep(op, base, pool, _hook_plan(op, deep=False))
    _assert(st)


@pytest.mark.slow
@pytest.mark.skipif(STRACE is None, reason="strace is not installed (apt-get install strace): syscall sweeps skipped")
@pytest.mark.parametrize("name", OPS)
def test_strace_kill_sweep_deep(name: str, base: Path, pool: Any) -> None:
    """Every openat point too, and 50 random kills (make test-deep)."""
    _require(name)
    op = _op(name, base)
    st = _sweep(op, base, pool, _strace_plan(op, deep=True) + _hook_plan(op, deep=True))
    _assert(st)


def test_report_figures(capsys: pytest.CaptureFixture[str]) -> None:
    """Print the sweep's figures (points run per operation) for the record."""
    with capsys.disabled():
        for name, fig in sorted(FIGURES.items()):
            print(f"\nG1 {name}: {fig}")
