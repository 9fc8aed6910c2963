"""`pshnotify new DIR`: a campaign folder to edit, from the files shipped with pshnotify."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from pshnotify.cli.common import app, handle_errors, out

_ABOUT = {
    "program.toml": "the program (the 2023-2024 seed, a worked example)",
    "templates/email/": "the emails, one folder per kind",
    "roster-example.csv": "an example roster with the columns program.toml reads",
    ".env": "every setting, commented out at its default (mode 0600)",
    "pshnotify.service": "a systemd unit running `pshnotify run` in this folder",
}


@app.command()
def new(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="The folder to write.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Write into a folder that has files, replacing ours."),
    ] = False,
) -> None:
    """Write a campaign folder to edit, and run the other commands in it.

    It holds the program file, the email templates, an example roster, a commented .env and a systemd unit.
    """  # noqa: E501 (one line a paragraph: Typer keeps a later paragraph's line breaks)
    from pshnotify.skeleton import write_campaign_folder

    with handle_errors():
        write_campaign_folder(directory, force=force)
        out.print(f"wrote a campaign folder in {directory}:")
        for name, about in _ABOUT.items():
            out.print(f"  {name:<19} {about}")
        out.print(f"next: cd {shlex.quote(str(directory))} && pshnotify init", soft_wrap=True)
        out.print("then: pshnotify roster import roster-example.csv (or your roster)")
