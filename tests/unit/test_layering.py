"""STYLE.md: each third-party library is imported by one module, and the error module is a leaf."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "dvstore"
OWNERS = {"blake3": {"hashing.py"}, "msgpack": {"codec.py"}, "lmdb": {"storage/db.py"}, "click": None,
          "orjson": {"io/coco.py"}}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0] if not node.module.startswith("dvstore") else node.module)
    return out


def test_each_library_has_one_importer():
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(PKG).as_posix()
        imported = _imports(path)
        for lib, owners in OWNERS.items():
            if lib not in imported:
                continue
            if owners is None:
                assert rel.startswith("cli/"), f"{rel} imports {lib}; only the cli package may"
            else:
                assert rel in owners, f"{rel} imports {lib}; only {sorted(owners)} may"


def test_errors_module_is_a_leaf():
    assert not any(m.startswith("dvstore") for m in _imports(PKG / "errors.py"))


def test_pure_modules_do_no_storage_io():
    for rel in ("tree.py", "filters.py", "filters_eval.py", "recipes.py", "merge_item.py", "model.py", "views.py"):
        imported = _imports(PKG / rel)
        assert not {"lmdb", "dvstore.storage.db", "dvstore.repo", "click"} & imported, rel
