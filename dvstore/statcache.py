"""The stat cache: what lets an unchanged file skip being read (``dvs add``, working folders).

LMDB ``stat_cache`` (derived data): key (the file's real path, or a working folder's path)
-> ``[size, mtime_ns, inode, ctime_ns, verified_ns, blob, mimetype, system]``. An entry is
trusted only when the file's mtime is older than ``verified_ns - RACY_NS``: a file changed
after it was hashed then has a newer mtime even on a coarse filesystem clock (git's "racily
clean" rule).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from dvstore import codec
from dvstore.errors import CorruptObjectError
from dvstore.repo import Repository

RACY_NS = 20_000_000


_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def cache_key(path: str) -> bytes:
    """Key of a local path given absolute (``ingest.walk``'s; realpath would cost a syscall
    per component): ``os.fsencode(path)``, without its per-call checks (once per file)."""
    return path.encode(_FS_ENCODING, _FS_ERRORS)


def lookup_stat(repo: Repository, keys: list[bytes], *, require_blob: bool = True) -> dict[bytes, list[Any]]:
    """Read stat-cache entries for many paths in one transaction.

    With ``require_blob``, entries whose blob is no longer in the store (collected by gc) are
    left out; a working folder's status compares hashes only and does not need the blob.
    """
    def fn(t: Any) -> dict[bytes, list[Any]]:
        out = {}
        for k in keys:
            v = t.get("stat_cache", k)
            if v is not None:
                try:
                    rec = codec.decode(v)
                except CorruptObjectError:
                    continue
                if isinstance(rec, list) and len(rec) == 8 and type(rec[5]) is bytes:
                    if (not require_blob or t.exists("blobs", rec[5])
                            or os.path.exists(repo.blobs.path_for(rec[5]))):
                        out[k] = rec
        return out
    return repo.db.read(fn)


def cache_hit(rec: list[Any] | None, st: os.stat_result) -> bool:
    """Is ``rec`` a trusted entry for a file whose stat is ``st``?"""
    if rec is None:
        return False
    size, mtime, ino, ctime, verified = rec[:5]
    return bool(size == st.st_size and mtime == st.st_mtime_ns and ino == st.st_ino and ctime == st.st_ctime_ns
            and st.st_mtime_ns < verified - RACY_NS)


def stat_entry(st: os.stat_result, verified_ns: int, blob: bytes, mimetype: str, system: dict[str, Any]) -> bytes:
    """The entry of a file whose stat was ``st`` and whose bytes, hashed by ``verified_ns``,
    are ``blob``."""
    return codec.encode_canonical([st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, verified_ns, blob,
                                   mimetype, codec.canonical(system) if system else {}])
