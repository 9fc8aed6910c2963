"""`pshnotify report`: the officers' nightly report, on demand, as a table, JSON or CSV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from pshnotify.cli.common import (
    JsonOpt,
    NowOpt,
    ProgramOpt,
    app,
    fitted_table,
    handle_errors,
    make_runtime,
    out,
    print_json,
    rehearsal_note,
)
from pshnotify.domain.errors import InputError
from pshnotify.domain.text import visible

if TYPE_CHECKING:
    from pshnotify.services.reporting.reports import Report

DepartmentOpt = Annotated[
    str | None,
    typer.Option("--department", help="Department, as on the roster (any case)."),
]
OfficerOpt = Annotated[
    str | None,
    typer.Option("--officer", help="Administrative officer's address, as on the roster."),
]
CsvOpt = Annotated[
    Path | None,
    typer.Option("--csv", help="Also write the CSV (as attached to the nightly email) here."),
]


@app.command("report")
def report(
    department: DepartmentOpt = None,
    officer: OfficerOpt = None,
    csv_file: CsvOpt = None,
    program: ProgramOpt = None,
    now: NowOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Completion status of a department's (or an officer's) people, as in the nightly report."""
    from pshnotify.services.reporting.reports import department_report

    with handle_errors():
        if department is None and officer is None:
            raise InputError(
                ["report: no one selected"], hint="pass --department NAME or --officer EMAIL"
            )
        rt = make_runtime(now)
        stored = rt.program(program)
        rehearsal_note(rt, now, stored.program.tz)
        with rt.engine.connect() as conn:
            result = department_report(
                conn, stored, department=department, officer=officer, now=rt.clock.now()
            )
        if csv_file is not None:
            _write(csv_file, result.csv())
        if as_json:
            print_json(result.as_dict())
            return
        _show(result)
        if csv_file is not None:
            out.print(Text(visible(f"wrote {len(result.rows)} rows to {csv_file}")))


def _write(path: Path, data: bytes) -> None:
    """Names and statuses are personal data: a new file is readable by its owner only."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise InputError([f"--csv: cannot write {path}: {exc.strerror}"]) from None


def _show(result: Report) -> None:
    from pshnotify.mail.report_kind import STATUS_LABELS, detail

    # Roster values are data, never rich markup: a name like "[red]x" must print as written.
    out.print(Text(visible(result.title), style="bold"))
    rows = [
        [
            *(Text(visible(str(row[k]))) for k in ("department", "id", "name", "wave")),
            Text(STATUS_LABELS.get(row["status"], row["status"])),
            Text(visible(detail(row))),
        ]
        for row in result.row_dicts()
    ]
    # A report of one department names it in its title: then that column is the first left
    # out; an officer's, over several departments, leaves out the wave first.
    one = len({row["department"] for row in result.row_dicts()}) <= 1
    table = fitted_table(
        ["department", "id", "name", "wave", "status", "details"],
        rows,
        drop_first=("department", "wave") if one else ("wave", "department"),
        wrap=("name", "details"),
    )
    out.print(table)
    s = result.summary
    out.print(
        Text(
            f"{s['people']} people: {s['complete']} complete, {s['emailed']} emailed and "
            f"not complete ({s['overdue']} past the deadline), {s['not_launched']} not "
            f"launched yet, {s['exempt']} exempt, {s['not_required']} not required"
        )
    )
