"""What a bounce does: the message becomes `bounced`, the person's address may be marked
undeliverable, and an operator (or a new roster address) clears the mark.

One rule for every way a bounce arrives (a Maildir, IMAP, a file, the webhook):
  - a bounce is matched to our message by its VERP token (authenticated, see bounces.verp) or,
    without one, by the original Message-ID and the failed recipient; unmatched is kept;
  - hard, soft, blocked and complaint make a sent message `bounced` (status and diagnostic
    kept in `bounces`); a delayed warning changes nothing;
  - a hard bounce, or soft bounces on `soft_days` distinct local days since the last clear,
    marks the person's address undeliverable (since when, why); blocked and complaints are
    about our mail, not the address, so they mark nothing and are shown to the operator.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, func, select, update

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.bounces import BounceClass
from pshnotify.domain.calendar import next_sending_instant
from pshnotify.domain.delivery import Kind, State, idempotency_key
from pshnotify.domain.errors import NotFoundError
from pshnotify.store import audit, outbox, standing
from pshnotify.store.programs import StoredProgram, load_program_by_id
from pshnotify.store.receipts import claim_receipt
from pshnotify.store.schema import (
    bounces,
    enrollments,
    messages,
    people,
    undeliverable,
    unrecognised_bounces,
    waves,
)
from pshnotify.store.sql import insert_ignoring_duplicates

BOUNCES_ACTOR = "bounces"  # who the audit log says marked an address
_BOUNCEABLE = (State.SENT.value, State.UNKNOWN.value, State.BOUNCED.value)
_MAX_KEY = 400


class Recorded(StrEnum):
    BOUNCED = "bounced"  # matched, recorded, the message marked
    NOTED = "noted"  # matched and recorded; changes nothing (a delayed warning)
    DUPLICATE = "duplicate"  # seen before: nothing changed
    UNMATCHED = "unmatched"  # no message of ours: kept for a person


@dataclass(frozen=True)
class BounceEvent:
    """One failed recipient of one bounce, however it arrived."""

    source: str  # maildir | imap | file | webhook
    dedupe_key: str  # the bounce's identity and the recipient
    recipient: str
    cls: BounceClass
    status: str | None
    diagnostic: str
    received_at: dt.datetime
    message_row_id: int | None = None  # from an authenticated VERP token
    original_message_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class RecordResult:
    outcome: Recorded
    marked: str | None = None  # the external id of a person whose address was just marked
    person: str | None = None


def dedupe_key(*parts: str) -> str:
    key = ":".join(parts)
    if len(key) <= _MAX_KEY:
        return key
    return f"{key[:300]}#{hashlib.sha256(key.encode()).hexdigest()}"


def record_bounce(
    conn: Connection, event: BounceEvent, *, now: dt.datetime, soft_days: int = 3
) -> RecordResult:
    """Apply one bounce in the caller's transaction; the same event twice changes nothing."""
    msg = _match(conn, event)
    if msg is None:
        return RecordResult(Recorded.UNMATCHED)
    row = {
        "received_at": event.received_at,
        "source": event.source,
        "dedupe_key": event.dedupe_key,
        "message_row_id": msg.id,
        "program_id": msg.program_id,
        "person_id": msg.person_id,
        "recipient": event.recipient,
        "class": event.cls.value,
        "status": event.status,
        "diagnostic": event.diagnostic,
    }
    inserted = conn.execute(
        insert_ignoring_duplicates(conn, bounces).values(**row).returning(bounces.c.id)
    ).all()
    if not inserted:
        return RecordResult(Recorded.DUPLICATE)
    bounce_id = inserted[0].id
    if event.cls == BounceClass.DELAYED:
        return RecordResult(Recorded.NOTED)
    conn.execute(
        update(messages)
        .where(messages.c.id == msg.id, messages.c.state.in_(_BOUNCEABLE))
        .values(state=State.BOUNCED.value, reason=_reason(event), updated_at=now)
    )
    external = _external_id(conn, msg.person_id)
    marked = None
    if msg.person_id is not None and _marks(conn, event, msg, now, soft_days):
        marked = _mark(conn, msg, event, bounce_id, now, soft_days)
    return RecordResult(Recorded.BOUNCED, marked=marked, person=external)


def _reason(event: BounceEvent) -> str:
    code = f" {event.status}" if event.status else ""
    detail = f": {event.diagnostic}" if event.diagnostic else ""
    return f"{event.cls.value} bounce{code}{detail}"[:500]


def _match(conn: Connection, event: BounceEvent) -> Any:
    cols = (
        messages.c.id,
        messages.c.program_id,
        messages.c.person_id,
        messages.c.recipient_email,
    )
    if event.message_row_id is not None:
        return conn.execute(select(*cols).where(messages.c.id == event.message_row_id)).first()
    if not event.original_message_ids:
        return None
    found = conn.execute(
        select(*cols).where(messages.c.message_id.in_(event.original_message_ids))
    ).all()
    # Without a token the recipient must agree too: a Message-ID alone is shared by nobody,
    # but the report must be about this recipient of it.
    return next((m for m in found if m.recipient_email.lower() == event.recipient), None)


def _external_id(conn: Connection, person_id: int | None) -> str | None:
    if person_id is None:
        return None
    return conn.scalar(select(people.c.external_id).where(people.c.id == person_id))


def _marks(
    conn: Connection, event: BounceEvent, msg: Any, now: dt.datetime, soft_days: int
) -> bool:
    """Does this bounce make the person's current address undeliverable?"""
    if event.cls not in (BounceClass.HARD, BounceClass.SOFT):
        return False
    person = conn.execute(select(people.c.email_key).where(people.c.id == msg.person_id)).first()
    if person is None or person.email_key != msg.recipient_email.lower():
        return False  # the roster has a new address since: this bounce is about the old one
    if _active_mark(conn, msg.person_id) is not None:
        return False
    if event.cls == BounceClass.HARD:
        return True
    return len(_soft_days(conn, msg.person_id, person.email_key, _zone(conn, msg))) >= soft_days


def _zone(conn: Connection, msg: Any) -> ZoneInfo:
    return load_program_by_id(conn, msg.program_id).program.tz


def _soft_days(conn: Connection, person_id: int, email_key: str, tz: ZoneInfo) -> set[dt.date]:
    cleared = conn.scalar(
        select(undeliverable.c.cleared_at).where(undeliverable.c.person_id == person_id)
    )
    q = select(bounces.c.received_at).where(
        bounces.c.person_id == person_id,
        bounces.c["class"] == BounceClass.SOFT.value,
        func.lower(bounces.c.recipient) == email_key,
    )
    if cleared is not None:
        q = q.where(bounces.c.received_at > cleared)
    return {at.astimezone(tz).date() for at in conn.scalars(q)}


def _mark(
    conn: Connection, msg: Any, event: BounceEvent, bounce_id: int, now: dt.datetime, days: int
) -> str | None:
    tz = _zone(conn, msg)
    on = event.received_at.astimezone(tz).date().isoformat()
    code = f" {event.status}" if event.status else ""
    why = (
        f"hard bounce{code} on {on}"
        if event.cls == BounceClass.HARD
        else f"soft bounces on {days} days, the last{code} on {on}"
    )
    if event.diagnostic:
        why += f": {event.diagnostic[:200]}"
    values = {
        "email_key": msg.recipient_email.lower(),
        "since": now,
        "reason": why,
        "bounce_id": bounce_id,
        "cleared_at": None,
        "cleared_by": None,
    }
    done = conn.execute(
        update(undeliverable).where(undeliverable.c.person_id == msg.person_id).values(**values)
    )
    if not done.rowcount:
        conn.execute(undeliverable.insert().values(person_id=msg.person_id, **values))
    external = _external_id(conn, msg.person_id)
    audit.record(
        conn,
        at=now,
        actor=BOUNCES_ACTOR,
        action="address.undeliverable",
        program_id=msg.program_id,
        subject=external,
        details={"address": values["email_key"], "reason": why},
    )
    return external


def _active_mark(conn: Connection, person_id: int) -> Any:
    return conn.execute(
        select(undeliverable).where(undeliverable.c.person_id == person_id, standing.active())
    ).first()


# -- reading the marks (the policy, status, reports and the console ask these) --------------------
@dataclass(frozen=True)
class Mark:
    person: str  # external id
    name: str
    email: str
    since: dt.datetime
    reason: str


def undeliverable_ids(conn: Connection, person_ids: list[int]) -> set[int]:
    """Which of these people have an address marked undeliverable now."""
    if not person_ids:
        return set()
    q = select(undeliverable.c.person_id).where(
        undeliverable.c.person_id.in_(person_ids), standing.active()
    )
    return set(conn.scalars(q))


def marks(conn: Connection, person_ids: list[int] | None = None) -> list[Mark]:
    """Active marks with who and why, oldest first."""
    q = (
        select(
            people.c.external_id,
            people.c.name,
            people.c.email,
            undeliverable.c.since,
            undeliverable.c.reason,
        )
        .join(people, people.c.id == undeliverable.c.person_id)
        .where(standing.active())
        .order_by(undeliverable.c.since, people.c.external_id)
    )
    if person_ids is not None:
        q = q.where(undeliverable.c.person_id.in_(person_ids))
    return [Mark(r.external_id, r.name, r.email, r.since, r.reason) for r in conn.execute(q)]


# -- clearing -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cleared:
    person: str
    email: str
    was_marked: bool
    reason: str = ""  # the mark that was cleared
    launch_requeued: bool = False


def address_ok(
    engine: Engine,
    stored: StoredProgram,
    person_ref: str,
    clock: Clock,
    *,
    actor: str,
    message_id_domain: str,
) -> Cleared:
    """`pshnotify address ok ID`: an operator says the address works; audited. A launch email
    that bounced goes out again on the next pass (same address, a new message)."""
    now = clock.now()
    with engine.begin() as conn:
        person = conn.execute(
            select(people.c.id, people.c.external_id, people.c.email).where(
                (people.c.external_id == person_ref.strip())
                | (people.c.email_key == person_ref.strip().lower())
            )
        ).first()
        if person is None:
            raise NotFoundError(
                [f"ID: nobody on the roster has the id or email {person_ref!r}"],
                hint="`pshnotify status` or the roster file lists the ids",
            )
        mark = _active_mark(conn, person.id)
        if mark is None:
            return Cleared(person.external_id, person.email, was_marked=False)
        _clear(conn, person.id, now, actor)
        requeued = _resend_launch(
            conn, stored, person.id, now, message_id_domain, step=f"resend:{mark.bounce_id}"
        )
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="address.ok",
            program_id=stored.id,
            subject=person.external_id,
            details={"address": person.email, "cleared": mark.reason, "launch": requeued},
        )
    return Cleared(person.external_id, person.email, True, mark.reason, requeued)


def _clear(conn: Connection, person_id: int, now: dt.datetime, by: str) -> None:
    conn.execute(
        update(undeliverable)
        .where(undeliverable.c.person_id == person_id, standing.active())
        .values(cleared_at=now, cleared_by=by)
    )
    # The scheduler looks at them again at once: their next steps go to the address.
    conn.execute(
        update(enrollments)
        .where(enrollments.c.person_id == person_id, standing.present())
        .values(next_action_at=now)
    )


def readdressed(
    conn: Connection,
    stored: StoredProgram,
    person_ids: list[int],
    now: dt.datetime,
    *,
    actor: str,
    message_id_domain: str,
) -> int:
    """A roster import gave these people a new address: a mark on the old one is cleared, and
    each marked person's launch email goes to the new address on the next pass. Returns how
    many marks were cleared."""
    cleared = 0
    for pid in sorted(undeliverable_ids(conn, person_ids)):
        mark = _active_mark(conn, pid)
        _clear(conn, pid, now, f"{actor} (roster import: new address)")
        email_key = conn.scalar(select(people.c.email_key).where(people.c.id == pid)) or ""
        # The step names the new address (hashed: steps are short): once per new address.
        digest = hashlib.sha256(email_key.encode()).hexdigest()[:16]
        _resend_launch(conn, stored, pid, now, message_id_domain, step=f"readdress:{digest}")
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="address.readdressed",
            program_id=stored.id,
            subject=_external_id(conn, pid),
            details={"old_address": mark.email_key if mark else None, "address": email_key},
        )
        cleared += 1
    return cleared


def _resend_launch(
    conn: Connection,
    stored: StoredProgram,
    person_id: int,
    now: dt.datetime,
    domain: str,
    *,
    step: str,
) -> bool:
    """Queue the launch email again to the person's current address, if their wave has been
    launched, a launch email was queued for them before, and they still owe the training.
    The step names what it answers (a bounce, a new address), so it is queued once."""
    e = enrollments
    row = conn.execute(
        select(
            *standing.COLUMNS,
            people.c.external_id,
            people.c.email,
            people.c.name,
            waves.c.launched_at,
        )
        .select_from(standing.joined())
        .outerjoin(waves, and_(waves.c.program_id == stored.id, waves.c.key == e.c.wave_key))
        .where(e.c.program_id == stored.id, e.c.person_id == person_id)
    ).first()
    if row is None or row.launched_at is None:
        return False
    if not policy.owes_training(standing.to_standing(row)):
        return False
    launches = conn.execute(
        select(messages.c.id, messages.c.state).where(
            messages.c.program_id == stored.id,
            messages.c.person_id == person_id,
            messages.c.kind == Kind.LAUNCH.value,
        )
    ).all()
    if not launches:
        return False  # the scheduler's pass sends the first launch email to the new address
    outbox.cancel_pending(
        conn,
        program_id=stored.id,
        person_ids=[person_id],
        reason="address changed",
        now=now,
        kinds=[Kind.LAUNCH.value],
    )
    program = stored.program
    queued = outbox.queue(
        conn,
        [
            {
                "program_id": stored.id,
                "person_id": person_id,
                "kind": Kind.LAUNCH.value,
                "wave_key": row.wave_key,
                "step": step,
                "idempotency_key": idempotency_key(
                    stored.key, row.wave_key, row.external_id, Kind.LAUNCH.value, step
                ),
                "message_id": outbox.new_message_id(domain),
                "recipient_email": row.email,
                "recipient_name": row.name,
                "context": {"step": step},
                "due_at": next_sending_instant(now, program.sending, program.tz),
            }
        ],
        now,
    )
    return queued > 0


# -- unrecognised mail ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Unrecognised:
    received_at: dt.datetime
    source: str
    location: str
    sender: str
    subject: str
    reason: str


def keep_unrecognised(conn: Connection, item: Unrecognised, key: str) -> bool:
    """Remember mail nobody could read (once); returns whether it is new."""
    row = {**item.__dict__, "dedupe_key": dedupe_key("unrecognised", key)}
    stmt = insert_ignoring_duplicates(conn, unrecognised_bounces).values(**row)
    return bool(conn.execute(stmt.returning(unrecognised_bounces.c.id)).all())


def list_unrecognised(engine: Engine, limit: int = 200) -> list[Unrecognised]:
    u = unrecognised_bounces
    with engine.connect() as conn:
        rows = conn.execute(
            select(u.c.received_at, u.c.source, u.c.location, u.c.sender, u.c.subject, u.c.reason)
            .order_by(u.c.received_at.desc(), u.c.id.desc())
            .limit(limit)
        ).all()
    return [Unrecognised(*r) for r in rows]


def count_unrecognised(conn: Connection) -> int:
    return int(conn.scalar(select(func.count()).select_from(unrecognised_bounces)) or 0)


# -- events from a sending service -----------------------------------------------------------------
def record_event(
    engine: Engine,
    clock: Clock,
    *,
    receipt: str,
    message_id: str,
    recipient: str,
    cls: BounceClass,
    status: str | None,
    diagnostic: str,
    soft_days: int = 3,
) -> RecordResult | None:
    """A bounce or complaint reported by the relay's own callback (POST /webhooks/bounces),
    matched by our Message-ID and the recipient. None when the receipt id was seen before."""
    now = clock.now()
    mid = message_id.strip()
    mid = mid if mid.startswith("<") else f"<{mid}>"
    event = BounceEvent(
        source="webhook",
        dedupe_key=dedupe_key("webhook", receipt),
        recipient=recipient.strip().lower(),
        cls=cls,
        status=status,
        diagnostic=" ".join(diagnostic.split())[:500],
        received_at=now,
        original_message_ids=(mid,),
    )
    with engine.begin() as conn:
        if not claim_receipt(conn, "bounce-webhook", receipt, clock.wall()):
            return None
        return record_bounce(conn, event, now=now, soft_days=soft_days)


def undeliverable_reasons(conn: Connection, person_ids: list[int]) -> dict[int, str]:
    """person id -> why their address is marked, for those of these people who are."""
    out: dict[int, str] = {}
    for start in range(0, len(person_ids), 500):
        part = person_ids[start : start + 500]
        q = select(undeliverable.c.person_id, undeliverable.c.reason).where(
            undeliverable.c.person_id.in_(part), standing.active()
        )
        out.update(dict(conn.execute(q).tuples().all()))
    return out


def bounce_summary(conn: Connection, program_id: int) -> dict[str, int]:
    """For `status`: bounces of this program's messages by class, the people marked now, and
    the unreadable mail kept (all programs share the bounce mailbox)."""
    q = (
        select(bounces.c["class"], func.count())
        .where(bounces.c.program_id == program_id)
        .group_by(bounces.c["class"])
    )
    by_class = {str(c): int(n) for c, n in conn.execute(q)}
    out = {c.value: by_class.get(c.value, 0) for c in BounceClass}
    out["undeliverable"] = sum(standing.marked_by_wave(conn, program_id).values())
    out["unrecognised"] = count_unrecognised(conn)
    return out
