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
    Date,
    Engine,
    and_,
    case,
    func,
    literal,
    not_,
    or_,
    select,
    union,
)

from pshnotify.domain.delivery import State
from pshnotify.domain.program import Program
from pshnotify.services.lookup import PER_PAGE, Page, in_departments, paged_people, standing
from pshnotify.store.db import is_sqlite
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people, undeliverable
from pshnotify.store.sql import chunks

SHOWS = ("overdue", "pending", "complete", "exempt", "unreachable")
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
            .where(enrollments.c.removed_at.is_(None))
            .group_by(hour)
        ).all()
    out: Counter[dt.date] = Counter()
    for text, n in rows:
        at = dt.datetime.strptime(text, "%Y-%m-%d %H").replace(tzinfo=dt.UTC)
        out[at.astimezone(stored.program.tz).date()] += int(n)
    return dict(out)


def _deadline(program: Program) -> Any:
    """Each enrollment's deadline in SQL: the extension, else its wave's close."""
    closes = case(
        {w.key: literal(w.closes, Date) for w in program.waves},
        value=enrollments.c.wave_key,
        else_=None,
    )
    return func.coalesce(enrollments.c.extended_until, closes)


def _owes() -> Any:
    return and_(
        enrollments.c.status == "required",
        enrollments.c.exempted_reason.is_(None),
        enrollments.c.completed_at.is_(None),
    )


def _unreachable(program_id: int) -> Any:
    """People we cannot reach: their address is marked undeliverable (bounces), or a personal
    message of theirs was refused by the relay for good."""
    failed = select(messages.c.person_id).where(
        messages.c.program_id == program_id,
        messages.c.kind.in_(_PERSONAL),
        messages.c.state == State.FAILED.value,
    )
    marked = select(undeliverable.c.person_id).where(undeliverable.c.cleared_at.is_(None))
    return union(failed, marked)


def undeliverable_by_wave(engine: Engine, stored: StoredProgram) -> dict[str, int]:
    """Per wave, the people who still owe the training and whose address is marked
    undeliverable: nothing reaches them until the roster or an operator fixes it.

    The marks are read first (few, and none at all in most programs), then their enrollments:
    a join let SQLite walk all 100,000 enrollments to probe the marks (62 ms with none)."""
    out: Counter[str] = Counter()
    with engine.connect() as conn:
        marked = list(
            conn.scalars(
                select(undeliverable.c.person_id).where(undeliverable.c.cleared_at.is_(None))
            )
        )
        for part in chunks(marked, 500):
            q = (
                select(enrollments.c.wave_key, func.count())
                .where(
                    enrollments.c.program_id == stored.id,
                    enrollments.c.person_id.in_(part),
                    enrollments.c.removed_at.is_(None),
                    _owes(),
                )
                .group_by(enrollments.c.wave_key)
            )
            out.update({w: int(n) for w, n in conn.execute(q)})
    return dict(out)


def _show_condition(show: str, program: Program, program_id: int, today: dt.date) -> Any:
    deadline = _deadline(program)
    if show == "complete":
        return enrollments.c.completed_at.is_not(None)
    if show == "exempt":
        return and_(
            enrollments.c.completed_at.is_(None),
            or_(enrollments.c.status != "required", enrollments.c.exempted_reason.is_not(None)),
        )
    if show == "overdue":
        return and_(_owes(), deadline < today)
    if show == "pending":
        return and_(_owes(), not_(deadline < today))
    return people.c.id.in_(_unreachable(program_id))


@dataclass(frozen=True)
class DepartmentRow:
    department: str
    people: int
    complete: int
    pending: int
    overdue: int
    exempt: int
    unreachable: int


def department_summary(
    engine: Engine, stored: StoredProgram, now: dt.datetime, departments: Sequence[str] | None
) -> list[DepartmentRow]:
    """Per department: people, complete, pending (deadline ahead), overdue, exempt and
    unreachable, for the departments in scope (all for an operator)."""
    program = stored.program
    today = now.astimezone(program.tz).date()
    dept = people.c.department
    owes = _owes()
    overdue = and_(owes, _deadline(program) < today)
    conds = [enrollments.c.program_id == stored.id, enrollments.c.removed_at.is_(None)]
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
                total(enrollments.c.completed_at.is_not(None)),
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
    today = now.astimezone(program.tz).date()
    conds = [
        enrollments.c.program_id == stored.id,
        enrollments.c.removed_at.is_(None),
        _show_condition(show, program, stored.id, today),
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
        extra=(_deadline(program).label("deadline"),),
    )
    found = [
        {
            "id": r.external_id,
            "name": r.name,
            "email": r.email,
            "department": r.department,
            "wave": r.wave_key,
            "deadline": r.deadline,
            "standing": standing(program, r, now),
        }
        for r in rows
    ]
    return Page(found, page, per_page, total)
