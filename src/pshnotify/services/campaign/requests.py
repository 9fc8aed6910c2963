"""Participants' requests: filed from the email's link, decided by an operator or a rule.

Filing only records the request (and emails an acknowledgement); it changes nothing about the
person's obligation. Approving performs the operator's own command (`adjust.extend`,
`completions.complete_by_operator`, `adjust.exempt`), under the operator's login, with the
request's id in the audit log; declining resumes the reminders at once. Either way the person
gets an email with the decision and the operator's note.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain import requests as rules
from pshnotify.domain.delivery import Kind, idempotency_key
from pshnotify.domain.errors import ConflictError, InputError, NotFoundError
from pshnotify.domain.text import text_problem
from pshnotify.domain.values import Day, Instant
from pshnotify.services.campaign.adjust import exempt, extend, find_enrollment
from pshnotify.services.campaign.completions import complete_by_operator
from pshnotify.settings import DEFAULT_MESSAGE_ID_DOMAIN
from pshnotify.store import audit, outbox, standing
from pshnotify.store import requests as repo
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, people
from pshnotify.store.scope import in_departments

AUTO_ACTOR = "auto-approval rule"
_ALREADY = "You already have a request of this kind waiting{}; we will answer it by email."
PARTICIPANT = "participant (email link)"


@dataclass(frozen=True)
class Person:
    """Who a link names, as the page shows them: nothing a forwarded email does not show."""

    external_id: str
    first_name: str
    deadline: dt.date
    timezone: str | None
    open_kinds: frozenset[str]
    settled: str | None = None  # why nothing more is asked of them (complete, not required)


@dataclass(frozen=True)
class Filed:
    id: int
    kind: str
    state: str  # pending, or approved when the program's rule granted it at once
    auto: bool = False


def link_person(engine: Engine, stored: StoredProgram, external_id: str) -> Person:
    """The person a link names, if still on the roster of this program (NotFoundError)."""
    with engine.connect() as conn:
        row = _enrolled(conn, stored, external_id)
        waiting = repo.listed(conn, stored.id, state=rules.PENDING, person_id=row.person_id)
        zone = conn.scalar(select(people.c.timezone).where(people.c.id == row.person_id))
    return Person(
        external_id=row.external_id,
        first_name=(row.name.split() or [""])[0],
        deadline=_deadline(stored, row),
        timezone=str(zone) if zone else None,
        open_kinds=frozenset(r.kind for r in waiting),
        settled=_settled(row),
    )


def _settled(row: Any) -> str | None:
    """Why the training is no longer asked of this person, in the page's words (never an
    operator's own reason: the page shows no more than a forwarded email)."""
    person = standing.to_standing(row)
    if policy.owes_training(person):
        return None
    if person.completed:
        return (
            "Our records show that you have completed this training. Thank you: nothing "
            "more is needed."
        )
    return "Our records show that this training is not required of you: nothing more is needed."


def _enrolled(conn: Connection, stored: StoredProgram, external_id: str) -> Any:
    row = find_enrollment(conn, stored, external_id)
    if standing.to_standing(row).removed or row.external_id != external_id:
        raise NotFoundError([f"person: {external_id!r} is not on the roster"])
    return row


def _deadline(stored: StoredProgram, row: Any) -> dt.date:
    last = policy.deadline(stored.program, standing.to_standing(row))
    return last if last is not None else stored.program.wave(row.wave_key).closes


def file_request(
    engine: Engine,
    stored: StoredProgram,
    external_id: str,
    kind: str,
    form: dict[str, str],
    clock: Clock,
    *,
    message_id_domain: str = DEFAULT_MESSAGE_ID_DOMAIN,
) -> Filed:
    """File what a participant asked (InputError: a field's problem; ConflictError: a request
    of this kind already waits). More time within the program's auto-approval is granted at
    once, through the same command an operator's approval uses."""
    now = clock.now()
    with engine.begin() as conn:
        row = _enrolled(conn, stored, external_id)
        if settled := _settled(row):
            raise ConflictError(settled)
        # A day ahead of the program's: someone east of it may already be on the next date.
        today = now.astimezone(stored.program.tz).date() + dt.timedelta(days=1)
        payload = rules.read_request(stored.program, kind, form, _deadline(stored, row), today)
        if (waiting := repo.open_request(conn, stored.id, row.person_id, kind)) is not None:
            raise ConflictError(_ALREADY.format(f" (request {waiting})"))
        try:
            with conn.begin_nested():
                request_id = repo.file(conn, stored.id, row.person_id, kind, payload, now)
        except IntegrityError:  # the same request, posted twice at once: the other one won
            raise ConflictError(_ALREADY.format("")) from None
        auto = kind == "more_time" and rules.auto_approves(
            stored.program, _deadline(stored, row), dt.date.fromisoformat(payload["until"])
        )
        audit.record(
            conn,
            at=now,
            actor=PARTICIPANT,
            action="request.file",
            program_id=stored.id,
            subject=row.external_id,
            details={"request": request_id, "kind": kind, **payload},
        )
        _queue_email(
            conn,
            stored,
            row,
            Kind.ACKNOWLEDGEMENT,
            request_id,
            kind,
            payload,
            now,
            message_id_domain,
            state=rules.APPROVED if auto else rules.PENDING,
        )
    if auto:  # within the program's rule: granted at once, as an operator's approval is
        approve(
            engine,
            stored,
            request_id,
            clock,
            actor=AUTO_ACTOR,
            message_id_domain=message_id_domain,
            auto=True,
        )
        return Filed(request_id, kind, rules.APPROVED, auto=True)
    return Filed(request_id, kind, rules.PENDING)


def _note(note: str | None) -> str | None:
    note = (note or "").strip()
    if not note:
        return None
    if problem := text_problem(note.replace("\r\n", " ").replace("\n", " "), rules.MAX_NOTE):
        raise InputError([f"note: {problem}"])
    return note.replace("\r\n", "\n")


def _pending(conn: Connection, stored: StoredProgram, request_id: int) -> Any:
    row = repo.get(conn, stored.id, request_id)
    if row is None:
        raise NotFoundError(
            [f"ID: no request {request_id} in program {stored.key}"],
            hint="pshnotify requests list shows them",
        )
    if row.state != rules.PENDING:
        raise ConflictError(
            f"request {request_id} was already {row.state} by {row.decided_by}",
        )
    return row


def approve(
    engine: Engine,
    stored: StoredProgram,
    request_id: int,
    clock: Clock,
    *,
    actor: str,
    until: Day | None = None,
    note: str | None = None,
    message_id_domain: str = DEFAULT_MESSAGE_ID_DOMAIN,
    auto: bool = False,
) -> dict[str, Any]:
    """Grant a pending request through the operator's own command; the person is told.

    The request is taken first (pending -> approved, so that a second approval at the same
    moment is refused instead of extending twice); if the command refuses, it is pending
    again and nothing changed."""
    note = _note(note)
    now = clock.now()
    with engine.begin() as conn:
        req = _pending(conn, stored, request_id)
        if until is not None and req.kind != "more_time":
            raise InputError([f"until: request {request_id} does not ask for more time"])
        if not repo.decide(
            conn, request_id, rules.APPROVED, at=now, by=actor, note=note, auto=auto
        ):
            raise ConflictError(f"request {request_id} was decided meanwhile by someone else")
    try:
        did = _grant(engine, stored, req, clock, actor, until, note, message_id_domain)
    except BaseException:
        with engine.begin() as conn:
            repo.reopen(conn, request_id)
        raise
    with engine.begin() as conn:
        return _decided(
            conn, stored, req, request_id, rules.APPROVED, actor, now, note, did, message_id_domain
        )


def _grant(
    engine: Engine,
    stored: StoredProgram,
    req: Any,
    clock: Clock,
    actor: str,
    until: Day | None,
    note: str | None,
    message_id_domain: str,
) -> dict[str, Any]:
    """What approving does: the operator's own command for the request's kind."""
    request_id = req.id
    tag = f"request {request_id}"
    person = req.external_id
    did: dict[str, Any]
    if req.kind == "more_time":
        day = until or Day(dt.date.fromisoformat(req.payload["until"]), stored.program.reach)
        done = extend(
            engine,
            stored,
            person,
            day,
            clock,
            actor=actor,
            note=f"{tag}: {note}" if note else tag,
            message_id_domain=message_id_domain,
        )
        did = {"extended_until": done.detail["until"]}
    elif req.kind == "completed":
        day = Day(dt.date.fromisoformat(req.payload["completed_on"]), stored.program.reach)
        result = complete_by_operator(
            engine,
            stored,
            clock,
            person_ref=person,
            option=req.payload["option"],
            actor=actor,
            message_id_domain=message_id_domain,
            completed_at=Instant.at_midnight(day),
            note=tag,
        )
        did = {"completion": result.outcome.value}
    elif req.kind == "not_required":
        done = exempt(engine, stored, person, str(req.payload["reason"]), clock, actor=actor)
        did = {"exempt": done.detail["reason"]}
    else:  # another way, technical trouble: the answer is the operator's note
        did = {}
    return did


def decline(
    engine: Engine,
    stored: StoredProgram,
    request_id: int,
    clock: Clock,
    *,
    actor: str,
    note: str,
    message_id_domain: str = DEFAULT_MESSAGE_ID_DOMAIN,
) -> dict[str, Any]:
    """Refuse a pending request, saying why (`note`, required); reminders resume at once."""
    said = _note(note)
    if said is None:
        raise InputError(["note: say why: the person reads it in the decision email"])
    now = clock.now()
    with engine.begin() as conn:
        req = _pending(conn, stored, request_id)
        if not repo.decide(conn, request_id, rules.DECLINED, at=now, by=actor, note=said):
            raise ConflictError(f"request {request_id} was decided meanwhile by someone else")
        # The scheduler looks at this person on its next pass: what the pause held goes.
        conn.execute(
            update(enrollments)
            .where(
                enrollments.c.program_id == stored.id,
                enrollments.c.person_id == req.person_id,
                standing.present(),
            )
            .values(next_action_at=now, updated_at=now)
        )
        return _decided(
            conn, stored, req, request_id, rules.DECLINED, actor, now, said, {}, message_id_domain
        )


def _decided(
    conn: Connection,
    stored: StoredProgram,
    req: Any,
    request_id: int,
    state: str,
    actor: str,
    now: dt.datetime,
    note: str | None,
    did: dict[str, Any],
    message_id_domain: str,
) -> dict[str, Any]:
    """A decision taken: audited, the person told by a decision email, and what was done."""
    action = "request.approve" if state == rules.APPROVED else "request.decline"
    details = {"request": request_id, "kind": req.kind, "note": note, **did}
    audit.record(
        conn,
        at=now,
        actor=actor,
        action=action,
        program_id=stored.id,
        subject=req.external_id,
        details=details,
    )
    payload = {**req.payload, **did}
    _queue_email(
        conn,
        stored,
        req,
        Kind.DECISION,
        request_id,
        req.kind,
        payload,
        now,
        message_id_domain,
        state=state,
        note=note,
    )
    return {"id": request_id, "person": req.external_id, "kind": req.kind, "state": state, **did}


def _queue_email(
    conn: Connection,
    stored: StoredProgram,
    row: Any,
    kind: Kind,
    request_id: int,
    request_kind: str,
    payload: dict[str, Any],
    now: dt.datetime,
    message_id_domain: str,
    *,
    state: str = rules.PENDING,
    note: str | None = None,
) -> bool:
    step = f"request:{request_id}"
    message = {
        "program_id": stored.id,
        "person_id": row.person_id,
        "kind": kind.value,
        "wave_key": row.wave_key,
        "step": step,
        "idempotency_key": idempotency_key(
            stored.key, row.wave_key, row.external_id, kind.value, step
        ),
        "message_id": outbox.new_message_id(message_id_domain),
        "recipient_email": row.email,
        "recipient_name": row.name,
        "context": {
            "request": request_id,
            "request_kind": request_kind,
            "payload": payload,
            "state": state,
            "note": note or "",
        },
        "due_at": now,
    }
    return outbox.queue(conn, [message], now) == 1


def as_dict(row: Any, program_tz: Any = None) -> dict[str, Any]:
    """A request as `requests list --json` prints it."""
    return {
        "id": row.id,
        "person": row.external_id,
        "name": row.name,
        "department": row.department,
        "kind": row.kind,
        "state": row.state,
        "filed_at": row.created_at.isoformat(),
        "summary": rules.summary(row.kind, row.payload),
        "payload": dict(row.payload),
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "decided_by": row.decided_by,
        "note": row.decision_note,
        "auto": bool(row.auto),
    }


def list_requests(
    engine: Engine,
    stored: StoredProgram,
    *,
    state: str | None = None,
    kind: str | None = None,
    person_ref: str | None = None,
    departments: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Newest first; `person_ref`: one person's (roster id); `departments`: a viewer's."""
    if state is not None and state not in rules.STATES:
        raise InputError([f"state: expected one of {', '.join(rules.STATES)}, got {state!r}"])
    if kind is not None and kind not in rules.KINDS:
        raise InputError([f"kind: expected one of {', '.join(rules.KINDS)}, got {kind!r}"])
    with engine.connect() as conn:
        person_id = None
        if person_ref is not None:
            person_id = conn.scalar(select(people.c.id).where(people.c.external_id == person_ref))
            if person_id is None:
                return []
        rows = repo.listed(
            conn,
            stored.id,
            state=state,
            kind=kind,
            person_id=person_id,
            scope=in_departments(engine, departments),
        )
    return [as_dict(r) for r in rows]
