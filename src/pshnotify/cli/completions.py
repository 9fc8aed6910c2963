"""Completion commands: import the learning system's export, record one by hand, review the
unmatched. Each command's writes happen in one transaction inside the service it calls."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pshnotify.cli.common import (
    JsonOpt,
    NowOpt,
    ProgramOpt,
    app,
    fitted_table,
    handle_errors,
    local_time,
    make_runtime,
    out,
    print_json,
    rehearsal_note,
)
from pshnotify.domain.errors import InputError

if TYPE_CHECKING:
    from pshnotify.services.campaign.completions import CompletionResult

completions_app = typer.Typer(
    help="Completions: import the learning system's export, review the unmatched.",
    no_args_is_help=True,
)
app.add_typer(completions_app, name="completions")


@completions_app.command("import")
def completions_import(
    file: Path,
    no_confirmations: Annotated[
        bool,
        typer.Option(
            "--no-confirmations", help="Record without emailing anyone (back-filling history)."
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and count; change nothing.")
    ] = False,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import a completions CSV; importing the same file again changes nothing."""
    from pshnotify.services.campaign.completions import import_completions

    with handle_errors(action="" if dry_run else "completions.import", subject=str(file)):
        rt = make_runtime(now)
        stored = rt.program(program)
        rehearsal_note(rt, now, stored.program.tz)
        report = import_completions(
            rt.engine,
            stored,
            file,
            rt.clock,
            actor=rt.actor,
            message_id_domain=rt.settings.message_id_domain,
            confirm=not no_confirmations,
            dry_run=dry_run,
        )
        if as_json:
            print_json(report.as_dict())
            return
        data = report.as_dict()
        verb = "checked" if dry_run else "imported"
        out.print(
            f"{verb} {report.rows} rows from {file}: {data['recorded']} recorded, "
            f"{data['extra']} extra, {data['duplicate']} duplicate, {data['unmatched']} unmatched; "
            f"{report.confirmations} confirmations queued, "
            f"{report.cancelled_messages} unsent emails cancelled"
        )
        if dry_run:
            out.print("dry run: nothing was changed")
        if data["unmatched"]:
            out.print("next: pshnotify completions unmatched (they match after a roster import)")


@completions_app.command("unmatched")
def completions_unmatched(
    program: ProgramOpt = None,
    as_json: JsonOpt = False,
    purge_before: Annotated[
        str | None,
        typer.Option(
            "--purge-before",
            metavar="DATE",
            help="Delete those recorded before DATE (YYYY-MM-DD, the program's zone); audited.",
        ),
    ] = None,
    now: NowOpt = None,
) -> None:
    """Completions whose id or email matches nobody on the roster yet (kept until purged)."""
    from pshnotify.services.campaign.completions import purge_unmatched, unmatched_completions

    with handle_errors():
        rt = make_runtime(now)
        stored = rt.program(program)
        if purge_before is not None:
            before = _local_midnight(purge_before, stored.program.tz)
            n = purge_unmatched(rt.engine, stored, before, rt.clock, actor=rt.actor)
            if as_json:
                print_json({"purged": n, "before": before.isoformat()})
            else:
                out.print(f"purged {n} unmatched completions recorded before {purge_before}")
            return
        with rt.engine.connect() as conn:
            rows = unmatched_completions(conn, stored.id)
        if as_json:
            print_json(rows)
            return
        _show_unmatched(rows, stored.program.tz)


def _local_midnight(day: str, tz: Any) -> dt.datetime:
    try:
        date = dt.date.fromisoformat(day) if len(day) == 10 else None
    except ValueError:
        date = None
    if date is None:
        raise InputError([f"--purge-before: expected a date as YYYY-MM-DD, got {day!r}"])
    return dt.datetime.combine(date, dt.time(0), tz)


def _show_unmatched(rows: list[dict[str, Any]], tz: Any) -> None:
    if not rows:
        out.print("no unmatched completions")
        return

    def when(value: str) -> str:
        return local_time(dt.datetime.fromisoformat(value), tz)

    table = fitted_table(
        ["person", "option", "completed at", "source", "recorded at", "note"],
        [
            [
                r["person_ref"],
                r["option"],
                when(r["completed_at"]),
                r["source"],
                when(r["recorded_at"]),
                r["note"] or "",
            ]
            for r in rows
        ],
        drop_first=("recorded at", "source", "note"),
        wrap="note",
    )
    out.print(table)
    out.print(f"{len(rows)} unmatched; they are matched when the roster names them")


@app.command()
def complete(
    person: Annotated[str, typer.Argument(metavar="ID", help="Person id or email.")],
    option: Annotated[
        str, typer.Option("--option", help="Option key, or 'alternative' (an approved one).")
    ],
    note: Annotated[str | None, typer.Option("--note", help="Why, for the record.")] = None,
    at: Annotated[
        str | None,
        typer.Option("--at", help="When it was completed (ISO-8601 or YYYY-MM-DD); default now."),
    ] = None,
    no_confirmation: Annotated[
        bool, typer.Option("--no-confirmation", help="Record without emailing the person.")
    ] = False,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a completion by hand (audited); the first one stops the person's reminders."""
    from pshnotify.domain.values import Instant, read
    from pshnotify.services.campaign.completions import complete_by_operator

    with handle_errors(
        {"person": "ID", "option": "--option", "completed_at": "--at"},
        action="completion.record",
        subject=person,
    ):
        rt = make_runtime(now)
        stored = rt.program(program)
        rehearsal_note(rt, now, stored.program.tz)
        reach = stored.program.reach
        when = None
        if at is not None:
            when = read("completed_at", lambda: Instant.parse(at, reach, local_when_bare=False))
        result = complete_by_operator(
            rt.engine,
            stored,
            rt.clock,
            person_ref=person,
            option=option,
            actor=rt.actor,
            message_id_domain=rt.settings.message_id_domain,
            completed_at=when,
            note=note,
            confirm=not no_confirmation,
        )
        if as_json:
            print_json(result.as_dict())
            return
        out.print(_describe(result, person, option))
        if result.confirmation_queued:
            out.print("a confirmation is queued; next: pshnotify run --once")


def _describe(result: CompletionResult, person: str, option: str) -> str:
    who = result.person or person
    return {
        "recorded": f"{who}: completed option {option}; "
        f"{result.cancelled_messages} unsent emails cancelled",
        "extra": f"{who} was already complete; option {option} recorded as an extra",
        "duplicate": f"{who}: this completion was recorded before; nothing changed",
    }.get(result.outcome.value, f"{who}: {result.outcome.value}")
