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
import gc
import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, update

from pshnotify.clock import Clock
from pshnotify.domain.calendar import local_time
from pshnotify.domain.errors import ConflictError, InputError, NotFoundError
from pshnotify.domain.values import Instant
from pshnotify.ingest.completions_csv import (
    CompletionRow,
    note_problem,
    option_problem,
    person_problem,
    person_ref_key,
    read_completions,
)
from pshnotify.store import audit, completion_batch, standing
from pshnotify.store.db import transaction
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import completions, db_time, enrollments, people

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


class UnmatchedFullError(ConflictError):
    """Too many unmatched completions are waiting for review to keep another."""


class CompletionOutcome(StrEnum):
    RECORDED = "recorded"  # the first completion: requirement satisfied
    EXTRA = "extra"  # the person was already complete: recorded only
    DUPLICATE = "duplicate"  # the same completion arrived before: nothing changed
    UNMATCHED = "unmatched"  # nobody with that id or email in the program: kept for review


class CompletionResult(NamedTuple):
    """What one completion did. A tuple: a nightly export makes one per row."""

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


class _Enrolled(NamedTuple):
    """The person and enrollment a completion applies to (`_enrolled_query`'s columns)."""

    person_id: int
    external_id: str
    email: str
    enrollment_id: int
    removed: bool
    complete: bool


class _Incoming(NamedTuple):
    """One completion on its way in, checked (`_incoming` builds it)."""

    person_ref: str
    option: str
    completed_at: dt.datetime
    note: str | None
    dedupe_key: str
    confirm: bool  # False: back-filled history, nobody is emailed
    instant: str  # completed_at in UTC as ISO-8601 text: what keys are made of
    by_ref: bool  # dedupe_key is `completion_key` of person_ref


def _incoming(
    person_ref: str,
    option: str,
    completed_at: dt.datetime,
    note: str | None,
    confirm: bool = True,
    dedupe_key: str | None = None,
) -> _Incoming:
    """The completion, its instant written once; its key `completion_key` unless given."""
    instant = _instant(completed_at)
    by_ref = dedupe_key is None
    key = _key(person_ref, option, instant) if dedupe_key is None else dedupe_key
    return _Incoming(person_ref, option, completed_at, note, key, confirm, instant, by_ref)


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
            (
                "completed_at",
                f"{local_time(completed_at, stored.program.tz)} is in the future "
                f"(now {local_time(now, stored.program.tz)})",
            )
        )
    return problems


def completion_key(person_ref: str, option: str, completed_at: dt.datetime) -> str:
    """Who, what, when: the same completion gets the same key whichever way it arrives."""
    return _key(person_ref, option, _instant(completed_at))


def _instant(completed_at: dt.datetime) -> str:
    return completed_at.astimezone(dt.UTC).isoformat()


def _key(person_ref: str, option: str, instant: str) -> str:
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
    (result,) = _record_many(
        conn,
        stored,
        [_incoming(person_ref, option, completed_at, note, confirm, dedupe_key)],
        source=source,
        now=now,
        message_id_domain=message_id_domain,
        people=_OnePerson(conn, stored.id),
    )
    if source == "operator":
        _audit_operator(conn, stored, person_ref, option, completed_at, note, now, actor, result)
    return result


class _People(Protocol):
    """Who a completion names, and whether the same completion is stored already."""

    def find(self, person_ref: str) -> _Enrolled | None: ...

    def stored(self, keys: set[str]) -> bool: ...


class _OnePerson:
    """For one completion (a webhook, an operator): two indexed queries."""

    def __init__(self, conn: Connection, program_id: int) -> None:
        self.conn, self.program_id = conn, program_id

    def find(self, person_ref: str) -> _Enrolled | None:
        return find_enrolled(self.conn, self.program_id, person_ref)

    def stored(self, keys: set[str]) -> bool:
        q = select(completions.c.dedupe_key).where(
            completions.c.program_id == self.program_id,
            completions.c.dedupe_key.in_(sorted(keys)),
        )
        return self.conn.scalar(q) is not None


class _EveryPerson:
    """For a file of completions: the program's people and completion keys read once each
    (two scans), so a row costs dictionary look-ups, not statements of its own.

    The scan is read through the driver's own cursor, as plain tuples: SQLAlchemy's rows
    (and their booleans' conversion) cost 0.4 s per 100,000 people. The index by email is
    made on the first reference by email (an export names people by id, mostly)."""

    def __init__(self, conn: Connection, program_id: int) -> None:
        everyone = (
            _enrolled_query()
            .add_columns(people.c.email_key)
            .where(enrollments.c.program_id == program_id)
        )
        self.by_id: dict[str, tuple[Any, ...]] = {row[1]: row for row in _raw_rows(conn, everyone)}
        self._by_email: dict[str, tuple[Any, ...]] | None = None
        keys = select(completions.c.dedupe_key).where(completions.c.program_id == program_id)
        self.keys = set(conn.scalars(keys).all())

    def find(self, person_ref: str) -> _Enrolled | None:
        ref = person_ref.strip()
        found = self.by_id.get(ref)
        if found is None and "@" in ref:
            if self._by_email is None:
                self._by_email = {}
                for row in self.by_id.values():
                    self._by_email.setdefault(row[-1], row)
            found = self._by_email.get(ref.lower())
        if found is None:
            return None
        person_id, external_id, email, enrollment_id, removed, complete, _ = found
        return _Enrolled(
            person_id, external_id, email, enrollment_id, bool(removed), bool(complete)
        )

    def stored(self, keys: set[str]) -> bool:
        return not self.keys.isdisjoint(keys)


def _raw_rows(conn: Connection, query: Any) -> list[tuple[Any, ...]]:
    """`query`'s rows as the driver gives them (no type processing: ints, text, booleans as
    the backend writes them), on the connection's own transaction."""
    sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


@contextmanager
def bulk_work() -> Iterator[None]:
    """The cyclic garbage collector paused while a file's rows become objects: an import
    makes a few hundred thousand of them (rows, tuples, dictionary entries), none in a cycle,
    and the collector walked them all again and again, a fifth of the CPU time of a
    completions import of 50,000 rows. Reference counting still frees them; cycles made
    meanwhile are collected when it resumes."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _record_many(
    conn: Connection,
    stored: StoredProgram,
    items: list[_Incoming],
    *,
    source: str,
    now: dt.datetime,
    message_id_domain: str,
    people: _People,
) -> list[CompletionResult]:
    """The rule (module docstring) for many completions at once, in their order: the batch
    staged once, then one INSERT of the new completions, one UPDATE of the enrollments they
    satisfy, one cancellation of those people's pending asking emails and one INSERT of their
    confirmations (`store.completion_batch`).

    The same completion twice (same key, or the same person, option and instant named by id
    once and by email the next) is a duplicate, in the batch or against what is stored; the
    first completion of a person not yet complete satisfies the requirement, later ones are
    extras."""
    results: list[CompletionResult | None] = []
    fresh: list[tuple[int, _Incoming, _Enrolled | None]] = []
    batch_keys: set[str] = set()
    for item in items:
        person = people.find(item.person_ref)
        keys = {item.dedupe_key}
        if person is not None:  # its key by id and by email; the one named is dedupe_key
            named = item.person_ref if item.by_ref else None
            if person.external_id != named:
                keys.add(_key(person.external_id, item.option, item.instant))
            if person.email != named:
                keys.add(_key(person.email, item.option, item.instant))
        if not batch_keys.isdisjoint(keys) or people.stored(keys):
            results.append(
                CompletionResult(
                    CompletionOutcome.DUPLICATE, person.external_id if person else None
                )
            )
            continue
        batch_keys |= keys
        fresh.append((len(results), item, person))
        results.append(None)
    if fresh:
        firsts = _classify(fresh, set(), results)
        satisfying = {index for index, _, _ in firsts}
        completion_batch.stage(
            conn, [_staged(index, item, p, index in satisfying) for index, item, p in fresh]
        )
        missed = set(completion_batch.insert_completions(conn, stored.id, source, now, len(fresh)))
        if missed:  # a concurrent writer stored these meanwhile: duplicates after all
            firsts = _classify(fresh, missed, results)
            completion_batch.stage(conn, [_staged(i, item, p, True) for i, item, p in firsts])
        if any(person is None for index, _, person in fresh if index not in missed):
            _check_room_for_unmatched(conn, stored)  # counts what this batch kept too
        _satisfy(conn, stored, firsts, now, message_id_domain, results, staged=True)
    return [r for r in results if r is not None]


def _classify(
    fresh: list[tuple[int, _Incoming, _Enrolled | None]],
    missed: set[int],
    results: list[CompletionResult | None],
) -> list[tuple[int, _Incoming, _Enrolled]]:
    """What each new completion is once stored (`missed`: not stored after all); fills in
    `results` for all but the firsts, which it returns: the completions that satisfy a
    requirement, one per enrollment."""
    done: set[int] = set()  # enrollments satisfied by this batch
    firsts: list[tuple[int, _Incoming, _Enrolled]] = []
    for index, item, person in fresh:
        if index in missed:
            results[index] = CompletionResult(
                CompletionOutcome.DUPLICATE, person.external_id if person else None
            )
        elif person is None:
            results[index] = CompletionResult(CompletionOutcome.UNMATCHED, None)
        elif person.complete or person.enrollment_id in done:
            results[index] = CompletionResult(CompletionOutcome.EXTRA, person.external_id)
        else:
            done.add(person.enrollment_id)
            firsts.append((index, item, person))
    return firsts


def _staged(
    index: int, item: _Incoming, person: _Enrolled | None, satisfies: bool
) -> completion_batch.Staged:
    """A completion as `completion_batch` stages it; someone who left the roster is recorded
    as complete but not written to."""
    notify = satisfies and item.confirm and person is not None and not person.removed
    return completion_batch.Staged(
        index,
        person.person_id if person else None,
        person.enrollment_id if person else None,
        item.person_ref.strip(),
        item.option,
        db_time(item.completed_at),
        item.instant if item.completed_at.tzinfo is dt.UTC else item.completed_at.isoformat(),
        item.note,
        item.dedupe_key,
        item.confirm,
        satisfies,
        notify,
    )


def _satisfy(
    conn: Connection,
    stored: StoredProgram,
    firsts: list[tuple[int, _Incoming, _Enrolled]],
    now: dt.datetime,
    message_id_domain: str,
    results: list[CompletionResult | None],
    *,
    staged: bool = False,
) -> None:
    """These people's first completions: mark them complete, cancel their pending asking
    emails, queue their confirmations; results[index] says what happened to each. `staged`:
    `completion_batch` holds them already, flagged as satisfying."""
    if not firsts:
        return
    if not staged:
        completion_batch.stage(conn, [_staged(i, item, p, True) for i, item, p in firsts])
    # The guard makes a race (another way in completed the person meanwhile) an "extra".
    raced = set(completion_batch.mark_complete(conn, now, len(firsts)))
    if raced:
        completion_batch.unmark(conn, sorted(raced))
        for index, _, person in firsts:
            if index in raced:
                results[index] = CompletionResult(CompletionOutcome.EXTRA, person.external_id)
        firsts = [f for f in firsts if f[0] not in raced]
    cancelled = completion_batch.cancel_asking(conn, stored.id, "completed", now)
    # One per person and program (its idempotency key says so), due at once: not held to
    # working hours, since the person is waiting for it.
    notified = {
        person.person_id: index
        for index, item, person in firsts
        if item.confirm and not person.removed
    }
    had_one = set(
        completion_batch.queue_confirmations(
            conn,
            program_id=stored.id,
            program_key=stored.key,
            batch=uuid.uuid4().hex,
            message_id_domain=message_id_domain,
            now=now,
            notified=len(notified),
        )
    )
    for position, (index, _, person) in enumerate(firsts):
        results[index] = CompletionResult(
            CompletionOutcome.RECORDED,
            person.external_id,
            confirmation_queued=person.person_id in notified and index not in had_one,
            # the batch's cancellations, counted once (on its first recorded completion)
            cancelled_messages=cancelled if position == 0 else 0,
        )


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
    base = _enrolled_query().where(enrollments.c.program_id == program_id)
    row = conn.execute(base.where(people.c.external_id == ref)).first()
    if row is None and "@" in ref:
        row = conn.execute(base.where(people.c.email_key == ref.lower())).first()
    return None if row is None else _enrolled(row)


def _enrolled_query() -> Any:
    return select(
        people.c.id,
        people.c.external_id,
        people.c.email,
        enrollments.c.id.label("enrollment_id"),
        standing.FACTS["removed"].label("removed"),
        standing.FACTS["completed"].label("complete"),
    ).join(enrollments, enrollments.c.person_id == people.c.id)


def _enrolled(row: Any) -> _Enrolled:
    return _Enrolled(*row)


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
    found: list[tuple[Any, _Enrolled]] = []
    for row in conn.execute(q).all():
        person = find_enrolled(conn, stored.id, row.person_ref)
        if person is not None:
            found.append((row, person))
    if found:
        conn.execute(
            update(completions)
            .where(completions.c.id == bindparam("b_id"))
            .values(person_id=bindparam("b_person")),
            [{"b_id": row.id, "b_person": person.person_id} for row, person in found],
        )
    results: list[CompletionResult | None] = [None] * len(found)
    done: set[int] = set()
    firsts: list[tuple[int, _Incoming, _Enrolled]] = []
    for index, (row, person) in enumerate(found):
        if person.complete or person.enrollment_id in done:
            continue
        done.add(person.enrollment_id)
        # A completion imported with --no-confirmations stays silent when it matches later.
        item = _incoming(
            row.person_ref, row.option, row.completed_at, None, confirm and row.confirm, ""
        )
        firsts.append((index, item, person))
    _satisfy(conn, stored, firsts, now, message_id_domain, results)
    return len(found)


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
    with bulk_work():
        return _import_completions(
            engine, stored, path, clock, actor, message_id_domain, confirm, dry_run
        )


def _import_completions(
    engine: Engine,
    stored: StoredProgram,
    path: Path,
    clock: Clock,
    actor: str,
    message_id_domain: str,
    confirm: bool,
    dry_run: bool,
) -> ImportReport:
    rows = read_completions(path, stored.program)
    now = clock.now()
    _refuse_future(rows, str(path), now, stored.program.tz)
    report = ImportReport(file=str(path), rows=len(rows), confirm=confirm, dry_run=dry_run)
    items = [
        _incoming(row.person_ref, row.option, row.completed_at, row.note, confirm) for row in rows
    ]
    del rows
    with transaction(engine, dry_run=dry_run) as conn:
        for result in _record_many(
            conn,
            stored,
            items,
            source="import",
            now=now,
            message_id_domain=message_id_domain,
            people=_EveryPerson(conn, stored.id),
        ):
            report.add(result)
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


def _refuse_future(rows: list[CompletionRow], name: str, now: dt.datetime, tz: dt.tzinfo) -> None:
    errors = [
        f"{name}:{r.line}: completed_at: {local_time(r.completed_at, tz)} is in the future "
        f"(now {local_time(now, tz)})"
        for r in rows
        if r.completed_at > now + FUTURE_TOLERANCE
    ]
    if errors:
        raise InputError(errors, hint="fix these rows and import again; nothing was changed")


def complete_by_operator(
    engine: Engine,
    stored: StoredProgram,
    clock: Clock,
    *,
    person_ref: str,
    option: str,
    actor: str,
    message_id_domain: str,
    completed_at: Instant | None = None,
    note: str | None = None,
    confirm: bool = True,
) -> CompletionResult:
    """An operator records a completion by hand (audited). An unknown person is refused, not
    kept as unmatched: the operator is there to fix the typo."""
    now = clock.now()
    when = completed_at.utc if completed_at is not None else now
    with engine.begin() as conn:
        if find_enrolled(conn, stored.id, person_ref) is None:
            raise NotFoundError(
                [f"ID: nobody with id or email {person_ref!r} in program {stored.key}"],
                hint="check the id, or import the roster first",
            )
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
