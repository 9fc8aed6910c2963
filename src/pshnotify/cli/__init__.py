"""The command line: parse, call one service, print. No business rules live here.

Each module registers its commands on the shared Typer app in `common`.
"""

from __future__ import annotations

import gc

# The collector paused while the commands' modules load: they make about 100,000 objects,
# none garbage, which it walked again and again (70 ms of each command's start-up).
_collecting = gc.isenabled()
gc.disable()

from pshnotify.cli import (  # noqa: E402, F401 - each module registers its commands
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
from pshnotify.cli.common import app  # noqa: E402

if _collecting:
    gc.enable()


def main() -> None:  # pragma: no cover - console script entry
    # What is loaded now lives as long as the process: no collection need walk it again.
    gc.freeze()
    app()
