"""docs/history.md is executed: its ```python blocks are doctests, run in order in one namespace."""

from __future__ import annotations

import doctest
import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "history.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```\s*$", re.S | re.M)


def test_history_doc_examples_run() -> None:
    text = DOC.read_text(encoding="utf-8")
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    globs: dict[str, Any] = {}
    ran = 0
    for m in FENCE.finditer(text):
        if m.group(1).strip() != "python":
            continue
        line = text.count("\n", 0, m.start()) + 1
        test = parser.get_doctest(m.group(2), globs, f"docs/history.md:{line}", str(DOC), line)
        assert test.examples, f"python block at line {line} has no >>> examples"
        runner.run(test, clear_globs=False)
        globs = test.globs
        ran += 1
    assert ran >= 3
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} example(s) failed in docs/history.md (see output above)"


def test_documented_json_keys_exist() -> None:
    """The diff sections the page documents are the ones the code returns."""
    text = DOC.read_text(encoding="utf-8")
    for section in ("items", "annotations", "metadata", "status", "labels", "recipe"):
        assert f"| `{section}` |" in text
