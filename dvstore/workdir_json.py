"""The json/ side of a working folder: the bytes of each item's json file, and what an
edited json file changes (``workdir`` holds the folder itself: checkout, status, commit).

An item's json file is ``views.item_json`` of its records, rendered by ``render_json``.
``json_edit`` compares an edited file with the checked-out item and returns what changed
(``JsonEdit``: annotations, metadata, task status, hidden), or None; ``apply_edit`` turns
that into ``Editor`` calls. The rules for what a json file may change are ``workdir``'s
(its module docstring).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dvstore import codec
from dvstore.edit import Editor, normalize_annotation
from dvstore.errors import DvsError, ImportFormatError, InvalidNameError, UsageError
from dvstore.io import dataloop
from dvstore.model import normalize_filename
from dvstore.repo import ANNSET, Repository
from dvstore.views import item_json


def same_stored(a: Any, b: Any) -> bool:
    """Equal as stored (1, 1.0 and True differ)."""
    return codec.encode(a) == codec.encode(b)


def _json_default(o: Any) -> Any:
    if isinstance(o, (bytes, bytearray)):
        return bytes(o).hex()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def render_json(view: dict[str, Any]) -> bytes:
    """The bytes of a json/ file: pretty, sorted keys, UTF-8, newline at the end."""
    text = json.dumps(view, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)
    return (text + "\n").encode("utf-8")


@dataclass
class VItem:
    iid: bytes
    irec: dict[str, Any]
    ann_oid: bytes | None
    meta: dict[str, Any] | None
    status: dict[str, Any] | None


def view(repo: Repository, v: VItem) -> dict[str, Any]:
    annset = repo.objects.get(v.ann_oid, ANNSET) if v.ann_oid else None
    return item_json(v.iid, v.irec, annset, v.meta, v.status)


@dataclass
class JsonEdit:
    display: str
    parts: list[str]
    annotations: list[dict[str, Any]] | None = None
    metadata: tuple[dict[str, Any], dict[str, Any]] | None = None
    tasks: dict[str, tuple[str | None, dict[str, Any]]] | None = None
    hidden: bool | None = None


_EMPTY_DOC: dict[str, Any] = {"annotations": [], "metadata": {"system": {}, "user": {}}, "status": {}, "hidden": False}


_TASK_FIELDS = ("type", "metadata", "ref")


_RESERVED_KWARGS = frozenset({"filename", "task_id", "status"})


def _parse(raw: bytes, display: str) -> dict[str, Any]:
    doc = dataloop.parse_json_bytes(raw, display)
    if not isinstance(doc, dict):
        raise ImportFormatError(f"{display}: an item json must be an object")
    return doc


def _load(doc: dict[str, Any], display: str) -> dict[str, Any]:
    try:
        return dataloop.load_item_json(doc)
    except ImportFormatError as e:
        raise ImportFormatError(e.message.replace("<item json>", display, 1), hint=e.hint) from None


def _tasks_of(doc: dict[str, Any], display: str, *, use_map: bool) -> dict[str, dict[str, Any]]:
    d = doc if use_map else {**doc, "status": None}
    tasks = _load(d, display)["tasks"]
    return {tid: t for tid, t in tasks.items() if t.get("status") is not None}


def _refs_stated(doc: dict[str, Any]) -> bool:
    md = doc.get("metadata")
    return isinstance(md, dict) and isinstance(md.get("system"), dict) and "refs" in md["system"]


def _effective_metadata(md: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    # What Editor.update_metadata(replace=True) keeps: user, and system without task refs.
    system = {k: v for k, v in (md.get("system") or {}).items() if k not in ("refs", "taskStatusLog")}
    return dict(md.get("user") or {}), system


def json_edit(repo: Repository, display: str, raw: bytes, filename: str, v: VItem | None) -> JsonEdit | None:
    """What a json file changes relative to the checked-out item (None: nothing)."""
    base_bytes = render_json(view(repo, v)) if v is not None else None
    if raw == base_bytes:
        return None
    doc = _parse(raw, display)
    doc_id = doc.get("id")
    if doc_id is not None:
        if v is None:
            raise UsageError(f"{display}: id {doc_id!r} does not match: {filename} is a new item "
                             "(it gets an id when committed)", hint='remove the "id" field')
        if doc_id != v.iid.hex():
            raise UsageError(f"{display}: id {doc_id!r} does not match the item at {filename} ({v.iid.hex()})",
                             hint='fix or remove the "id" field; to move an item, move its file under items/')
    doc_fn = doc.get("filename")
    if doc_fn is not None:
        try:
            same = isinstance(doc_fn, str) and normalize_filename(doc_fn) == filename
        except InvalidNameError:
            same = False
        if not same:
            raise UsageError(f"{display}: filename {doc_fn!r} does not match its path ({filename})",
                             hint='fix or remove the "filename" field; to move an item, move its file under items/')
    new = _load(doc, display)
    if v is not None:
        base_doc = json.loads(base_bytes or b"{}")
        try:
            base = _load(base_doc, "the checked-out version")
        except ImportFormatError as e:
            raise UsageError(f"{display}: this item's json cannot be edited: {e.message}",
                             hint="restore the file with 'dvs checkout --force', "
                                  "or edit the item through the API") from None
        stored_anns: dict[str, Any] = dict(repo.objects.get(v.ann_oid, ANNSET)) if v.ann_oid else {}
        stored_tasks: dict[str, Any] = dict(((v.status or {}).get("tasks")) or {})
    else:
        base_doc = _EMPTY_DOC
        base = _load(base_doc, display)
        stored_anns, stored_tasks = {}, {}
    edit = JsonEdit(display, [])

    if "annotations" in doc:
        new_anns = {a["id"]: a for a in new["annotations"]}
        base_anns = {a["id"]: a for a in base["annotations"]}
        new_qa, base_qa = new["annotation_status"], base["annotation_status"]
        if not same_stored([new_anns, new_qa], [base_anns, base_qa]):
            out = []
            for i, (aid, a) in enumerate(new_anns.items()):
                keep = aid in base_anns and aid in stored_anns and same_stored(a, base_anns[aid])
                if not keep and _shape_edited(a, base_anns.get(aid)):
                    problem = dataloop.coordinates_problem(a)
                    if problem is not None:
                        raise ImportFormatError(f"{display}: annotations[{i}]: {problem}")
                ann = dict(stored_anns[aid]) if keep else dict(a)
                md = dict(ann.get("metadata") or {})
                md["system"] = {**(md.get("system") or {}), "status": new_qa.get(aid)}
                ann["metadata"] = md
                try:
                    normalize_annotation(ann)
                except DvsError as e:
                    raise UsageError(f"{display}: {e.message}", hint=e.hint) from None
                out.append(ann)
            edit.annotations = out
            edit.parts.append("annotations")

    if "metadata" in doc:
        new_md, base_md = _effective_metadata(new["metadata"]), _effective_metadata(base["metadata"])
        if not same_stored(list(new_md), list(base_md)):
            edit.metadata = new_md
            edit.parts.append("metadata")

    map_stated = doc.get("status") is not None
    refs_stated = _refs_stated(doc)
    if map_stated or refs_stated:
        base_map = _tasks_of(base_doc, "the checked-out version", use_map=True)
        base_refs = _tasks_of(base_doc, "the checked-out version", use_map=False)
        new_map = _tasks_of(doc, display, use_map=True) if map_stated else base_map
        new_refs = _tasks_of(doc, display, use_map=False) if refs_stated else base_refs
        map_changed = map_stated and not same_stored(new_map, base_map)
        refs_changed = refs_stated and not same_stored(new_refs, base_refs)
        if map_changed and refs_changed and not same_stored(_statuses(new_map), _statuses(new_refs)):
            raise UsageError(f"{display}: the \"status\" map and metadata.system.refs disagree about task status",
                             hint="edit one of them (or make them agree)")
        target = new_map if map_changed else new_refs if refs_changed else None
        if target is not None:
            base_t = base_map if map_changed else base_refs
            edit.tasks = _task_changes(target, base_t, stored_tasks)
            if edit.tasks:
                edit.parts.append("status")

    hidden = new.get("hidden")
    if hidden is not None and bool(hidden) != bool(base.get("hidden")):
        edit.hidden = bool(hidden)
        edit.parts.append("hidden")
    return edit if edit.parts else None


def _shape_edited(new: dict[str, Any], base: dict[str, Any] | None) -> bool:
    """Does the json file give this annotation its type or coordinates (a new annotation, or
    those edited)? Only then are they checked: an edit of a label leaves coordinates stored
    by an older version (or through the API) alone."""
    keys = ("type", "coordinates", "data")
    return base is None or not same_stored([new.get(k) for k in keys], [base.get(k) for k in keys])


def _statuses(tasks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {tid: t.get("status") for tid, t in tasks.items()}


def _task_changes(new: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]],
                  stored: dict[str, Any]) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """{task id: (new status or None to remove, the other fields to store)} for changed tasks."""
    out: dict[str, tuple[str | None, dict[str, Any]]] = {}
    for tid in sorted(set(new) | set(base)):
        nt, bt = new.get(tid), base.get(tid)
        if nt is not None and bt is not None and same_stored(nt, bt):
            continue
        if nt is None:
            out[tid] = (None, {})
            continue
        extra = {k: val for k, val in (stored.get(tid) or {}).items() if k != "status"}
        for k in _TASK_FIELDS:
            nv, bv = nt.get(k), (bt or {}).get(k)
            if bt is None or not same_stored(nv, bv):
                if nv is None:
                    extra.pop(k, None)
                else:
                    extra[k] = nv
        extra = {k: val for k, val in extra.items() if k not in _RESERVED_KWARGS}
        status = nt.get("status")
        out[tid] = (status if isinstance(status, str) else None, extra)
    return out


def apply_edit(e: Editor, fn: str, edit: JsonEdit) -> None:
    try:
        if edit.annotations is not None:
            e.set_annotations(fn, edit.annotations)
        if edit.metadata is not None:
            user, system = edit.metadata
            e.update_metadata(fn, user=user, system=system, replace=True)
        for tid, (status_, extra) in (edit.tasks or {}).items():
            e.set_task_status(fn, tid, status_, **extra)
        if edit.hidden is not None:
            e.set_hidden(fn, edit.hidden)
    except DvsError as err:
        raise type(err)(f"{edit.display}: {err.message}", hint=err.hint) from None
