"""Output helpers for the CLI: JSON documents on stdout, text tables, version views."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from dvstore.api import Dataset
from dvstore.hashing import short
from dvstore.model import Commit


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False, default=_default))
    sys.stdout.write("\n")


def _default(o: Any) -> Any:
    if isinstance(o, bytes):
        return o.hex()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def version_json(ds: Dataset, cid: bytes, c: Commit, counts: dict[str, int] | None = None) -> dict[str, Any]:
    recipe = ds._repo.recipe(c.recipe)
    doc: dict[str, Any] = {
        "id": cid.hex(),
        "parents": [p.hex() for p in c.parents],
        "op": c.op,
        "message": c.message,
        "author": c.author,
        "time": c.time,
        "recipe": {"id": recipe.get("id"), "title": recipe.get("title"), "object": c.recipe.hex()},
        "layers": {k: (v.hex() if v else None) for k, v in c.layers.items()},
        "info": c.info,
    }
    if counts is not None:
        doc.update(counts)
    return doc


def echo_version(cid: bytes, c: Commit) -> None:
    first = (c.message or "").splitlines()[0] if c.message else ""
    click.echo(f"{short(cid)}  {c.time}  {c.op:<13} {first}")
