"""Participants' requests in the database: filed, listed, decided, and the one question the
senders ask (`pausing_requests`: whose reminders a pending request holds back now)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, insert, select, update

from pshnotify.domain import requests as rules
from pshnotify.domain.program import Program
from pshnotify.store.schema import enrollments, people, requests


def pausing_requests(
    conn: Connection,
    program: Program,
    program_id: int,
    now: dt.datetime,
    person_ids: Iterable[int] | None = None,
) -> dict[int, tuple[int, dt.datetime]]:
    """{person_id: (request id, filed at)} for each person whose reminders a pending request
    holds now (filed less than `pause_reminders_days` ago; the oldest such request)."""
    holding = _holding(program, program_id, now)
    if holding is None:
        return {}
    q = select(requests.c.person_id, requests.c.id, requests.c.created_at).where(*holding)
    if person_ids is not None:
        q = q.where(requests.c.person_id.in_(list(person_ids)))
    out: dict[int, tuple[int, dt.datetime]] = {}
    for person_id, request_id, filed in conn.execute(q.order_by(requests.c.id)):
        out.setdefault(person_id, (request_id, filed))
    return out


def pausing_ids(program: Program, program_id: int, now: dt.datetime) -> Any | None:
    """The ids of the people `pausing_requests` names, as a subquery; None when the program
    pauses nothing (`pause_reminders_days = 0`)."""
    holding = _holding(program, program_id, now)
    return None if holding is None else select(requests.c.person_id).where(*holding)


def _holding(program: Program, program_id: int, now: dt.datetime) -> list[Any] | None:
    """The requests that hold a person's reminders at `now`: pending, filed less than
    `pause_reminders_days` ago (None: the program pauses nothing)."""
    days = program.requests.pause_reminders_days
    if days == 0:
        return None
    return [
        requests.c.program_id == program_id,
        requests.c.state == rules.PENDING,
        requests.c.created_at > now - dt.timedelta(days=days),
        requests.c.created_at <= now,
    ]


def paused_for(
    conn: Connection,
    program: Program,
    program_id: int,
    now: dt.datetime,
    person_ids: Iterable[int] | None = None,
) -> dict[int, str]:
    """{person_id: "request 12 pending"}: what `policy.Standing.paused_for` says."""
    return {
        pid: rules.paused_reason(rid)
        for pid, (rid, _) in pausing_requests(conn, program, program_id, now, person_ids).items()
    }


def open_request(conn: Connection, program_id: int, person_id: int, kind: str) -> int | None:
    return conn.scalar(
        select(requests.c.id).where(
            requests.c.program_id == program_id,
            requests.c.person_id == person_id,
            requests.c.kind == kind,
            requests.c.state == rules.PENDING,
        )
    )


def file(
    conn: Connection,
    program_id: int,
    person_id: int,
    kind: str,
    payload: dict[str, Any],
    now: dt.datetime,
) -> int:
    result = conn.execute(
        insert(requests)
        .values(
            program_id=program_id,
            person_id=person_id,
            kind=kind,
            state=rules.PENDING,
            payload=payload,
            created_at=now,
        )
        .returning(requests.c.id)
    )
    return int(result.scalar_one())


_COLUMNS = (
    requests.c.id,
    requests.c.program_id,
    requests.c.person_id,
    requests.c.kind,
    requests.c.state,
    requests.c.payload,
    requests.c.created_at,
    requests.c.decided_at,
    requests.c.decided_by,
    requests.c.decision_note,
    requests.c.auto,
    people.c.external_id,
    people.c.name,
    people.c.email,
    people.c.department,
    enrollments.c.wave_key,
    enrollments.c.extended_until,
    enrollments.c.removed_at,
)


def _select() -> Any:
    return (
        select(*_COLUMNS)
        .join(people, people.c.id == requests.c.person_id)
        .join(
            enrollments,
            (enrollments.c.person_id == requests.c.person_id)
            & (enrollments.c.program_id == requests.c.program_id),
        )
    )


def get(conn: Connection, program_id: int, request_id: int) -> Any:
    return conn.execute(
        _select().where(requests.c.program_id == program_id, requests.c.id == request_id)
    ).first()


def listed(
    conn: Connection,
    program_id: int,
    *,
    state: str | None = None,
    kind: str | None = None,
    person_id: int | None = None,
    scope: Any = None,
    limit: int = 500,
) -> list[Any]:
    """Newest first; `scope`: a condition on the person (a viewer's departments)."""
    q = _select().where(requests.c.program_id == program_id)
    if state is not None:
        q = q.where(requests.c.state == state)
    if kind is not None:
        q = q.where(requests.c.kind == kind)
    if person_id is not None:
        q = q.where(requests.c.person_id == person_id)
    if scope is not None:
        q = q.where(scope)
    return list(conn.execute(q.order_by(requests.c.id.desc()).limit(limit)))


def decide(
    conn: Connection,
    request_id: int,
    state: str,
    *,
    at: dt.datetime,
    by: str,
    note: str | None,
    auto: bool = False,
) -> bool:
    """Pending -> `state`; False if it was decided meanwhile (by someone else)."""
    done = conn.execute(
        update(requests)
        .where(requests.c.id == request_id, requests.c.state == rules.PENDING)
        .values(state=state, decided_at=at, decided_by=by, decision_note=note, auto=auto)
    )
    return done.rowcount == 1


def reopen(conn: Connection, request_id: int) -> None:
    """Approved -> pending again: the approval's command refused (nothing was changed)."""
    conn.execute(
        update(requests)
        .where(requests.c.id == request_id, requests.c.state == rules.APPROVED)
        .values(
            state=rules.PENDING, decided_at=None, decided_by=None, decision_note=None, auto=False
        )
    )
