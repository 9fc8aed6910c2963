"""The command line: parse, call one service, print. No business rules live here.

Each module registers its commands on the shared Typer app in `common`.
"""

from __future__ import annotations

from pshnotify.cli import (  # noqa: F401 - each module registers its commands
    bounces,
    campaign,
    completions,
    demo,
    messages,
    new,
    reports,
    requests,
    season,
    users,
    web,
)
from pshnotify.cli.common import app


def main() -> None:  # pragma: no cover - console script entry
    app()
