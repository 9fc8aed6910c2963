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
from rich.text import Text

from pshnotify.clock import parse_instant
from pshnotify.domain.errors import ConflictError, InputError
from pshnotify.domain.text import visible
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


class _PlainConsole(Console):
    """A console that never reads data as markup: every string printed (or put in a table
    cell) is shown as written, with control characters made visible (`\\x1b`), so a roster
    value such as `[/red]` or an ESC sequence cannot break the output or drive the terminal.
    Styled labels are `Text` objects built by the code (`label`)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(visible(text), **kwargs)


out = _PlainConsole(markup=False, emoji=False, highlight=False)
err = _PlainConsole(stderr=True, markup=False, emoji=False, highlight=False)

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


def label(tag: str, style: str, rest: str) -> Text:
    """`tag` styled, then `rest` as plain text (data never becomes markup)."""
    return Text.assemble((tag, style), " ", visible(rest))


@contextmanager
def handle_errors() -> Iterator[None]:
    """Bad input -> exit 2 with every problem listed; a refused action -> exit 1."""
    try:
        yield
    except InputError as exc:
        for line in exc.problems:
            err.print(label("error:", "red", line), soft_wrap=True)
        if exc.hint:
            err.print(label("next:", "yellow", exc.hint), soft_wrap=True)
        raise typer.Exit(2) from None
    except ConflictError as exc:
        err.print(label("refused:", "red", str(exc)), soft_wrap=True)
        if exc.hint:
            err.print(label("next:", "yellow", exc.hint), soft_wrap=True)
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
        err.print(Text(f"rehearsal: acting as if it were {rt.clock.now().isoformat()}", "dim"))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
