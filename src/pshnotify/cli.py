"""The command line: parse, call one service, print. No business rules live here."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

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


@contextmanager
def _errors() -> Iterator[None]:
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


def _runtime(now: str | None) -> Runtime:
    settings = load_settings()
    instant: dt.datetime | None = None
    if now is not None:
        try:
            instant = parse_instant(now)
        except ValueError as exc:
            raise InputError([f"--now: {exc}"]) from None
    return Runtime.create(settings, instant)


def _rehearsal_note(rt: Runtime, now: str | None) -> None:
    if now is not None:
        err.print(f"[dim]rehearsal: acting as if it were {rt.clock.now().isoformat()}[/dim]")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


# -- init / program ------------------------------------------------------------------------------
@app.command()
def init(now: NowOpt = None) -> None:
    """Create or upgrade the database, and store the program file."""
    from pshnotify.services.programs import register_program_file
    from pshnotify.store import migrate
    from pshnotify.store.db import normalize_url

    with _errors():
        rt = _runtime(now)
        migrate.upgrade(rt.engine)
        stored = register_program_file(rt.engine, rt.settings.program_file, rt.clock, rt.actor)
        from sqlalchemy.engine import make_url

        url = make_url(normalize_url(rt.settings.database_url)).render_as_string(hide_password=True)
        out.print(f"database ready: {url} (revision {migrate.current_revision(rt.engine)})")
        out.print(
            f"program: {stored.key} - {stored.program.program.name} "
            f"{stored.program.program.cycle}, {len(stored.program.waves)} waves"
        )
        out.print("next: pshnotify roster import ROSTER.csv")


@program_app.command("load")
def program_load(file: Path, now: NowOpt = None) -> None:
    """Validate a program file and store it (several programs can live side by side)."""
    from pshnotify.services.programs import register_program_file

    with _errors():
        rt = _runtime(now)
        rt.require_schema()
        stored = register_program_file(rt.engine, file, rt.clock, rt.actor)
        out.print(f"stored program {stored.key}; use it with --program {stored.key}")


@program_app.command("list")
def program_list(as_json: JsonOpt = False) -> None:
    """List the programs in the database."""
    from pshnotify.services.programs import all_programs

    with _errors():
        rt = _runtime(None)
        rt.require_schema()
        rows = [
            {
                "key": p.key,
                "name": p.program.program.name,
                "cycle": p.program.program.cycle,
                "waves": [w.key for w in p.program.waves],
            }
            for p in all_programs(rt.engine)
        ]
        if as_json:
            _print_json(rows)
            return
        for r in rows:
            out.print(f"{r['key']}: {r['name']} {r['cycle']} ({', '.join(r['waves'])})")


@program_app.command("check")
def program_check(file: Path) -> None:
    """Validate a program file without storing it."""
    from pshnotify.domain.program import load_program

    with _errors():
        program, _ = load_program(file)
        out.print(
            f"{file}: valid; program {program.key}, {len(program.waves)} waves, "
            f"{len(program.eligibility)} eligibility rules"
        )


# -- roster --------------------------------------------------------------------------------------
@roster_app.command("import")
def roster_import(
    file: Path,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and count; change nothing.")
    ] = False,
    merge: Annotated[
        bool, typer.Option("--merge", help="Add and update only; remove nobody.")
    ] = False,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import the roster CSV (the whole current roster unless --merge)."""
    from pshnotify.services.roster import import_roster

    with _errors():
        rt = _runtime(now)
        stored = rt.program(program)
        with _progress(file, "reading roster") as advance:
            report = import_roster(
                rt.engine,
                stored,
                file,
                rt.clock,
                actor=rt.actor,
                dry_run=dry_run,
                merge=merge,
                progress=advance,
            )
        if as_json:
            _print_json(report.as_dict())
            return
        verb = "would import" if dry_run else "imported"
        out.print(
            f"{verb} {report.rows} people from {file}: {report.added} new, "
            f"{report.updated} updated, {report.unchanged} unchanged, "
            f"{report.removed} removed"
        )
        table = Table("wave", "people")
        for wave, n in sorted(report.by_wave.items()):
            table.add_row(wave, str(n))
        out.print(table)
        reasons = Table("eligibility", "people")
        for reason, n in sorted(report.by_reason.items()):
            reasons.add_row(reason, str(n))
        out.print(reasons)
        if dry_run:
            out.print("dry run: nothing was changed")
        else:
            out.print("next: pshnotify launch WAVE --dry-run")


@contextmanager
def _progress(file: Path, label: str) -> Iterator[Callable[[int], None] | None]:
    if not err.is_terminal:
        yield None
        return
    try:
        total = sum(1 for _ in file.open("rb")) - 1
    except OSError:
        yield None
        return
    with Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=max(total, 1))
        yield lambda n: bar.advance(task, n)


# -- launch --------------------------------------------------------------------------------------
@app.command()
def launch(
    wave: str,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show who would get it.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Launch even if the window is over.")
    ] = False,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Queue the launch email for every required member of WAVE."""
    from pshnotify.services.launch import launch_wave, preview_launch

    with _errors():
        rt = _runtime(now)
        _rehearsal_note(rt, now)
        stored = rt.program(program)
        summary = preview_launch(rt.engine, stored, wave, rt.clock)
        if dry_run or not as_json:
            _show_launch(summary, as_json)
        if dry_run:
            if not as_json:
                out.print("dry run: nothing was queued")
            return
        if summary.window == "over" and not force:
            raise ConflictError(
                f"wave {wave!r} closed on {summary.closes.isoformat()}; nothing was queued",
                hint="pass --force to launch it anyway",
            )
        if not yes:
            if not sys.stdin.isatty():
                raise InputError(
                    ["--yes: no terminal to ask for confirmation"],
                    hint="pass --yes to launch without asking",
                )
            typer.confirm(f"Queue {summary.to_queue} launch emails for {wave}?", abort=True)
        done = launch_wave(
            rt.engine,
            stored,
            wave,
            rt.clock,
            actor=rt.actor,
            message_id_domain=rt.settings.message_id_domain,
            force=force,
        )
        if as_json:
            _print_json(done.as_dict())
            return
        out.print(
            f"queued {done.queued} launch emails for {wave}, to go out from "
            f"{_local(done.due_at, stored.program.tz)}"
        )
        out.print("next: pshnotify run --once (or keep `pshnotify run` running)")


def _local(at: dt.datetime | None, tz: Any) -> str:
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z") if at else "-"


def _show_launch(s: Any, as_json: bool) -> None:
    if as_json:
        _print_json(s.as_dict())
        return
    out.print(f"[bold]{s.wave}[/bold] - {s.title}: {s.opens} to {s.closes} (window {s.window})")
    table = Table("", "people")
    table.add_row("members", str(s.members))
    table.add_row("[green]get the launch email now[/green]", str(s.to_queue))
    table.add_row("already queued or sent", str(s.already_queued))
    table.add_row("already complete", str(s.completed))
    table.add_row("exempted by an operator", str(s.operator_exempt))
    for reason, n in sorted(s.not_required.items()):
        table.add_row(f"not required: {reason}", str(n))
    out.print(table)
    if s.window == "before":
        out.print(f"[yellow]note:[/yellow] the window opens on {s.opens}")


# -- preview / run / status ---------------------------------------------------------------------
@app.command()
def preview(
    kind: str,
    person: Annotated[str, typer.Option("--person", help="Person id or email.")],
    program: ProgramOpt = None,
    now: NowOpt = None,
) -> None:
    """Print an email exactly as it would go out (nothing is queued or sent)."""
    from pshnotify.services.preview import preview as build

    with _errors():
        rt = _runtime(now)
        stored = rt.program(program)
        data = build(
            rt.engine,
            stored,
            rt.checked_templates(),
            rt.clock,
            kind=kind,
            person_ref=person,
            message_id_domain=rt.settings.message_id_domain,
        )
        sys.stdout.write(data.decode("utf-8", "replace").replace("\r\n", "\n"))


@app.command()
def run(
    once: Annotated[bool, typer.Option("--once", help="Send what is due now, then exit.")] = False,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send every message that is due."""
    with _errors():
        rt = _runtime(now)
        _rehearsal_note(rt, now)
        rt.require_schema()
        if not once:
            raise InputError(
                ["run: the long-running daemon is not built yet"],
                hint="use `pshnotify run --once` (from cron or a timer) meanwhile",
            )
        rt.program(None)  # keep the stored program in step with the program file
        dispatcher = rt.dispatcher()
        report = asyncio.run(dispatcher.run_once())
        if as_json:
            _print_json(report.as_dict())
            return
        parts = ", ".join(f"{n} {s}" for s, n in sorted(report.outcomes.items())) or "nothing due"
        out.print(f"run: {parts}")


@app.command()
def status(program: ProgramOpt = None, as_json: JsonOpt = False) -> None:
    """Per wave: people required / not required by reason / launched / completed; messages."""
    from pshnotify.services.status import program_status

    with _errors():
        rt = _runtime(None)
        stored = rt.program(program)
        data = program_status(rt.engine, stored)
        if as_json:
            _print_json(data)
            return
        p = data["program"]
        out.print(f"[bold]{p['key']}[/bold] - {p['name']} {p['cycle']} ({p['timezone']})")
        table = Table(
            "wave",
            "window",
            "launched",
            "req",
            "not req",
            "emailed",
            "done",
            "pending",
            "sent",
            "failed",
        )
        reasons: dict[str, dict[str, int]] = {}
        for key, w in data["waves"].items():
            ppl, msg = w["people"], w["messages"]
            reasons[key] = ppl["not_required"]
            table.add_row(
                key,
                f"{w['opens'][5:]}..{w['closes'][5:]}",
                (w["launched_at"] or "-")[:10],
                str(ppl["required"]),
                str(sum(ppl["not_required"].values())),
                str(ppl["launched"]),
                str(ppl["completed"]),
                str(msg["queued"] + msg["retry"] + msg["claimed"]),
                str(msg["sent"]),
                str(msg["failed"] + msg["unknown"]),
            )
        out.print(table)
        all_reasons = sorted({r for by in reasons.values() for r in by})
        if all_reasons:
            why = Table("not required", *reasons)
            for r in all_reasons:
                why.add_row(r, *(str(reasons[w].get(r, 0)) for w in reasons))
            out.print(why)


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


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
