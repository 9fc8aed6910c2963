"""Status of a program: per wave, who is required, who is not and why, and message states.

The JSON form (`pshnotify status --json`) is documented in README.md; keep it stable.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import Connection, Engine, case, func, select

from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind, State
from pshnotify.domain.vocabulary import MessageWord, PersonWord, person_word
from pshnotify.services.bounces.marks import bounce_summary
from pshnotify.services.campaign.completions import unmatched_completions
from pshnotify.services.delivery.delivery_stats import delivery_stats
from pshnotify.store import outbox, standing
from pshnotify.store import programs as program_repo
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments

# 2: message counts keyed by domain/vocabulary.py's MessageWord (delivered, not sent), and
# each wave's people gain `states`, keyed by PersonWord.
SCHEMA_VERSION = 2


def program_status(
    engine: Engine, stored: StoredProgram, now: dt.datetime, *, delivery: bool = True
) -> dict[str, Any]:
    """`delivery=False` leaves out the relay's figures (all programs' attempts, read in full):
    the console's wave page and its progress bars, refreshed every 2 s, do not show them."""
    program = stored.program
    with engine.connect() as conn:
        people_rows = _people_counts(conn, stored.id)
        by_kind = outbox.count_by_kind(conn, stored.id)  # one reading of the messages' index
        undeliverable = standing.marked_by_wave(conn, stored.id)
        bounce_counts = bounce_summary(conn, stored.id)
        states = program_repo.wave_states(conn, stored.id)
        unmatched = unmatched_completions(conn, stored.id)
    launched: Counter[str | None] = Counter()
    by_state: Counter[tuple[str | None, str]] = Counter()
    for (wave_key, kind, state), n in by_kind.items():
        by_state[wave_key, state] += n
        if kind == Kind.LAUNCH.value and state == State.SENT.value:
            launched[wave_key] += n
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
                "undeliverable": undeliverable.get(w.key, 0),
                "states": Counter(),
            },
            "messages": Counter(),
        }
    for wave, status, reason, exempted, completed, removed, n in people_rows:
        entry = waves.setdefault(
            # a wave no longer in the program file: its people are still counted
            wave,
            {
                "title": wave,
                "people": defaultdict(int, not_required=Counter(), states=Counter()),
                "messages": Counter(),
            },
        )["people"]
        if removed:
            entry["removed"] += n
            continue
        entry["total"] += n
        entry["states"][_word(status, exempted, completed, states.get(wave))] += n
        if status != policy.REQUIRED:
            entry["not_required"][reason] += n
        elif exempted:
            entry["not_required"]["operator-exempt"] += n
        else:
            entry["required"] += n
            if completed:
                entry["completed"] += n
    totals: Counter[str] = Counter()
    for (wave, state), n in by_state.items():
        word = MessageWord.of(state).value
        totals[word] += n
        if wave in waves:
            waves[wave]["messages"][word] += n
    for entry in waves.values():
        ppl = entry["people"]
        ppl["not_required"] = dict(sorted(ppl["not_required"].items()))
        ppl["states"] = {w.value: ppl["states"].get(w.value, 0) for w in PersonWord}
        ppl["states"][PersonWord.UNDELIVERABLE] = ppl.get("undeliverable", 0)
        entry["messages"] = {w.value: entry["messages"].get(w.value, 0) for w in MessageWord}
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
        "messages": {w.value: totals.get(w.value, 0) for w in MessageWord},
        "completions": {"unmatched": len(unmatched)},
        "bounces": bounce_counts,
        "delivery": _delivery(engine, now) if delivery else {},
    }


def _word(status: str, exempted: bool, completed: bool, wave: Any) -> str:
    """A present person's PersonWord, from the counts' facts (`vocabulary.person_word`)."""
    person = policy.Standing(
        status=status, exempted_reason="" if exempted else None, completed=completed
    )
    return person_word(person, launched=wave is not None and wave.launched_at is not None)


def _people_counts(conn: Connection, program_id: int) -> list[tuple[Any, ...]]:
    """(wave, status, reason, exempted, completed, removed, n) for every combination present.

    Counted as sums per (wave, status, reason), which the covering index of enrollments
    (ix_enrollments_standing) answers by itself: grouping by the flags too made SQLite read
    each of 100,000 rows from the table (266 ms against 35 ms, bench/console.py).
    """
    e = enrollments
    removed = standing.FACTS["removed"]
    exempted = standing.holds({"removed": False, "exempted": True})
    completed = standing.holds({"removed": False, "exempted": False, "completed": True})

    def total(cond: Any) -> Any:
        return func.sum(case((cond, 1), else_=0))

    q = (
        select(
            e.c.wave_key,
            e.c.status,
            e.c.reason,
            func.count(),
            total(removed),
            total(exempted),
            total(completed),
        )
        .where(e.c.program_id == program_id)
        .group_by(e.c.wave_key, e.c.status, e.c.reason)
    )
    rows: list[tuple[Any, ...]] = []
    for wave, status, reason, n, n_removed, n_exempted, n_completed in conn.execute(q):
        n_removed, n_exempted, n_completed = int(n_removed), int(n_exempted), int(n_completed)
        rest = int(n) - n_removed - n_exempted - n_completed
        for flags, count in (
            ((False, False, True), n_removed),
            ((True, False, False), n_exempted),
            ((False, True, False), n_completed),
            ((False, False, False), rest),
        ):
            if count:
                rows.append((wave, status, reason, *flags, count))
    return rows


def _delivery(engine: Engine, now: dt.datetime) -> dict[str, Any]:
    """The relay's numbers /metrics exports, for a person (all programs: the relay is
    shared), without the count of every program's messages by state, which status does not
    show (a scan of all messages: at 250,000, most of `status --json`'s time)."""
    stats = delivery_stats(engine, now, by_state=False)
    return {
        "oldest_due_seconds": round(stats.oldest_due_seconds, 1),
        "attempts": dict(sorted(stats.attempts_by_outcome.items())),
        "replies": dict(sorted(stats.replies_by_class.items())),
    }
