"""The audit log: who did what to which program, when."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection

from pshnotify.clock import SystemClock
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
            recorded_at=SystemClock().wall(),  # the real time, whatever --now says
        )
    )
