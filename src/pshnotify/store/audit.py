"""The audit log: who did what to which program, when."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, literal_column

from pshnotify.store.schema import audit_log


def record(
    conn: Connection,
    *,
    at: dt.datetime,
    actor: str,
    action: str,
    program_id: int | None,
    subject: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    conn.execute(
        audit_log.insert().values(
            at=at,
            actor=actor,
            action=action,
            program_id=program_id,
            subject=subject,
            details=details or {},
            recorded_at=_database_now(conn),
        )
    )


def _database_now(conn: Connection) -> Any:
    """The real time of the write, from the database server (as leases are): a rehearsal's
    clock (`--now`) sets `at`, never this. Naive UTC, as `UTCDateTime` stores it."""
    if conn.dialect.name == "sqlite":
        return literal_column("strftime('%Y-%m-%d %H:%M:%f000', 'now')")
    return literal_column("(now() AT TIME ZONE 'utc')")
