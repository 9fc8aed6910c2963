"""Every command's --help in an 80-column terminal (issue 26): no line wider than the
terminal, no help text cut ("…"), and no line broken before the terminal's edge in the middle
of a sentence (a docstring's own line break carried into the help)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from pshnotify.cli import app

WIDTH = 80


def _commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        found.append(path)
        for name, sub in getattr(command, "commands", {}).items():  # a group's
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def _help(path: list[str]) -> str:
    result = CliRunner().invoke(
        app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERM": "dumb", "NO_COLOR": "1"}
    )
    assert result.exit_code == 0, result.output
    return result.output


def early_breaks(text: str) -> list[str]:
    """Lines that end although the next line's first word would have fitted after them: in a
    panel's cell (its widest line bounds the cell) or in the text above the panels."""
    found: list[str] = []
    lines = text.splitlines()
    panel: list[str] = []
    prose: list[str] = []
    for line in [*lines, ""]:
        if line.startswith("│"):
            panel.append(line)
            continue
        if panel:
            found += _panel_breaks(panel)
            panel = []
        if line.strip() and not line.startswith(("╭", "╰")) and "Usage:" not in line:
            prose.append(line.rstrip())
            continue
        pairs = itertools.pairwise(prose)
        found += [a for a, b in pairs if len(a) + 1 + len(b.split()[0]) <= WIDTH - 1]
        prose = []
    return found


def _panel_breaks(rows: list[str]) -> list[str]:
    """A row indented past the first columns (a marker, a name) continues the row above."""
    cells = [row.strip("│").rstrip() for row in rows]
    widest = max(len(c) for c in cells)
    found = []
    for above, below in itertools.pairwise(cells):
        indent = len(below) - len(below.lstrip())
        if indent <= 6 or not below.strip():  # a row of its own, or a blank one
            continue
        if below.lstrip().startswith("["):  # Typer's own [required], [default: ...]
            continue
        if len(above) + 1 + len(below.split()[0]) <= widest:
            found.append(above.strip())
    return found


@pytest.mark.parametrize("path", _commands(), ids=lambda p: " ".join(p) or "pshnotify")
def test_help_reads_whole_in_80_columns(path: list[str]) -> None:
    shown = _help(path)
    too_wide = [line for line in shown.splitlines() if len(line) > WIDTH]
    assert not too_wide, too_wide
    assert "…" not in shown
    assert not early_breaks(shown), (early_breaks(shown), shown)
