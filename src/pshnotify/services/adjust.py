"""Operator adjustments to one person's path: extensions and exemptions, each audited."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from pshnotify.clock import Clock
from pshnotify.domain.delivery import Kind
from pshnotify.domain.errors import InputError, NotFoundError
from pshnotify.domain.text import text_problem
from pshnotify.store import audit, outbox
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, people

MAX_REASON = 500  # an exemption's reason, shown in reports


@dataclass(frozen=True)
class Adjusted:
    person: str
    wave: str
    detail: dict[str, Any]


def find_enrollment(conn: Connection, stored: StoredProgram, person_ref: str) -> Any:
    row = conn.execute(
        select(
            enrollments.c.id,
            enrollments.c.person_id,
            enrollments.c.wave_key,
            enrollments.c.extended_until,
            people.c.external_id,
        )
        .join(people, people.c.id == enrollments.c.person_id)
        .where(enrollments.c.program_id == stored.id)
        .where((people.c.external_id == person_ref) | (people.c.email_key == person_ref.lower()))
    ).first()
    if row is None:
        raise NotFoundError(
            [f"ID: nobody with id or email {person_ref!r} in program {stored.key}"],
            hint="check the id, or import the roster first",
        )
    return row


def extend(
    engine: Engine,
    stored: StoredProgram,
    person_ref: str,
    until: dt.date,
    clock: Clock,
    *,
    actor: str,
    note: str | None = None,
) -> Adjusted:
    """A new personal deadline; the reminders before the deadline follow it at once."""
    now = clock.now()
    with engine.begin() as conn:
        row = find_enrollment(conn, stored, person_ref)
        closes = stored.program.wave(row.wave_key).closes
        if until < closes:
            raise InputError(
                [f"--until: {until} is before the wave's close ({closes})"],
                hint="an extension moves the deadline later",
            )
        # Reminders queued for the old deadline and not yet sent no longer fit: cancel them.
        outbox.cancel_pending(
            conn,
            program_id=stored.id,
            person_ids=[row.person_id],
            reason="deadline extended",
            now=now,
            kinds=[Kind.REMINDER.value, Kind.OVERDUE.value],
        )
        conn.execute(
            update(enrollments)
            .where(enrollments.c.id == row.id)
            .values(extended_until=until, next_action_at=now, updated_at=now)
        )
        detail = {
            "until": until.isoformat(),
            "previous": (row.extended_until or closes).isoformat(),
            "note": note,
        }
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="person.extend",
            program_id=stored.id,
            subject=row.external_id,
            details=detail,
        )
    return Adjusted(row.external_id, row.wave_key, detail)


def exempt(
    engine: Engine, stored: StoredProgram, person_ref: str, reason: str, clock: Clock, *, actor: str
) -> Adjusted:
    """Not required after all: pending messages are cancelled (kept, with the reason)."""
    reason = " ".join(reason.split())
    if not reason:
        raise InputError(["--reason: give the reason the reports will show"])
    if problem := text_problem(reason, MAX_REASON):
        raise InputError([f"--reason: {problem}"])
    now = clock.now()
    with engine.begin() as conn:
        row = find_enrollment(conn, stored, person_ref)
        cancelled = outbox.cancel_pending(
            conn,
            program_id=stored.id,
            person_ids=[row.person_id],
            reason=f"exempted: {reason}",
            now=now,
            kinds=Kind.asking(),
        )
        conn.execute(
            update(enrollments)
            .where(enrollments.c.id == row.id)
            .values(exempted_reason=reason, next_action_at=None, updated_at=now)
        )
        detail = {"reason": reason, "cancelled_messages": cancelled}
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="person.exempt",
            program_id=stored.id,
            subject=row.external_id,
            details=detail,
        )
    return Adjusted(row.external_id, row.wave_key, detail)
