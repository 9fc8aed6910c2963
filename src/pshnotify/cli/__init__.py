"""The command line: parse, call one service, print. No business rules live here.

Each module registers its commands on the shared Typer app in `common`.
"""

from __future__ import annotations

from pshnotify.cli import campaign, demo, season  # noqa: F401 - registers the commands
from pshnotify.cli.common import app


def main() -> None:  # pragma: no cover - console script entry
    app()
