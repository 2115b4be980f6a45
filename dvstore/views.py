"""JSON views: how items and versions look to users, filters and scripts (CLI.md shapes).

Pure functions from layer records to plain dicts. They own the mapping between dvstore's
four layers and Dataloop's single item JSON (intrinsic + non-intrinsic system metadata,
task refs, annotation QA status inside each annotation). No I/O.
"""

from __future__ import annotations

from typing import Any

from dvstore.model import split_filename


def annotations_json(annset: dict[str, Any] | None, status: dict[str, Any] | None, item_id: str) -> list[dict[str, Any]]:
    """The item's annotations in Dataloop's shape, with QA status put back in place."""
    if not annset:
        return []
    qa = (status or {}).get("annotations", {})
    out = []
    for aid in sorted(annset):
        a = dict(annset[aid])
        md = dict(a.get("metadata") or {})
        system = dict(md.get("system") or {})
        if aid in qa:
            system["status"] = qa[aid]
        md["system"] = system
        md.setdefault("user", {})
        a["metadata"] = md
        a.setdefault("attributes", [])
        a.setdefault("coordinates", None)
        a["itemId"] = item_id
        out.append(a)
    return out


def system_metadata(irec: dict[str, Any], meta: dict[str, Any] | None, status: dict[str, Any] | None) -> dict[str, Any]:
    system: dict[str, Any] = dict((meta or {}).get("system") or {})
    system.update(irec.get("system") or {})
    system["mimetype"] = irec.get("mimetype", "application/octet-stream")
    system["size"] = irec["size"]
    system["originalname"] = split_filename(irec["filename"])[1]
    tasks = (status or {}).get("tasks") or {}
    if tasks:
        refs = list(system.get("refs") or [])
        for tid in sorted(tasks):
            t = tasks[tid]
            refs.append({"type": t.get("type", "task"), "id": tid, "metadata": {"status": t.get("status")}})
        system["refs"] = refs
    return system


def item_json(iid: bytes, irec: dict[str, Any], annset: dict[str, Any] | None,
              meta: dict[str, Any] | None, status: dict[str, Any] | None) -> dict[str, Any]:
    """The Item shape of CLI.md plus the fields filters use (dir, name, type, annotated...)."""
    d, n = split_filename(irec["filename"])
    anns = annotations_json(annset, status, iid.hex())
    tasks = (status or {}).get("tasks") or {}
    return {
        "id": iid.hex(),
        "filename": irec["filename"],
        "dir": d,
        "name": n,
        "type": "file",
        "hidden": bool(irec.get("hidden", False)),
        "binary": irec["blob"].hex(),
        "size": irec["size"],
        "mimetype": irec.get("mimetype", "application/octet-stream"),
        "createdAt": irec.get("createdAt", ""),
        "annotated": bool(anns),
        "annotationsCount": len(anns),
        "metadata": {"system": system_metadata(irec, meta, status), "user": dict((meta or {}).get("user") or {})},
        "annotations": anns,
        "status": {tid: tasks[tid].get("status") for tid in sorted(tasks)},
    }


_LAZY_FIELDS = frozenset({"id", "filename", "dir", "name", "type", "hidden", "size", "mimetype", "createdAt",
                          "annotated", "annotationsCount", "metadata", "binary"})


class LazyItemView(dict):  # type: ignore[type-arg]
    """An item view that computes a field the first time a filter asks for it.

    Filters read documents with ``get``; a filtered clone of a million items must not pay
    for building metadata views that the query never looks at.
    """

    __slots__ = ("_iid", "_irec", "_meta", "_status", "_n")

    def __init__(self, iid: bytes, irec: dict[str, Any], meta: dict[str, Any] | None,
                 status: dict[str, Any] | None, annotated: int | None) -> None:
        super().__init__()
        self._iid, self._irec, self._meta, self._status, self._n = iid, irec, meta, status, annotated

    def _compute(self, key: str) -> Any:
        irec = self._irec
        if key == "filename":
            return irec["filename"]
        if key == "dir":
            return split_filename(irec["filename"])[0]
        if key == "name":
            return split_filename(irec["filename"])[1]
        if key == "type":
            return "file"
        if key == "hidden":
            return bool(irec.get("hidden", False))
        if key == "id":
            return self._iid.hex()
        if key == "binary":
            return irec["blob"].hex()
        if key == "size":
            return irec["size"]
        if key == "mimetype":
            return irec.get("mimetype", "application/octet-stream")
        if key == "createdAt":
            return irec.get("createdAt", "")
        if key == "annotated":
            return bool(self._n)
        if key == "annotationsCount":
            return self._n or 0
        return {"system": system_metadata(irec, self._meta, self._status),
                "user": dict((self._meta or {}).get("user") or {})}

    def get(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        if key in _LAZY_FIELDS:
            v = self._compute(key)
            self[key] = v
            return v
        return default

    def __getitem__(self, key: Any) -> Any:
        v = self.get(key, _ABSENT)
        if v is _ABSENT:
            raise KeyError(key)
        return v

    def __contains__(self, key: object) -> bool:
        return key in _LAZY_FIELDS or dict.__contains__(self, key)


_ABSENT = object()
