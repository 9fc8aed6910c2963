"""The audit log as the services use it: refused actions written, the log read a page at a
time, newest first."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError

from pshnotify.clock import Clock
from pshnotify.services.reporting.audit_words import action_words, outcome_words
from pshnotify.services.reporting.lookup import PER_PAGE, Page
from pshnotify.store import audit
from pshnotify.store.schema import audit_log, people, programs

log = logging.getLogger(__name__)
# An action's instant this far from when it was written was rehearsed (--now).
REHEARSAL = dt.timedelta(minutes=2)


def audit_page(engine: Engine, tz: ZoneInfo, page: int = 1, per_page: int = PER_PAGE) -> Page:
    """A page of the log in words: when (the real time, and a rehearsal's instant beside it),
    who, what to whom (a person's name beside their id), and how it ended."""
    with engine.connect() as conn:
        total = int(conn.scalar(select(func.count()).select_from(audit_log)) or 0)
        page = max(1, min(page, max(1, -(-total // per_page))))
        rows = conn.execute(
            select(
                audit_log.c.at,
                audit_log.c.recorded_at,
                audit_log.c.actor,
                audit_log.c.action,
                audit_log.c.subject,
                audit_log.c.details,
                programs.c.key,
                people.c.name,
            )
            .select_from(
                audit_log.outerjoin(programs, programs.c.id == audit_log.c.program_id).outerjoin(
                    people, people.c.external_id == audit_log.c.subject
                )
            )
            .order_by(audit_log.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).all()
    return Page([_in_words(r, tz) for r in rows], page, per_page, total)


def _in_words(r: Any, tz: ZoneInfo) -> dict[str, Any]:
    details = r.details if isinstance(r.details, dict) else {}
    subject = f"{r.subject} ({r.name})" if r.name and r.subject else r.subject
    return {
        # The real time; a rehearsal's instant beside it when the two differ.
        "at": r.recorded_at or r.at,
        "rehearsed": r.at if r.recorded_at and abs(r.at - r.recorded_at) > REHEARSAL else None,
        "actor": r.actor,
        "action": r.action,
        "program": r.key,
        "what": action_words(r.action, subject),
        "outcome": outcome_words(r.action, details, tz),
        "refused": details.get("outcome") == "refused",
    }


def record_refusal(
    engine: Engine,
    clock: Clock,
    *,
    actor: str,
    action: str,
    subject: str | None,
    problems: Sequence[str],
    program_id: int | None = None,
) -> None:
    """A refused action goes into the audit log too, in a transaction of its own (the
    action's own was rolled back): who tried what on whom, and why it was refused. A
    database that cannot take it (none yet, or down) does not hide the refusal itself."""
    try:
        with engine.begin() as conn:
            audit.record(
                conn,
                at=clock.now(),
                actor=actor,
                action=action,
                program_id=program_id,
                subject=subject,
                details={"outcome": "refused", "why": [p for p in problems if p][:10]},
            )
    except SQLAlchemyError:
        log.warning("the refusal of %s could not be written to the audit log", action)
