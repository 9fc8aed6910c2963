"""Demo helpers: a sample roster and a local mail catcher."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pshnotify.cli.common import demo_app, out


# -- demo helpers --------------------------------------------------------------------------------
@demo_app.command("roster")
def demo_roster(
    out_file: Annotated[Path, typer.Option("--out", help="Where to write the CSV.")],
    count: Annotated[int, typer.Option("--count", min=1)] = 200,
    seed: Annotated[int, typer.Option("--seed")] = 1,
) -> None:
    """Write a sample roster that exercises every wave and eligibility rule."""
    from pshnotify.demo.sample_roster import write_sample_roster

    n = write_sample_roster(out_file, count=count, seed=seed)
    out.print(f"wrote {n} people to {out_file}")


@demo_app.command("catcher")
def demo_catcher(
    directory: Annotated[Path, typer.Option("--dir", help="Where to store .eml files.")] = Path(
        "var/mail"
    ),
    host: Annotated[str, typer.Option("--host")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8025,
) -> None:
    """Run a local SMTP server that stores every message it receives as an .eml file."""
    from pshnotify.demo.catcher import serve

    out.print(f"mail catcher on {host}:{port}, writing to {directory}/ (Ctrl-C to stop)")
    serve(directory, host, port)
