"""JSON views: how items and versions look to users, filters and scripts (CLI.md shapes).

Pure functions from layer records to plain dicts. They own the mapping between dvstore's
four layers and Dataloop's single item JSON (intrinsic + non-intrinsic system metadata,
task refs, annotation QA status inside each annotation). No I/O.
"""

from __future__ import annotations

from typing import Any

from dvstore.io import dataloop
from dvstore.model import split_filename


def annotations_json(annset: dict[str, Any] | None, status: dict[str, Any] | None, item_id: str) -> list[dict[str, Any]]:
    """The item's annotations in Dataloop's shape, with QA status put back in place."""
    return _finish_annotations(dataloop.annotations_json(annset, status), item_id)


def _finish_annotations(anns: list[dict[str, Any]], item_id: str) -> list[dict[str, Any]]:
    # Users see a QA status only where one is set (no "status": null), plus the defaults
    # Dataloop's API shows for every annotation.
    for a in anns:
        system = a["metadata"]["system"]
        if system.get("status") is None:
            system.pop("status", None)
        a.setdefault("attributes", [])
        a.setdefault("coordinates", None)
        a["itemId"] = item_id
    return anns


def system_metadata(irec: dict[str, Any], meta: dict[str, Any] | None, status: dict[str, Any] | None) -> dict[str, Any]:
    system = dataloop.system_json(irec, meta, status)
    system["originalname"] = split_filename(irec["filename"])[1]
    return system


def item_json(iid: bytes, irec: dict[str, Any], annset: dict[str, Any] | None,
              meta: dict[str, Any] | None, status: dict[str, Any] | None) -> dict[str, Any]:
    """The Item shape of CLI.md (``dataloop.item_to_json``, what a checkout writes) plus the
    fields filters use (dir, name, type, annotated...)."""
    d, n = split_filename(irec["filename"])
    out = dataloop.item_to_json(irec, annset, meta, status, iid.hex())
    out["metadata"]["system"]["originalname"] = n
    _finish_annotations(out["annotations"], iid.hex())
    out.update(dir=d, name=n, type="file", mimetype=irec.get("mimetype", "application/octet-stream"),
               createdAt=irec.get("createdAt", ""), annotated=bool(out["annotations"]),
               annotationsCount=len(out["annotations"]))
    return out


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
