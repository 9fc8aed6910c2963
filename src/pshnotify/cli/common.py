"""Shared pieces of the command line: the app, options, error handling, output."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from pshnotify.clock import parse_instant
from pshnotify.domain.errors import ConflictError, InputError
from pshnotify.runtime.wiring import Runtime
from pshnotify.settings import load_settings

app = typer.Typer(
    help="Run a mandatory-training campaign by email.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
roster_app = typer.Typer(help="Import the roster.", no_args_is_help=True)
program_app = typer.Typer(help="Program files stored in the database.", no_args_is_help=True)
demo_app = typer.Typer(
    help="Demo helpers: a sample roster and a local mail catcher.", no_args_is_help=True
)
app.add_typer(roster_app, name="roster")
app.add_typer(program_app, name="program")
app.add_typer(demo_app, name="demo")

out = Console()
err = Console(stderr=True)

ProgramOpt = Annotated[
    str | None,
    typer.Option(
        "--program", help="Program key; defaults to the program file's (PSHNOTIFY_PROGRAM_FILE)."
    ),
]
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now", help="Act as if it were this instant (ISO-8601 with offset), for rehearsals."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

T = TypeVar("T")


_OPEN: list[Runtime] = []


@contextmanager
def handle_errors() -> Iterator[None]:
    """Bad input -> exit 2 with every problem listed; a refused action -> exit 1."""
    try:
        yield
    except InputError as exc:
        for line in exc.problems:
            err.print(f"[red]error:[/red] {line}", highlight=False, soft_wrap=True)
        if exc.hint:
            err.print(f"[yellow]next:[/yellow] {exc.hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ConflictError as exc:
        err.print(f"[red]refused:[/red] {exc}", highlight=False, soft_wrap=True)
        if exc.hint:
            err.print(f"[yellow]next:[/yellow] {exc.hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    finally:
        while _OPEN:
            _OPEN.pop().close()


def make_runtime(now: str | None, moving: bool = False) -> Runtime:
    settings = load_settings()
    instant: dt.datetime | None = None
    if now is not None:
        try:
            instant = parse_instant(now)
        except ValueError as exc:
            raise InputError([f"--now: {exc}"]) from None
    rt = Runtime.create(settings, instant, moving)
    _OPEN.append(rt)  # closed by handle_errors when the command ends
    return rt


def rehearsal_note(rt: Runtime, now: str | None) -> None:
    if now is not None:
        err.print(f"[dim]rehearsal: acting as if it were {rt.clock.now().isoformat()}[/dim]")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
