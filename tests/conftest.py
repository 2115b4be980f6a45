"""Shared test helpers: run the real ``dvs`` command, make stores and sample files."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from dvstore.api import Store

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    rc: int
    out: str
    err: str


def run_dvs(*args: str, cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
            timeout: float = 120, check_traceback: bool = True) -> Result:
    """Run ``python -m dvstore ARGS`` in a subprocess; never a traceback on stderr."""
    e = dict(os.environ)
    e.pop("DVS_DEBUG", None)
    e.pop("DVS_STORE", None)
    if env:
        e.update(env)
    p = subprocess.run([sys.executable, "-m", "dvstore", *args], cwd=cwd, env=e, capture_output=True,
                       text=True, timeout=timeout)
    if check_traceback:
        assert "Traceback" not in p.stderr, p.stderr
    return Result(p.returncode, p.stdout, p.stderr)


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.init(str(tmp_path / "store"))


@pytest.fixture
def dvs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A function running dvs against a fresh store in tmp_path/store."""
    (tmp_path / "store").mkdir()
    r = run_dvs("init", str(tmp_path / "store"))
    assert r.rc == 0, r.err

    def call(*args: str, **kw):  # type: ignore[no-untyped-def]
        return run_dvs("--store", str(tmp_path / "store" / ".dvs"), *args, **kw)

    return call
