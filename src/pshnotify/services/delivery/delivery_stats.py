"""Delivery numbers for people (`status`) and for Prometheus (`/metrics`): one query each."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine, func, select

from pshnotify.domain.delivery import PENDING
from pshnotify.store.schema import attempts, messages, programs


@dataclass
class DeliveryStats:
    by_state: dict[tuple[str, str], int] = field(default_factory=dict)  # (program, state)
    attempts_by_outcome: dict[str, int] = field(default_factory=dict)
    replies_by_class: dict[str, int] = field(default_factory=dict)  # 2xx 4xx 5xx none
    oldest_due_seconds: float = 0.0


def delivery_stats(engine: Engine, now: dt.datetime, *, by_state: bool = True) -> DeliveryStats:
    """The relay's numbers. `by_state=False` leaves out the count of every program's messages
    by state (a scan of all messages: /metrics exports it, `status` counts its own program's
    from the index by wave)."""
    stats = DeliveryStats()
    with engine.connect() as conn:
        if by_state:
            q = (
                select(programs.c.key, messages.c.state, func.count())
                .join(programs, programs.c.id == messages.c.program_id)
                .group_by(programs.c.key, messages.c.state)
            )
            stats.by_state = {(k, s): int(n) for k, s, n in conn.execute(q)}
        q2 = select(attempts.c.outcome, attempts.c.code, func.count()).group_by(
            attempts.c.outcome, attempts.c.code
        )
        for outcome, code, n in conn.execute(q2):
            stats.attempts_by_outcome[outcome] = stats.attempts_by_outcome.get(outcome, 0) + n
            cls = f"{code // 100}xx" if code else "none"
            stats.replies_by_class[cls] = stats.replies_by_class.get(cls, 0) + n
        stats.oldest_due_seconds = oldest_due_seconds(conn, now)
    return stats


def oldest_due_seconds(conn: Connection, now: dt.datetime) -> float:
    """How long the oldest message that is due and not yet sent has waited (all programs: the
    relay is shared); 0 when none waits. The one figure of these the dashboard shows."""
    oldest = conn.scalar(
        select(func.min(messages.c.due_at)).where(
            messages.c.state.in_([s.value for s in PENDING]), messages.c.due_at <= now
        )
    )
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return float(max(0.0, (now - oldest).total_seconds()))
