"""Garbage collection: delete what no root can reach, and nothing else.

Rules (docs/reliability.md "gc"):

* **Lock.** gc holds the store lock *exclusive* for the whole run. Every writer holds it
  shared from before it writes its first blob until its head moved, so no operation can be
  between "blobs written" and "head published" while gc marks and sweeps: everything an
  in-flight writer needs is either published (live) or the writer is not running.
* **Roots** (``maintenance.read_roots``): heads, tags, reflog entries younger than the
  retention window (default 90 days; ``--expire DURATION`` sets it, ``--expire now`` makes
  it zero), and operations recorded in the ``ops`` database. A deleted dataset's versions
  therefore stay while its reflog entries are within retention.
* **Fail closed.** If any root, registry record, reflog entry, commit, tree node,
  annotation set or blob of the live set cannot be read or verified, gc raises
  ``CorruptionError`` before deleting anything (restic prune's rule).
* **Grace period** (default 1 h; ``--grace``; ``--expire now`` without ``--grace`` makes it
  zero, ``--expire 0`` does not) is defence in depth for writers that bypass the lock and a
  window for a human to undo. Blob and temp files are aged by mtime. LMDB entries have no
  mtime, so gc ages them itself ("two-phase" mark): the first gc that finds an entry
  unreferenced records the time under ``meta`` ``b"gc-seen:" + b"o"|b"b" + id``; a later gc
  deletes it only if it is still unreferenced and that record is at least the grace period
  old. An entry that became live again loses its record.
* **Derived data** is pruned with what it describes: path-index entries (``index``) of
  items roots that are not live, and stat-cache entries naming deleted blobs. A live path
  index that is broken is dropped (``Repository.path_index`` rebuilds it on demand).
* **Reflog expiry.** An entry past retention is deleted when a commit it names is not live,
  so the reflog never names a collected commit (fsck treats every remaining entry as a root).

Order of deletion: expired reflog entries and derived entries first, then objects and small
blobs in batches of one transaction each, then blob files, then temp files. Everything
deleted is unreachable, so a crash at any point leaves a consistent store with less garbage.

**Compaction** (``compact=True``, ``dvs gc --compact``): after the sweep, still under the
exclusive lock, ``Database.compact`` replaces ``db/data.mdb`` by a compacted copy (LMDB never
shrinks its file, and a long free-page list slows every later commit). It needs every other
process to have closed the database, readers included (they take no store lock); when one
has not, compaction is skipped and reported, and the rest of gc stands. Work directories
``tmp/compact-*`` left by a killed compaction are removed by the next gc that is not a dry run.
"""

from __future__ import annotations

import os
import shutil
import struct
import time
from dataclasses import asdict, dataclass
from typing import Any

from dvstore import codec, testhooks
from dvstore.errors import CorruptionError
from dvstore.maintenance import DEFAULT_GRACE, DEFAULT_RETENTION, Issue, Walk, parse_duration, read_roots
from dvstore.repo import Repository, parse_index_key
from dvstore.storage.db import COMPACT_PREFIX, WriteTxn

SEEN_PREFIX = b"gc-seen:"
_DELETE_BATCH = 4096
_SCAN_BATCH = 256  # values up to 256 KiB (small blobs) are copied out per batch


@dataclass
class GcResult:
    """What gc freed (or, with ``dry_run``, would free now).

    ``objects``/``bytes`` are the CLI contract: stored objects plus blobs, and all bytes
    (including temp files). The other counts break them down.
    """

    objects: int = 0
    bytes: int = 0
    object_entries: int = 0
    small_blobs: int = 0
    blob_files: int = 0
    tmp_files: int = 0
    reflog_entries: int = 0
    derived_entries: int = 0
    kept_young: int = 0
    live_commits: int = 0
    live_objects: int = 0
    live_blobs: int = 0
    dry_run: bool = False
    retention_seconds: float = DEFAULT_RETENTION
    grace_seconds: float = DEFAULT_GRACE
    db_bytes_before: int = 0
    """Size of ``db/data.mdb`` when gc started."""
    db_bytes_after: int = 0
    """Size of ``db/data.mdb`` when gc ended (smaller only after a compaction)."""
    compacted: bool = False
    compact_skipped: str | None = None
    """Why ``compact=True`` did not compact (another process had the database open, or a dry run)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _fail_closed(issues: list[Issue]) -> CorruptionError:
    first = issues[0]
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return CorruptionError(f"gc aborted, nothing was deleted: {first}{more}",
                           hint="run 'dvs fsck' to list the damage; gc refuses to run on a damaged store")


def collect(repo: Repository, *, dry_run: bool = False, expire: str | None = None,
            grace: str | None = None, now: float | None = None, compact: bool = False) -> GcResult:
    """Run gc on ``repo`` (see the module docstring for the rules)."""
    retention = DEFAULT_RETENTION if expire is None else parse_duration(expire)
    if grace is not None:
        grace_s = parse_duration(grace)  # an explicit grace period holds, with --expire now too
    elif expire is not None and expire.strip().lower() == "now":
        grace_s = 0.0  # CLI.md: --expire now ignores the grace period too; 0 or 0s does not
    else:
        grace_s = DEFAULT_GRACE
    with repo.lock(exclusive=True):
        before = repo.db.file_size()
        res = _collect_locked(repo, dry_run=dry_run, retention=retention, grace=grace_s,
                              now=time.time() if now is None else now)
        res.db_bytes_before = before
        if not dry_run:
            _remove_compact_leftovers(repo, res)
        if compact and dry_run:
            res.compact_skipped = "dry run"
        elif compact:
            done = repo.db.compact(repo.blobs.tmp)
            res.compacted, res.compact_skipped = done.compacted, done.skipped
        res.db_bytes_after = repo.db.file_size()
        return res


def _collect_locked(repo: Repository, *, dry_run: bool, retention: float, grace: float, now: float) -> GcResult:
    res = GcResult(dry_run=dry_run, retention_seconds=retention, grace_seconds=grace)
    issues: list[Issue] = []

    # -- mark --------------------------------------------------------------------------
    roots = read_roots(repo, retention=retention, now=now)
    # A registry/ref inconsistency that does not hide a root (a head without registry entry)
    # is still damage: refuse, as for everything else.
    issues.extend(roots.issues)
    if issues:
        raise _fail_closed(issues)
    walk = Walk(repo, issues.append)
    for r in roots.roots:
        walk.add(r)
    walk.run()
    if issues:
        raise _fail_closed(issues)
    small_sizes: dict[bytes, int] = {}
    for rows in repo.db.iter_batches("blobs", batch=_SCAN_BATCH):
        for k, v in rows:
            small_sizes[k] = len(v)
    missing = _missing_blobs(repo, walk, small_sizes)
    if missing:
        raise _fail_closed(missing)
    live_objects = walk.objects
    live_blobs = walk.blobs
    # Derived path and folder indexes of live items roots stay when they are whole.
    index_rows = repo.db.scan("index")
    drop_index: list[bytes] = []
    for k, v in index_rows:
        parsed = parse_index_key(k)
        if parsed is None or len(v) != 32 or parsed[1] not in walk.items_roots:
            drop_index.append(k)
            continue
        got = walk.path_tree(v)
        if isinstance(got, str):
            drop_index.append(k)
        else:
            live_objects |= got[0]
    res.live_commits = walk.commits
    res.live_objects = len(live_objects)
    res.live_blobs = len(live_blobs)
    testhooks.point("gc_after_mark")

    # -- decide ------------------------------------------------------------------------
    seen = {k[len(SEEN_PREFIX):]: struct.unpack(">d", v)[0] if len(v) == 8 else now
            for k, v in repo.db.scan("meta", SEEN_PREFIX)}
    to_record: list[bytes] = []
    keep_seen: set[bytes] = set()

    def due(tagged: bytes) -> bool:
        if grace <= 0:
            return True
        first = seen.get(tagged)
        if first is None:
            to_record.append(tagged)
            keep_seen.add(tagged)
            return False
        keep_seen.add(tagged)
        return now - first >= grace

    dead_objects: list[bytes] = []
    for rows in repo.db.iter_batches("objects", batch=_SCAN_BATCH):
        for k, v in rows:
            if k in live_objects:
                continue
            if due(b"o" + k):
                dead_objects.append(k)
                res.object_entries += 1
                res.bytes += len(v)
            else:
                res.kept_young += 1
    dead_small: list[bytes] = []
    for k, size in small_sizes.items():
        if k in live_blobs:
            continue
        if due(b"b" + k):
            dead_small.append(k)
            res.small_blobs += 1
            res.bytes += size
        else:
            res.kept_young += 1
    dead_files: list[str] = []
    dead_file_blobs: set[bytes] = set()
    for path, digest in repo.blobs.file_digests():
        if digest is None or digest in live_blobs:
            continue  # stray names are never ours to delete; fsck notes them
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if now - st.st_mtime >= grace:
            dead_files.append(path)
            dead_file_blobs.add(digest)
            res.blob_files += 1
            res.bytes += st.st_size
        else:
            res.kept_young += 1
    dead_tmp = _old_tmp_files(repo, now, grace, res)
    dead_reflog = [k for k, ids in roots.expired_reflog if not all(i in live_objects for i in ids)]
    res.reflog_entries = len(dead_reflog)
    res.derived_entries = len(drop_index)
    gone_blobs = set(dead_small) | {d for d in dead_file_blobs if d not in small_sizes}
    dead_stat = _stale_stat_cache(repo, gone_blobs)
    res.derived_entries += len(dead_stat)
    res.objects = res.object_entries + res.small_blobs + res.blob_files
    if dry_run:
        return res

    # -- sweep -------------------------------------------------------------------------
    stale_seen = [k for k in seen if k not in keep_seen]

    def first_txn(t: WriteTxn) -> None:
        for k in dead_reflog:
            t.delete("reflog", k)
        for k in drop_index:
            t.delete("index", k)
        stamp = struct.pack(">d", now)
        for tagged in to_record:
            t.put("meta", SEEN_PREFIX + tagged, stamp)
        for tagged in stale_seen:
            t.delete("meta", SEEN_PREFIX + tagged)

    repo.db.write(first_txn)
    for db, keys, tag in (("objects", dead_objects, b"o"), ("blobs", dead_small, b"b")):
        for lo in range(0, len(keys), _DELETE_BATCH):
            chunk = keys[lo:lo + _DELETE_BATCH]

            def sweep(t: WriteTxn, db: str = db, chunk: list[bytes] = chunk, tag: bytes = tag) -> None:
                for k in chunk:
                    t.delete(db, k)
                    t.delete("meta", SEEN_PREFIX + tag + k)

            repo.db.write(sweep)
            testhooks.point("gc_mid_sweep")
    if dead_stat:
        def drop_stat(t: WriteTxn) -> None:
            for k in dead_stat:
                t.delete("stat_cache", k)

        repo.db.write(drop_stat)
    dirs: set[str] = set()
    for path in dead_files:
        _unlink(path)
        dirs.add(os.path.dirname(path))
        testhooks.point("gc_mid_sweep")
    for d in sorted(dirs):
        try:
            os.rmdir(d)  # empty fan-out directories only; fails harmlessly otherwise
        except OSError:
            _fsync_dir(d)
    if dirs:
        _fsync_dir(repo.blobs.root)
    for path in dead_tmp:
        _unlink(path)
    return res


def _missing_blobs(repo: Repository, walk: Walk, small: dict[bytes, int]) -> list[Issue]:
    """Live blobs that are absent: gc refuses to run on a store that already lost data."""
    out = []
    for b, (size, _) in walk.blobs.items():
        if size is None:
            continue  # named by an in-progress operation, which may not have written it yet
        if b not in small and not os.path.exists(repo.blobs.path_for(b)):
            out.append(Issue("blob-missing", b.hex(), f"blob of {walk.blobs[b][1]} is missing"))
    return out


def _old_tmp_files(repo: Repository, now: float, grace: float, res: GcResult) -> list[str]:
    out: list[str] = []
    try:
        names = os.listdir(repo.blobs.tmp)
    except FileNotFoundError:
        return out
    for name in names:
        p = os.path.join(repo.blobs.tmp, name)
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            continue
        if os.path.isdir(p):
            continue
        if now - st.st_mtime >= grace:
            out.append(p)
            res.tmp_files += 1
            res.bytes += st.st_size
    return out


def _remove_compact_leftovers(repo: Repository, res: GcResult) -> None:
    """Remove ``tmp/compact-*`` work directories of killed compactions.

    Only called under the exclusive store lock, which every compaction holds: none of them
    can belong to a compaction that is still running.
    """
    try:
        names = os.listdir(repo.blobs.tmp)
    except FileNotFoundError:
        return
    removed = False
    for name in names:
        p = os.path.join(repo.blobs.tmp, name)
        if not name.startswith(COMPACT_PREFIX) or not os.path.isdir(p) or os.path.islink(p):
            continue
        for dirpath, _, files in os.walk(p):
            for f in files:
                try:
                    res.bytes += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        shutil.rmtree(p, ignore_errors=True)
        res.tmp_files += 1
        removed = True
    if removed:
        _fsync_dir(repo.blobs.tmp)


def _stale_stat_cache(repo: Repository, gone: set[bytes]) -> list[bytes]:
    """Stat-cache keys naming a blob this gc deletes (or that do not decode)."""
    if not gone:
        return []
    out = []
    for rows in repo.db.iter_batches("stat_cache"):
        for k, v in rows:
            try:
                rec = codec.decode(v)
            except CorruptionError:
                out.append(k)
                continue
            if isinstance(rec, list) and len(rec) > 5 and rec[5] in gone:
                out.append(k)
    return out


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
