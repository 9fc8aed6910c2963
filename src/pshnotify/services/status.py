"""Status of a program: per wave, who is required, who is not and why, and message states.

The JSON form (`pshnotify status --json`) is documented in README.md; keep it stable.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import Engine, func, select

from pshnotify.domain.delivery import State
from pshnotify.services.completions import unmatched_completions
from pshnotify.services.delivery_stats import delivery_stats
from pshnotify.store import outbox
from pshnotify.store import programs as program_repo
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages

SCHEMA_VERSION = 1


def program_status(engine: Engine, stored: StoredProgram, now: dt.datetime) -> dict[str, Any]:
    program = stored.program
    with engine.connect() as conn:
        q = (
            select(
                enrollments.c.wave_key,
                enrollments.c.status,
                enrollments.c.reason,
                enrollments.c.exempted_reason.is_not(None),
                enrollments.c.completed_at.is_not(None),
                enrollments.c.removed_at.is_not(None),
                func.count(),
            )
            .where(enrollments.c.program_id == stored.id)
            .group_by(
                enrollments.c.wave_key,
                enrollments.c.status,
                enrollments.c.reason,
                enrollments.c.exempted_reason.is_not(None),
                enrollments.c.completed_at.is_not(None),
                enrollments.c.removed_at.is_not(None),
            )
        )
        people_rows = conn.execute(q).all()
        launched_q = (
            select(messages.c.wave_key, func.count())
            .where(
                messages.c.program_id == stored.id,
                messages.c.kind == "launch",
                messages.c.state == State.SENT.value,
            )
            .group_by(messages.c.wave_key)
        )
        launched = {w: int(n) for w, n in conn.execute(launched_q)}
        by_state = outbox.count_by_state(conn, stored.id)
        states = program_repo.wave_states(conn, stored.id)
        unmatched = unmatched_completions(conn, stored.id)
    waves: dict[str, dict[str, Any]] = {}
    for w in program.waves:
        st = states.get(w.key)
        waves[w.key] = {
            "title": w.title,
            "opens": w.opens.isoformat(),
            "closes": w.closes.isoformat(),
            "launched_at": st.launched_at.isoformat() if st and st.launched_at else None,
            "launch_at": st.launch_at.isoformat() if st and st.launch_at else None,  # scheduled
            "paused": bool(st and st.paused),
            "people": {
                "total": 0,
                "required": 0,
                "not_required": Counter(),
                "removed": 0,
                "launched": launched.get(w.key, 0),
                "completed": 0,
            },
            "messages": Counter(),
        }
    for wave, status, reason, exempted, completed, removed, n in people_rows:
        entry = waves.setdefault(
            wave, {"title": wave, "people": defaultdict(int), "messages": Counter()}
        )["people"]
        if removed:
            entry["removed"] += n
            continue
        entry["total"] += n
        if status != "required":
            entry["not_required"][reason] += n
        elif exempted:
            entry["not_required"]["operator-exempt"] += n
        else:
            entry["required"] += n
            if completed:
                entry["completed"] += n
    for (wave, state), n in by_state.items():
        if wave in waves:
            waves[wave]["messages"][state] += n
    totals: Counter[str] = Counter()
    for (_, state), n in by_state.items():
        totals[state] += n
    for entry in waves.values():
        entry["people"]["not_required"] = dict(sorted(entry["people"]["not_required"].items()))
        entry["messages"] = {s.value: entry["messages"].get(s.value, 0) for s in State}
    return {
        "schema": SCHEMA_VERSION,
        "program": {
            "key": program.key,
            "name": program.program.name,
            "cycle": program.program.cycle,
            "timezone": program.program.timezone,
            "paused": stored.paused,
        },
        "waves": waves,
        "messages": {s.value: totals.get(s.value, 0) for s in State},
        "completions": {"unmatched": len(unmatched)},
        "delivery": _delivery(engine, now),
    }


def _delivery(engine: Engine, now: dt.datetime) -> dict[str, Any]:
    """The numbers /metrics exports, for a person (all programs: the relay is shared)."""
    stats = delivery_stats(engine, now)
    return {
        "oldest_due_seconds": round(stats.oldest_due_seconds, 1),
        "attempts": dict(sorted(stats.attempts_by_outcome.items())),
        "replies": dict(sorted(stats.replies_by_class.items())),
    }
