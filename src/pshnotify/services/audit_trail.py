"""Reading the audit log, newest first, a page at a time."""

from __future__ import annotations

from sqlalchemy import Engine, func, select

from pshnotify.services.lookup import PER_PAGE, Page
from pshnotify.store.schema import audit_log, programs


def audit_page(engine: Engine, page: int = 1, per_page: int = PER_PAGE) -> Page:
    with engine.connect() as conn:
        total = int(conn.scalar(select(func.count()).select_from(audit_log)) or 0)
        page = max(1, min(page, max(1, -(-total // per_page))))
        rows = conn.execute(
            select(
                audit_log.c.at,
                audit_log.c.actor,
                audit_log.c.action,
                audit_log.c.subject,
                audit_log.c.details,
                programs.c.key,
            )
            .select_from(audit_log.outerjoin(programs, programs.c.id == audit_log.c.program_id))
            .order_by(audit_log.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).all()
    return Page(
        [
            {
                "at": r.at,
                "actor": r.actor,
                "action": r.action,
                "subject": r.subject,
                "details": r.details,
                "program": r.key,
            }
            for r in rows
        ],
        page,
        per_page,
        total,
    )
