"""Writing a drain's results: outcomes, attempts and launch marks, in hand-written SQL.

This is the hot path of every drain. The ledger writes a group of about one result per
connection, hundreds of times a second, so what a write costs the sending process is what a
message costs. Measured at six results a write, the sender's CPU a message:
- through SQLAlchemy's compiled statements (cache keys, parameter processing, three
  statements): 300 us on SQLite, 550 on PostgreSQL (groups of four);
- fixed SQL through `exec_driver_sql`, a pooled connection per write: 105-122 / 56-82 us;
- fixed SQL on the driver's own connection, kept for the drain (`Writer`): 49-72 / 30-37 us.
  SQLAlchemy's Connection layers (events, results, the transaction's bookkeeping) cost
  more than the SQL; on PostgreSQL the pool's ping of each connection it hands out, BEGIN
  and COMMIT made four round trips where one does.

- PostgreSQL: one statement, its own transaction (autocommit), one round trip. The group
  goes as one JSON parameter read with `jsonb_to_recordset()`, its ids also as an array so
  that the UPDATE finds its rows through the primary key (joined to the recordset alone, the
  planner expected 100 rows and hashed the whole table: a sequential scan of every message
  per write, 1.0 ms of the server's time at 5,000 messages). The UPDATE keeps only rows
  still under our lease token (its row lock re-checks the token against a concurrent
  takeover), and data-modifying CTEs insert the attempts and mark the launches of exactly
  the rows it updated. psycopg prepares the statement after a few executions.
- SQLite, in BEGIN IMMEDIATE (the write lock up front, as `db` does for every transaction):
  one UPDATE ... FROM `json_each()` over the group, `RETURNING id` (a row whose lease was
  taken over meanwhile does not match), then the attempts and launch marks of the rows
  written, one executemany each.

The driver's errors come out as they are (not wrapped by SQLAlchemy): the database guard
knows them too (`retry.is_transient`). Times go as `UTCDateTime` stores them
(`schema.db_time`: naive UTC as text, which PostgreSQL's jsonb_to_recordset reads as a
timestamp too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import sqlite3
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.pool import PoolProxiedConnection

from pshnotify.domain.delivery import Kind, State
from pshnotify.store.db import BUSY_TIMEOUT_MS, is_postgresql
from pshnotify.store.outbox import Result
from pshnotify.store.schema import db_time, naive_utc

if TYPE_CHECKING:  # imported at the first PostgreSQL write: a SQLite drain never needs it
    import psycopg

__all__ = ["Writer"]

_LAUNCH = Kind.LAUNCH.value
_SENT = State.SENT


class Writer:
    """Writes a drain's groups from the event loop, over a connection it keeps for the drain.

    No thread in between. A write handed to a thread took 1.4 ms longer than its work (the
    pool's hand-over, the loop's wake-up), and in the thread every step of the driver's
    Python waited for the loop to let go of the GIL: 2.5 ms in all for a PostgreSQL write
    whose server part is 0.5 ms. That latency is what the connections wait for (the k+2 rule).
    - PostgreSQL: psycopg's own async connection, autocommit, opened at the first write.
    - SQLite: the driver's connection, its write lock asked for with no busy wait; when
      another connection holds it (the claim, a command), the write goes to a thread and waits
      there as long as the busy timeout says, so the loop never blocks on a lock. The
      connection is opened in a thread too. What does run on the loop is the write itself,
      its fsync (`synchronous=FULL`) included, about 0.3 ms, and now and then SQLite's
      automatic checkpoint of its WAL, a few ms.
    After any error the connection is discarded and the next write opens another. A write
    after `aclose` is refused.
    """

    def __init__(self, engine: Engine, worker: str) -> None:
        self._engine = engine
        self._worker = worker
        self._postgresql = is_postgresql(engine)
        self._pg: psycopg.AsyncConnection[Any] | None = None
        self._raw: PoolProxiedConnection | None = None
        self._lock = threading.Lock()  # the SQLite connection: the loop's write or a thread's
        self._closed = False

    async def write(self, results: list[Result], now: dt.datetime) -> list[Result]:
        """Write each result under its lease token, with its attempt (if it reached the relay)
        and, for an accepted launch email, the start of the person's cadence, in one
        transaction. Returns the results the lease still allowed us to write; the others
        were taken over and are left alone."""
        if not results:
            return []
        if self._closed:
            raise RuntimeError("the drain's writer is closed")
        if self._postgresql:
            ours = await self._write_postgresql(results, naive_utc(now))
        else:
            ours = await self._write_sqlite(results, db_time(now))
        return [r for r in results if r.message.id in ours]

    async def aclose(self) -> None:
        self._closed = True
        pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(Exception):
                await pg.close()
        if self._lock.acquire(blocking=False):
            try:
                self._drop_sqlite()
            finally:
                self._lock.release()
        else:  # a thread's write in flight (the drain was cancelled): wait for it, off the loop
            await asyncio.to_thread(self._close_sqlite)

    def _close_sqlite(self) -> None:
        with self._lock:
            self._drop_sqlite()

    # -- PostgreSQL -----------------------------------------------------------------------------
    async def _write_postgresql(self, results: list[Result], now: dt.datetime) -> set[int]:
        if self._pg is None:
            _args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            kwargs.pop("context", None)  # SQLAlchemy's own adapters
            kwargs.setdefault("connect_timeout", 10)
            # A server that vanished without closing the connection (a host gone, a network
            # cut) fails the write within seconds instead of TCP's quarter of an hour.
            for key, value in _PG_KEEPALIVE.items():
                kwargs.setdefault(key, value)
            import psycopg

            self._pg = await psycopg.AsyncConnection.connect(**kwargs, autocommit=True)
        conn = self._pg
        try:
            rows = json.dumps([_pg_row(r) for r in results])
            ids = [r.message.id for r in results]
            cursor = await conn.execute(_PG_RECORD, (rows, now, ids, self._worker))
            return {row[0] for row in await cursor.fetchall()}
        except BaseException:
            self._pg = None
            with contextlib.suppress(Exception):
                await conn.close()
            raise

    # -- SQLite ---------------------------------------------------------------------------------
    async def _write_sqlite(self, results: list[Result], now: str) -> set[int]:
        # Opening a connection may wait (a pool slot, the PRAGMAs under the busy timeout):
        # the first write of a drain, and the first after an error, go to a thread.
        if self._raw is not None and self._lock.acquire(blocking=False):
            try:
                return self._sqlite(results, now, wait=False)
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    raise
            finally:
                self._lock.release()
        return await asyncio.to_thread(self._sqlite_waiting, results, now)

    def _sqlite_waiting(self, results: list[Result], now: str) -> set[int]:
        with self._lock:
            return self._sqlite(results, now, wait=True)

    def _sqlite(self, results: list[Result], now: str, *, wait: bool) -> set[int]:
        try:
            if self._raw is None:
                self._raw = self._engine.raw_connection()
                self._raw.driver_connection.execute("PRAGMA busy_timeout=0")  # type: ignore[union-attr]
            cursor = self._raw.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                if wait:  # the engine's busy timeout, in a thread
                    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                try:
                    return _record_sqlite(cursor, results, self._worker, now)
                finally:
                    if wait:
                        cursor.execute("PRAGMA busy_timeout=0")
            finally:
                cursor.close()
        except BaseException as exc:
            if not (isinstance(exc, sqlite3.OperationalError) and _locked(exc)):
                self._drop_sqlite(broken=True)
            raise

    def _drop_sqlite(self, broken: bool = False) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            if not broken:
                try:  # back to the pool as it came out, or not at all
                    raw.driver_connection.execute(  # type: ignore[union-attr]
                        f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}"
                    )
                except Exception:
                    broken = True
            if broken:
                with contextlib.suppress(Exception):
                    raw.invalidate()  # closed, never handed out again
        finally:
            with contextlib.suppress(Exception):
                raw.close()


_PG_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms: unacknowledged data
}


def _locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc).lower() or "busy" in str(exc).lower()


# -- PostgreSQL ---------------------------------------------------------------------------------
_PG_RECORD = (
    """
WITH v AS (
    SELECT * FROM jsonb_to_recordset(%s::jsonb) AS v(
        id integer, token text, state text, code integer, reply text, tried integer,
        sent_at timestamp, tried_at timestamp, due_at timestamp, reason text,
        number integer, started_at timestamp, finished_at timestamp, outcome text)
), u AS (
    UPDATE messages AS m SET
        state = v.state,
        updated_at = %s,
        lease_owner = NULL,
        lease_token = NULL,
        lease_until = NULL,
        last_code = v.code,
        last_reply = v.reply,
        attempts = m.attempts + v.tried,
        sent_at = coalesce(v.sent_at, m.sent_at),
        first_attempt_at = coalesce(m.first_attempt_at, v.tried_at),
        due_at = coalesce(v.due_at, m.due_at),
        reason = coalesce(v.reason, m.reason)
    FROM v
    WHERE m.id = ANY(%s::integer[]) AND m.id = v.id AND m.lease_token = v.token
    RETURNING m.id, m.program_id, m.person_id, m.kind, m.state
), a AS (
    INSERT INTO attempts (message_id, number, worker, started_at, finished_at, outcome, code,
                          reply)
    SELECT v.id, v.number, %s, v.started_at, v.finished_at, v.outcome, v.code, v.reply
    FROM v JOIN u ON u.id = v.id
    WHERE v.tried = 1
), l AS (
    UPDATE enrollments AS e SET launch_sent_at = v.finished_at, next_action_at = v.finished_at
    FROM u JOIN v ON v.id = u.id
    WHERE u.kind = '"""
    + _LAUNCH
    + """' AND u.state = '"""
    + _SENT.value
    + """'
      AND e.program_id = u.program_id AND e.person_id = u.person_id
)
SELECT id FROM u
"""
)


def _pg_row(r: Result) -> dict[str, Any]:
    m = r.message
    tried = r.attempted
    return {
        "id": m.id,
        "token": m.lease_token,
        "state": r.state.value,
        "code": r.code,
        "reply": r.reply,
        "tried": 1 if tried else 0,
        "sent_at": db_time(r.finished_at) if r.state == _SENT else None,
        "tried_at": db_time(r.started_at) if tried else None,
        "due_at": db_time(r.due_at) if r.due_at is not None else None,
        "reason": r.reason,
        "number": m.attempts + 1,
        "started_at": db_time(r.started_at),
        "finished_at": db_time(r.finished_at),
        "outcome": r.outcome,
    }


# -- SQLite -------------------------------------------------------------------------------------
# The group as one JSON array of rows, in `_sqlite_statements`' order (json_extract: SQLite 3.9+;
# UPDATE ... FROM: 3.33+; RETURNING: 3.35+).
_SQLITE_OUTCOME = """
UPDATE messages SET
    state = v.state, updated_at = ?, lease_owner = NULL, lease_token = NULL, lease_until = NULL,
    last_code = v.code, last_reply = v.reply, attempts = messages.attempts + v.tried,
    sent_at = coalesce(v.sent_at, messages.sent_at),
    first_attempt_at = coalesce(messages.first_attempt_at, v.tried_at),
    due_at = coalesce(v.due_at, messages.due_at), reason = coalesce(v.reason, messages.reason)
FROM (
    SELECT
        json_extract(value, '$[0]') AS id,
        json_extract(value, '$[1]') AS state,
        json_extract(value, '$[2]') AS code,
        json_extract(value, '$[3]') AS reply,
        json_extract(value, '$[4]') AS tried,
        json_extract(value, '$[5]') AS sent_at,
        json_extract(value, '$[6]') AS tried_at,
        json_extract(value, '$[7]') AS due_at,
        json_extract(value, '$[8]') AS reason,
        json_extract(value, '$[9]') AS token
    FROM json_each(?)
) AS v
WHERE messages.id = v.id AND messages.lease_token = v.token
RETURNING messages.id
"""
_SQLITE_ATTEMPT = """
INSERT INTO attempts (message_id, number, worker, started_at, finished_at, outcome, code, reply)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_SQLITE_LAUNCH = """
UPDATE enrollments SET launch_sent_at = ?, next_action_at = ?
WHERE program_id = ? AND person_id = ?
"""


def _record_sqlite(
    cursor: sqlite3.Cursor, results: list[Result], worker: str, now: str
) -> set[int]:
    cursor.execute("BEGIN IMMEDIATE")
    try:
        ours = _sqlite_statements(cursor, results, worker, now)
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):  # a failed COMMIT too: nothing left open
            cursor.execute("ROLLBACK")
        raise
    return ours


def _sqlite_statements(
    cursor: sqlite3.Cursor, results: list[Result], worker: str, now: str
) -> set[int]:
    # Each result's times in stored form, converted once for the three statements.
    times = [(r, db_time(r.started_at), db_time(r.finished_at)) for r in results]
    rows = [
        (
            r.message.id,
            r.state.value,
            r.code,
            r.reply,
            1 if r.attempted else 0,
            finished if r.state == _SENT else None,
            started if r.attempted else None,
            db_time(r.due_at) if r.due_at is not None else None,
            r.reason,
            r.message.lease_token,
        )
        for r, started, finished in times
    ]
    cursor.execute(_SQLITE_OUTCOME, (now, json.dumps(rows)))
    ours = {row[0] for row in cursor.fetchall()}
    written = [t for t in times if t[0].message.id in ours]
    attempts = [
        (
            r.message.id,
            r.message.attempts + 1,
            worker,
            started,
            finished,
            r.outcome,
            r.code,
            r.reply,
        )
        for r, started, finished in written
        if r.attempted
    ]
    if attempts:
        cursor.executemany(_SQLITE_ATTEMPT, attempts)
    launches = [
        (finished, finished, r.message.program_id, r.message.person_id)
        for r, _, finished in written
        if r.state == _SENT and r.message.kind == _LAUNCH and r.message.person_id is not None
    ]
    if launches:
        cursor.executemany(_SQLITE_LAUNCH, launches)
    return ours
