"""Pending changes that outgrow memory: an editor's change dicts move to a scratch table.

An edit of a million items must not hold a million records in Python. ``Spill`` takes a
change dict that reached ``LIMIT`` entries, writes it to a ``Scratch`` table under the dict's
name and empties it. Lookups fall back to the table, and ``merged`` yields the union in key
order (on equal keys the dict wins: it holds the later change), which is the stream
``tree.apply_sorted`` builds the version from.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from dvstore import codec, testhooks
from dvstore.storage.db import Scratch
from dvstore.tree import DELETE

LIMIT = int(os.environ.get("DVS_SPILL_LIMIT", "32768"))
"""Entries a change dict may hold before it moves to disk (an item record costs ~700 bytes
in Python, so about 25 MiB per dict). The variable is for tests and tuning."""

MISSING: Any = object()
_DELETED = b"\0"
_VALUE = b"\1"


def _encode(v: Any) -> bytes:
    return _DELETED if v is DELETE else _VALUE + codec.encode_canonical(v)


def _decode(raw: bytes) -> Any:
    return DELETE if raw == _DELETED else codec.decode_own(raw[1:])


class Spill:
    """Change dicts (bytes key -> canonical value or ``DELETE``) with room on disk."""

    def __init__(self, tmpdir: str, limit: int | None = None) -> None:
        self.limit = LIMIT if limit is None else limit
        self._scratch = Scratch(tmpdir)
        self._on_disk: set[bytes] = set()

    def check(self, name: bytes, d: dict[bytes, Any]) -> None:
        """Move ``d`` to disk if it has grown to the limit."""
        if len(d) >= self.limit:
            self._scratch.put_many([(name + k, _encode(v)) for k, v in sorted(d.items())])
            d.clear()
            self._on_disk.add(name)
            testhooks.point("spill")

    def any(self, name: bytes, d: dict[bytes, Any]) -> bool:
        """Does ``name`` hold any change, in memory or on disk?"""
        return bool(d) or name in self._on_disk

    def get(self, name: bytes, d: dict[bytes, Any], key: bytes) -> Any:
        """The change to ``key`` (``MISSING`` if none)."""
        v = d.get(key, MISSING)
        if v is MISSING and name in self._on_disk:
            raw = self._scratch.get(name + key)
            if raw is not None:
                return _decode(raw)
        return v

    def merged(self, name: bytes, d: dict[bytes, Any]) -> Iterable[tuple[bytes, Any]]:
        """Every change of ``name`` in key order: a list when they are all in memory."""
        mem = sorted(d.items())
        if name not in self._on_disk:
            return mem
        return self._merged(name, mem)

    def _merged(self, name: bytes, mem: list[tuple[bytes, Any]]) -> Iterator[tuple[bytes, Any]]:
        n = len(name)
        disk = ((k[n:], v) for k, v in self._scratch.scan(name))
        i = 0
        for k, raw in disk:
            while i < len(mem) and mem[i][0] < k:
                yield mem[i]
                i += 1
            if i < len(mem) and mem[i][0] == k:
                continue  # changed again since it went to disk
            yield k, _decode(raw)
        yield from mem[i:]

    def close(self) -> None:
        self._scratch.close()
