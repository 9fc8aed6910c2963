"""Operator adjustments to one person's path: extensions and exemptions, each audited."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind, idempotency_key
from pshnotify.domain.errors import InputError, NotFoundError
from pshnotify.domain.text import text_problem
from pshnotify.domain.values import Day
from pshnotify.settings import DEFAULT_MESSAGE_ID_DOMAIN
from pshnotify.store import audit, outbox, standing
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people

MAX_REASON = 500  # an exemption's reason, shown in reports
_EXTENSION = Kind.EXTENSION.value  # the confirmation of an extension, with its .ics


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
            *standing.COLUMNS,
            people.c.external_id,
            people.c.email,
            people.c.name,
        )
        .select_from(standing.joined())
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
    new_deadline: Day,
    clock: Clock,
    *,
    actor: str,
    note: str | None = None,
    message_id_domain: str = DEFAULT_MESSAGE_ID_DOMAIN,
) -> Adjusted:
    """A new personal deadline; the reminders before the deadline follow it at once, and the
    person gets a confirmation carrying the deadline's calendar event (same UID, next
    SEQUENCE) if they are still asked to take the training."""
    now, until = clock.now(), new_deadline.date
    with engine.begin() as conn:
        row = find_enrollment(conn, stored, person_ref)
        closes = stored.program.wave(row.wave_key).closes
        if until < closes:
            raise InputError(
                [f"until: {until} is before the wave's close ({closes})"],
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
            "confirmation_queued": _queue_extension_email(
                conn, stored, row, until, (row.extended_until or closes), now, message_id_domain
            ),
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


def _queue_extension_email(
    conn: Connection,
    stored: StoredProgram,
    row: Any,
    until: dt.date,
    previous: dt.date,
    now: dt.datetime,
    message_id_domain: str,
) -> bool:
    """The person hears of their new deadline at once (not held to working hours: it answers
    their request). Each extension is its own message, numbered: the number is the calendar
    event's SEQUENCE, so the latest extension's event replaces the earlier ones'."""
    if not policy.owes_training(standing.to_standing(row)):
        return False  # nothing is asked of them: no email about a deadline
    earlier = conn.scalar(
        select(func.count()).where(
            messages.c.program_id == stored.id,
            messages.c.person_id == row.person_id,
            messages.c.kind == _EXTENSION,
        )
    )
    sequence = int(earlier or 0) + 1
    step = f"extension:{sequence}"
    message = {
        "program_id": stored.id,
        "person_id": row.person_id,
        "kind": _EXTENSION,
        "wave_key": row.wave_key,
        "step": step,
        "idempotency_key": idempotency_key(
            stored.key, row.wave_key, row.external_id, _EXTENSION, step
        ),
        "message_id": outbox.new_message_id(message_id_domain),
        "recipient_email": row.email,
        "recipient_name": row.name,
        "context": {
            "deadline": until.isoformat(),
            "previous": previous.isoformat(),
            "sequence": sequence,
        },
        "due_at": now,
    }
    return outbox.queue(conn, [message], now) == 1


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
        if row.exempted_reason == reason:  # a second `exempt`: say so, change nothing
            return Adjusted(
                row.external_id,
                row.wave_key,
                {"reason": reason, "cancelled_messages": 0, "changed": False},
            )
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
