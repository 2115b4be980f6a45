"""G5: concurrent commits. Two spawned processes read the same head, meet at a barrier, then
commit (100 rounds; 500 in the slow tier): exactly one wins, the other gets ConflictError
naming the expected and the actual head, and after the loser retries nothing is lost.
Commits to different datasets never conflict. The CLI gives exit 5 with both heads in the
message.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dvstore.api import Store
from dvstore.fsck import check
from tests.reliability.helpers import assert_clean_error, heads, run_dvs

ROUNDS = 100  # ~2 s: the full RELIABILITY figure runs by default


def _committer(dvs_dir: str, dataset: str, tag: str, rounds: int, start: Any, race: Any, end: Any,
               results: Any) -> None:
    from dvstore.api import Store
    from dvstore.errors import ConflictError

    store = Store(dvs_dir)
    for r in range(rounds):
        start.wait()
        ds = store.datasets.get(dataset)
        try:
            with ds.edit(f"{tag} {r}") as e:
                e.add_bytes(f"/{tag}/{r}.bin", f"{tag}:{r}".encode())
                race.wait()  # both hold an editor on the same head now
            results.put((r, tag, "won", e.committed.hex() if e.committed else None, ""))
        except ConflictError as ex:
            # Retry from the new head: the loser's work must not be lost.
            with store.datasets.get(dataset).edit(f"{tag} {r} retry") as e2:
                e2.add_bytes(f"/{tag}/{r}.bin", f"{tag}:{r}".encode())
            results.put((r, tag, "conflict", e2.committed.hex() if e2.committed else None, str(ex)))
        except Exception as ex:  # reported, so the parent fails instead of hanging
            results.put((r, tag, "error", None, f"{type(ex).__name__}: {ex}"))
        end.wait()


def _race(dvs_dir: str, datasets: tuple[str, str], rounds: int) -> list[list[tuple[Any, ...]]]:
    ctx = multiprocessing.get_context("spawn")
    start, end = ctx.Barrier(3, timeout=60), ctx.Barrier(3, timeout=60)
    race = ctx.Barrier(2, timeout=60)
    results = ctx.Queue()
    procs = [ctx.Process(target=_committer, args=(dvs_dir, ds, tag, rounds, start, race, end, results))
             for ds, tag in zip(datasets, ("A", "B"))]
    for p in procs:
        p.start()
    out = []
    try:
        for _ in range(rounds):
            start.wait()
            end.wait()
            out.append(sorted([results.get(timeout=60), results.get(timeout=60)]))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return out


def _store(tmp_path: Path, *names: str) -> str:
    s = Store.init(str(tmp_path / "s"))
    for n in names:
        s.datasets.create(n)
    return s.path


def _assert_same_dataset(tmp_path: Path, rounds: int) -> None:
    d = _store(tmp_path, "d")
    out = _race(d, ("d", "d"), rounds)
    for r, pair in enumerate(out):
        outcomes = sorted(o[2] for o in pair)
        assert outcomes == ["conflict", "won"], (r, pair)
        loser = next(o for o in pair if o[2] == "conflict")
        assert "expected head" in loser[4] and "found" in loser[4], loser
    ds = Store(d).datasets.get("d")
    names = {it.filename for it in ds.items.list()}
    assert names == {f"/{t}/{r}.bin" for t in "AB" for r in range(rounds)}, "a commit was lost"
    assert len(ds.log()) == 1 + 2 * rounds
    assert check(d).ok


def test_same_dataset_exactly_one_wins(tmp_path: Path) -> None:
    _assert_same_dataset(tmp_path, ROUNDS)


@pytest.mark.slow
def test_same_dataset_exactly_one_wins_500_rounds(tmp_path: Path) -> None:
    _assert_same_dataset(tmp_path, 500)


def test_different_datasets_never_conflict(tmp_path: Path) -> None:
    d = _store(tmp_path, "d1", "d2")
    out = _race(d, ("d1", "d2"), ROUNDS)
    for r, pair in enumerate(out):
        assert [o[2] for o in pair] == ["won", "won"], (r, pair)
    for name, tag in (("d1", "A"), ("d2", "B")):
        ds = Store(d).datasets.get(name)
        assert len(ds.log()) == 1 + ROUNDS
        assert {it.filename for it in ds.items.list()} == {f"/{tag}/{r}.bin" for r in range(ROUNDS)}
    assert check(d).ok


def test_cli_conflict_exit_5_names_both_heads(tmp_path: Path) -> None:
    """Deterministic race: A pauses just before its LMDB commit, B commits, A is released."""
    d = _store(tmp_path, "d")
    for side in "ab":
        (tmp_path / side).mkdir()
        (tmp_path / side / f"{side}.bin").write_bytes(side.encode() * 100)
    old = heads(d)["d"]
    release, paused = tmp_path / "release", tmp_path / "paused"
    env = {**os.environ, "DVS_TEST_PAUSE_AT": "before_lmdb_commit", "DVS_TEST_PAUSE_FILE": str(release),
           "DVS_TEST_PAUSED_FILE": str(paused)}
    env.pop("DVS_STORE", None)
    a = subprocess.Popen([sys.executable, "-m", "dvstore", "--store", d, "add", "d", str(tmp_path / "a")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not paused.exists():
        assert time.monotonic() < deadline and a.poll() is None, "A never reached its pause point"
        time.sleep(0.01)
    b = run_dvs(d, "add", "d", str(tmp_path / "b"))
    assert b.returncode == 0, b.stderr
    new = heads(d)["d"]
    release.touch()
    _, err = a.communicate(timeout=60)
    p = subprocess.CompletedProcess(a.args, a.returncode, "", err)
    assert_clean_error(p, 5)
    assert old[:12] in err and new[:12] in err, err
    assert heads(d)["d"] == new
    again = run_dvs(d, "add", "d", str(tmp_path / "a"))
    assert again.returncode == 0, again.stderr
    assert {it.filename for it in Store(d).datasets.get("d").items.list()} == {"/a.bin", "/b.bin"}
