"""`dvs add` refuses a tree whose names would make an item also a folder: one error line,
exit 2 (invalid input), and the dataset's head does not move."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import write_files


def head(dvs, name: str) -> str:  # type: ignore[no-untyped-def]
    return str(json.loads(dvs("show", name, "--json").out)["id"])


@pytest.mark.parametrize("existing, added, message", [
    ({"a": b"file"}, {"a/b": b"inside"}, "error: item /a/b would be inside /a, which is an item"),
    ({"a/b": b"inside"}, {"a": b"file"}, "error: item /a would be a folder too: /a/b is an item inside it"),
])
def test_dvs_add_refuses_an_item_and_folder_clash(tmp_path: Path, dvs, existing: dict[str, bytes],  # type: ignore[no-untyped-def]
                                                  added: dict[str, bytes], message: str) -> None:
    write_files(tmp_path / "first", existing)
    write_files(tmp_path / "second", {**added, "other/ok.txt": b"ok"})
    assert dvs("create", "ds").rc == 0
    assert dvs("add", "ds", str(tmp_path / "first")).rc == 0
    before = head(dvs, "ds")
    r = dvs("add", "ds", str(tmp_path / "second"))
    assert r.rc == 2, r.err
    errors = [line for line in r.err.splitlines() if line.startswith("error:")]
    assert errors == [message], r.err
    assert all(line.startswith(("error:", "hint:")) for line in r.err.splitlines()), r.err
    assert head(dvs, "ds") == before
    names = [i["filename"] for i in json.loads(dvs("ls", "ds", "--json").out)]
    assert names == ["/" + n for n in existing]
