"""G10: the LMDB map starts at 1 MiB and grows by doubling; no write fails for lack of map,
and a second process whose map is stale picks up the larger size (MapResizedError ->
set_mapsize(0) and a retry).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dvstore.storage.db import Database

MIB = 1 << 20


def _fill(db: Database, prefix: bytes, total: int, value_size: int = 2000, per_txn: int = 500) -> int:
    """Write ``total`` bytes of index entries in transactions of ``per_txn`` puts."""
    n = total // value_size
    for lo in range(0, n, per_txn):
        def txn(t, lo=lo):  # type: ignore[no-untyped-def]
            for i in range(lo, min(n, lo + per_txn)):
                t.put("index", prefix + i.to_bytes(8, "big"), bytes([i % 251]) * value_size)
        db.write(txn)
    return n


def test_map_grows_from_1_mib_to_hold_50_mib(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "db"), map_size=MIB)
    assert db.map_size() == MIB
    n = _fill(db, b"k", 50 * MIB)
    assert db.map_size() >= 50 * MIB
    assert db.read(lambda t: t.count("index")) == n
    assert db.get("index", b"k" + (n - 1).to_bytes(8, "big")) == bytes([(n - 1) % 251]) * 2000
    # A single transaction far larger than the map (re-run after each doubling).
    db2 = Database(str(tmp_path / "db2"), map_size=MIB)
    _fill(db2, b"big", 8 * MIB, per_txn=10_000)
    assert db2.read(lambda t: t.count("index")) == 8 * MIB // 2000


GROW = """
import sys
from dvstore.storage.db import Database
db = Database(sys.argv[1], map_size=1 << 20)
n = 0
for lo in range(0, 10000, 500):
    def txn(t, lo=lo):
        for i in range(lo, lo + 500):
            t.put("index", b"b" + i.to_bytes(8, "big"), b"y" * 2000)
    db.write(txn)
print(db.map_size())
"""


def test_second_process_picks_up_the_grown_map(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    a = Database(path, map_size=MIB)
    a.write(lambda t: t.put("index", b"a0", b"x"))
    before = a.map_size()
    p = subprocess.run([sys.executable, "-c", GROW, path], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    grown = int(p.stdout)
    assert grown > before
    # A's environment still has the small map: its next transactions must just work.
    a.write(lambda t: t.put("index", b"a1", b"x" * 1000))
    assert a.get("index", b"b" + (9999).to_bytes(8, "big")) == b"y" * 2000
    _fill(a, b"a", 4 * MIB)
    assert a.map_size() >= grown
    assert a.read(lambda t: t.count("index")) == 2 + 10000 + 4 * MIB // 2000


def test_env_flags_forbid_writemap(tmp_path: Path) -> None:
    """writemap=True turns a full disk into SIGBUS (RELIABILITY §5.4): it must stay off."""
    db = Database(str(tmp_path / "db"))
    flags = db.env.flags()
    assert flags["writemap"] is False and flags["sync"] is True and flags["metasync"] is True
    assert os.path.exists(tmp_path / "db" / "data.mdb")
