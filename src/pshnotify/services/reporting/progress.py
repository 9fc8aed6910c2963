"""How the campaign is going, counted in SQL: completions per day, and departments' standing.

What the console's dashboard and the officers' pages read. Everything is a GROUP BY or a
paged query, so the pages cost the same at 100 people and at 100,000 (bench/console.py).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    case,
    func,
    select,
    union,
)

from pshnotify.domain.delivery import State
from pshnotify.domain.program import Program
from pshnotify.services.delivery.delivery_stats import oldest_due_seconds
from pshnotify.services.reporting.lookup import (
    PER_PAGE,
    Page,
    paged_people,
    standing_line,
)
from pshnotify.store import standing
from pshnotify.store.db import is_sqlite
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people
from pshnotify.store.scope import in_departments

# The console's lists of a department, each with its heading. Not complete = emailed and not
# complete, or not launched yet (domain/vocabulary.py); "pending", its old name, still works.
SHOWS = ("overdue", "owing", "complete", "exempt", "unreachable")
SHOW_WORDS = {
    "overdue": "overdue",
    "owing": "not complete, deadline ahead",
    "complete": "complete",
    "exempt": "exempt or not required",
    "unreachable": "unreachable",
}
SHOW_ALIASES = {"pending": "owing"}
# Messages whose failure means the person did not hear from us (a report's is the officer's).
_PERSONAL = ["launch", "invitation", "reminder", "overdue", "confirmation"]


def completions_per_day(engine: Engine, stored: StoredProgram) -> dict[dt.date, int]:
    """Completions by local day. Grouped by UTC hour in SQL (at most 24 rows a day), then put
    on local days here, so the program's zone and its daylight saving rules stay in Python."""
    col = enrollments.c.completed_at
    with engine.connect() as conn:
        hour = func.substr(col, 1, 13) if is_sqlite(conn) else func.to_char(col, "YYYY-MM-DD HH24")
        rows = conn.execute(
            select(hour, func.count())
            .where(enrollments.c.program_id == stored.id, col.is_not(None))
            .where(standing.present())
            .group_by(hour)
        ).all()
    out: Counter[dt.date] = Counter()
    for text, n in rows:
        at = dt.datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=dt.UTC)
        out[at.astimezone(stored.program.tz).date()] += int(n)
    return dict(out)


def oldest_waiting_seconds(engine: Engine, now: dt.datetime) -> float:
    """The figure of `status --json`'s `delivery` that the dashboard shows, read alone."""
    with engine.connect() as conn:
        return oldest_due_seconds(conn, now)


def _unreachable(program_id: int) -> Any:
    """People we cannot reach: their address is marked undeliverable (bounces), or a personal
    message of theirs was refused by the relay for good."""
    failed = select(messages.c.person_id).where(
        messages.c.program_id == program_id,
        messages.c.kind.in_(_PERSONAL),
        messages.c.state == State.FAILED.value,
    )
    return union(failed, standing.marked_ids())


def owing_marked_by_wave(engine: Engine, stored: StoredProgram) -> dict[str, int]:
    """Per wave, the people who still owe the training and whose address is marked
    undeliverable (`store.standing`): the console's people bar."""
    with engine.connect() as conn:
        return standing.owing_marked_by_wave(conn, stored.id)


def _show_condition(show: str, program: Program, program_id: int, now: dt.datetime) -> Any:
    """Of the people present: complete, exempt (not complete and not owing), overdue and
    owing (the deadline ahead), unreachable."""
    complete = standing.FACTS["completed"]
    if show == "complete":
        return complete
    if show == "exempt":
        return and_(~complete, ~standing.owes())
    if show == "overdue":
        return and_(standing.owes(), standing.deadline_passed(program, now))
    if show == "owing":
        return and_(standing.owes(), standing.deadline_ahead(program, now))
    return people.c.id.in_(_unreachable(program_id))


@dataclass(frozen=True)
class DepartmentRow:
    department: str
    people: int
    complete: int
    owing: int  # not complete, the deadline ahead
    overdue: int
    exempt: int
    unreachable: int


def department_summary(
    engine: Engine, stored: StoredProgram, now: dt.datetime, departments: Sequence[str] | None
) -> list[DepartmentRow]:
    """Per department: people, complete, owing (deadline ahead), overdue, exempt and
    unreachable, for the departments in scope (all for an operator)."""
    program = stored.program
    dept = people.c.department
    owes = standing.owes()
    overdue = and_(owes, standing.deadline_passed(program, now))
    conds = [enrollments.c.program_id == stored.id, standing.present()]
    scope = in_departments(engine, departments)
    if scope is not None:
        conds.append(scope)
    joined = people.join(enrollments, enrollments.c.person_id == people.c.id)

    def total(cond: Any) -> Any:
        return func.sum(case((cond, 1), else_=0))

    with engine.connect() as conn:
        rows = conn.execute(
            select(
                dept,
                func.count(),
                total(standing.FACTS["completed"]),
                total(owes),
                total(overdue),
            )
            .select_from(joined)
            .where(*conds)
            .group_by(dept)
            .order_by(dept)
        ).all()
        unreachable = _unreachable_by_department(conn, stored.id, conds)
    out = []
    for name, n, complete, owing, late in rows:
        complete, owing, late = int(complete or 0), int(owing or 0), int(late or 0)
        exempt = int(n) - complete - owing
        out.append(
            DepartmentRow(
                name, int(n), complete, owing - late, late, exempt, unreachable.get(name, 0)
            )
        )
    return out


def _unreachable_by_department(
    conn: Connection, program_id: int, conds: list[Any]
) -> dict[str, int]:
    q = (
        select(people.c.department, func.count())
        .select_from(people.join(enrollments, enrollments.c.person_id == people.c.id))
        .where(*conds, people.c.id.in_(_unreachable(program_id)))
        .group_by(people.c.department)
    )
    return {d: int(n) for d, n in conn.execute(q)}


def department_people(
    engine: Engine,
    stored: StoredProgram,
    now: dt.datetime,
    *,
    departments: Sequence[str] | None,
    show: str,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> Page:
    """The people of the departments in scope who are `show` (one of SHOWS), paged."""
    program = stored.program
    conds = [
        enrollments.c.program_id == stored.id,
        standing.present(),
        _show_condition(show, program, stored.id, now),
    ]
    scope = in_departments(engine, departments)
    if scope is not None:
        conds.append(scope)
    total, page, rows = paged_people(
        engine,
        conds,
        order_by=(people.c.department, people.c.name, people.c.external_id),
        page=page,
        per_page=per_page,
        extra=(standing.deadline(program).label("deadline"),),
    )
    found = [
        {
            "id": r.external_id,
            "name": r.name,
            "email": r.email,
            "department": r.department,
            "wave": r.wave_key,
            "deadline": r.deadline,
            "standing": standing_line(program, r, now),
        }
        for r in rows
    ]
    return Page(found, page, per_page, total)
