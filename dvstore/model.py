"""The data model: the records the four layer trees hold, commits, and names. No I/O.

Every record is a plain, canonical value (dicts with string keys, lists, str, int, float,
bool, None, bytes) so that it encodes to the same bytes whatever built it. This module owns
the shapes, the validation of untrusted records (schema checks after decoding), and the
normalisation of item filenames, the one piece of user input that becomes a path on disk.

Layer values, keyed in each trie by the 16-byte item id:

items        {"filename": "/a/b.jpg", "blob": <32 bytes>, "size": int, "mimetype": str,
              "system": {intrinsic fields: "width", "height", ...}, "hidden": bool,
              "createdAt": ISO-8601 str}
annotations  <32-byte id of an "annset" object>: {annotation_id: annotation}
             annotation = {"id", "type", "label", "coordinates", "attributes",
                           "metadata": {"system": {...without "status"}, "user": {...}},
                           and any other Dataloop field stored faithfully}
metadata     {"user": {...}, "system": {non-intrinsic system metadata: "tags", "collections", ...}}
status       {"tasks": {task_id: {"status": str, ...}}, "annotations": {annotation_id: status}}

Annotation QA status lives in the status layer, not inside the annotation, so that dropping
the status layer (clone ``with_task_annotations_status=False``) is O(1).
"""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dvstore.errors import CorruptObjectError, InvalidNameError
from dvstore.hashing import hash_prefix

FORMAT = 1
ITEM_ID_SIZE = 16
LAYERS = ("items", "annotations", "metadata", "status")
OPTIONAL_LAYERS = ("annotations", "metadata", "status")
OPS = ("create", "commit", "clone", "merge", "restore", "switch_recipe")

# System metadata fields that are a function of the binary: kept by every projection,
# never merged (recomputed from the merged binary).
INTRINSIC_SYSTEM = frozenset(
    {"originalname", "size", "encoding", "mimetype", "width", "height", "channels", "isBinary", "duration", "fps"}
)
# Fields of a Dataloop annotation that change on every save or name a server-side location:
# left out of the stored annotation (SEMANTICS §1.3 content hash).
VOLATILE_ANNOTATION_FIELDS = frozenset(
    {"updatedAt", "updatedBy", "url", "item", "dataset", "datasetId", "itemId", "hash"}
)
ANNOTATION_STATUSES = ("issue", "approved", "review")
ITEM_STATUSES = ("completed", "approved", "discard")

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
RESERVED_COMPONENTS = frozenset({".dvs", ".dvs-checkout"})
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


_ID_POOL: list[bytes] = []


def _drop_id_pool() -> None:
    # A forked child must never hand out the ids its parent still holds.
    _ID_POOL.clear()
    _ANN_ID_POOL.clear()


os.register_at_fork(after_in_child=_drop_id_pool)


def new_item_id() -> bytes:
    """A fresh random 16-byte item id (drawn from the OS in batches: one syscall per 4096)."""
    if not _ID_POOL:
        raw = os.urandom(ITEM_ID_SIZE * 4096)  # what secrets.token_bytes reads
        _ID_POOL.extend(raw[i:i + ITEM_ID_SIZE] for i in range(0, len(raw), ITEM_ID_SIZE))
    return _ID_POOL.pop()


_ANN_ID_POOL: list[str] = []


def new_annotation_id() -> str:
    """A fresh random annotation id in Dataloop's 24-hex form (drawn in batches, like item ids)."""
    if not _ANN_ID_POOL:
        raw = os.urandom(12 * 4096).hex()
        _ANN_ID_POOL.extend(raw[i:i + 24] for i in range(0, len(raw), 24))
    return _ANN_ID_POOL.pop()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Names made of ASCII letters, digits and "_-." (no component starting with "."): every rule
# of _normalize_full holds for them and NFC leaves them as they are. Ingest checks every
# file's name, so the common case is one regex match.
_PLAIN = re.compile(r"/?[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254}(?:/[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,254})*")


def normalize_filename(name: str) -> str:
    """Return the canonical item filename ("/a/b.jpg") or raise InvalidNameError.

    Accepts "a/b.jpg" or "/a/b.jpg". Rejects anything that could escape a checkout folder or
    is ambiguous: "." or ".." components, empty components, backslashes, control characters,
    drive letters, over-long names, the store's reserved names. The result is NFC-normalised.
    """
    if type(name) is str and len(name) < MAX_PATH_BYTES and _PLAIN.fullmatch(name):
        return name if name[0] == "/" else "/" + name
    return _normalize_full(name)


def _normalize_full(name: str) -> str:
    if not isinstance(name, str):
        raise InvalidNameError(f"item name must be a string, got {type(name).__name__}")
    if name == "" or name == "/":
        raise InvalidNameError("empty item name")
    bad = _BAD_CHARS.search(name)
    if bad:
        what = "a backslash" if bad.group() == "\\" else "a control character"
        raise InvalidNameError(f"item name contains {what}: {name!r}")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameError(f"item name is not valid UTF-8: {name!r}") from None
    body = name[1:] if name.startswith("/") else name
    if body.endswith("/"):
        raise InvalidNameError(f"item name ends with '/': {name!r}")
    parts = body.split("/")
    for p in parts:
        if p == "":
            raise InvalidNameError(f"item name has an empty component: {name!r}")
        if p in (".", ".."):
            raise InvalidNameError(f"item name has a '{p}' component: {name!r}")
        if len(p.encode("utf-8")) > MAX_NAME_BYTES:
            raise InvalidNameError(f"item name component longer than {MAX_NAME_BYTES} bytes: {p[:40]!r}...")
        if p in RESERVED_COMPONENTS:
            raise InvalidNameError(f"item name uses a reserved name {p!r}: {name!r}")
    if len(parts[0]) == 2 and parts[0][1] == ":" and parts[0][0].isalpha():
        raise InvalidNameError(f"item name looks like a drive path: {name!r}")
    result = "/" + unicodedata.normalize("NFC", body)
    if len(result.encode("utf-8")) > MAX_PATH_BYTES:
        raise InvalidNameError(f"item name longer than {MAX_PATH_BYTES} bytes")
    return result


def normalize_dir(d: str) -> str:
    """Normalise a target directory ("/train", "train/", "/") to "/train" or "/"."""
    if d in ("", "/"):
        return "/"
    return normalize_filename(d.rstrip("/") if d != "/" else d)


def path_key(filename: str) -> bytes:
    """Key of a filename in the derived path index."""
    return hash_prefix(filename.encode("utf-8"), 16)


def folder_key(folder: str) -> bytes:
    """Key of a folder ("/a/b") in the derived folder index."""
    return hash_prefix(b"dir:" + folder.encode("utf-8"), 16)


def count_folders(delta: dict[str, int], filename: str, step: int) -> None:
    """Add ``step`` to the item count of every folder above ``filename`` ("/a", "/a/b" for
    "/a/b/c.jpg") in ``delta``."""
    node = filename
    while (i := node.rfind("/")) > 0:
        node = node[:i]
        delta[node] = delta.get(node, 0) + step


def split_filename(filename: str) -> tuple[str, str]:
    """Return (dir, name) of a canonical filename: "/a/b.jpg" -> ("/a", "b.jpg")."""
    d, _, n = filename.rpartition("/")
    return (d or "/"), n


def validate_dataset_name(name: str) -> str:
    """Dataset and tag names: 1-128 characters of letters, digits, '-', '_', '.'; no '@'."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError("dataset name must not be empty")
    if len(name) > 128:
        raise InvalidNameError("dataset name longer than 128 characters")
    if name in (".", "..") or name.startswith("-"):
        raise InvalidNameError(f"invalid dataset name: {name!r}")
    for c in name:
        if not (c.isascii() and (c.isalnum() or c in "-_.")):
            raise InvalidNameError(
                f"invalid dataset name: {name!r}", hint="use letters, digits, '-', '_' and '.'"
            )
    return name


@dataclass(frozen=True, slots=True)
class Commit:
    """A version: four layer roots, a recipe, parents and what made it."""

    layers: dict[str, bytes | None]
    recipe: bytes
    parents: tuple[bytes, ...]
    op: str
    info: dict[str, Any] = field(default_factory=dict)
    author: str = ""
    message: str = ""
    time: str = ""

    def to_record(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "layers": {k: self.layers.get(k) for k in LAYERS},
            "recipe": self.recipe,
            "parents": list(self.parents),
            "op": self.op,
            "info": self.info,
            "author": self.author,
            "message": self.message,
            "time": self.time,
        }

    @classmethod
    def from_record(cls, r: Any) -> Commit:
        try:
            if not isinstance(r, dict) or r.get("format") != FORMAT:
                raise ValueError("not a commit record")
            layers = r["layers"]
            if not isinstance(layers, dict) or set(layers) != set(LAYERS):
                raise ValueError("bad layers")
            for k, v in layers.items():
                if not (v is None and k != "items") and not _is_digest(v):
                    raise ValueError(f"bad layer root {k}")
            if not _is_digest(r["recipe"]):
                raise ValueError("bad recipe id")
            parents = r["parents"]
            if not isinstance(parents, list) or not all(_is_digest(p) for p in parents):
                raise ValueError("bad parents")
            if r["op"] not in OPS:
                raise ValueError("bad op")
            if not isinstance(r["info"], dict):
                raise ValueError("bad info")
            for k in ("author", "message", "time"):
                if not isinstance(r[k], str):
                    raise ValueError(f"bad {k}")
            return cls(dict(layers), r["recipe"], tuple(parents), r["op"], r["info"], r["author"], r["message"], r["time"])
        except (KeyError, TypeError, ValueError) as e:
            raise CorruptObjectError(f"malformed commit: {e}") from None


def _is_digest(v: Any) -> bool:
    return type(v) is bytes and len(v) == 32


def default_author() -> str:
    return os.environ.get("DVS_AUTHOR") or os.environ.get("USER") or "unknown"
