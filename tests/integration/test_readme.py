"""The README's library example runs as written (it cannot drift from the code)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_python_example_runs(tmp_path: Path):
    src = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", src, re.S)
    assert blocks, "the README lost its library example"
    code = blocks[0].replace("/tmp/dvs-readme", str(tmp_path / "readme-store"))
    exec(compile(code, "README.md", "exec"), {})


def test_readme_names_the_two_commands():
    src = (ROOT / "README.md").read_text()
    assert "make demo" in src and "make test" in src
