"""The outbox: queued messages, claims under a lease, and guarded state changes.

Claim, send, record: a message is claimed (state `claimed`, a fresh lease token, lease_until)
in one short transaction, sent outside any transaction, and its outcome written with
`WHERE lease_token = :token`. A worker whose lease expired and was taken over writes nothing,
so the only duplicate possible is a resend after an unknown outcome or an expired lease.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)

from pshnotify.domain.delivery import PENDING, State
from pshnotify.store import standing
from pshnotify.store.db import is_postgresql
from pshnotify.store.schema import UTCDateTime, messages, programs, waves
from pshnotify.store.sql import (
    among,
    chunks,
    insert_many,
)

_CHUNK = 5000


def new_message_id(domain: str) -> str:
    """Built once at queue time and reused by every retry, so a resend is recognisable.
    Random per message (122 bits): without VERP a bounce is matched by it, so one message's
    Message-ID must tell nothing about another's."""
    return f"<{uuid.uuid4().hex}@{domain}>"


def new_message_id_sql(conn: Connection, domain: str) -> Any:
    """`new_message_id` as an SQL expression, a fresh one per row of an INSERT ... SELECT:
    128 random bits from the database's strong generator (SQLite's randomblob, seeded from
    the operating system; PostgreSQL's gen_random_uuid, 122 bits, pg_strong_random)."""
    if is_postgresql(conn):
        random = func.replace(cast(func.gen_random_uuid(), Text), "-", "")
    else:
        random = func.lower(func.hex(func.randomblob(16)))
    return literal("<", Text) + random + literal(f"@{domain}>", Text)


def queue(conn: Connection, rows: list[dict[str, Any]], now: dt.datetime) -> int:
    """Insert messages; a row whose idempotency key exists already is silently skipped.

    Returns how many were new, from the insert itself, never from a count of the scope's
    messages before and after, which read every message of the kind and wave once per call
    (a wave's confirmations queued one at a time counted the wave's confirmations each time).
    """
    if not rows:
        return 0
    full = [
        # Every row with the same keys: an executemany takes its columns from the first row,
        # so a skipped row's reason after a queued row's none was dropped (or, first, failed).
        {
            "state": State.QUEUED.value,
            "attempts": 0,
            "reason": None,
            "created_at": now,
            "updated_at": now,
            **r,
        }
        for r in rows
    ]
    return insert_many(conn, messages, full)


@dataclass(frozen=True)
class Claimed:
    id: int
    program_id: int
    person_id: int | None
    kind: str
    wave_key: str | None
    step: str
    message_id: str
    recipient_email: str
    recipient_name: str
    context: dict[str, Any]
    attempts: int
    first_attempt_at: dt.datetime | None
    lease_token: str
    lease_until: dt.datetime | None = None  # the database's time: past it, another may send it


# Claimed's fields read from the row, in order (the lease fields come from the claim itself).
_CLAIMED_COLUMNS = [f.name for f in fields(Claimed) if not f.name.startswith("lease_")]


def claim(
    conn: Connection,
    *,
    now: dt.datetime,
    wall: dt.datetime,
    owner: str,
    lease: dt.timedelta,
    limit: int,
    program_ids: list[int] | None = None,
) -> list[Claimed]:
    """Take up to `limit` due messages under a new lease (SKIP LOCKED on PostgreSQL).

    Due means queued/retry with due_at <= now (business time), or claimed by a worker whose
    lease ran out by `wall`: the database server's clock (`db.server_time`), since leases
    measure liveness, not the rehearsal's calendar, and replicas' clocks differ.
    """
    ids: list[int] = []
    for pick in _picks(with_programs=program_ids is not None):
        params = {"c_now": now, "c_wall": wall, "c_limit": limit - len(ids)}
        if program_ids is not None:
            params["c_programs"] = program_ids
        ids += conn.scalars(pick, params)
        if len(ids) >= limit:
            break
    if not ids:
        return []
    token = str(uuid.uuid4())
    stmt = _claim_update(postgresql=is_postgresql(conn))
    params = {
        "c_ids": ids,
        "c_owner": owner,
        "c_token": token,
        "c_until": wall + lease,
        "c_now": now,
    }
    rows = conn.execute(stmt, params).all()
    until = wall + lease
    # Positional, in _CLAIMED_COLUMNS order: building from each row's mapping cost a fifth
    # of the claim.
    return sorted(
        (Claimed(*r, lease_token=token, lease_until=until) for r in rows),  # type: ignore[misc]
        key=lambda c: c.id,
    )


# The claim's statements are built once: SQLAlchemy then keeps their cache keys too, which it
# otherwise worked out anew for every batch (about a fifth of the claim's client CPU).
@functools.cache
def _picks(*, with_programs: bool) -> list[Any]:
    """One ordered, limited index range per state, not one query with an OR: SQLite (and
    PostgreSQL's bitmap OR) then gathered and sorted every due row for each batch, so a claim
    cost grew with the queue (12 ms per 200 at 20,000 due; 60 at 100,000). Abandoned leases
    first, then retries (older), then new messages."""
    now = bindparam("c_now", type_=UTCDateTime)
    wall = bindparam("c_wall", type_=UTCDateTime)
    groups = [
        and_(_in_state(State.CLAIMED), messages.c.lease_until < wall),
        and_(_in_state(State.RETRY), messages.c.due_at <= now),
        and_(_in_state(State.QUEUED), messages.c.due_at <= now),
    ]
    picks = []
    for group in groups:
        pick = select(messages.c.id).where(group, _not_paused())
        if with_programs:
            pick = pick.where(messages.c.program_id.in_(bindparam("c_programs", expanding=True)))
        pick = pick.order_by(messages.c.id).limit(bindparam("c_limit", type_=Integer))
        picks.append(pick.with_for_update(skip_locked=True))
    return picks


def _in_state(state: State) -> Any:
    """The state written into the SQL, not bound: PostgreSQL's planner proves from it that the
    partial index of queued messages (migration 0008) holds every row the pick wants, which a
    parameter would hide from its generic plans (used after a few executions of a prepared
    statement)."""
    return messages.c.state == literal_column(f"'{state.value}'")


@functools.cache
def _claim_update(*, postgresql: bool) -> Any:
    return (
        update(messages)
        .where(among(messages.c.id, "c_ids", Integer(), on_postgresql=postgresql))
        .values(
            state=State.CLAIMED.value,
            lease_owner=bindparam("c_owner", type_=Text),
            lease_token=bindparam("c_token", type_=Text),
            lease_until=bindparam("c_until", type_=UTCDateTime),
            updated_at=bindparam("c_now", type_=UTCDateTime),
        )
        .returning(*(messages.c[name] for name in _CLAIMED_COLUMNS))
    )


def _not_paused() -> Any:
    """Neither the message's program nor its wave is paused."""
    wave_paused = exists().where(
        waves.c.program_id == messages.c.program_id,
        waves.c.key == messages.c.wave_key,
        waves.c.paused.is_(True),
    )
    program_paused = exists().where(
        programs.c.id == messages.c.program_id, programs.c.paused.is_(True)
    )
    return and_(~wave_paused, ~program_paused)


# Other reminders of a batch's people, by (program, person): (id, state, due_at, sent_at).
Reminded = dict[tuple[int, int], list[tuple[int, str, dt.datetime, dt.datetime | None]]]


@dataclass(frozen=True)
class Held:
    """One message a person has, as the scheduler's pass and the sender read it."""

    id: int
    program_id: int
    kind: str
    step: str
    state: str
    due_at: dt.datetime
    sent_at: dt.datetime | None


def of_people(conn: Connection, person_ids: list[int]) -> dict[int, list[Held]]:
    """Every message of these people, by person id, read through the index on `person_id`
    alone; the caller picks the program, kinds and states it wants from the few rows each
    person has.

    Not filtered in SQL: with the program and kind in the WHERE, SQLite (which has no
    statistics of the tables) walked the (program_id, kind, state) index instead, every
    message of that kind in the program, to find a batch's people: a read that grew with
    the wave (19 ms a batch of 200 at 20,000 reminders, about 100 ms at 100,000, once per
    batch of a drain and of the scheduler's pass)."""
    out: dict[int, list[Held]] = {}
    q = _of_people_query(on_postgresql=is_postgresql(conn))
    for part in chunks(sorted(set(person_ids)), _CHUNK):
        for person_id, *rest in conn.execute(q, {"o_people": part}):
            out.setdefault(person_id, []).append(Held(*rest))
    return out


@functools.cache
def _of_people_query(*, on_postgresql: bool) -> Any:
    return select(
        messages.c.person_id,
        messages.c.id,
        messages.c.program_id,
        messages.c.kind,
        messages.c.step,
        messages.c.state,
        messages.c.due_at,
        messages.c.sent_at,
    ).where(among(messages.c.person_id, "o_people", Integer(), on_postgresql=on_postgresql))


def other_reminders(conn: Connection, batch: list[Claimed]) -> Reminded:
    """The reminders, other than this batch's, of the people this batch reminds: what the
    policy's one reminder a day is checked against at send time."""
    mine = {c.id for c in batch if c.kind == "reminder" and c.person_id is not None}
    whom = sorted({c.person_id for c in batch if c.id in mine and c.person_id is not None})
    if not whom:
        return {}
    programs = {c.program_id for c in batch if c.id in mine}
    out: Reminded = {}
    for person_id, held in of_people(conn, whom).items():
        for m in held:
            if (
                m.kind == "reminder"
                and m.state in standing.GOING  # the reminders whose day is used
                and m.program_id in programs
                and m.id not in mine
            ):
                out.setdefault((m.program_id, person_id), []).append(
                    (m.id, m.state, m.due_at, m.sent_at)
                )
    return out


def claim_owners(conn: Connection) -> set[str]:
    """Who holds claims now (read at a sender's start, through the (state, id) index)."""
    q = select(messages.c.lease_owner).where(_in_state(State.CLAIMED)).distinct()
    return {owner for owner in conn.scalars(q) if owner}


def take_back(conn: Connection, owners: list[str], now: dt.datetime) -> int:
    """Hand back the claims of processes known to be gone, at once rather than when their
    leases run out: queued again (or retry, once attempted), under no lease."""
    if not owners:
        return 0
    stmt = (
        update(messages)
        .where(_in_state(State.CLAIMED), messages.c.lease_owner.in_(owners))
        .values(
            state=case((messages.c.attempts == 0, State.QUEUED.value), else_=State.RETRY.value),
            lease_owner=None,
            lease_token=None,
            lease_until=None,
            updated_at=now,
        )
    )
    return int(conn.execute(stmt).rowcount)


@dataclass(frozen=True)
class Result:
    """One attempt's end, to be written under the message's lease token."""

    message: Claimed
    state: State
    outcome: str
    started_at: dt.datetime
    finished_at: dt.datetime
    code: int | None = None
    reply: str | None = None
    due_at: dt.datetime | None = None  # for retry
    reason: str | None = None  # for skipped
    attempted: bool = True  # False when nothing reached the relay (skipped before sending)


def cancel_pending(
    conn: Connection,
    *,
    program_id: int,
    person_ids: list[int] | Select[Any],
    reason: str,
    now: dt.datetime,
    kinds: list[str] | None = None,
) -> int:
    """Cancel (never delete) what has not gone out yet for these people: their ids, or a
    query of them (one statement, however many it finds)."""
    total = 0
    parts = [person_ids] if isinstance(person_ids, Select) else chunks(person_ids, _CHUNK)
    for part in parts:
        stmt = (
            update(messages)
            .where(
                messages.c.program_id == program_id,
                messages.c.person_id.in_(part),
                messages.c.state.in_([s.value for s in PENDING]),
            )
            .values(state=State.CANCELLED.value, reason=reason, updated_at=now)
        )
        if kinds:
            stmt = stmt.where(messages.c.kind.in_(kinds))
        total += conn.execute(stmt).rowcount
    return total


def anything_to_send(engine: Engine, now: dt.datetime) -> bool:
    """Does the outbox hold a message a sender could take now: one waiting (queued, or to
    retry) that is due, or one claimed (a live sender's, or a stopped one's to take back)?
    More than the sender claims (it also waits for working hours and skips what is paused):
    when this says no, a sender would send nothing."""
    waiting = [State.QUEUED.value, State.RETRY.value]
    q = select(messages.c.id).where(
        or_(
            and_(messages.c.state.in_(waiting), messages.c.due_at <= now),
            messages.c.state == State.CLAIMED.value,
        )
    )
    with engine.connect() as conn:
        return conn.execute(q.limit(1)).first() is not None


def count_by_state(conn: Connection, program_id: int) -> dict[tuple[str | None, str], int]:
    """The program's messages per (wave, state)."""
    out: Counter[tuple[str | None, str]] = Counter()
    for (wave, _, state), n in count_by_kind(conn, program_id).items():
        out[wave, state] += n
    return dict(out)


def count_by_kind(conn: Connection, program_id: int) -> dict[tuple[str | None, str, str], int]:
    """The program's messages per (wave, kind, state). Grouped in the order of the index on
    (program, kind, state, wave), which answers it alone: no table rows, no sort."""
    q = (
        select(messages.c.kind, messages.c.state, messages.c.wave_key, func.count())
        .where(messages.c.program_id == program_id)
        .group_by(messages.c.kind, messages.c.state, messages.c.wave_key)
    )
    return {(w, k, s): int(n) for k, s, w, n in conn.execute(q)}
