"""fsck: verify a store, read-only, and the one recovery path (``--rebuild``).

What is checked (finding kinds in docs/reliability.md): every object's hash, type, encoding
and schema; that every ref, registry record, reflog entry and op record parses; that every
reference resolves (refs -> commits -> parents, recipe, layer roots -> tree nodes ->
annotation sets and blobs); every live blob's presence and size, and with ``read_data``
every blob's hash; the derived path indexes of live items roots. Unreferenced data, temp
files, stray files under ``blobs/`` and stale LMDB reader slots are *notes*, never findings.

Why a child process: LMDB has no checksums and a damaged ``data.mdb`` can make a reader die
by SIGBUS/SIGSEGV/SIGABRT rather than raise (RELIABILITY §5.14 measured both). So every LMDB
read of fsck runs in a child (``python -c … child_main``); the parent never opens the
environment, and a child killed by a signal or failing inside ``lmdb`` becomes an
``index-corrupt`` finding with the recovery hint, never a crash and never a silent OK.

Read-only: the check opens the environment (which writes only ``db/lock.mdb``, LMDB's reader
table) and holds the store lock *shared* when the lock file exists, so gc cannot delete
objects under it; it does not create the lock file, so the store tree is byte-identical
afterwards, ``lock.mdb`` aside.

``rebuild`` (exclusive lock): if the check finds ``index-corrupt``, ``data.mdb`` is first
copied to ``.dvs/db.corrupt-<time>/`` and every record still readable from the copy is
streamed out by reader children (restarting past a region that kills them), verified
(objects and blobs must hash to their key; refs, registry, reflog and op records must parse)
and re-put into a fresh environment, whose ``data.mdb`` then replaces the damaged one with
one atomic rename. Derived data (path index, stat cache) is then rebuilt from the objects,
and a final check reports what is still missing: that is what was lost. Last, every blob
copy that check names (``blob-hash``, ``blob-size``) and whose bytes do not match its name is
moved to ``quarantine/`` (``BlobStore.quarantine``): blobs are write-once, so only a missing
blob can be stored again by adding its original file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import IO, Any

from dvstore import codec, tree
from dvstore.errors import CorruptionError, CorruptObjectError, DvsError, LockedError
from dvstore.hashing import CHUNK, hash_bytes, is_hex_digest, new_hasher
from dvstore.locks import store_lock
from dvstore.maintenance import Issue, Walk, read_roots, verify_object
from dvstore.repo import Repository, build_folder_index, parse_index_key, path_key
from dvstore.storage.blobs import QUARANTINE, fsync_dir
from dvstore.storage.objects import MemoryObjectStore

INDEX_CORRUPT = "index-corrupt"
REBUILD_HINT = "run 'dvs fsck --rebuild' (stop other dvs processes first); see docs/reliability.md"
_EXAMPLES = 10
SALVAGE_DBS = ("objects", "blobs", "refs", "datasets", "reflog", "ops", "meta")
"""Databases copied by a salvage; ``index`` and ``stat_cache`` are derived and rebuilt."""
_CURSOR_DBS = ("refs", "datasets", "reflog", "ops", "meta")
"""Salvaged through LMDB cursors (their current values matter); objects and blobs are
salvaged by scanning pages, which also reaches leaves under a damaged branch page."""
_MAX_RESTARTS = 32
_FRAME = struct.Struct(">BII")
_CHILD = "import sys; from dvstore.fsck import child_main; sys.exit(child_main(sys.argv[1:]))"


@dataclass
class FsckReport:
    """Findings (damage: exit 6), notes (garbage, temp files: exit 0) and counts."""

    findings: list[Issue] = field(default_factory=list)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)
    rebuilt: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return not self.findings

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def note(self, kind: str, subject: str, message: str = "") -> None:
        n = self.notes.setdefault(kind, {"kind": kind, "count": 0, "examples": []})
        n["count"] += 1
        if len(n["examples"]) < _EXAMPLES:
            n["examples"].append(f"{subject}: {message}" if message else subject)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "findings": [f.to_json() for f in self.findings],
                "notes": sorted(self.notes.values(), key=lambda n: n["kind"]), "stats": self.stats,
                "rebuilt": self.rebuilt}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> FsckReport:
        return cls(findings=[Issue(f["kind"], f["subject"], f["message"]) for f in doc["findings"]],
                   notes={n["kind"]: n for n in doc["notes"]}, stats=dict(doc["stats"]),
                   rebuilt=doc.get("rebuilt"))


# -- the check (runs in the child) -----------------------------------------------------


def _is_lmdb_failure(e: BaseException) -> bool:
    # lmdb's own exceptions escape where db.py does not wrap them (opening named databases);
    # MemoryError/OverflowError come from garbage lengths read off damaged pages.
    return type(e).__module__.split(".")[0] == "lmdb" or isinstance(e, (MemoryError, OverflowError, SystemError))


def check(dvs_dir: str, *, read_data: bool = False) -> FsckReport:
    """Run the whole check in this process (the child's job; tests call it directly).

    Database-level failures become an ``index-corrupt`` finding; a signal death cannot be
    caught here, which is why ``fsck`` runs this in a child.
    """
    rep = FsckReport()
    repo = Repository(dvs_dir)
    try:
        _check(repo, rep, read_data)
    except CorruptObjectError:
        raise  # every object-level problem is caught per object below: this is a bug
    except CorruptionError as e:
        rep.findings.append(Issue(INDEX_CORRUPT, "db/data.mdb", f"{e} -- {REBUILD_HINT}"))
    except Exception as e:
        if not _is_lmdb_failure(e):
            raise
        rep.findings.append(Issue(INDEX_CORRUPT, "db/data.mdb", f"{type(e).__name__}: {e} -- {REBUILD_HINT}"))
    return rep


def _check(repo: Repository, rep: FsckReport, read_data: bool) -> None:
    stale = repo.db.reader_check()
    if stale:
        rep.note("stale-reader", "db/lock.mdb", f"{stale} reader slots of dead processes cleared")
    fmt = repo.db.get("meta", b"format")
    if fmt is not None and fmt != str(repo.config["format"]).encode():
        rep.findings.append(Issue("meta-format", "meta", f"database format {fmt!r} differs from config.json"))
    roots = read_roots(repo, retention=None)
    rep.findings.extend(roots.issues)
    walk = Walk(repo, rep.findings.append)
    for r in roots.roots:
        walk.add(r)
    walk.run()
    for k, rec in roots.ops:
        pid = rec.get("pid")
        if not (isinstance(pid, int) and pid > 0 and os.path.exists(f"/proc/{pid}")):
            rep.note("op-stale", k.decode("utf-8", "replace"), f"recorded by pid {pid}, which is gone")
    live = set(walk.objects)
    reported = {f.subject for f in rep.findings}
    _check_index(repo, rep, walk, live)
    _check_stat_cache(repo, rep)
    n_obj = n_bytes = 0
    for rows in repo.db.iter_batches("objects", batch=512):
        for k, v in rows:
            n_obj += 1
            n_bytes += len(v)
            if k in live or k.hex() in reported:
                continue
            if len(k) != 32:
                rep.findings.append(Issue("object-hash", k.hex(), "object key is not a 32-byte id"))
                continue
            got = verify_object(k, v)
            if isinstance(got, Issue):
                rep.findings.append(got)
            else:
                rep.note("unreferenced-object", k.hex(), got[0].decode())
    small = _check_small_blobs(repo, rep, walk, read_data)
    files = _check_blob_files(repo, rep, walk, small, read_data)
    for b, (size, referrer) in walk.blobs.items():
        if b in small:
            actual: int | None = small[b]
        elif b in files:
            actual = files[b]
        else:
            if size is not None:
                rep.findings.append(Issue("blob-missing", b.hex(), f"blob of {referrer} is missing"))
            continue
        if size is not None and actual != size:
            rep.findings.append(Issue("blob-size", b.hex(),
                                      f"blob of {referrer} has {actual} bytes, its item says {size}"))
    _check_dirs(repo, rep)
    rep.stats.update({
        "datasets": len(roots.datasets), "roots": len(roots.roots), "commits": walk.commits,
        "objects": n_obj, "object_bytes": n_bytes, "live_objects": len(live), "small_blobs": len(small),
        "blob_files": len(files), "live_blobs": len(walk.blobs),
    })


def _check_index(repo: Repository, rep: FsckReport, walk: Walk, live: set[bytes]) -> None:
    """Derived path and folder indexes: a broken one for a live items root is a finding
    (lookups use it). Each items root is read once for both of its indexes."""
    by_root: dict[bytes, list[tuple[bytes, bytes]]] = {}
    for k, v in repo.db.scan("index"):
        parsed = parse_index_key(k)
        if parsed is None or len(v) != 32:
            rep.findings.append(Issue("index-derived", repr(k[:40]), f"malformed derived index entry -- {REBUILD_HINT}"))
            continue
        by_root.setdefault(parsed[1], []).append((parsed[0], v))
    for iroot, rows in by_root.items():
        names: list[tuple[bytes, str]] | None = None
        for kind, v in rows:
            what = "path index" if kind == b"path:" else "folder index"
            if iroot not in walk.items_roots:
                rep.note("index-unreferenced", iroot.hex(), f"{what} of an items root no version uses (gc drops it)")
                continue
            got = walk.path_tree(v)
            if isinstance(got, str):
                rep.findings.append(Issue("index-derived", iroot.hex(), f"{what} is broken: {got} -- {REBUILD_HINT}"))
                continue
            nodes, entries = got
            try:
                if names is None:
                    names = [(iid, irec["filename"]) for iid, irec in tree.items(repo.objects, iroot)]
                expected = _expected_index(kind, names)
            except (DvsError, KeyError, TypeError, AttributeError):
                break  # the items tree itself is damaged: reported by the walk
            if entries != expected:
                rep.findings.append(Issue("index-derived", iroot.hex(),
                                          f"{what} does not match the items layer -- {REBUILD_HINT}"))
                continue
            live |= nodes


def _expected_index(kind: bytes, names: list[tuple[bytes, str]]) -> dict[bytes, Any]:
    """The entries a derived index of a version with these (item id, filename)s must hold."""
    if kind == b"path:":
        return {path_key(fn): [fn, iid] for iid, fn in names}
    scratch = MemoryObjectStore()
    return dict(tree.items(scratch, build_folder_index(scratch, [fn for _, fn in names])))


def _check_stat_cache(repo: Repository, rep: FsckReport) -> None:
    for rows in repo.db.iter_batches("stat_cache"):
        for k, v in rows:
            try:
                rec = codec.decode(v)
                ok = isinstance(rec, list) and len(rec) == 8 and type(rec[5]) is bytes
            except CorruptObjectError:
                ok = False
            if not ok:
                rep.note("stat-cache", os.fsdecode(k), "undecodable stat-cache entry (ignored by add)")


def _check_small_blobs(repo: Repository, rep: FsckReport, walk: Walk, read_data: bool) -> dict[bytes, int]:
    small: dict[bytes, int] = {}
    for rows in repo.db.iter_batches("blobs", batch=256):
        for k, v in rows:
            small[k] = len(v)
            if read_data and hash_bytes(v) != k:
                where = walk.blobs.get(k, (None, "no item"))[1]
                rep.findings.append(Issue("blob-hash", k.hex(), f"small blob of {where} does not match its hash"))
            elif k not in walk.blobs:
                rep.note("unreferenced-blob", k.hex(), f"small blob, {len(v)} bytes")
    return small


def _check_blob_files(repo: Repository, rep: FsckReport, walk: Walk, small: dict[bytes, int],
                      read_data: bool) -> dict[bytes, int]:
    files: dict[bytes, int] = {}
    for path, digest in repo.blobs.file_digests():
        rel = os.path.relpath(path, repo.dir)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if digest is None or not stat.S_ISREG(st.st_mode):
            rep.note("stray-file", rel, "not a blob name" if digest is None else "not a regular file")
            continue
        files[digest] = st.st_size
        if st.st_mode & 0o222:
            rep.note("blob-writable", rel, f"mode {stat.S_IMODE(st.st_mode):o}, expected 444")
        if digest in small:
            rep.note("blob-duplicate", rel, "also stored in the database (the database copy is read)")
        if read_data:
            try:
                actual = _hash_file(path)
            except OSError as e:
                rep.findings.append(Issue("blob-unreadable", digest.hex(), f"{rel}: {e.strerror or e}"))
                continue
            if actual != digest:
                where = walk.blobs.get(digest, (None, "no item"))[1]
                rep.findings.append(Issue("blob-hash", digest.hex(),
                                          f"{rel} (blob of {where}) does not match its name: content is {actual.hex()}"))
                continue
        if digest not in walk.blobs:
            rep.note("unreferenced-blob", rel, f"{st.st_size} bytes")
    return files


def _hash_file(path: str) -> bytes:
    with open(path, "rb") as f:
        h = new_hasher(os.fstat(f.fileno()).st_size)
        while True:
            chunk = f.read(CHUNK * 4)
            if not chunk:
                break
            h.update(chunk)
    return h.digest()


def _check_dirs(repo: Repository, rep: FsckReport) -> None:
    now = time.time()
    try:
        names = sorted(os.listdir(repo.blobs.tmp))
    except FileNotFoundError:
        names = []
    for name in names:
        p = os.path.join(repo.blobs.tmp, name)
        try:
            age = now - os.lstat(p).st_mtime
        except FileNotFoundError:
            continue
        rep.note("tmp-file", os.path.join("tmp", name), f"{age:.0f} s old (gc removes it after the grace period)")
    try:
        kept = sorted(os.listdir(os.path.join(repo.dir, QUARANTINE)))
    except FileNotFoundError:
        kept = []
    for name in kept:
        rep.note("quarantined", os.path.join(QUARANTINE, name),
                 "bytes of a blob that did not match its name, moved aside by 'fsck --rebuild'; delete when satisfied")
    for name in sorted(os.listdir(repo.dir)):
        if name.startswith("db.corrupt-"):
            rep.note("db-backup", name, "copy of a damaged database kept by 'fsck --rebuild'; delete it when satisfied")
        elif name.startswith("db.rebuild-"):
            rep.note("db-backup", name, "leftover of an interrupted 'fsck --rebuild'; safe to delete")


# -- repairs (run in a child) -------------------------------------------------------------


def quarantine_blobs(dvs_dir: str, blob_hexes: list[str]) -> list[dict[str, str]]:
    """Move aside the stored copies of these blobs whose bytes do not match their names
    (``BlobStore.quarantine``); the blobs are then missing until their files are added again."""
    repo = Repository(dvs_dir)
    moved: list[dict[str, str]] = []
    for h in blob_hexes:
        if is_hex_digest(h):
            moved.extend(repo.blobs.quarantine(bytes.fromhex(h)))
    return moved


# -- rebuilding derived data (runs in a child) ------------------------------------------


def rebuild_derived(dvs_dir: str) -> dict[str, int]:
    """Rebuild the path index of every head and drop stat-cache entries that are unusable."""
    repo = Repository(dvs_dir)
    stale = repo.db.reader_check()
    refs = repo.db.scan("refs", b"head:")
    new_index: dict[bytes, bytes] = {}
    failed = 0
    for _, cid in refs:
        try:
            items_root = repo.commit(cid).layers["items"] or tree.EMPTY
            if items_root in new_index:
                continue
            root = tree.build(repo.objects, ((path_key(v["filename"]), [v["filename"], k])
                                             for k, v in tree.items(repo.objects, items_root)))
        except (DvsError, KeyError, TypeError):
            failed += 1  # a head whose version is damaged: the final check reports it
            continue
        new_index[items_root] = root
    old_index = [k for k, _ in repo.db.scan("index")]
    bad_stat: list[bytes] = []
    for rows in repo.db.iter_batches("stat_cache"):
        for k, v in rows:
            try:
                rec = codec.decode(v)
                ok = isinstance(rec, list) and len(rec) == 8 and type(rec[5]) is bytes and repo.blobs.has(rec[5])
            except CorruptObjectError:
                ok = False
            if not ok:
                bad_stat.append(k)

    def txn(t: Any) -> None:
        for k in old_index:
            t.delete("index", k)
        repo.objects.write_pending(t)
        for iroot, proot in new_index.items():
            t.put("index", b"path:" + iroot, proot)
        for k in bad_stat:
            t.delete("stat_cache", k)

    repo.db.write(txn)
    repo.objects.committed()
    return {"path_indexes": len(new_index), "index_entries_dropped": len(old_index),
            "stat_cache_dropped": len(bad_stat), "heads_unreadable": failed, "stale_readers": stale}


# -- salvage of a damaged data.mdb --------------------------------------------------------


def _salvage_read(env_dir: str, db: str, start: bytes, after: bool, out: IO[bytes]) -> None:
    """Child: stream (key, value) frames of ``db`` from ``start`` until the end (or death)."""
    from dvstore.storage.db import Database

    d = Database(env_dir)
    while True:
        rows = d.read(lambda t, s=start: list(t.scan_from(db, s, b"", 17)))  # type: ignore[misc]
        if after and rows and rows[0][0] == start:
            rows = rows[1:]
        if not rows:
            return
        for k, v in rows:
            out.write(_FRAME.pack(0, len(k), len(v)) + k + v)
        out.flush()  # what is flushed survives a crash on the next page
        start, after = rows[-1][0], True


def _salvage_write(fresh_dir: str, frames_path: str) -> dict[str, Any]:
    """Child: verify salvaged records and put them into a fresh environment."""
    from dvstore.storage.db import Database

    d = Database(fresh_dir)
    kept = dict.fromkeys(SALVAGE_DBS, 0)
    rejected = dict.fromkeys(SALVAGE_DBS, 0)
    batch: list[tuple[str, bytes, bytes]] = []

    def flush() -> None:
        rows = list(batch)

        def txn(t: Any) -> None:
            for db, k, v in rows:
                t.put(db, k, v)

        d.write(txn)
        batch.clear()

    for db, k, v in _read_frames(frames_path):
        if _salvageable(db, k, v):
            batch.append((db, k, v))
            kept[db] += 1
            if len(batch) >= 1000:
                flush()
        else:
            rejected[db] += 1
    if batch:
        flush()
    return {"kept": kept, "rejected": rejected}


def _salvageable(db: str, k: bytes, v: bytes) -> bool:
    if db == "objects":
        return len(k) == 32 and not isinstance(verify_object(k, v), Issue)
    if db == "blobs":
        return len(k) == 32 and hash_bytes(v) == k
    if db == "refs":
        return len(v) == 32 and ((k.startswith(b"head:") and len(k) == 21)
                                 or (k.startswith(b"tag:") and len(k) > 21 and k[20:21] == b":"))
    try:
        if db == "datasets":
            rec = Repository._decode_ds(v)
            return rec.name.encode() == k and len(rec.id) == 16
        if db in ("reflog", "ops"):
            return isinstance(codec.decode(v), dict) and (db != "reflog" or len(k) == 24)
    except CorruptObjectError:
        return False
    if db == "meta":
        return k == b"format" or (k.startswith(b"gc-seen:") and len(v) == 8)
    return False


def _read_frames(path: str) -> Iterator[tuple[str, bytes, bytes]]:
    with open(path, "rb") as f:
        while True:
            head = f.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return
            i, kl, vl = _FRAME.unpack(head)
            k = f.read(kl)
            v = f.read(vl)
            if len(k) < kl or len(v) < vl:
                return
            yield SALVAGE_DBS[i], k, v


def _salvage_db(env_dir: str, db: str, index: int, out: IO[bytes]) -> dict[str, Any]:
    """Parent: read one database through reader children, skipping what kills them."""
    start, after = b"", False
    got = restarts = 0
    skipped: list[str] = []
    no_progress = 0
    while restarts <= _MAX_RESTARTS:
        p = subprocess.Popen([sys.executable, "-c", _CHILD, "salvage-read", env_dir, db, start.hex(),
                              "1" if after else "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             env=_child_env())
        assert p.stdout is not None
        last: bytes | None = None
        buf = b""
        while True:
            chunk = p.stdout.read(1 << 16)
            if not chunk:
                break
            buf += chunk
            pos = 0
            while len(buf) - pos >= _FRAME.size:
                _, kl, vl = _FRAME.unpack_from(buf, pos)
                end = pos + _FRAME.size + kl + vl
                if end > len(buf):
                    break
                k = buf[pos + _FRAME.size:pos + _FRAME.size + kl]
                out.write(_FRAME.pack(index, kl, vl) + buf[pos + _FRAME.size:end])
                last = k
                got += 1
                pos = end
            buf = buf[pos:]
        rc = p.wait()
        if rc == 0:
            break
        restarts += 1
        if last is not None:
            start, after, no_progress = last, True, 0
            continue
        # No progress from ``start``: skip a widening slice of the key space past it.
        no_progress += 1
        nxt = _skip(start, no_progress)
        skipped.append(f"{start.hex() or '(start)'}..{nxt.hex() if nxt else '(end)'}")
        if nxt is None:
            break
        start, after = nxt, False
    return {"records": got, "restarts": restarts, "skipped_ranges": skipped}


# LMDB's on-disk page format (lmdb/mdb.c), read without LMDB: a 16-byte page header
# (pgno u64, pad u16, flags u16, lower u16, upper u16), then u16 node offsets; a leaf node is
# (size lo u16, size hi u16, flags u16, key size u16, key, data); F_BIGDATA data is the u64
# number of the first overflow page, whose contents start after its own 16-byte header.
_P_LEAF, _P_META, _F_BIGDATA, _PAGEHDR = 0x02, 0x08, 0x01, 16
_MAGIC = 0xBEEFC0DE


def _raw_scan(path: str, out: IO[bytes]) -> dict[str, int]:
    """Write every (key, value) of every leaf page whose value hashes to its 32-byte key.

    A content-addressed record is trustworthy wherever it is found: a stale copy in a freed
    page is the same bytes, and anything damaged fails the hash. So this reaches every
    surviving object and small blob, even under a damaged branch page, without LMDB.
    """
    counts = {"pages": 0, "leaf_pages": 0, "objects": 0, "blobs": 0, "bad": 0}
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        meta = f.read(64)
        psize = 4096
        if len(meta) >= 44 and struct.unpack_from("<I", meta, 16)[0] == _MAGIC:
            psize = struct.unpack_from("<I", meta, 40)[0] or 4096
        if psize < 512 or psize > 65536 or psize & (psize - 1):
            psize = 4096
        counts["pages"] = size // psize
        seen: set[bytes] = set()
        for pg in range(2, size // psize):
            f.seek(pg * psize)
            page = f.read(psize)
            if len(page) < psize:
                break
            pgno, _, flags, lower, upper = struct.unpack_from("<QHHHH", page)
            if pgno != pg or not flags & _P_LEAF or flags & _P_META or not _PAGEHDR <= lower <= upper <= psize:
                continue
            counts["leaf_pages"] += 1
            for i in range((lower - _PAGEHDR) // 2):
                off = struct.unpack_from("<H", page, _PAGEHDR + 2 * i)[0]
                if off + 8 > psize:
                    continue
                lo, hi, nflags, ksize = struct.unpack_from("<HHHH", page, off)
                dsize = lo | (hi << 16)
                kstart = off + 8
                if ksize != 32 or kstart + ksize > psize:
                    continue
                key = page[kstart:kstart + ksize]
                if key in seen:
                    continue
                if nflags & _F_BIGDATA:
                    if kstart + ksize + 8 > psize:
                        continue
                    ov = struct.unpack_from("<Q", page, kstart + ksize)[0]
                    if ov < 2 or ov * psize + _PAGEHDR + dsize > size:
                        continue
                    f.seek(ov * psize + _PAGEHDR)
                    value = f.read(dsize)
                else:
                    value = page[kstart + ksize:kstart + ksize + dsize]
                if len(value) != dsize or hash_bytes(value) != key:
                    counts["bad"] += 1
                    continue
                seen.add(key)
                db = 0 if not isinstance(verify_object(key, value), Issue) else 1
                counts[SALVAGE_DBS[db]] += 1
                out.write(_FRAME.pack(db, 32, len(value)) + key + value)
    return counts


def _skip(key: bytes, attempt: int) -> bytes | None:
    """The first key after the slice sharing ``key``'s prefix; the prefix shortens per attempt."""
    n = max(1, 4 - attempt + 1)
    prefix = bytearray((key + b"\0" * n)[:n])
    for i in reversed(range(n)):
        if prefix[i] < 255:
            prefix[i] += 1
            return bytes(prefix[:i + 1])
    return None


@contextmanager
def _env_to_ourselves(db_dir: str) -> Iterator[bool]:
    """Hold LMDB's lock-file byte exclusively while the block runs; yields False (holding
    nothing) when another process has the environment open.

    Every process with the environment open holds that byte shared, and an opener waits
    while someone holds it exclusive, so nobody can open the database inside the block.
    An open-file-description lock is used because closing a descriptor would drop this
    process's own classic POSIX locks on the file.
    """
    lock = os.path.join(db_dir, "lock.mdb")
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        yield True
        return
    try:
        flk = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 1, 0)
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flk)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def _others_have_env_open(db_dir: str) -> bool:
    """True when another process has the environment open (a probe; nothing is held after)."""
    with _env_to_ourselves(db_dir) as alone:
        return not alone


def _salvage(dvs_dir: str) -> dict[str, Any]:
    db_dir = os.path.join(dvs_dir, "db")
    if _others_have_env_open(db_dir):
        raise LockedError("another process has the store database open",
                          hint="stop every dvs process using this store, then run 'dvs fsck --rebuild' again")
    stamp = time.strftime("%Y%m%dT%H%M%S")
    backup = os.path.join(dvs_dir, f"db.corrupt-{stamp}")
    fresh = os.path.join(dvs_dir, f"db.rebuild-{stamp}")
    frames = os.path.join(dvs_dir, "tmp", f"salvage-{stamp}.frames")
    os.makedirs(backup, mode=0o700)
    # Read from a copy: opening the damaged environment may write to it, and the copy is
    # also what the user keeps if the salvage misses something.
    shutil.copyfile(os.path.join(db_dir, "data.mdb"), os.path.join(backup, "data.mdb"))
    summary: dict[str, Any] = {"backup": os.path.basename(backup), "databases": {}}
    with open(frames, "wb") as out:
        summary["pages"] = _raw_scan(os.path.join(backup, "data.mdb"), out)
        for name in _CURSOR_DBS:
            summary["databases"][name] = _salvage_db(backup, name, SALVAGE_DBS.index(name), out)
    res = _run_child(["salvage-write", fresh, frames])
    summary["kept"], summary["rejected"] = res["kept"], res["rejected"]
    with _env_to_ourselves(db_dir) as alone:
        if not alone:
            raise LockedError("another process opened the store database during the rebuild",
                              hint="stop every dvs process using this store, then run 'dvs fsck --rebuild' again")
        # Nobody can open the environment until the block ends. The lock file describes the
        # damaged data.mdb (its last transaction id, its readers): emptied, it makes the next
        # opener re-initialise it from the new file (``db._open_env`` retries an opener that
        # was waiting meanwhile). Then one rename replaces the damaged file atomically.
        if os.path.exists(os.path.join(db_dir, "lock.mdb")):
            os.truncate(os.path.join(db_dir, "lock.mdb"), 0)
        os.rename(os.path.join(fresh, "data.mdb"), os.path.join(db_dir, "data.mdb"))
        fsync_dir(db_dir)
    shutil.rmtree(fresh, ignore_errors=True)
    os.unlink(frames)
    try:
        os.unlink(os.path.join(backup, "lock.mdb"))
    except FileNotFoundError:
        pass
    return summary


# -- orchestration (the parent) ------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_child(args: list[str], stdin: str = "") -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, env=_child_env(),
                       input=stdin.encode())
    if p.returncode != 0:
        last = (p.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
        what = f"killed by {_signame(-p.returncode)}" if p.returncode < 0 else f"exit {p.returncode}: {last}"
        raise CorruptionError(f"fsck {args[0]} failed ({what})", hint=REBUILD_HINT)
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def _signame(n: int) -> str:
    try:
        return signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def _check_in_child(dvs_dir: str, read_data: bool) -> FsckReport:
    p = subprocess.run([sys.executable, "-c", _CHILD, "check", dvs_dir, "1" if read_data else "0"],
                       capture_output=True, env=_child_env())
    if p.returncode < 0:
        rep = FsckReport()
        rep.findings.append(Issue(INDEX_CORRUPT, "db/data.mdb",
                                  f"reading the database killed the checker with {_signame(-p.returncode)} "
                                  f"-- {REBUILD_HINT}"))
        return rep
    if p.returncode != 0:
        last = (p.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
        raise CorruptionError(f"fsck could not complete: {last}", hint="run again with DVS_DEBUG=1 and report it")
    return FsckReport.from_json(json.loads(p.stdout))


@contextmanager
def _shared_lock_if_present(repo: Repository) -> Iterator[None]:
    # Creating the lock file would change the store tree; a store that has none has never
    # had a writer or gc, so there is nothing to exclude.
    ctx = repo.lock(exclusive=False) if os.path.exists(repo.lock_path) else nullcontext()
    with ctx:
        yield


def fsck(dvs_dir: str, *, read_data: bool = False, rebuild: bool = False) -> FsckReport:
    """Check the store at ``dvs_dir`` in a child process; with ``rebuild``, repair first."""
    repo = Repository(dvs_dir)  # reads config.json only; never opens the database here
    if not rebuild:
        with _shared_lock_if_present(repo):
            return _check_in_child(repo.dir, read_data)
    with store_lock(repo.lock_path, exclusive=True):
        first = _check_in_child(repo.dir, False)
        rebuilt: dict[str, Any] = {"findings_before": len(first.findings)}
        if INDEX_CORRUPT in first.kinds():
            rebuilt["salvage"] = _salvage(repo.dir)
        rebuilt["derived"] = _run_child(["rebuild-derived", repo.dir])
        final = _check_in_child(repo.dir, read_data)
        # A blob's bytes that do not match its name are moved aside, so that adding the
        # original file again can store it (blobs are write-once: never overwritten).
        bad = sorted({f.subject for f in final.findings if f.kind in ("blob-hash", "blob-size")})
        if bad:
            rebuilt["quarantined"] = _run_child(["quarantine", repo.dir], stdin="\n".join(bad))["moved"]
            if rebuilt["quarantined"]:
                final = _check_in_child(repo.dir, read_data)
        final.rebuilt = rebuilt
        return final


def child_main(argv: list[str]) -> int:
    """Entry point of the fsck child processes (see ``_CHILD``)."""
    mode = argv[0]
    if mode == "check":
        rep = check(argv[1], read_data=argv[2] == "1")
        sys.stdout.write(json.dumps(rep.to_json()))
        return 0
    if mode == "rebuild-derived":
        sys.stdout.write(json.dumps(rebuild_derived(argv[1])))
        return 0
    if mode == "quarantine":
        sys.stdout.write(json.dumps({"moved": quarantine_blobs(argv[1], sys.stdin.read().split())}))
        return 0
    if mode == "salvage-read":
        _salvage_read(argv[1], argv[2], bytes.fromhex(argv[3]), argv[4] == "1", sys.stdout.buffer)
        return 0
    if mode == "salvage-write":
        sys.stdout.write(json.dumps(_salvage_write(argv[1], argv[2])))
        return 0
    raise SystemExit(f"unknown fsck child mode {mode!r}")
