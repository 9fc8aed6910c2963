"""Receipts of what came from outside (webhook deliveries, xAPI statements, relay bounce
callbacks): replay protection. A receipt is claimed in the same transaction as what it
brings, so a delivery that failed half-way leaves no receipt and may be retried."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import Connection, Engine, delete

from pshnotify.store.schema import webhook_receipts
from pshnotify.store.sql import insert_ignoring_duplicates

# A receipt only has to outlive the window in which a replay could pass the signature check
# (5 minutes for webhooks); an hour is a dozen times that. Older receipts are deleted.
RECEIPTS_KEPT = dt.timedelta(hours=1)

_PRUNED_AT: list[float] = []  # when this process last pruned (monotonic)
PRUNE_EVERY = 300.0  # seconds: a pass every 30 s need not write every time


def prune_receipts(engine: Engine, wall: dt.datetime) -> int:
    """Forget receipts older than RECEIPTS_KEPT (a pass calls this; it writes at most every
    PRUNE_EVERY seconds per process, so a pass with nothing else to write stays read-only)."""
    if _PRUNED_AT and time.monotonic() - _PRUNED_AT[-1] < PRUNE_EVERY:
        return 0
    _PRUNED_AT[:] = [time.monotonic()]
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
