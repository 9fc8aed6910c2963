"""A batch of completions applied by set-based statements, from a temporary table.

The batch's rows are loaded once into a temporary table of the connection (`incoming`), their
values already in the form the database stores (naive UTC text for times), past SQLAlchemy's
type processing: a COPY on PostgreSQL, one executemany on SQLite. Then each write is one
statement over the whole batch, however many rows it has: the completions inserted, the
enrollments they satisfy marked, those people's asking emails cancelled, their confirmations
queued (built in SQL from the people and enrollments rows, as the launch builds its emails).

Measured on 100,000 rows (bench/completions.py): binding the rows of each bulk statement
through SQLAlchemy spent more time converting 800,000 datetimes and building parameter lists
than the database spent writing; PostgreSQL parsed a JSON parameter of 100,000 rows in about
0.5 s each time, where a COPY loads them in 0.2 s once.

Each write reports the staged rows it did not apply, by position. A completion or an
enrollment can only be missed on PostgreSQL (a concurrent writer got there first): there the
statement's RETURNING is compared with the staged rows in the database, so nothing comes back
when all were applied. SQLite has one writer at a time (every transaction is BEGIN IMMEDIATE,
`store.db`) and the caller read what it checked the batch against in the same transaction, so
there a count short of the staged rows is a bug and raises (RETURNING cost 0.1 s per 100,000
rows there). A confirmation is missed where the person had one already: told by the rows
count, and then by this batch's Message-IDs, on both.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    exists,
    func,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.schema import CreateTable

from pshnotify.domain.delivery import Kind, State, idempotency_key
from pshnotify.store.db import is_postgresql
from pshnotify.store.outbox import cancel_pending
from pshnotify.store.schema import UTCDateTime, completions, enrollments, messages, people
from pshnotify.store.sql import insert_ignoring_duplicates

# Not in the schema's metadata: no migration creates it; each connection makes its own.
incoming = Table(
    "pshnotify_incoming_completions",
    MetaData(),
    Column("pos", Integer, nullable=False),  # the caller's index of the row
    Column("person_id", Integer),
    Column("enrollment_id", Integer),
    Column("person_ref", Text, nullable=False),
    Column("option", Text, nullable=False),
    Column("completed_at", UTCDateTime, nullable=False),
    Column("completed_text", Text, nullable=False),  # as the confirmation shows it
    Column("note", Text),
    Column("dedupe_key", Text, nullable=False),
    Column("keep_confirm", Boolean, nullable=False),  # completions.confirm
    Column("satisfies", Boolean, nullable=False),  # the person's first: marks them complete
    Column("notify", Boolean, nullable=False),  # and queues their confirmation
    prefixes=["TEMPORARY"],
    postgresql_on_commit="DELETE ROWS",
)
_COLUMNS = [c.name for c in incoming.c]


class Staged(NamedTuple):
    """One row of the batch, in `incoming`'s column order; `completed_at` in the form stored
    (`schema.db_time`)."""

    pos: int
    person_id: int | None
    enrollment_id: int | None
    person_ref: str
    option: str
    completed_at: str
    completed_text: str
    note: str | None
    dedupe_key: str
    keep_confirm: bool
    satisfies: bool
    notify: bool


assert list(Staged._fields) == _COLUMNS  # the COPY and the INSERT take the table's order


def stage(conn: Connection, rows: Sequence[Staged]) -> None:
    """Empty `incoming` (creating it the first time on this connection) and load `rows`."""
    conn.execute(CreateTable(incoming, if_not_exists=True))
    conn.execute(delete(incoming))
    if not rows:
        return
    if is_postgresql(conn):
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in _COLUMNS)
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            with cur.copy(f"COPY {incoming.name} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            # A temporary table is never analysed by autovacuum: without statistics the
            # planner guessed 200 people in a batch of 50,000 and cancelled their emails by
            # 50,000 index look-ups (4.1 s) where a hash join took 3.0 s. 20 ms.
            cur.execute(f"ANALYZE {incoming.name}")
        return
    sql = str(incoming.insert().compile(dialect=conn.dialect))
    conn.exec_driver_sql(sql, list(rows))


def insert_completions(
    conn: Connection, program_id: int, source: str, now: dt.datetime, staged: int
) -> list[int]:
    """Insert each of the `staged` rows as a completion (a key stored already is skipped);
    returns the positions of the skipped ones."""
    s = incoming
    values = {
        "program_id": literal(program_id),
        "person_id": s.c.person_id,
        "person_ref": s.c.person_ref,
        "option": s.c.option,
        "completed_at": s.c.completed_at,
        "source": literal(source),
        "dedupe_key": s.c.dedupe_key,
        "note": s.c.note,
        "recorded_at": literal(now, UTCDateTime),
        "confirm": s.c.keep_confirm,
    }
    # WHERE true: SQLite reads an upsert's SELECT without one as ambiguous.
    rows = select(*values.values()).where(true())
    stmt = insert_ignoring_duplicates(conn, completions).from_select(list(values), rows)
    return _missed(conn, stmt, completions.c.dedupe_key, s.c.dedupe_key, true(), staged)


def mark_complete(conn: Connection, now: dt.datetime, satisfying: int) -> list[int]:
    """Mark the enrollments of the `satisfying` rows complete unless they already are; returns
    the positions of those that were (another way in completed the person meanwhile)."""
    s, e = incoming, enrollments
    stmt = (
        update(e)
        .where(e.c.id == s.c.enrollment_id, s.c.satisfies, e.c.completed_at.is_(None))
        .values(
            completed_at=s.c.completed_at,
            completion_option=s.c.option,
            next_action_at=None,
            updated_at=literal(now, UTCDateTime),
        )
    )
    return _missed(conn, stmt, e.c.id, s.c.enrollment_id, s.c.satisfies, satisfying)


def unmark(conn: Connection, positions: list[int]) -> None:
    """These rows turned out not to satisfy anything: no cancellation, no confirmation."""
    if positions:
        conn.execute(
            update(incoming)
            .where(incoming.c.pos == bindparam("b_pos"))
            .values(satisfies=False, notify=False),
            [{"b_pos": pos} for pos in positions],
        )


def cancel_asking(conn: Connection, program_id: int, reason: str, now: dt.datetime) -> int:
    """Cancel (never delete) the satisfied people's pending asking emails; how many."""
    return cancel_pending(
        conn,
        program_id=program_id,
        person_ids=select(incoming.c.person_id).where(incoming.c.satisfies),
        reason=reason,
        now=now,
        kinds=Kind.asking(),
    )


def queue_confirmations(
    conn: Connection,
    *,
    program_id: int,
    program_key: str,
    batch: str,
    message_id_domain: str,
    now: dt.datetime,
    notified: int,
) -> list[int]:
    """Queue a confirmation for each of the `notified` rows, due at once (one per person and
    program: the idempotency key says so); returns the positions of those not queued because
    the person had one already.

    Built in SQL like `outbox.queue`'s rows: the key is `idempotency_key`'s, the Message-ID
    this batch's random part and the person's row id, the context the option and the instant.
    """
    s, p, e = incoming, people, enrollments
    kind = Kind.CONFIRMATION.value
    wave = func.coalesce(func.nullif(e.c.wave_key, ""), "-")  # idempotency_key's `wave or '-'`
    head, middle, tail = _key_parts(program_key, kind)
    json_object = func.json_build_object if is_postgresql(conn) else func.json_object
    at = literal(now, UTCDateTime)
    values: dict[str, Any] = {
        "program_id": literal(program_id),
        "person_id": p.c.id,
        "kind": literal(kind),
        "wave_key": e.c.wave_key,
        "step": literal("0"),
        "idempotency_key": literal(head) + wave + literal(middle) + p.c.external_id + literal(tail),
        "message_id": _message_id(batch, p.c.id, message_id_domain),
        "recipient_email": p.c.email,
        "recipient_name": p.c.name,
        "context": json_object("option", s.c.option, "completed_at", s.c.completed_text),
        "state": literal(State.QUEUED.value),
        "due_at": at,
        "attempts": literal(0),
        "reason": literal(None, Text),
        "created_at": at,
        "updated_at": at,
    }
    rows = (
        select(*values.values())
        .select_from(s.join(p, p.c.id == s.c.person_id).join(e, e.c.id == s.c.enrollment_id))
        .where(s.c.notify)
    )
    stmt = insert_ignoring_duplicates(conn, messages).from_select(list(values), rows)
    # preserve_rowcount: psycopg's rowcount of an INSERT is otherwise not kept.
    if conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount == notified:
        return []
    mine = messages.c.message_id == _message_id(batch, s.c.person_id, message_id_domain)
    q = select(s.c.pos).where(s.c.notify, ~exists().where(mine)).order_by(s.c.pos)
    return list(conn.scalars(q))


def _message_id(batch: str, person_id: Any, domain: str) -> Any:
    """This batch's random part and the person's row id, as the launch writes them."""
    return literal(f"<{batch}.") + cast(person_id, String) + literal(f"@{domain}>")


def _key_parts(program_key: str, kind: str) -> tuple[str, str, str]:
    """`idempotency_key(program, WAVE, PERSON, kind)` as the text around WAVE and PERSON."""
    key = idempotency_key(program_key, "\0", "\1", kind)
    head, rest = key.split("\0")
    middle, tail = rest.split("\1")
    return head, middle, tail


def _missed(
    conn: Connection, stmt: Any, written: Any, staged_key: Any, staged: Any, count: int
) -> list[int]:
    """Run `stmt`, a write of the `count` staged rows that `staged` selects; the positions of
    those it did not write, `written` (a column of the table written) being compared with
    `staged_key` (module docstring)."""
    if is_postgresql(conn):
        done = stmt.returning(written).cte("done")
        q = (
            select(incoming.c.pos)
            .where(staged, ~exists().where(next(iter(done.c)) == staged_key))
            .order_by(incoming.c.pos)
        )
        return list(conn.scalars(q))
    applied = conn.execute(stmt).rowcount
    if applied != count:
        raise RuntimeError(
            f"{applied} of {count} staged rows written by {stmt.table.name}, on SQLite's one "
            "writer: the batch was checked against something else than what is stored"
        )
    return []
