"""Dataloop item JSON: reading it into layer records, writing it back out, walking a json/ folder.

A Dataloop export (and a dvstore working folder, CLI.md) holds one JSON file per item under
``json/``: the item's ``filename``, ``metadata`` (``system`` and ``user``), ``annotations``,
and server fields. This module owns the mapping between that JSON and the parts of the four
layer records that JSON can change (``dvstore.model``):

* annotations lose their volatile fields (``model.VOLATILE_ANNOTATION_FIELDS`` and
  ``metadata.system.clientId``), and their QA status (``metadata.system.status``) moves to
  ``annotation_status``: the status layer, not the annotation, holds it;
* task and assignment refs (``metadata.system.refs`` entries of type ``task`` or
  ``assignment``) move to ``tasks``; every other ref stays in system metadata;
* intrinsic system fields (``model.INTRINSIC_SYSTEM``) are dropped: the binary decides them;
* every other field of an annotation or of ``metadata`` is kept as it is.

``load_item_json(item_to_json(...))`` gives back what ``load_item_json`` returned. The
module also owns the JSON reading rules every JSON input of dvs shares (``read_json_file``,
``parse_json_bytes``, ``check_storable``; annotation files, filters, label maps, recipes,
the store config, a working folder's record): only a regular file is read (a FIFO or a
device is refused without blocking), the text must be UTF-8, values must survive canonical
encoding (NaN, infinities, integers beyond 64 bits and lone surrogates are refused) and
nesting is limited (``MAX_JSON_DEPTH``), each with the input named. Errors are
``ImportFormatError`` unless the caller names another class (a ``FilterError`` for a
filter, a ``CorruptionError`` for the store config...).

It must not touch the store, decide item identity, or trust a file name it did not check.
"""

from __future__ import annotations

import codecs
import json
import math
import os
import re
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from dvstore.errors import DvsError, ImportFormatError, InvalidNameError
from dvstore.model import INTRINSIC_SYSTEM, VOLATILE_ANNOTATION_FIELDS, new_annotation_id, normalize_filename

TASK_REF_TYPES = ("task", "assignment")
JSON_SUFFIX = ".json"
# Canonical msgpack stores ints in 64 bits and refuses deep nesting; refuse at the edge
# with the file named instead of failing later inside the codec.
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
MAX_JSON_DEPTH = 100
MAX_ID_LEN = 256


def read_json_file(path: str | os.PathLike[str], *, display: str | None = None,
                   error: type[DvsError] = ImportFormatError) -> Any:
    """Read and parse a JSON file strictly (``read_file_bytes``, then ``parse_json_bytes``).

    Args:
        path: The file to read. A UTF-8 byte order mark is allowed.
        display: Names the file in error messages (default: the path).
        error: The class of every error raised.

    Returns:
        The parsed document, checked with ``check_storable``.

    Raises:
        ImportFormatError: (or ``error``) The file cannot be read, is not a regular file, is
            not UTF-8, is not JSON, is nested too deeply, or holds a value the store cannot
            encode.
    """
    shown = str(path) if display is None else display
    return parse_json_bytes(read_file_bytes(path, shown, error=error), shown, error=error)


def read_file_bytes(path: str | os.PathLike[str], display: str, *, error: type[DvsError] = ImportFormatError,
                    limit: int = -1) -> bytes:
    """The bytes of a regular file (at most ``limit`` of them, if given): see ``open_regular``."""
    with open_regular(path, display, error=error) as f:
        try:
            return f.read(limit)
        except OSError as e:
            raise _cannot_read(display, e, error) from None


_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


def open_regular(path: str | os.PathLike[str], display: str, *,
                 error: type[DvsError] = ImportFormatError) -> IO[bytes]:
    """Open a file for reading, refusing anything but a regular file without blocking.

    A FIFO would block ``open`` until a writer comes (and a read until it writes), a device
    may never end: the file is opened with ``O_NONBLOCK`` and the open file itself checked
    with ``fstat`` (no race with a rename), then read blocking. Symbolic links are followed:
    the path is the user's.

    Raises:
        ImportFormatError: (or ``error``) The file cannot be opened or is not a regular file.
    """
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except (OSError, ValueError) as e:
        raise _cannot_read(display, e, error) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{display}: not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _cannot_read(display: str, e: OSError | ValueError, error: type[DvsError] = ImportFormatError) -> DvsError:
    if isinstance(e, OSError):
        return error(f"{display}: cannot read: {e.strerror or e}")
    return error(f"{display!r}: cannot read: {e}")  # a NUL byte in the path


JSON_CHUNK = 8 << 20
"""Bytes a streaming reader reads at a time (``JsonChunks``)."""
_BOM = b"\xef\xbb\xbf"
_OVERLAP = 24  # longer than any pattern _maybe_unstorable looks for (19 digits)


class JsonChunks:
    """A JSON file's text read a chunk at a time, for a streaming reader.

    The rules of ``read_json_file`` hold as the file is read: a UTF-8 byte order mark is
    skipped; bytes that are not UTF-8 are an error naming their offset past the mark (as
    ``bytes.decode("utf-8-sig")`` counts it), a character cut by a chunk boundary being
    completed by the next chunk; and ``suspect`` turns true once the bytes read so far
    could hold a value ``check_storable`` refuses (``_maybe_unstorable`` is run on each
    chunk with the end of the one before, so a digit run cut by a boundary is still seen).
    A value is only checked once all of its text has been read, so ``suspect`` is true by
    then if that text is suspect.
    """

    def __init__(self, path: str | os.PathLike[str], chunk: int = JSON_CHUNK) -> None:
        self.path = path
        self.chunk = chunk
        self.suspect = False
        self.eof = False
        self._file = open_regular(path, str(path))  # closed by close()
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._fed = 0  # bytes given to the decoder
        self._overlap = b""
        try:
            head = self._raw(3)
        except ImportFormatError:
            self._file.close()
            raise
        self._head = b"" if head == _BOM else head

    def __enter__(self) -> JsonChunks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _raw(self, n: int) -> bytes:
        try:
            return self._file.read(n)
        except OSError as e:
            raise _cannot_read(str(self.path), e) from None

    def read(self, size: int = 0) -> str:
        """The text of about the next ``size`` bytes (``chunk`` if 0); "" only at the end
        of the file, which sets ``eof``."""
        while not self.eof:
            raw = self._head + self._raw(max(size or self.chunk, 1))
            self._head = b""
            if not self.suspect:
                seen = self._overlap + raw
                self.suspect = _maybe_unstorable(seen)
                self._overlap = seen[-_OVERLAP:]
            pending = len(self._decoder.getstate()[0])
            try:
                text = self._decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:
                raise ImportFormatError(f"{self.path}: not UTF-8 text (byte {self._fed - pending + e.start})") from None
            self._fed += len(raw)
            self.eof = not raw
            if text:
                return text
        return ""

    def close(self) -> None:
        self._file.close()


def check_storable_part(value: Any, where: str, at: str, depth: int, suspect: bool) -> None:
    """``check_storable`` for a value a streaming reader found at JSON path ``at``, ``depth``
    levels down its document; ``suspect`` as ``JsonChunks.suspect`` said once the value was read."""
    if suspect or _depth(value, depth) > MAX_JSON_DEPTH:
        _check(value, where, at, depth)


def parse_json_bytes(raw: bytes, display: str, *, error: type[DvsError] = ImportFormatError) -> Any:
    """Parse JSON bytes (UTF-8, BOM allowed) into a storable document nested at most
    ``MAX_JSON_DEPTH`` levels; errors are ``error`` and name ``display``."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise error(f"{display}: not UTF-8 text (byte {e.start})") from None
    try:
        doc = json.loads(text, parse_constant=reject_constant)
    except json.JSONDecodeError as e:
        raise error(f"{display}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:  # from the hooks below
        raise error(f"{display}: {e}") from None
    except RecursionError:
        raise error(f"{display}: JSON nested too deeply") from None
    if _maybe_unstorable(raw) or _depth(doc, 0) > MAX_JSON_DEPTH:
        try:
            check_storable(doc, display)  # the full walk, naming the JSON path of the bad value
        except ImportFormatError as e:
            if error is ImportFormatError:
                raise
            raise error(e.message, hint=e.hint) from None
    return doc


def reject_constant(name: str) -> Any:
    """A ``parse_constant`` hook for ``json``: NaN and the infinities cannot be stored."""
    raise ValueError(f"{name} is not a storable number")


# Digits to "0", "E" to "e", "+" to "-": then substring searches find any 19-digit run or
# 3-digit exponent.
_SHAPE = bytes.maketrans(b"123456789E+", b"000000000e-")
_SURROGATE_ESCAPE = re.compile(rb"\\[uU][dD][89a-fA-F]")


def _maybe_unstorable(raw: bytes) -> bool:
    """False when the JSON text cannot hold a value ``check_storable`` would refuse.

    Without a 19-digit run or a 3-digit exponent there is no integer beyond 64 bits and no
    float that parsed to an infinity (NaN and Infinity are refused while parsing); without a
    \\uD800-\\uDFFF escape, no lone surrogate (the UTF-8 decode refuses encoded ones). Only the
    nesting depth is then left, checked by a walk of the containers alone: a 6 MB COCO file
    checks in ~40 ms instead of ~120 ms for the full walk (and a float hook on the parser).
    """
    shape = raw.translate(_SHAPE)
    if b"0" * 19 in shape or b"e000" in shape or b"e-000" in shape:
        return True
    return b"\\u" in raw and _SURROGATE_ESCAPE.search(raw) is not None


def _depth(v: Any, depth: int) -> int:
    """The depth of the deepest value in ``v`` (``v`` itself at ``depth``), as ``check_storable``
    counts it; stops counting past MAX_JSON_DEPTH."""
    t = type(v)
    if (t is not dict and t is not list) or not v or depth > MAX_JSON_DEPTH:
        return depth
    values = v.values() if t is dict else v
    deepest = depth + 1
    if not _CONTAINER_TYPES.isdisjoint(map(type, values)):  # in C: most lists hold numbers only
        for x in values:
            tx = type(x)
            if tx is dict or tx is list:
                deepest = max(deepest, _depth(x, depth + 1))
    return deepest


_CONTAINER_TYPES = frozenset((dict, list))


def check_storable(value: Any, where: str) -> None:
    """Check that a JSON-like value survives canonical encoding unchanged.

    Args:
        value: dicts with string keys, lists, str, int, float, bool, None.
        where: Names the source in the error message (a file path).

    Raises:
        ImportFormatError: Naming ``where`` and the JSON path of the first bad value.
    """
    _check(value, where, "$", 0)


def _check(v: Any, where: str, at: str, depth: int) -> None:
    if depth > MAX_JSON_DEPTH:
        raise ImportFormatError(f"{where}: {at}: nested deeper than {MAX_JSON_DEPTH} levels")
    t = type(v)
    if v is None or t is bool:
        return
    if t is str:
        _check_str(v, where, at)
    elif t is int:
        if not _INT_MIN <= v <= _INT_MAX:
            raise ImportFormatError(f"{where}: {at}: integer {v} does not fit in 64 bits")
    elif t is float:
        if not math.isfinite(v):
            raise ImportFormatError(f"{where}: {at}: {v} is not a finite number")
    elif t is list:
        for i, x in enumerate(v):
            _check(x, where, f"{at}[{i}]", depth + 1)
    elif t is dict:
        for k, x in v.items():
            if type(k) is not str:
                raise ImportFormatError(f"{where}: {at}: key {k!r} is not a string")
            _check_str(k, where, at)
            _check(x, where, f"{at}.{k}", depth + 1)
    else:
        raise ImportFormatError(f"{where}: {at}: {t.__name__} is not a JSON value")


def _check_str(s: str, where: str, at: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ImportFormatError(f"{where}: {at}: string is not valid Unicode (lone surrogate)") from None


def load_item_json(path_or_dict: str | os.PathLike[str] | Mapping[str, Any], *,
                   check_coordinates: bool = False) -> dict[str, Any]:
    """Read one Dataloop (or dvstore) item JSON into the parts of the layer records it carries.

    Args:
        path_or_dict: A ``json/<filename>.json`` file, or its already parsed document.
        check_coordinates: Refuse an annotation whose coordinates do not have its type's
            shape (``coordinates_problem``); without it they are kept as they are.

    Returns:
        ``{"annotations": [annotation, ...], "annotation_status": {annotation_id: status},
        "metadata": {"user": {...}, "system": {...}, ...}, "tasks": {task_id: task},
        "hidden": bool | None}``. Each annotation has an ``id`` (minted when missing), no
        volatile fields and no ``metadata.system.status``; annotations keep file order.
        ``metadata.system`` holds no intrinsic field and no task/assignment ref. A task is
        ``{"type": "task" | "assignment", "status": str | None}`` plus ``"metadata"`` (the
        ref's other metadata) and ``"ref"`` (the ref's other fields) when non-empty.
        When the document has a top-level ``"status": {task_id: status}`` (the Item JSON a
        checkout writes), it decides which tasks exist and their status; refs then only
        contribute each task's other fields. ``hidden`` is None when the JSON does not say.
        Other top-level item fields (``id``, ``filename``, ``dir``, ``name``, ``url``,
        ``stream``, ``size``, ``binary``, ``createdAt``...) are server state or belong to
        the items layer, which the binary and the path decide; they are not read.

    Raises:
        ImportFormatError: The JSON is not an item document, naming the file and the entry.
    """
    doc: Any
    if isinstance(path_or_dict, (str, os.PathLike)):
        where = str(path_or_dict)
        doc = read_json_file(path_or_dict)
    else:
        # An already parsed document, possibly not an object at all: checked like a file.
        where = "<item json>"
        doc = dict(path_or_dict) if isinstance(path_or_dict, Mapping) else path_or_dict
        check_storable(doc, where)
    if not isinstance(doc, dict):
        raise ImportFormatError(f"{where}: an item JSON must be an object, got {_kind(doc)}")

    metadata_in = _opt_dict(doc.get("metadata"), where, "metadata")
    system_in = _opt_dict(metadata_in.get("system"), where, "metadata.system")
    user = _opt_dict(metadata_in.get("user"), where, "metadata.user")

    tasks, other_refs = _split_refs(system_in.get("refs"), where)
    status_doc = doc.get("status")
    if status_doc is not None:
        tasks = _apply_status(tasks, status_doc, where)

    system = {k: v for k, v in system_in.items() if k not in INTRINSIC_SYSTEM and k != "refs"}
    if other_refs:
        system["refs"] = other_refs
    metadata = {k: v for k, v in metadata_in.items() if k not in ("system", "user")}
    metadata["system"] = system
    metadata["user"] = user

    annotations_in = doc.get("annotations", [])
    if annotations_in is None:
        annotations_in = []
    if not isinstance(annotations_in, list):
        raise ImportFormatError(f"{where}: annotations must be a list, got {_kind(annotations_in)}")
    annotations: list[dict[str, Any]] = []
    annotation_status: dict[str, str] = {}
    seen: set[str] = set()
    for i, raw in enumerate(annotations_in):
        ann, ann_status = _load_annotation(raw, where, i)
        if check_coordinates and (problem := coordinates_problem(ann)) is not None:
            raise ImportFormatError(f"{where}: annotations[{i}]: {problem}")
        if ann["id"] in seen:
            raise ImportFormatError(f"{where}: annotations[{i}]: duplicate annotation id {ann['id']!r}")
        seen.add(ann["id"])
        annotations.append(ann)
        if ann_status is not None:
            annotation_status[ann["id"]] = ann_status

    hidden = doc.get("hidden")
    if hidden is not None and type(hidden) is not bool:
        raise ImportFormatError(f"{where}: hidden must be true or false, got {_kind(hidden)}")
    return {
        "annotations": annotations,
        "annotation_status": annotation_status,
        "metadata": metadata,
        "tasks": tasks,
        "hidden": hidden,
    }


def _load_annotation(raw: Any, where: str, i: int) -> tuple[dict[str, Any], str | None]:
    at = f"annotations[{i}]"
    if not isinstance(raw, dict):
        raise ImportFormatError(f"{where}: {at}: an annotation must be an object, got {_kind(raw)}")
    ann = {k: v for k, v in raw.items() if k not in VOLATILE_ANNOTATION_FIELDS}
    ann_id = ann.get("id")
    if ann_id is None:
        # A new annotation written by hand in a working folder: it gets an identity now.
        ann["id"] = new_annotation_id()
    else:
        _check_id(ann_id, where, f"{at}.id")
    for key in ("type", "label"):
        if type(ann.get(key)) is not str:
            raise ImportFormatError(f"{where}: {at}: {key} must be a string, got {_kind(ann.get(key))}")
    md = _opt_dict(ann.get("metadata"), where, f"{at}.metadata")
    md = dict(md)
    system = dict(_opt_dict(md.get("system"), where, f"{at}.metadata.system"))
    md["user"] = _opt_dict(md.get("user"), where, f"{at}.metadata.user")
    system.pop("clientId", None)  # volatile: a browser session id (SEMANTICS §1.3)
    status = system.pop("status", None)
    if status is not None and type(status) is not str:
        raise ImportFormatError(f"{where}: {at}.metadata.system.status must be a string or null, got {_kind(status)}")
    md["system"] = system
    ann["metadata"] = md
    return ann, status


_POINT = '{"x": number, "y": number}'
COORDINATE_SHAPES: dict[str, str] = {
    "box": f"[{_POINT}, {_POINT}] (top-left, bottom-right; a rotation angle may follow)",
    "point": _POINT,
    "segment": f"[[{_POINT}, ...], ...] (a list of points per polygon)",
    "polyline": f"[[{_POINT}, ...]]",
    "ellipse": f'{{"center": {_POINT}, "rx": number, "ry": number, "angle": number}}',
    "binary": 'a string (the mask as a "data:image/png;base64,..." PNG)',
    "class": "left out, null or [] (a class annotation has no coordinates)",
}
"""The coordinates of the annotation types whose shape is known, as dtlpy's annotation
definitions read and write them (a point may also hold ``"z"``, a number). The annotations
of other types (cube, pose, note, text...) are stored as they come."""


def _number(v: Any) -> bool:
    return type(v) is int or type(v) is float


def _point(v: Any) -> bool:
    return type(v) is dict and _number(v.get("x")) and _number(v.get("y")) and _number(v.get("z", 0))


def _point_lists(v: Any) -> bool:
    return type(v) is list and bool(v) and all(type(part) is list and all(map(_point, part)) for part in v)


_COORDINATE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "box": lambda v: (type(v) is list and len(v) >= 2 and _point(v[0]) and _point(v[1])
                      and all(_point(x) or _number(x) for x in v[2:])),
    "point": _point,
    "segment": _point_lists,
    "polyline": _point_lists,
    "ellipse": lambda v: (type(v) is dict and _point(v.get("center"))
                          and all(_number(v.get(k)) for k in ("rx", "ry", "angle"))),
    "binary": lambda v: type(v) is str,
    "class": lambda v: v is None or v == [],
}


def coordinates_problem(annotation: Mapping[str, Any]) -> str | None:
    """What is wrong with an annotation's coordinates, for a type in ``COORDINATE_SHAPES``;
    None when they fit (or the type's shape is not known). As dtlpy does, ``"data"`` stands
    for ``"coordinates"`` when those are left out."""
    kind = annotation.get("type")
    if type(kind) is not str or kind not in _COORDINATE_CHECKS:
        return None
    check = _COORDINATE_CHECKS[kind]
    value = annotation["coordinates"] if "coordinates" in annotation else annotation.get("data")
    if check(value):
        return None
    got = "none" if value is None else _kind(value)
    return f"{kind} coordinates must be {COORDINATE_SHAPES[kind]}, got {got}"


def _split_refs(refs: Any, where: str) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    if refs is None:
        return {}, []
    if not isinstance(refs, list):
        raise ImportFormatError(f"{where}: metadata.system.refs must be a list, got {_kind(refs)}")
    tasks: dict[str, dict[str, Any]] = {}
    others: list[Any] = []
    for i, ref in enumerate(refs):
        if not (isinstance(ref, dict) and ref.get("type") in TASK_REF_TYPES):
            others.append(ref)  # item links and the like: not ours to interpret
            continue
        at = f"metadata.system.refs[{i}]"
        ref_id = _check_id(ref.get("id"), where, f"{at}.id")
        if ref_id in tasks:
            raise ImportFormatError(f"{where}: {at}: duplicate task/assignment ref {ref_id!r}")
        ref_md = dict(_opt_dict(ref.get("metadata"), where, f"{at}.metadata"))
        status = ref_md.pop("status", None)
        if status is not None and type(status) is not str:
            raise ImportFormatError(f"{where}: {at}.metadata.status must be a string or null, got {_kind(status)}")
        task: dict[str, Any] = {"type": ref["type"], "status": status}
        if ref_md:
            task["metadata"] = ref_md
        rest = {k: v for k, v in ref.items() if k not in ("type", "id", "metadata")}
        if rest:
            task["ref"] = rest
        tasks[ref_id] = task
    return tasks, others


def _apply_status(tasks: dict[str, dict[str, Any]], status_doc: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(status_doc, dict):
        raise ImportFormatError(f"{where}: status must be an object {{task_id: status}}, got {_kind(status_doc)}")
    out: dict[str, dict[str, Any]] = {}
    for task_id, value in status_doc.items():
        _check_id(task_id, where, f"status key {task_id!r}")
        if value is not None and type(value) is not str:
            raise ImportFormatError(f"{where}: status.{task_id} must be a string or null, got {_kind(value)}")
        task = dict(tasks.get(task_id, {"type": "task"}))
        task["status"] = value
        out[task_id] = task
    return out


def _check_id(value: Any, where: str, at: str) -> str:
    if type(value) is not str or not value or len(value) > MAX_ID_LEN:
        raise ImportFormatError(f"{where}: {at}: an id must be a non-empty string of at most {MAX_ID_LEN} characters")
    if any(ord(c) < 0x20 for c in value):
        raise ImportFormatError(f"{where}: {at}: id {value!r} contains a control character")
    return value


def _opt_dict(value: Any, where: str, at: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ImportFormatError(f"{where}: {at} must be an object, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__
    )


def item_to_json(
    item: Mapping[str, Any],
    annotations: Mapping[str, Mapping[str, Any]] | None,
    metadata: Mapping[str, Any] | None,
    status: Mapping[str, Any] | None,
    item_id: str,
) -> dict[str, Any]:
    """Build the Item JSON (CLI.md) of one item from its layer records; the checkout writer.

    Args:
        item: The items-layer record (``filename``, ``blob``, ``size``, ``mimetype``,
            ``system``, ``hidden``, ``createdAt``).
        annotations: ``{annotation_id: annotation}`` (the item's resolved annotation set),
            or None when the version has no annotations layer or the item none.
        metadata: The metadata-layer record, or None.
        status: The status-layer record ``{"tasks": {...}, "annotations": {...}}``, or None.
        item_id: The item id, in hex.

    Returns:
        ``{"id", "filename", "binary", "size", "hidden", "createdAt"?, "metadata": {"system":
        {intrinsic + other system fields + "refs"}, "user", ...}, "annotations": [...],
        "status": {task_id: status}}``. Annotations are sorted by id and carry their QA
        status in ``metadata.system.status`` (null when none), as Dataloop writes it.
    """
    metadata = metadata or {}
    tasks: Mapping[str, Any] = (status or {}).get("tasks") or {}
    meta_out: dict[str, Any] = {k: v for k, v in metadata.items() if k not in ("system", "user")}
    meta_out["system"] = system_json(item, metadata, status)
    meta_out["user"] = dict(metadata.get("user") or {})
    out: dict[str, Any] = {
        "id": item_id,
        "filename": item["filename"],
        "binary": bytes(item["blob"]).hex(),
        "size": item["size"],
        "hidden": bool(item.get("hidden", False)),
    }
    if item.get("createdAt"):
        out["createdAt"] = item["createdAt"]
    out["metadata"] = meta_out
    out["annotations"] = annotations_json(annotations, status)
    out["status"] = {task_id: tasks[task_id].get("status") for task_id in sorted(tasks)}
    return out


def system_json(item: Mapping[str, Any], metadata: Mapping[str, Any] | None,
                status: Mapping[str, Any] | None) -> dict[str, Any]:
    """An item's ``metadata.system`` as Dataloop shows it: stored system fields, the binary's
    intrinsic fields, and one ``refs`` entry per task status."""
    tasks: Mapping[str, Any] = (status or {}).get("tasks") or {}
    system: dict[str, Any] = dict((metadata or {}).get("system") or {})
    # The binary's own fields win over anything stored beside them.
    system.update(item.get("system") or {})
    system["size"] = item["size"]
    system["mimetype"] = item["mimetype"]
    refs = list(system.pop("refs", None) or [])
    for task_id in sorted(tasks):
        task = tasks[task_id]
        ref: dict[str, Any] = dict(task.get("ref") or {})
        ref["type"] = task.get("type", "task")
        ref["id"] = task_id
        ref["metadata"] = {**(task.get("metadata") or {}), "status": task.get("status")}
        refs.append(ref)
    if refs:
        system["refs"] = refs
    return system


def annotations_json(annotations: Mapping[str, Mapping[str, Any]] | None,
                     status: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """An item's annotations sorted by id, each with its QA status (or null) in
    ``metadata.system.status``."""
    ann_status: Mapping[str, Any] = (status or {}).get("annotations") or {}
    anns_out = []
    for ann_id in sorted(annotations or {}):
        ann = dict((annotations or {})[ann_id])
        md = dict(ann.get("metadata") or {})
        md["system"] = {**(md.get("system") or {}), "status": ann_status.get(ann_id)}
        md.setdefault("user", {})
        ann["metadata"] = md
        ann["id"] = ann_id
        anns_out.append(ann)
    return anns_out


def walk_json_folder(root: str | os.PathLike[str]) -> dict[str, Path]:
    """Map each item filename to its JSON file in a Dataloop-style ``json/`` folder.

    ``json/cats/1.jpg.json`` describes the item ``/cats/1.jpg``: the path relative to
    ``root``, minus ``.json``, normalised with ``model.normalize_filename``. Files not
    ending in ``.json`` are ignored. Dataloop's own exports name the file after the item's
    stem (``json/cats/1.json``); ``lookup_item_json`` accepts both.

    Args:
        root: The ``json/`` folder.

    Returns:
        ``{"/cats/1.jpg": Path(".../json/cats/1.jpg.json"), ...}``, sorted by filename.

    Raises:
        ImportFormatError: ``root`` is not a directory; a name is hostile (``..``, control
            characters, reserved names...), two files name the same item, or an entry is a
            symlink (never followed: it could point anywhere).
    """
    base = Path(root)
    if not base.is_dir() or base.is_symlink():
        raise ImportFormatError(f"{root}: not a directory")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        for d in dirnames:
            if (here / d).is_symlink():
                raise ImportFormatError(f"{here / d}: symlinks are not followed in a json folder")
        dirnames.sort()
        for name in sorted(filenames):
            path = here / name
            if not name.endswith(JSON_SUFFIX):
                continue
            if not stat.S_ISREG(path.lstat().st_mode):
                raise ImportFormatError(f"{path}: not a regular file (symlinks are not followed)")
            rel = path.relative_to(base).as_posix()[: -len(JSON_SUFFIX)]
            try:
                filename = normalize_filename(rel)
            except InvalidNameError as e:
                raise ImportFormatError(f"{path}: {e.message}") from None
            if filename in found:
                raise ImportFormatError(f"{path}: names the same item as {found[filename]} ({filename})")
            found[filename] = path
    return dict(sorted(found.items()))


def lookup_item_json(mapping: Mapping[str, Path], filename: str) -> Path | None:
    """Find an item's JSON in a ``walk_json_folder`` result, by full name then by stem.

    Args:
        mapping: What ``walk_json_folder`` returned.
        filename: The canonical item filename (``/cats/1.jpg``).

    Returns:
        The JSON for ``/cats/1.jpg.json`` (dvstore's checkout layout) if present, else for
        ``/cats/1.json`` (Dataloop's export layout), else None. Two items that share a stem
        (``1.jpg``, ``1.png``) both match a stem-named file; the caller decides.
    """
    exact = mapping.get(filename)
    if exact is not None:
        return exact
    head, dot, ext = filename.rpartition(".")
    if dot and "/" not in ext and not head.endswith("/"):
        return mapping.get(head)
    return None
