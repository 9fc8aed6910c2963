"""The officer's report, built for action: what needs attention and what changed.

The nightly report's rows (services.reports) say where everyone stands; this adds what an
officer acts on: addresses that do not work (to fix in the HR system), people past their
deadline, people due within `DUE_SOON_DAYS`; and what changed since their last report:
completed, joined, left, extended. Counts and a progress bar head the email; the body lists
everyone only for small departments (PSHNOTIFY_REPORT_LIST_LIMIT), the CSV always does.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, func, select

from pshnotify.domain import requests as request_rules
from pshnotify.domain.delivery import Kind, State
from pshnotify.domain.vocabulary import PersonWord
from pshnotify.store import standing
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import (
    audit_log,
    enrollments,
    messages,
    people,
    requests,
    undeliverable,
)

DUE_SOON_DAYS = 3


def action_sections(
    conn: Connection,
    stored: StoredProgram,
    *,
    officer: str,
    night: dt.date,
    as_of: dt.datetime,
    rows: list[dict[str, Any]],
    list_limit: int,
    people_rows: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """The report's extra data: JSON-able, stored nowhere, read when the report is sent.

    `people_rows`: the rows the report was read from (services.reports, with the officer's
    name and the mark of `store.standing.COLUMNS`), when the caller has them: the officer's
    name is then counted from them, and the undeliverable read only if one is marked."""
    today = as_of.astimezone(stored.program.tz).date()
    owing = [r for r in rows if r["status"] == PersonWord.EMAILED]
    overdue = [r for r in owing if r.get("deadline_passed")]
    soon = [
        r
        for r in owing
        if not r.get("deadline_passed")
        and r.get("deadline")
        and (dt.date.fromisoformat(r["deadline"]) - today).days <= DUE_SOON_DAYS
    ]
    since = _last_report(conn, stored, officer, night)
    if people_rows is None:
        name = _officer_name(conn, stored.id, officer)
        undeliverable = _undeliverable(conn, stored, officer)
    else:
        name = _most_given(Counter(r.admin_officer_name for r in people_rows))
        marked = any(r.undeliverable for r in people_rows)
        undeliverable = _undeliverable(conn, stored, officer) if marked else []
    return {
        "officer_name": name,
        "attention": {
            "undeliverable": undeliverable,
            "requests": _open_requests(conn, stored, officer),
            "overdue": [_brief(r) for r in overdue],
            "due_soon": [_brief(r) for r in soon],
        },
        # Up to the send (a day after the report time at most), not only the report time.
        "since": None
        if since is None
        else _changes(conn, stored, officer, since, as_of + dt.timedelta(days=1)),
        "list_everyone": len(rows) <= list_limit,
    }


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("id", "name", "email", "department", "deadline")}


def of_officer(officer: str) -> Any:
    """Enrollments of the people whose `admin_officer` is this address, without regard to case.

    Asked as `person_id IN (their ids)`, which the index on `lower(admin_officer)` answers
    (migration 0019): a plain `lower(admin_officer) = ?` beside the join let SQLite, without
    statistics, scan every enrollment of the program once per officer."""
    theirs = select(people.c.id).where(
        func.lower(people.c.admin_officer) == officer.strip().lower()
    )
    return enrollments.c.person_id.in_(theirs)


def _mine(stored: StoredProgram, officer: str) -> Any:
    return and_(enrollments.c.program_id == stored.id, of_officer(officer))


def _officer_name(conn: Connection, program_id: int, officer: str) -> str | None:
    """The name most of the roster gives this officer (`admin_officer_name`)."""
    q = (
        select(people.c.admin_officer_name, func.count())
        .join(enrollments, enrollments.c.person_id == people.c.id)
        .where(
            enrollments.c.program_id == program_id,
            standing.present(),
            of_officer(officer),
            people.c.admin_officer_name.is_not(None),
            people.c.admin_officer_name != "",
        )
        .group_by(people.c.admin_officer_name)
    )
    return _most_given(Counter(dict(conn.execute(q).tuples().all())))


def _most_given(names: Counter[str | None]) -> str | None:
    """The name given most often (ties: the first in order); no name, and "", are not one."""
    given = Counter({n: k for n, k in names.items() if n})
    return min(given, key=lambda n: (-given[n], n)) if given else None


def _undeliverable(conn: Connection, stored: StoredProgram, officer: str) -> list[dict[str, Any]]:
    q = (
        select(
            people.c.external_id,
            people.c.name,
            people.c.email,
            people.c.department,
            undeliverable.c.since,
            undeliverable.c.reason,
        )
        .select_from(standing.joined())
        .where(_mine(stored, officer), standing.present(), standing.marked())
        .order_by(people.c.name, people.c.external_id)
    )
    tz = stored.program.tz
    return [
        {
            "id": r.external_id,
            "name": r.name,
            "email": r.email,
            "department": r.department,
            "since": r.since.astimezone(tz).date().isoformat(),
            "reason": r.reason,
        }
        for r in conn.execute(q)
    ]


def _open_requests(conn: Connection, stored: StoredProgram, officer: str) -> list[dict[str, Any]]:
    """Their people's requests waiting for the training office (the person's reminders are
    paused meanwhile)."""
    q = (
        select(
            requests.c.id,
            requests.c.kind,
            requests.c.payload,
            requests.c.created_at,
            people.c.external_id,
            people.c.name,
        )
        .join(people, people.c.id == requests.c.person_id)
        .join(
            enrollments,
            and_(
                enrollments.c.person_id == requests.c.person_id,
                enrollments.c.program_id == requests.c.program_id,
            ),
        )
        .where(
            _mine(stored, officer),
            standing.present(),
            requests.c.state == request_rules.PENDING,
        )
        .order_by(requests.c.id)
    )
    tz = stored.program.tz
    return [
        {
            "id": r.external_id,
            "name": r.name,
            "request": r.id,
            "title": request_rules.KINDS[r.kind].title,
            "summary": request_rules.summary(r.kind, r.payload),
            "filed": r.created_at.astimezone(tz).date().isoformat(),
        }
        for r in conn.execute(q)
    ]


def _last_report(
    conn: Connection, stored: StoredProgram, officer: str, night: dt.date
) -> dt.datetime | None:
    """When this officer's previous report was sent (None: this is their first)."""
    q = select(func.max(messages.c.sent_at)).where(
        messages.c.program_id == stored.id,
        messages.c.kind == Kind.REPORT.value,
        func.lower(messages.c.recipient_email) == officer.strip().lower(),
        messages.c.state.in_([State.SENT.value, State.BOUNCED.value]),
        messages.c.step < night.isoformat(),
    )
    last: dt.datetime | None = conn.scalar(q)
    return last


def _changes(
    conn: Connection, stored: StoredProgram, officer: str, since: dt.datetime, until: dt.datetime
) -> dict[str, Any]:
    e = enrollments
    cols = (people.c.id, people.c.external_id, people.c.name, people.c.email)
    base = select(*cols, e.c.completed_at, e.c.created_at, e.c.removed_at).join(
        e, e.c.person_id == people.c.id
    )
    # All of the officer's people, the window applied below: a condition on the three
    # instants made PostgreSQL scan every enrollment of the program for each officer (it
    # expected the window to hold almost nobody) rather than start from the officer's index.
    # In roster order (person id), whichever way the database walked them.
    found = sorted(conn.execute(base.where(_mine(stored, officer))), key=lambda r: r.id)

    def person(r: Any) -> dict[str, Any]:
        return {"id": r.external_id, "name": r.name, "email": r.email}

    def inside(at: dt.datetime | None) -> bool:
        return at is not None and since <= at <= until

    extended = conn.execute(
        select(audit_log.c.subject, audit_log.c.details)
        .where(
            audit_log.c.program_id == stored.id,
            audit_log.c.action == "person.extend",
            audit_log.c.at.between(since, until),
        )
        .order_by(audit_log.c.at)
    ).all()
    # Of this officer's people (removed or not), the ones extended: read only when any were.
    names = (
        {
            r.external_id: r
            for r in conn.execute(select(*cols).join(e).where(_mine(stored, officer)))
        }
        if extended
        else {}
    )
    return {
        "since": since.astimezone(stored.program.tz).isoformat(),
        "completed": [person(r) for r in found if inside(r.completed_at)],
        "joined": [person(r) for r in found if inside(r.created_at) and r.removed_at is None],
        "left": [person(r) for r in found if inside(r.removed_at)],
        "extended": [
            {**person(names[s]), "until": (d or {}).get("until")} for s, d in extended if s in names
        ],
    }
