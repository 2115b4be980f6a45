"""JSON given to dvs by the user or read from disk: one reader, clear errors, documented codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dvstore import Store
from dvstore.errors import FilterError
from tests.conftest import write_files

ANNOTATIONS_QUERY = '{"resource": "annotations", "filter": {"label": "cat"}}'


@pytest.fixture
def pets(tmp_path: Path, dvs):  # type: ignore[no-untyped-def]
    write_files(tmp_path / "ph", {"cat/1.png": b"\x89PNG\r\n\x1a\n1", "dog/2.png": b"\x89PNG\r\n\x1a\n2"})
    assert dvs("create", "pets").rc == 0
    assert dvs("add", "pets", str(tmp_path / "ph")).rc == 0
    return dvs


def test_listing_refuses_an_annotations_query_as_clone_does(tmp_path: Path, pets) -> None:
    for args in (("ls", "pets"), ("clone", "pets", "c")):
        r = pets(*args, "--filter", ANNOTATIONS_QUERY)
        assert r.rc == 2, (args, r.err)
        assert r.err.splitlines()[0].endswith("filter must select items, not annotations"), r.err
        assert r.err.splitlines()[1].startswith("hint: ") and '"join"' in r.err


def test_items_list_refuses_an_annotations_query(store: Store) -> None:
    ds = store.datasets.create("pets")
    with pytest.raises(FilterError, match="must select items, not annotations"):
        ds.items.list(filters={"resource": "annotations", "filter": {"label": "cat"}})
