"""Shared pieces of the command line: the app, options, error handling, output."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pshnotify.domain.errors import ConflictError, InputError
from pshnotify.domain.text import visible

# Every command imports this module, `pshnotify --help` included: what a command needs
# (settings, the database, the program model, the services) is imported where it is used,
# so that the command line starts in a fraction of a second (bench/startup.py).
if TYPE_CHECKING:
    from pshnotify.runtime.wiring import Runtime

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
def handle_errors(
    fields: dict[str, str] | None = None, *, action: str = "", subject: str | None = None
) -> Iterator[None]:
    """Bad input -> exit 2 with every problem listed; a refused action -> exit 1.

    `fields` names, for a command's problems, the option or argument each of the domain's
    field names was typed as (`until` -> `--until`). A command that changes state names its
    `action` (and `subject`): a refusal is then written to the audit log as well."""
    try:
        with _say_errors(fields):
            try:
                yield
            except (InputError, ConflictError) as exc:
                # a refusal before the database was reached (no program file, bad
                # settings) has no campaign to be audited in: none is created for it
                if action and _OPEN and _OPEN[-1].database_reached:
                    _audit_refusal(_OPEN[-1], action, subject, exc)
                raise
    finally:
        while _OPEN:
            _OPEN.pop().close()


def _audit_refusal(
    rt: Runtime, action: str, subject: str | None, exc: InputError | ConflictError
) -> None:
    from pshnotify.services.reporting.audit_trail import record_refusal

    problems = exc.problems if isinstance(exc, InputError) else [str(exc)]
    record_refusal(
        rt.engine, rt.clock, actor=rt.actor, action=action, subject=subject, problems=problems
    )


@contextmanager
def _say_errors(fields: dict[str, str] | None) -> Iterator[None]:
    try:
        yield
    except InputError as exc:
        for line in exc.problems:
            name, sep, rest = line.partition(": ")
            if fields and sep and name in fields:
                line = f"{fields[name]}: {rest}"
            err.print(label("error:", "red", line), soft_wrap=True)
        if exc.hint:
            err.print(label("next:", "yellow", exc.hint), soft_wrap=True)
        raise typer.Exit(2) from None
    except ConflictError as exc:
        err.print(label("refused:", "red", str(exc)), soft_wrap=True)
        if exc.hint:
            err.print(label("next:", "yellow", exc.hint), soft_wrap=True)
        raise typer.Exit(1) from None


def local_time(at: dt.datetime | None, tz: dt.tzinfo) -> str:
    """pshnotify.domain.calendar.local_time, imported when first used."""
    from pshnotify.domain.calendar import local_time as local

    return local(at, tz)


def make_runtime(now: str | None, moving: bool = False, *, creates: bool = False) -> Runtime:
    """The command's runtime; only a command that `creates` the database (init) makes a
    SQLite file that is not there."""
    from pshnotify.clock import parse_instant
    from pshnotify.runtime.wiring import Runtime
    from pshnotify.settings import load_settings

    settings = load_settings()
    instant: dt.datetime | None = None
    if now is not None:
        try:
            instant = parse_instant(now)
        except ValueError as exc:
            raise InputError([f"--now: {exc}"]) from None
    rt = Runtime.create(settings, instant, moving, create_database=creates)
    _OPEN.append(rt)  # closed by handle_errors when the command ends
    return rt


def rehearsal_note(rt: Runtime, now: str | None, tz: dt.tzinfo | None = None) -> None:
    """`--now` said, in the zone of the program (`tz`, default the program file's)."""
    if now is not None:
        at = local_time(rt.clock.now(), tz or rt.program(None).program.tz)
        err.print(Text(f"rehearsal: acting as if it were {at}", "dim"))


def _json_value(value: Any) -> Any:
    """JSON's times are ISO-8601 with `T` and an offset (naive ones are UTC, as stored)."""
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=_json_value) + "\n")


Cell = str | Text


def _plain(value: Cell) -> str:
    return value.plain if isinstance(value, Text) else visible(value)


def fitted_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    drop_first: Sequence[str] = (),
    wrap: str | Sequence[str] = (),
    *,
    right: Sequence[str] = (),
) -> Table:
    """A table no wider than the output (80 columns when it is not a terminal), for every
    table the command line prints. Columns named in `drop_first` are left out, in that
    order, until it fits, and a caption names them; `wrap` columns (free text) wrap between
    words. No cell or heading is ever cut short (`laun…`): if it still does not fit, every
    column wraps, folding a long word. `right`: columns of figures."""
    wraps = ({wrap} if isinstance(wrap, str) else set(wrap)) & set(columns)
    cells = {c: [_plain(r[i]) for r in rows] for i, c in enumerate(columns)}
    natural = {c: max([len(c), *map(cell_len, v)]) for c, v in cells.items()}
    # Free text wraps between words (a heading too). Its narrowest: "keep", 20 (a longer
    # word folded), before a column is left out; "words", its longest word, if every column
    # fits so; else "fold", 10. A column narrower than that keeps its width.
    word = {c: max(cell_len(w) for v in [c, *cells[c]] for w in v.split() or [""]) for c in wraps}

    def floor(c: str, how: str) -> int:
        if c not in wraps:
            return natural[c]
        least = {"keep": 20, "words": word[c], "fold": 10}[how]
        return min(natural[c], max(least, *(len(w) for w in c.split() or [""])))

    def width(names: Sequence[str], how: str) -> int:
        """The table's width at the floors: each column has a space either side and a rule
        (the outer padding excepted)."""
        return sum(floor(c, how) for c in names) + 3 * len(names) - 1

    shown = list(columns)
    dropped: list[str] = []
    for name in drop_first:
        if width(shown, "keep") <= out.width:
            break
        shown.remove(name)
        dropped.append(name)
    widths: dict[str, int | None] = dict.fromkeys(shown)
    # Fixed columns whole, free text sharing what is left: its words whole if they fit,
    # else folded. Else (still too wide) no width is set, and every column wraps.
    for how in ("words", "fold"):
        if width(shown, how) > out.width:
            continue
        for c in shown:
            widths[c] = floor(c, how)
        spare = out.width - width(shown, how)
        text = sorted((c for c in shown if c in wraps), key=lambda c: natural[c] - floor(c, how))
        for i, c in enumerate(text):  # who wants least is served first; the rest shared
            more = min(natural[c] - floor(c, how), spare // (len(text) - i))
            widths[c] = floor(c, how) + more
            spare -= more
        break
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for c in shown:
        table.add_column(
            c,
            width=widths[c],
            no_wrap=widths[c] is not None and c not in wraps,
            overflow="fold",
            justify="right" if c in right else "left",
        )
    for r in rows:
        table.add_row(*(v for c, v in zip(columns, r, strict=True) if c in shown))
    if dropped:
        table.caption = f"not shown, to fit: {', '.join(dropped)} (use --json for all)"
    return table
