"""Completions: three ways in (the learning system's file, webhooks/xAPI, an operator), one rule.

`record_completion` is that rule. Every way in calls it inside its own transaction, so a
completion is applied the same whether it came from a CSV, a signed webhook or a command:

- the same completion twice (same dedupe key) changes nothing ("duplicate");
- nobody with that id or email enrolled in the program: kept for review ("unmatched") and
  re-tried by `match_unmatched` after each roster import, never dropped;
- the person's first completion satisfies the requirement ("recorded"): the enrollment is
  marked complete, their pending launch/reminder/overdue/invitation emails are cancelled
  (never deleted) and one confirmation is queued;
- any later completion is recorded only ("extra"): no second confirmation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update

from pshnotify.clock import Clock
from pshnotify.domain.delivery import Kind, idempotency_key
from pshnotify.domain.errors import ConflictError, InputError, NotFoundError
from pshnotify.ingest.completions_csv import (
    CompletionRow,
    note_problem,
    option_problem,
    person_problem,
    person_ref_key,
    read_completions,
)
from pshnotify.store import audit, outbox
from pshnotify.store.db import transaction
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import completions, enrollments, people, webhook_receipts
from pshnotify.store.sql import insert_ignoring_duplicates

SOURCES = ("import", "webhook", "xapi", "operator")
ALTERNATIVE = "alternative"  # an operator-approved alternative to the program's options
# What a completion makes moot. Confirmations and reports are not the person's reminders.
# A learning system's clock may run a little ahead of ours; more than this is a wrong date.
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
_MAX_KEY = 400  # completions.dedupe_key
# Unmatched completions are kept for review, but not without end: beyond this many in one
# program a new one is refused until an operator reviews them (`completions unmatched
# --purge-before`). A real roster gap is a few hundred; a sender inventing people is not.
MAX_UNMATCHED = 20_000
# A receipt only has to outlive the window in which a replay could pass the signature check
# (5 minutes for webhooks); an hour is a dozen times that. Older receipts are deleted.
RECEIPTS_KEPT = dt.timedelta(hours=1)


class UnmatchedFullError(ConflictError):
    """Too many unmatched completions are waiting for review to keep another."""


class CompletionOutcome(StrEnum):
    RECORDED = "recorded"  # the first completion: requirement satisfied
    EXTRA = "extra"  # the person was already complete: recorded only
    DUPLICATE = "duplicate"  # the same completion arrived before: nothing changed
    UNMATCHED = "unmatched"  # nobody with that id or email in the program: kept for review


@dataclass(frozen=True)
class CompletionResult:
    outcome: CompletionOutcome
    person: str | None  # the person's roster id, when matched
    confirmation_queued: bool = False
    cancelled_messages: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "person": self.person,
            "confirmation_queued": self.confirmation_queued,
            "cancelled_messages": self.cancelled_messages,
        }


@dataclass(frozen=True)
class _Enrolled:
    """The person and enrollment a completion applies to."""

    person_id: int
    external_id: str
    email: str
    name: str
    enrollment_id: int
    wave_key: str
    removed: bool


# -- checks shared by every way in ----------------------------------------------------------------
def completion_problems(
    stored: StoredProgram,
    *,
    person_ref: str,
    option: str,
    completed_at: dt.datetime,
    source: str,
    now: dt.datetime,
    note: str | None = None,
) -> list[tuple[str, str]]:
    """(field, problem) pairs; each way in words them for its own caller (file line, HTTP)."""
    problems: list[tuple[str, str]] = []
    if source not in SOURCES:
        problems.append(("source", f"unknown source {source!r} (expected {', '.join(SOURCES)})"))
    if problem := person_problem(person_ref):
        problems.append(("person", problem))
    if problem := note_problem(note):
        problems.append(("note", problem))
    if problem := option_problem(stored.program, option, allow_alternative=source == "operator"):
        problems.append(("option", problem))
    if completed_at.tzinfo is None:
        problems.append(("completed_at", "has no UTC offset"))
    elif completed_at > now + FUTURE_TOLERANCE:
        problems.append(
            ("completed_at", f"{completed_at.isoformat()} is in the future (now {now.isoformat()})")
        )
    return problems


def completion_key(person_ref: str, option: str, completed_at: dt.datetime) -> str:
    """Who, what, when: the same completion gets the same key whichever way it arrives."""
    instant = completed_at.astimezone(dt.UTC).isoformat()
    key = f"{person_ref_key(person_ref)}|{option}|{instant}"
    if len(key) <= _MAX_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


# -- the rule -------------------------------------------------------------------------------------
def record_completion(
    conn: Connection,
    stored: StoredProgram,
    *,
    person_ref: str,
    option: str,
    completed_at: dt.datetime,
    source: str,
    dedupe_key: str,
    note: str | None,
    now: dt.datetime,
    message_id_domain: str,
    confirm: bool = True,
    actor: str | None = None,
) -> CompletionResult:
    """Store one completion and apply it (see the module docstring); call inside a transaction.

    Raises InputError for a completion no way in may accept (unknown option, future date).
    """
    problems = completion_problems(
        stored,
        person_ref=person_ref,
        option=option,
        completed_at=completed_at,
        source=source,
        now=now,
        note=note,
    )
    if problems:
        raise InputError([f"{fld}: {problem}" for fld, problem in problems])
    person = find_enrolled(conn, stored.id, person_ref)
    if person is not None:
        seen = _same_completion(conn, stored.id, person, option, completed_at)
        if seen is not None:  # the same completion named the other way (id / email)
            result = CompletionResult(CompletionOutcome.DUPLICATE, person.external_id)
            if source == "operator":
                _audit_operator(
                    conn, stored, person_ref, option, completed_at, note, now, actor, result
                )
            return result
    inserted = conn.execute(
        insert_ignoring_duplicates(conn, completions)
        .values(
            program_id=stored.id,
            person_id=person.person_id if person else None,
            person_ref=person_ref.strip(),
            option=option,
            completed_at=completed_at,
            source=source,
            dedupe_key=dedupe_key,
            note=note,
            recorded_at=now,
            confirm=confirm,
        )
        .returning(completions.c.id)
    ).first()
    if inserted is None:
        result = CompletionResult(
            CompletionOutcome.DUPLICATE, _stored_person(conn, stored.id, dedupe_key)
        )
    elif person is None:
        _check_room_for_unmatched(conn, stored)
        result = CompletionResult(CompletionOutcome.UNMATCHED, None)
    else:
        result = _apply(conn, stored, person, option, completed_at, now, message_id_domain, confirm)
    if source == "operator":
        _audit_operator(conn, stored, person_ref, option, completed_at, note, now, actor, result)
    return result


def _apply(
    conn: Connection,
    stored: StoredProgram,
    person: _Enrolled,
    option: str,
    completed_at: dt.datetime,
    now: dt.datetime,
    message_id_domain: str,
    confirm: bool,
) -> CompletionResult:
    """Mark the enrollment complete unless it already is; the guard makes a race an "extra"."""
    marked = conn.execute(
        update(enrollments)
        .where(enrollments.c.id == person.enrollment_id, enrollments.c.completed_at.is_(None))
        .values(
            completed_at=completed_at,
            completion_option=option,
            next_action_at=None,
            updated_at=now,
        )
    ).rowcount
    if marked != 1:
        return CompletionResult(CompletionOutcome.EXTRA, person.external_id)
    cancelled = outbox.cancel_pending(
        conn,
        program_id=stored.id,
        person_ids=[person.person_id],
        reason="completed",
        now=now,
        kinds=Kind.asking(),
    )
    queued = False
    # Someone who left the roster is recorded as complete but not written to.
    if confirm and not person.removed:
        queued = _queue_confirmation(
            conn, stored, person, option, completed_at, now, message_id_domain
        )
    return CompletionResult(CompletionOutcome.RECORDED, person.external_id, queued, cancelled)


def _queue_confirmation(
    conn: Connection,
    stored: StoredProgram,
    person: _Enrolled,
    option: str,
    completed_at: dt.datetime,
    now: dt.datetime,
    message_id_domain: str,
) -> bool:
    """One per person and program (its idempotency key says so), due at once: not held to
    working hours, since the person is waiting for it."""
    kind = Kind.CONFIRMATION.value
    row = {
        "program_id": stored.id,
        "person_id": person.person_id,
        "kind": kind,
        "wave_key": person.wave_key,
        "step": "0",
        "idempotency_key": idempotency_key(stored.key, person.wave_key, person.external_id, kind),
        "message_id": outbox.new_message_id(message_id_domain),
        "recipient_email": person.email,
        "recipient_name": person.name,
        "context": {"option": option, "completed_at": completed_at.isoformat()},
        "due_at": now,
    }
    return outbox.queue(conn, [row], now) == 1


def _audit_operator(
    conn: Connection,
    stored: StoredProgram,
    person_ref: str,
    option: str,
    completed_at: dt.datetime,
    note: str | None,
    now: dt.datetime,
    actor: str | None,
    result: CompletionResult,
) -> None:
    audit.record(
        conn,
        at=now,
        actor=actor or "unknown",
        action="completion.record",
        program_id=stored.id,
        subject=result.person or person_ref,
        details={
            "option": option,
            "completed_at": completed_at.isoformat(),
            "note": note,
            **result.as_dict(),
        },
    )


# -- people ---------------------------------------------------------------------------------------
def find_enrolled(conn: Connection, program_id: int, person_ref: str) -> _Enrolled | None:
    """By roster id first, then by email without regard to case; enrolled in this program."""
    ref = person_ref.strip()
    base = (
        select(
            people.c.id,
            people.c.external_id,
            people.c.email,
            people.c.name,
            enrollments.c.id.label("enrollment_id"),
            enrollments.c.wave_key,
            enrollments.c.removed_at,
        )
        .join(enrollments, enrollments.c.person_id == people.c.id)
        .where(enrollments.c.program_id == program_id)
    )
    row = conn.execute(base.where(people.c.external_id == ref)).first()
    if row is None and "@" in ref:
        row = conn.execute(base.where(people.c.email_key == ref.lower())).first()
    if row is None:
        return None
    return _Enrolled(
        row.id,
        row.external_id,
        row.email,
        row.name,
        row.enrollment_id,
        row.wave_key,
        row.removed_at is not None,
    )


def _same_completion(
    conn: Connection, program_id: int, person: _Enrolled, option: str, completed_at: dt.datetime
) -> str | None:
    """The key of a completion already stored for this person, option and instant under any of
    the person's names (roster id or email), or None. A sender may name a person by id once and
    by email the next time; it is still one completion."""
    keys = {completion_key(ref, option, completed_at) for ref in (person.external_id, person.email)}
    return conn.scalar(
        select(completions.c.dedupe_key).where(
            completions.c.program_id == program_id, completions.c.dedupe_key.in_(sorted(keys))
        )
    )


def _stored_person(conn: Connection, program_id: int, dedupe_key: str) -> str | None:
    q = (
        select(people.c.external_id)
        .join(completions, completions.c.person_id == people.c.id)
        .where(completions.c.program_id == program_id, completions.c.dedupe_key == dedupe_key)
    )
    return conn.scalar(q)


# -- unmatched ------------------------------------------------------------------------------------
def match_unmatched(
    conn: Connection,
    stored: StoredProgram,
    now: dt.datetime,
    message_id_domain: str,
    *,
    confirm: bool = True,
) -> int:
    """Re-try every unmatched completion against the current roster; returns how many matched.

    Oldest completion first, so a person with several gets the earliest as the satisfying one.
    """
    q = (
        select(
            completions.c.id,
            completions.c.person_ref,
            completions.c.option,
            completions.c.completed_at,
            completions.c.confirm,
        )
        .where(completions.c.program_id == stored.id, completions.c.person_id.is_(None))
        .order_by(completions.c.completed_at, completions.c.id)
    )
    matched = 0
    for row in conn.execute(q).all():
        person = find_enrolled(conn, stored.id, row.person_ref)
        if person is None:
            continue
        conn.execute(
            update(completions).where(completions.c.id == row.id).values(person_id=person.person_id)
        )
        # A completion imported with --no-confirmations stays silent when it matches later.
        wanted = confirm and row.confirm
        _apply(conn, stored, person, row.option, row.completed_at, now, message_id_domain, wanted)
        matched += 1
    return matched


def unmatched_completions(conn: Connection, program_id: int) -> list[dict[str, Any]]:
    """Completions nobody on the roster claims yet, oldest first, JSON-ready."""
    q = (
        select(
            completions.c.id,
            completions.c.person_ref,
            completions.c.option,
            completions.c.completed_at,
            completions.c.source,
            completions.c.note,
            completions.c.recorded_at,
        )
        .where(completions.c.program_id == program_id, completions.c.person_id.is_(None))
        .order_by(completions.c.recorded_at, completions.c.id)
    )
    return [
        {
            "id": r.id,
            "person_ref": r.person_ref,
            "option": r.option,
            "completed_at": r.completed_at.isoformat(),
            "source": r.source,
            "note": r.note,
            "recorded_at": r.recorded_at.isoformat(),
        }
        for r in conn.execute(q)
    ]


def _check_room_for_unmatched(conn: Connection, stored: StoredProgram) -> None:
    waiting = conn.scalar(
        select(func.count())
        .select_from(completions)
        .where(completions.c.program_id == stored.id, completions.c.person_id.is_(None))
    )
    if (waiting or 0) > MAX_UNMATCHED:  # the one just inserted is counted: > not >=
        raise UnmatchedFullError(
            f"{MAX_UNMATCHED} completions for people not on the roster are waiting; "
            "no more are kept until they are reviewed",
            hint="pshnotify completions unmatched, then --purge-before DATE",
        )


def purge_unmatched(
    engine: Engine, stored: StoredProgram, before: dt.datetime, clock: Clock, *, actor: str
) -> int:
    """Delete the unmatched completions recorded before `before` (audited); how many."""
    now = clock.now()
    with engine.begin() as conn:
        deleted = conn.execute(
            delete(completions).where(
                completions.c.program_id == stored.id,
                completions.c.person_id.is_(None),
                completions.c.recorded_at < before,
            )
        ).rowcount
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="completions.purge_unmatched",
            program_id=stored.id,
            subject=stored.key,
            details={"before": before.isoformat(), "deleted": deleted},
        )
    return int(deleted)


# -- receipts (replay protection for webhooks and xAPI) --------------------------------------------
def prune_receipts(engine: Engine, wall: dt.datetime) -> int:
    """Forget receipts older than RECEIPTS_KEPT (the daemon calls this every pass)."""
    with engine.begin() as conn:
        return int(
            conn.execute(
                delete(webhook_receipts).where(
                    webhook_receipts.c.received_at < wall - RECEIPTS_KEPT
                )
            ).rowcount
        )


def claim_receipt(conn: Connection, source: str, receipt_id: str, at: dt.datetime) -> bool:
    """True the first time (source, id) is seen; False for a replay. Same transaction as the
    completion, so a delivery that failed half-way leaves no receipt and may be retried."""
    inserted = conn.execute(
        insert_ignoring_duplicates(conn, webhook_receipts)
        .values(source=source, receipt_id=receipt_id, received_at=at)
        .returning(webhook_receipts.c.id)
    ).first()
    return inserted is not None


# -- use cases ------------------------------------------------------------------------------------
@dataclass
class ImportReport:
    file: str
    rows: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {o.value: 0 for o in CompletionOutcome})
    confirmations: int = 0
    cancelled_messages: int = 0
    confirm: bool = True
    dry_run: bool = False

    def add(self, result: CompletionResult) -> None:
        self.counts[result.outcome.value] += 1
        self.confirmations += int(result.confirmation_queued)
        self.cancelled_messages += result.cancelled_messages

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            **self.counts,
            "confirmations": self.confirmations,
            "cancelled_messages": self.cancelled_messages,
            "confirm": self.confirm,
            "dry_run": self.dry_run,
        }


def import_completions(
    engine: Engine,
    stored: StoredProgram,
    path: Path,
    clock: Clock,
    *,
    actor: str,
    message_id_domain: str,
    confirm: bool = True,
    dry_run: bool = False,
) -> ImportReport:
    """Validate the whole file, then record every row in one transaction (or none on error).

    `confirm=False` back-fills: completions are applied, nobody is emailed.
    """
    rows = read_completions(path, stored.program)
    now = clock.now()
    _refuse_future(rows, str(path), now)
    report = ImportReport(file=str(path), rows=len(rows), confirm=confirm, dry_run=dry_run)
    with transaction(engine, dry_run=dry_run) as conn:
        for row in rows:
            report.add(_record_row(conn, stored, row, now, message_id_domain, confirm))
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="completions.import",
            program_id=stored.id,
            subject=str(path),
            details=report.as_dict(),
        )
    return report


def _refuse_future(rows: list[CompletionRow], name: str, now: dt.datetime) -> None:
    errors = [
        f"{name}:{r.line}: completed_at: {r.completed_at.isoformat()} is in the future "
        f"(now {now.isoformat()})"
        for r in rows
        if r.completed_at > now + FUTURE_TOLERANCE
    ]
    if errors:
        raise InputError(errors, hint="fix these rows and import again; nothing was changed")


def _record_row(
    conn: Connection,
    stored: StoredProgram,
    row: CompletionRow,
    now: dt.datetime,
    message_id_domain: str,
    confirm: bool,
) -> CompletionResult:
    return record_completion(
        conn,
        stored,
        person_ref=row.person_ref,
        option=row.option,
        completed_at=row.completed_at,
        source="import",
        dedupe_key=completion_key(row.person_ref, row.option, row.completed_at),
        note=row.note,
        now=now,
        message_id_domain=message_id_domain,
        confirm=confirm,
    )


def complete_by_operator(
    engine: Engine,
    stored: StoredProgram,
    clock: Clock,
    *,
    person_ref: str,
    option: str,
    actor: str,
    message_id_domain: str,
    completed_at: dt.datetime | None = None,
    note: str | None = None,
    confirm: bool = True,
) -> CompletionResult:
    """An operator records a completion by hand (audited). An unknown person is refused, not
    kept as unmatched: the operator is there to fix the typo."""
    now = clock.now()
    when = completed_at or now
    with engine.begin() as conn:
        if find_enrolled(conn, stored.id, person_ref) is None:
            raise NotFoundError(
                [f"ID: nobody with id or email {person_ref!r} in program {stored.key}"],
                hint="check the id, or import the roster first",
            )
        try:
            return record_completion(
                conn,
                stored,
                person_ref=person_ref,
                option=option,
                completed_at=when,
                source="operator",
                dedupe_key=completion_key(person_ref, option, when),
                note=note,
                now=now,
                message_id_domain=message_id_domain,
                confirm=confirm,
                actor=actor,
            )
        except InputError as exc:
            raise InputError([_as_option(p) for p in exc.problems], hint=exc.hint) from None


_OPERATOR_FIELDS = {"person": "ID", "option": "--option", "completed_at": "--at"}


def _as_option(problem: str) -> str:
    """'option: ...' -> '--option: ...': name what the operator typed."""
    fld, sep, rest = problem.partition(": ")
    return f"{_OPERATOR_FIELDS.get(fld, fld)}{sep}{rest}"
