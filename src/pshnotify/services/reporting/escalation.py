"""Escalation: the accountable person hears about someone who ignores every reminder.

Once a day (at the program's report time, on working days) each manager (the roster's
`manager_email`) or administrative officer gets one digest listing all their people who are
behind, with deadline and reminders sent; nobody behind, no digest. Whether a person is behind
is the policy's rule (`domain.policy.escalated`). The digest's idempotency key is the
recipient and the local date, so however many passes or replicas run there is at most one a
day; its rows are read again when it is sent, so someone who completed since is not in it and
a digest left with nobody in it is skipped.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select

from pshnotify.domain import policy
from pshnotify.domain.cadence import deadline_date, timeline
from pshnotify.domain.calendar import next_sending_instant
from pshnotify.domain.delivery import Kind, State, idempotency_key
from pshnotify.domain.errors import NothingToSend
from pshnotify.domain.program import Program
from pshnotify.mail.address import mailbox_key
from pshnotify.services.bounces.marks import undeliverable_reasons
from pshnotify.store import outbox, standing
from pshnotify.store.outbox import Claimed
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people, waves

KIND = Kind.ESCALATION.value


class NobodyBehind(NothingToSend):
    """The digest's people have all caught up since it was queued: skip it."""


@dataclass(frozen=True)
class Behind:
    recipient: str  # as the roster spells it
    as_officer: bool  # the officer stands in for a missing manager, or by configuration
    person_id: int
    row: dict[str, Any]


def escalation_night(stored: StoredProgram, now: dt.datetime) -> dt.date | None:
    """Today, once the report time has come on a working day, if escalation is on."""
    program = stored.program
    if not program.escalation.enabled:
        return None
    local = now.astimezone(program.tz)
    at = dt.datetime.combine(local.date(), program.sending.report_time, program.tz)
    if now < at or not program.sending.is_working_day(local.date()):
        return None
    return local.date()


def _owing_since_launch(program_id: int) -> list[Any]:
    """In SQL, `policy.owes_training` for people whose launch email has gone: the ones an
    escalation can be about (the digest queued now and the digests `plan` foresees)."""
    e = enrollments
    return [e.c.program_id == program_id, standing.owes(), e.c.launch_sent_at.is_not(None)]


def behind(conn: Connection, stored: StoredProgram, today: dt.date) -> list[Behind]:
    """Everyone of this program who is behind on `today`, with whom to tell.

    Judged as of the day's report time (reminders sent before it), so every pass of the day
    reaches the same verdict and the digest is decided once; completions count until it is
    sent."""
    program = stored.program
    as_of = dt.datetime.combine(today, program.sending.report_time, program.tz)
    esc = program.escalation
    e = enrollments
    q = (
        select(
            people.c.id,
            people.c.external_id,
            people.c.name,
            people.c.email,
            people.c.department,
            people.c.manager_email,
            people.c.admin_officer,
            standing.deadline(program).label("deadline"),
        )
        .join(e, e.c.person_id == people.c.id)
        .join(waves, and_(waves.c.program_id == stored.id, waves.c.key == e.c.wave_key))
        .where(
            *_owing_since_launch(stored.id),
            waves.c.launched_at.is_not(None),
        )
    )
    found = conn.execute(q).all()
    if not found:
        return []
    sent = _reminders_sent(conn, stored.id, as_of)
    dead = undeliverable_reasons(conn, [r.id for r in found])
    out: list[Behind] = []
    for r in found:
        deadline = r.deadline
        if deadline is None:
            continue  # a wave no longer in the program file
        days_left = (deadline - today).days
        if not policy.escalated(esc, reminders_sent=sent[r.id], days_left=days_left):
            continue
        manager = _manager(program, r.manager_email)
        recipient = manager or r.admin_officer
        if not recipient:
            continue  # nobody to tell: the officer's report still lists them
        row = {
            "id": r.external_id,
            "name": r.name,
            "email": r.email,
            "department": r.department,
            "deadline": deadline.isoformat(),
            "days_left": days_left,
            "reminders_sent": sent[r.id],
            "undeliverable": dead.get(r.id),
        }
        out.append(Behind(recipient, manager is None, r.id, row))
    return out


def _manager(program: Program, address: str | None) -> str | None:
    """Whom a digest goes to as the manager: the roster's address, if the program sends to
    managers and allows its domain (else the officer stands in)."""
    if program.escalation.to != "manager" or not address:
        return None
    return address if program.manager_allowed(address) else None


def _reminders_sent(conn: Connection, program_id: int, before: dt.datetime) -> Counter[int]:
    q = (
        select(messages.c.person_id, func.count())
        .where(
            messages.c.program_id == program_id,
            messages.c.sent_at < before,
            messages.c.kind.in_([Kind.REMINDER.value, Kind.OVERDUE.value]),
            messages.c.state.in_([State.SENT.value, State.BOUNCED.value]),
        )
        .group_by(messages.c.person_id)
    )
    return Counter({pid: n for pid, n in conn.execute(q) if pid is not None})


def queue_escalations(
    conn: Connection, stored: StoredProgram, now: dt.datetime, message_id_domain: str
) -> int:
    """Today's digests, one per recipient with someone behind; returns how many are new.
    A nightly job: safe on every pass of every replica (the key is recipient and date)."""
    today = escalation_night(stored, now)
    if today is None:
        return 0
    groups: dict[str, list[Behind]] = defaultdict(list)
    for b in behind(conn, stored, today):
        groups[mailbox_key(b.recipient)].append(b)  # victim+1@, +2@...: one mailbox
    program = stored.program
    due = next_sending_instant(now, program.sending, program.tz)
    day = today.isoformat()
    rows = [
        {
            "program_id": stored.id,
            "person_id": None,
            "kind": KIND,
            "wave_key": None,
            "step": day,
            "idempotency_key": idempotency_key(stored.key, None, key, KIND, day),
            "message_id": outbox.new_message_id(message_id_domain),
            "recipient_email": members[0].recipient,
            "recipient_name": "",
            "context": {"recipient": members[0].recipient, "date": day},
            "due_at": due,
        }
        for key, members in sorted(groups.items())
    ]
    return outbox.queue(conn, rows, now)


def escalation_enricher(engine: Engine, stored: StoredProgram, claimed: Claimed) -> dict[str, Any]:
    """The dispatcher's hook: the recipient's people who are still behind, read at send time."""
    recipient = mailbox_key(str(claimed.context["recipient"]))
    today = dt.date.fromisoformat(str(claimed.context["date"]))
    with engine.connect() as conn:
        mine = [b for b in behind(conn, stored, today) if mailbox_key(b.recipient) == recipient]
    if not mine:
        raise NobodyBehind("nobody behind any more")
    mine.sort(key=lambda b: (b.row["days_left"], b.row["name"].casefold(), b.row["id"]))
    return {"rows": [b.row for b in mine], "as_officer": all(b.as_officer for b in mine)}


def planned_digests(conn: Connection, stored: StoredProgram, now: dt.datetime) -> Counter[dt.date]:
    """For `plan`: digests per local day from now on, if nobody completes meanwhile.

    Each person whose launch email has gone is projected along their own cadence (the same
    `timeline` the scheduler follows): the days on which the policy would call them behind,
    working days only, one digest per recipient a day.
    """
    program = stored.program
    esc = program.escalation
    if not esc.enabled:
        return Counter()
    e = enrollments
    q = (
        select(
            people.c.id,
            people.c.manager_email,
            people.c.admin_officer,
            e.c.launch_sent_at,
            *standing.COLUMNS,
        )
        .select_from(standing.joined())
        .where(
            *_owing_since_launch(stored.id),
        )
    )
    tz = program.tz
    today = now.astimezone(tz).date()
    start = today
    seen: set[tuple[str, dt.date]] = set()
    out: Counter[dt.date] = Counter()
    for r in conn.execute(q):
        recipient = _manager(program, r.manager_email) or r.admin_officer
        if not recipient:
            continue
        state = standing.person_state(r, steps={"launch"})
        try:
            deadline = deadline_date(program, state)
        except KeyError:
            continue
        reminder_days = sorted(
            p.due_at.astimezone(tz).date()
            for p in timeline(program, state, r.launch_sent_at)
            if p.kind in (Kind.REMINDER.value, Kind.OVERDUE.value)
        )
        day = start
        last = deadline + dt.timedelta(days=esc.stop_days_after_deadline)
        while day <= last:
            # The digest is decided at the report time, before that day's reminder goes.
            sent = sum(1 for d in reminder_days if d < day)
            if (
                program.sending.is_working_day(day)
                and policy.escalated(esc, reminders_sent=sent, days_left=(deadline - day).days)
                and (mailbox_key(recipient), day) not in seen
                and not (day == today and _past_report_time(stored, now))
            ):
                seen.add((mailbox_key(recipient), day))
                out[day] += 1
            day += dt.timedelta(days=1)
    return out


def _past_report_time(stored: StoredProgram, now: dt.datetime) -> bool:
    """Today's digests are queued already once the report time has passed (the outbox shows
    them as pending); the plan counts them there."""
    return escalation_night(stored, now) is not None
