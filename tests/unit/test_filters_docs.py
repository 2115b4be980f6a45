"""docs/filters.md is executed, so its examples cannot drift from the code.

* ```python blocks are doctests, run in document order in one shared namespace;
* a ```json query block (```json query clone for a clone) is followed by a ```text block
  ``selects: a, b`` (or ``selects: nothing``), checked with the doc's own ``select`` helper
  (``select_annotations`` for an annotations query);
* a ```json error block is followed by ``FilterError: <message>``;
* any other ```json block must parse; ```text blocks that follow nothing are prose.
"""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path
from typing import Any

import pytest

from dvstore.errors import FilterError
from dvstore.filters import compile_query

DOC = Path(__file__).resolve().parents[2] / "docs" / "filters.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def blocks() -> list[tuple[str, str, int]]:
    text = DOC.read_text(encoding="utf-8")
    return [(m.group(1).strip(), m.group(2), text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def run_doctests() -> dict[str, Any]:
    globs: dict[str, Any] = {}
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    for info, body, line in blocks():
        if info != "python":
            continue
        test = parser.get_doctest(body, globs, f"docs/filters.md:{line}", str(DOC), line)
        assert test.examples, f"python block at line {line} has no >>> examples"
        runner.run(test, clear_globs=False)
        globs = test.globs  # DocTest copies its globals: carry them to the next block
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in docs/filters.md (see output above)"
    return globs


@pytest.fixture(scope="module")
def doc_globals() -> dict[str, Any]:
    return run_doctests()


def test_python_blocks_pass(doc_globals: dict[str, Any]) -> None:
    assert {"ITEMS", "ANNOTATIONS", "select", "select_annotations"} <= doc_globals.keys()


def test_every_block_has_a_known_role() -> None:
    allowed = {"python", "json", "json query", "json query clone", "json error", "text"}
    for info, _, line in blocks():
        assert info in allowed, f"docs/filters.md:{line}: unexecuted block kind {info!r}"


def _cases() -> list[tuple[str, str, str, int]]:
    bs = blocks()
    out = []
    for i, (info, body, line) in enumerate(bs):
        if info.startswith("json "):
            assert i + 1 < len(bs) and bs[i + 1][0] == "text", f"docs/filters.md:{line}: {info} needs a text block"
            out.append((info, body, bs[i + 1][1].strip(), line))
    return out


CASES = _cases()


def test_doc_has_examples() -> None:
    kinds = {c[0] for c in CASES}
    assert {"json query", "json query clone", "json error"} <= kinds and len(CASES) >= 25


@pytest.mark.parametrize(("info", "body", "expected", "line"), CASES, ids=[f"line{c[3]}" for c in CASES])
def test_json_examples(info: str, body: str, expected: str, line: int, doc_globals: dict[str, Any]) -> None:
    query = json.loads(body)
    if info == "json error":
        assert expected.startswith("FilterError: ")
        with pytest.raises(FilterError) as e:
            compile_query(query)
        assert str(e.value) == expected.removeprefix("FilterError: ")
        return
    assert expected.startswith("selects: "), f"line {line}: expected 'selects: ...'"
    want = expected.removeprefix("selects: ")
    want_list = [] if want == "nothing" else [w.strip() for w in want.split(",")]
    purpose = "clone" if info.endswith("clone") else "list"

    def run(q: Any) -> list[str]:
        if compile_query(q).resource == "annotations":
            return list(doc_globals["select_annotations"](q))
        return list(doc_globals["select"](q, purpose=purpose))

    assert run(query) == want_list
    # The JSON text selects the same, and so does the canonical form a clone version records.
    assert run(body) == want_list
    assert run(compile_query(query, purpose=purpose).canonical()) == want_list  # type: ignore[arg-type]


def test_plain_json_blocks_parse() -> None:
    for info, body, line in blocks():
        if info == "json":
            assert json.loads(body) is not None, line
