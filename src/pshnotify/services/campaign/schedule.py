"""The scheduler's pass: turn what has come due into outbox rows.

Only enrollments whose `next_action_at` has come are read, so a pass costs what is due, not
the size of the roster. Each is run through `domain.cadence.decide`, the same function `plan`
uses, and its rows are queued under their idempotency keys: a pass that runs twice, or on two
replicas at once, queues nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.cadence import Decision, PersonState, Planned, decide
from pshnotify.domain.delivery import Kind, State, idempotency_key
from pshnotify.domain.program import Program
from pshnotify.services.campaign.launch import launch_scheduled
from pshnotify.services.campaign.programs import all_programs
from pshnotify.store import outbox, standing
from pshnotify.store import programs as program_repo
from pshnotify.store import requests as requests_repo
from pshnotify.store.db import refresh_statistics
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, people

# Once-a-night work (the officers' reports): (conn, program, now, message-id domain) -> queued.
NightlyJob = Callable[[Connection, StoredProgram, dt.datetime, str], int]


@dataclass
class PassReport:
    looked_at: int = 0
    queued: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "looked_at": self.looked_at,
            "queued": dict(sorted(self.queued.items())),
            "skipped": dict(sorted(self.skipped.items())),
        }


def run_pass(
    engine: Engine,
    clock: Clock,
    message_id_domain: str,
    nightly: Sequence[NightlyJob] = (),
    batch: int = 2000,
) -> PassReport:
    report = PassReport()
    now = clock.now()
    for stored in all_programs(engine):
        if stored.paused:
            continue  # nothing is queued for a paused program; resume catches up
        for launched in launch_scheduled(engine, stored, clock, message_id_domain):
            report.queued["launch"] += launched.queued
        while _pass_batch(engine, stored, now, message_id_domain, batch, report) == batch:
            pass
        with engine.begin() as conn:
            for job in nightly:
                if queued := job(conn, stored, now, message_id_domain):
                    report.queued["report"] += queued
    refresh_statistics(engine, sum(report.queued.values()), "messages")
    return report


def _pass_batch(
    engine: Engine,
    stored: StoredProgram,
    now: dt.datetime,
    domain: str,
    batch: int,
    report: PassReport,
) -> int:
    with engine.begin() as conn:
        waves = program_repo.wave_states(conn, stored.id)
        paused = [k for k, w in waves.items() if w.paused]
        rows = conn.execute(_due_enrollments(stored.id, now, batch, paused)).all()
        if not rows:
            return 0
        steps = _queued_steps(conn, stored.id, [r.person_id for r in rows])
        held = requests_repo.paused_for(
            conn, stored.program, stored.id, now, [r.person_id for r in rows]
        )
        out: list[dict[str, Any]] = []
        next_at: list[dict[str, Any]] = []
        for r in rows:
            launched = waves[r.wave_key].launched_at if r.wave_key in waves else None
            state = _state(stored.program, r, steps.get(r.person_id), held.get(r.person_id))
            decision = decide(stored.program, launched, state, now)
            out += _rows(stored, r, decision, domain)
            next_at.append({"b_id": r.id, "b_next": decision.next_action_at})
            report.queued.update(p.kind for p in decision.queue)
            report.skipped.update(p.kind for p, _ in decision.skip)
        outbox.queue(conn, out, now)
        conn.execute(
            update(enrollments)
            .where(enrollments.c.id == bindparam("b_id"))
            .values(next_action_at=bindparam("b_next")),
            next_at,
        )
        report.looked_at += len(rows)
        return len(rows)


def _due_enrollments(program_id: int, now: dt.datetime, batch: int, paused: list[str]) -> Any:
    return (
        select(
            enrollments.c.id,
            enrollments.c.person_id,
            enrollments.c.launch_sent_at,
            people.c.external_id,
            people.c.email,
            people.c.name,
            *standing.COLUMNS,
        )
        .select_from(
            standing.with_mark(enrollments.join(people, people.c.id == enrollments.c.person_id))
        )
        .where(
            enrollments.c.program_id == program_id,
            enrollments.c.next_action_at <= now,
            enrollments.c.wave_key.not_in(paused),
        )
        .order_by(enrollments.c.next_action_at, enrollments.c.id)
        .limit(batch)
        # Replicas share the work: each takes rows the others have not locked.
        .with_for_update(skip_locked=True, of=enrollments)
    )


@dataclass
class _Outbox:
    """A person's asking messages: the steps queued, and their reminders (for the policy's
    one reminder a day)."""

    steps: set[str] = field(default_factory=set)
    reminders: list[tuple[int, str, dt.datetime, dt.datetime | None]] = field(default_factory=list)


def _queued_steps(conn: Connection, program_id: int, person_ids: list[int]) -> dict[int, _Outbox]:
    """Each person's asking messages: their steps, and their reminders (`outbox.of_people`:
    read by person, then picked here, so the read does not grow with the wave)."""
    asking = set(Kind.asking())
    out: dict[int, _Outbox] = {}
    for pid, held in outbox.of_people(conn, person_ids).items():
        for m in held:
            if m.program_id != program_id or m.kind not in asking:
                continue
            box = out.setdefault(pid, _Outbox())
            box.steps.add("launch" if m.kind == Kind.LAUNCH.value else m.step)
            if m.kind == Kind.REMINDER.value:
                box.reminders.append((m.id, m.state, m.due_at, m.sent_at))
    return out


def _state(
    program: Program, r: Any, box: _Outbox | None, paused_for: str | None = None
) -> PersonState:
    """Every reminder that went or goes uses its day (`store.standing.reminder_days`): the one
    being decided now would be queued after all of them. `paused_for`: a pending request
    holds the reminders ("request 12 pending")."""
    if box is None:
        return standing.person_state(r, paused_for=paused_for)
    days = frozenset[dt.date]()
    if box.reminders:
        days = standing.reminder_days(box.reminders, policy.person_zone(program, r.timezone))
    return standing.person_state(r, steps=box.steps, reminder_days=days, paused_for=paused_for)


def _rows(stored: StoredProgram, r: Any, decision: Decision, domain: str) -> list[dict[str, Any]]:
    rows = [_row(stored, r, p, domain) for p in decision.queue]
    for planned, reason in decision.skip:
        rows.append(
            {**_row(stored, r, planned, domain), "state": State.SKIPPED.value, "reason": reason}
        )
    return rows


def _row(stored: StoredProgram, r: Any, p: Planned, domain: str) -> dict[str, Any]:
    return {
        "program_id": stored.id,
        "person_id": r.person_id,
        "kind": p.kind,
        "wave_key": r.wave_key,
        "step": p.step,
        "idempotency_key": idempotency_key(stored.key, r.wave_key, r.external_id, p.kind, p.step),
        "message_id": outbox.new_message_id(domain),
        "recipient_email": r.email,
        "recipient_name": r.name,
        "context": {"step": p.step},
        "due_at": p.due_at,
        # Every row names the same columns: an executemany takes its columns from the first
        # row, so a skip's reason after a queued row was silently dropped.
        "reason": None,
    }
