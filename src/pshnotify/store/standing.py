"""A person's standing in a program, in SQL: the one place the services read it from.

`domain.policy` says who owes the training (`OWING`), who is still asked anything (`ASKED`),
what a person's deadline is and when it has passed, that a marked address gets nothing, and
that a person gets one reminder a day. This module is the same rules as SQL over
`enrollments` (and the marks of `undeliverable`), generated from the policy's conditions
rather than written again, and the one way a row becomes a `policy.Standing`:

  - `FACTS`, `owes()`, `asked()`, `present()`: conditions on an enrollment;
  - `deadline(program)`, `deadline_passed(program, now)`, `deadline_ahead(program, now)`;
  - `MARKED`, `with_mark()`, `marked_ids()`: an address marked undeliverable (not cleared);
  - `COLUMNS` and `to_standing(row)`: what a `Standing` is built from, and building it;
  - `person_state(row, ...)`: the same for the cadence's `PersonState`;
  - `STATE_FACTS` and `group_state(row, ...)`: the same for everyone sharing those facts;
  - `reminder_days(...)`: the local dates a person's reminders went or go (one definition for
    the scheduler's pass and the sender);
  - `marked_by_wave` and `owing_marked_by_wave`: the two counts of marked people.

Everything is a condition or a column for a set-based statement: nothing here reads a row
per person.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Date, and_, case, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from pshnotify.domain import policy
from pshnotify.domain.cadence import PersonState
from pshnotify.domain.delivery import State
from pshnotify.domain.program import Program
from pshnotify.store.schema import enrollments, people, undeliverable
from pshnotify.store.sql import chunks

_E = enrollments

# Each fact the policy's conditions name (`policy.facts`), as SQL on an enrollment.
FACTS: dict[str, ColumnElement[Any]] = {
    "status": _E.c.status,
    "removed": _E.c.removed_at.is_not(None),
    "exempted": _E.c.exempted_reason.is_not(None),
    "completed": _E.c.completed_at.is_not(None),
}


def holds(conditions: Mapping[str, object]) -> ColumnElement[bool]:
    """`policy.meets(person, conditions)` as SQL. A flag's False is its plain negation
    (`removed_at IS NULL`), which the indexes on those columns answer."""
    parts: list[ColumnElement[bool]] = []
    for name, value in conditions.items():
        fact = FACTS[name]
        if isinstance(value, tuple):
            parts.append(fact.in_(value))
        elif isinstance(value, bool):
            parts.append(fact if value else ~fact)
        else:
            parts.append(fact == value)
    return and_(*parts)


def present() -> ColumnElement[bool]:
    """On the roster (not removed by an import)."""
    return holds({"removed": False})


def owes() -> ColumnElement[bool]:
    """`policy.owes_training`: required, present, not exempted, not complete."""
    return holds(policy.OWING)


def asked() -> ColumnElement[bool]:
    """`policy.asks`: still asked anything (launch, invitation, reminders)."""
    return holds(policy.ASKED)


# -- the deadline ---------------------------------------------------------------------------------
def wave_closes(program: Program) -> ColumnElement[Any]:
    """Each enrollment's wave's last day, from the program file (waves' dates are not stored):
    a CASE over the program's few waves; NULL for a wave no longer in the file."""
    if not program.waves:
        return literal(None, Date)
    return case(
        {w.key: literal(w.closes, Date) for w in program.waves},
        value=_E.c.wave_key,
        else_=literal(None, Date),
    )


def deadline(program: Program) -> ColumnElement[Any]:
    """`policy.deadline`: the person's extension, else their wave's close (NULL: neither)."""
    return func.coalesce(_E.c.extended_until, wave_closes(program))


def last_day_passed(program: Program, now: dt.datetime) -> dt.date:
    """The latest local date whose deadline has passed at `now` (`program.closes_at`, the
    policy's instant, in the program's zone): a deadline on or before it has passed."""
    day = now.astimezone(program.tz).date()
    while program.closes_at(day) > now:
        day -= dt.timedelta(days=1)
    return day


def deadline_passed(program: Program, now: dt.datetime) -> ColumnElement[bool]:
    """`policy.deadline_passed` at `now`: a person without a deadline has none passed."""
    return deadline(program) <= last_day_passed(program, now)


def deadline_ahead(program: Program, now: dt.datetime) -> ColumnElement[bool]:
    """Not `deadline_passed` (a person without a deadline included)."""
    last = deadline(program)
    return or_(last.is_(None), last > last_day_passed(program, now))


# -- the undeliverable mark -----------------------------------------------------------------------
def active() -> ColumnElement[bool]:
    """A row of `undeliverable` that marks its address now (not cleared): `services.bounces`
    writes and clears the marks, and reads them through this."""
    return undeliverable.c.cleared_at.is_(None)


def _mark_on(person_id: Any) -> ColumnElement[bool]:
    return and_(undeliverable.c.person_id == person_id, active())


# A row's mark (outer-joined by `with_mark`): true when the address is marked now.
MARKED = undeliverable.c.person_id.is_not(None).label("undeliverable")


def with_mark(from_: Any, person_id: Any = people.c.id) -> Any:
    """`from_` outer-joined to the person's active mark (read it as `MARKED`)."""
    return from_.outerjoin(undeliverable, _mark_on(person_id))


def marked() -> ColumnElement[bool]:
    """The address is marked now, in a FROM that has `with_mark`."""
    return undeliverable.c.person_id.is_not(None)


def marked_ids() -> Any:
    """The ids of people whose address is marked undeliverable now (a subquery)."""
    return select(undeliverable.c.person_id).where(active())


def marked_by_wave(conn: Connection, program_id: int) -> dict[str, int]:
    """Per wave, the people on the roster (whatever their standing) whose address is marked
    undeliverable: `status`'s count of them."""
    return _marked_by_wave(conn, program_id, present())


def owing_marked_by_wave(conn: Connection, program_id: int) -> dict[str, int]:
    """Per wave, the people who owe the training and whose address is marked: nothing
    reaches them until the roster or an operator fixes it (the console's people bar)."""
    return _marked_by_wave(conn, program_id, owes())


def _marked_by_wave(conn: Connection, program_id: int, cond: Any) -> dict[str, int]:
    """The marks are read first (few, and none at all in most programs), then their
    enrollments: a join let SQLite walk all 100,000 enrollments to probe the marks (62 ms
    with none)."""
    out: Counter[str] = Counter()
    for part in chunks(list(conn.scalars(marked_ids())), 500):
        q = (
            select(_E.c.wave_key, func.count())
            .where(_E.c.program_id == program_id, _E.c.person_id.in_(part), cond)
            .group_by(_E.c.wave_key)
        )
        out.update({w: int(n) for w, n in conn.execute(q)})
    return dict(out)


# -- a row as a Standing --------------------------------------------------------------------------
# The columns `to_standing` reads; select them from `joined()` (or a FROM that has people,
# enrollments and `with_mark`).
COLUMNS: tuple[Any, ...] = (
    _E.c.wave_key,
    _E.c.status,
    _E.c.removed_at,
    _E.c.exempted_reason,
    _E.c.completed_at,
    _E.c.extended_until,
    people.c.timezone,
    MARKED,
)


def joined() -> Any:
    """People with their enrollments and their active mark: the FROM for `COLUMNS`."""
    return with_mark(people.join(_E, _E.c.person_id == people.c.id))


def to_standing(
    row: Any,
    *,
    wave_key: str | None = None,
    reminded_on: frozenset[dt.date] = frozenset(),
    paused_for: str | None = None,
) -> policy.Standing:
    """The person's standing from a row with `COLUMNS` (`wave_key`: a message's own wave,
    when it is asked about that one)."""
    return policy.Standing(
        status=row.status,
        removed=row.removed_at is not None,
        exempted_reason=row.exempted_reason,
        completed=row.completed_at is not None,
        wave_key=wave_key if wave_key is not None else row.wave_key,
        extended_until=row.extended_until,
        undeliverable=bool(row.undeliverable),
        reminded_on=reminded_on,
        timezone=row.timezone,
        paused_for=paused_for,
    )


def person_state(
    row: Any,
    *,
    steps: frozenset[str] | set[str] = frozenset(),
    reminder_days: frozenset[dt.date] = frozenset(),
    paused_for: str | None = None,
) -> PersonState:
    """What `domain.cadence` decides by, from a row with `COLUMNS` and `launch_sent_at`, and
    the person's steps already in the outbox ("launch" for the launch email). The same
    reading of the row as `to_standing` (tests/test_standing.py holds them together), built
    directly: the scheduler's pass builds one per person due."""
    return PersonState(
        wave_key=row.wave_key,
        status=row.status,
        exempted=row.exempted_reason is not None,
        removed=row.removed_at is not None,
        completed=row.completed_at is not None,
        extended_until=row.extended_until,
        launch_queued="launch" in steps,
        launch_sent_at=row.launch_sent_at,
        steps_queued=frozenset(steps).difference(("launch",)),
        timezone=row.timezone,
        undeliverable=bool(row.undeliverable),
        reminder_days=reminder_days,
        paused_for=paused_for,
    )


# -- people who share a future --------------------------------------------------------------------
# The facts `person_state` reads from a row, as columns to GROUP BY (with a count): people who
# share them, their steps in the outbox and their launch email's instant share a `PersonState`,
# so the cadence decides the same for each of them (`plan` decides once per group).
STATE_FACTS: tuple[Any, ...] = (
    _E.c.wave_key,
    _E.c.status,
    FACTS["removed"].label("removed"),
    FACTS["exempted"].label("exempted"),
    FACTS["completed"].label("completed"),
    _E.c.extended_until,
    people.c.timezone,
    MARKED,
)


def group_state(
    row: Any, *, steps: frozenset[str], launch_sent_at: dt.datetime | None
) -> PersonState:
    """`person_state` for everyone of a row of `STATE_FACTS` (selected from `joined()`), whose
    steps in the outbox are `steps` and whose launch email went at `launch_sent_at`: the same
    reading (tests/test_standing.py holds them together)."""
    return PersonState(
        wave_key=row.wave_key,
        status=row.status,
        exempted=bool(row.exempted),
        removed=bool(row.removed),
        completed=bool(row.completed),
        extended_until=row.extended_until,
        launch_queued="launch" in steps,
        launch_sent_at=launch_sent_at,
        steps_queued=steps.difference(("launch",)),
        timezone=row.timezone,
        undeliverable=bool(row.undeliverable),
    )


# -- reminder days already used -------------------------------------------------------------------
# A reminder in these states went or is going: its day is used (one reminder a day).
GOING = (State.QUEUED.value, State.CLAIMED.value, State.RETRY.value, State.SENT.value)


def reminder_days(
    reminders: Iterable[tuple[int, str, dt.datetime, dt.datetime | None]],
    tz: ZoneInfo,
    *,
    before: int | None = None,
) -> frozenset[dt.date]:
    """The local dates (zone `tz`, the person's) already used by these reminders of one
    person, each (message id, state, due_at, sent_at): a sent one's sending day, one still
    going its due day. `before`: at send time, a reminder still to go counts against this
    one only if it was queued earlier (a smaller id); the later of two is skipped."""
    days = set()
    for mid, state, due_at, sent_at in reminders:
        if state not in GOING:
            continue
        if state == State.SENT.value:
            days.add((sent_at or due_at).astimezone(tz).date())
        elif before is None or mid < before:
            days.add(due_at.astimezone(tz).date())
    return frozenset(days)
