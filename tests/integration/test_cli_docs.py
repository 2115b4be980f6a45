"""docs/cli.md names every command the CLI has, so the page cannot fall behind."""

from __future__ import annotations

from pathlib import Path

from dvstore.cli.commands import cli

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_every_command_is_documented():
    text = DOC.read_text()
    missing = [name for name in cli.commands if f"### dvs {name}" not in text]
    assert not missing, f"docs/cli.md lacks sections for: {missing}"
