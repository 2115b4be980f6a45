"""A big COCO file's images and annotations, moved to a scratch table while it is read.

``coco.load_coco`` holds every image and every encoded annotation until the file is read
(categories may come last, and an item's annotations anywhere). Past ``LIMIT`` of them,
``CocoSpill`` takes them into a ``Scratch`` table in the store's ``tmp/`` (and again every
``FLUSH`` more), so that memory stops growing with the file; ``entries`` then walks them
back in item-name order, the order ``dvs add`` records files in. Below the limit nothing
changes: the reader keeps them in memory as before.

Rows (``d(x)`` is the first 16 bytes of the blake3 of ``x``'s canonical encoding, so keys
have a fixed length, and a prefix scan of ``a`` + ``d(image id)`` is exact):

* ``i`` + d(image id) -> ``b""``: the image ids seen (duplicates, references);
* ``f`` + d(file_name) -> ``b""``: the file_names seen (duplicates);
* ``n`` + item name -> ``[d(image id), image index]``: the images by item name. LMDB keys
  are at most 511 bytes: a longer name is keyed by its first ``_NAME_KEY`` bytes and its
  digest, and the few names that share those bytes are sorted by ``entries``;
* ``a`` + d(image id) + 8-byte sequence -> ``[[coco id, category id, head, rest], ...]``:
  the annotations of each image in file order, one row per image and move to disk (an
  ``EncodedAnnotation``'s body cut in two: its tail is ``coco.label_part(label) + rest``
  once the label is known);
* ``p`` + d(image id) -> ``b""``: image ids that annotations named before any image had
  them; ``bad_references`` checks them once the file is read.

The checks and their messages are the in-memory reader's (``coco._Builder``,
``coco_child._entries``), and so is which error is reported when there are several. It
must not keep anything per image in memory past ``FLUSH`` images and annotations, nor
leave its table behind: ``close`` deletes it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

from dvstore.codec import decode_own, encode_canonical
from dvstore.errors import ImportFormatError, InvalidNameError
from dvstore.hashing import hash_prefix
from dvstore.io.coco import _Builder, label_part
from dvstore.model import normalize_filename
from dvstore.storage.db import Scratch

LIMIT = int(os.environ.get("DVS_COCO_SPILL", "100000"))
"""Images plus annotations held in memory before they move to disk: about 40 MiB (an
encoded box annotation costs ~300 bytes, an image ~250). A 20,000-image file with 40,000
annotations stays in memory, as it did before there was a spill: reading from disk costs
time (a third more at 300,000 images). The variable is for tests and tuning."""
FLUSH = 16384
"""Once spilling, images plus annotations held before the next move to disk."""
_NAME_KEY = 400


def _digest(value: Any) -> bytes:
    return hash_prefix(encode_canonical(value), 16)


def _name_key(name: str) -> bytes:
    raw = name.encode()
    if len(raw) <= _NAME_KEY:
        return b"n" + raw
    return b"n" + raw[:_NAME_KEY] + hash_prefix(raw, 16)


class CocoSpill:
    """A ``coco.Spiller``: images and annotations of a COCO file read for items under
    ``prefix`` ("" or "/dir"), on disk in ``tmpdir``."""

    def __init__(self, tmpdir: str, prefix: str, path: str, limit: int | None = None) -> None:
        self.limit = LIMIT if limit is None else max(limit, 1)
        self.active = False
        self.prefix = prefix
        self.path = path
        self._scratch = Scratch(tmpdir)
        self._seq = 0
        self._categories: set[Any] = set()  # the category ids annotations named
        # The error ``coco_child._entries`` would report: it names items from the last
        # image back, so the clash or bad name at the highest image index.
        self._name_error: tuple[int, str] | None = None

    def _has(self, key: bytes) -> bool:
        return self._scratch.get(key) is not None

    def has_image(self, image_id: Any) -> bool:
        return self._has(b"i" + _digest(image_id))

    def has_file_name(self, name: str) -> bool:
        return self._has(b"f" + _digest(name))

    def _item(self, file_name: str) -> str:
        return normalize_filename(self.prefix + "/" + file_name.lstrip("/"))

    def _bad_name(self, index: int, message: str) -> None:
        if self._name_error is None or index > self._name_error[0]:
            self._name_error = (index, message)

    def take(self, b: _Builder) -> None:
        """Move ``b``'s images and annotations to disk (in one transaction) and empty them,
        but for the annotations of an image with a mask still being rendered (one that is
        ``pending``): those stay in ``b`` for a later take."""
        rows: dict[bytes, bytes] = {}

        def put() -> None:  # a transaction per FLUSH rows, not a copy of all b holds
            self._scratch.put_many(sorted(rows.items()))
            rows.clear()

        for image_id, file_name in b.file_of.items():
            index = b.images[file_name]
            d = _digest(image_id)
            rows[b"i" + d] = rows[b"f" + _digest(file_name)] = b""
            try:
                name = self._item(file_name)
            except InvalidNameError as e:
                self._bad_name(index, f"{self.path}: {e.message}")
                continue
            key = _name_key(name)
            held = rows.get(key)
            if held is None:
                held = self._scratch.get(key)
            if held is not None:  # file_names differing only in Unicode normalisation
                _, other, other_file = decode_own(held)
                self._bad_name(other, f"{self.path}: two images name the same item {name} (file_name {other_file!r})")
            rows[key] = encode_canonical([d, index, file_name])
            if len(rows) >= FLUSH:
                put()
        waiting: dict[Any, list[Any]] = {}  # the annotations of images with a mask in flight
        for image_id, anns in b.by_image.items():
            if any(a.pending for a in anns):
                waiting[image_id] = anns
                continue
            d = _digest(image_id)
            if image_id not in b.file_of and not self._has(b"i" + d):
                rows[b"p" + d] = encode_canonical(image_id)
            if anns:
                self._categories.update(a.label for a in anns)
                rows[b"a" + d + self._seq.to_bytes(8, "big")] = encode_canonical(
                    [[a.coco_id, a.label, a.body[:a.cut], a.body[a.cut:]] for a in anns])
                self._seq += 1
            if len(rows) >= FLUSH:
                put()
        if rows:
            put()
        b.file_of.clear()
        b.images.clear()
        b.by_image.clear()
        b.by_image.update(waiting)
        b.held = 0
        self.active = True
        self.limit = min(self.limit, FLUSH)

    def bad_references(self, b: _Builder) -> bool:
        if not self._categories <= b.categories.keys():
            return True
        return any(not self._has(b"i" + key[1:]) for key, _ in self._scratch.scan(b"p"))

    def check_names(self) -> None:
        """Raise the error two images naming one item, or an image naming none, would
        raise in memory (``coco_child._entries``)."""
        if self._name_error is not None:
            raise ImportFormatError(self._name_error[1])

    def entries(self, labels: dict[Any, str]) -> Iterator[tuple[str, list[Any]]]:
        """Each image's (item name, ``[[coco id, head, tail], ...]``) in item-name order;
        ``labels`` maps category ids to labels."""

        def group(row: tuple[bytes, bytes]) -> bytes:  # long names sharing their key's start
            key = row[0]
            return key[:1 + _NAME_KEY] if len(key) > 1 + _NAME_KEY else key

        scan = self._scratch.scan
        parts = {cid: label_part(label) for cid, label in labels.items()}
        for _, rows in itertools.groupby(scan(b"n"), group):
            named = []
            for key, v in rows:
                d, _, file_name = decode_own(v)
                # A long name's key holds only its start: name it again.
                name = key[1:].decode() if len(key) <= 1 + _NAME_KEY else self._item(file_name)
                named.append((name, d))
            named.sort()
            for name, d in named:
                anns = []
                for _, raw in scan(b"a" + d):
                    for coco_id, category, head, rest in decode_own(raw):
                        anns.append([coco_id, head, parts[category] + rest])
                yield name, anns

    def close(self) -> None:
        """Delete the table."""
        self._scratch.close()

