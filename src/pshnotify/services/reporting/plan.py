"""The plan: what will go out, per day and kind, from what is known now.

Days are the program's local dates (what an operator reads); each day also counts its
messages per recipient zone, since a person's 09:00 is in their own zone (Singapore's
Tuesday 09:00 is Monday evening in Boston, and is counted on Monday).

It asks `domain.cadence` the same questions the scheduler's pass does (`decide` for what is
due now, `timeline` for what comes later), so the plan and the sending cannot disagree. An
unlaunched wave is assumed to launch at the start of working hours on its opening day (or
now, if that has passed); completions not yet known are not guessed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import Connection, Engine, select

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain import requests as request_rules
from pshnotify.domain.cadence import PersonState, Planned, decide, timeline
from pshnotify.domain.calendar import next_sending_instant
from pshnotify.domain.delivery import PENDING, Kind
from pshnotify.domain.program import Program
from pshnotify.services.campaign.launch import launch_window
from pshnotify.services.reporting.escalation import planned_digests
from pshnotify.services.reporting.reports import officer_windows
from pshnotify.store import programs as program_repo
from pshnotify.store import requests as requests_repo
from pshnotify.store import standing
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people

KINDS = tuple(k.value for k in Kind)


def build_plan(
    engine: Engine, stored: StoredProgram, clock: Clock, wave: str | None = None
) -> dict[str, Any]:
    program, now = stored.program, clock.now()
    if wave is not None:
        program.wave(wave)  # KeyError for an unknown wave, turned into a clear error by the CLI
    with engine.connect() as conn:
        waves = program_repo.wave_states(conn, stored.id)
        steps, pending = _outbox(conn, stored.id, wave)
        q = _enrolled().where(enrollments.c.program_id == stored.id, standing.present())
        if wave is not None:
            q = q.where(enrollments.c.wave_key == wave)
        rows = conn.execute(q).all()
        pausing = requests_repo.pausing_requests(conn, program, stored.id, now)
        days: dict[dt.date, Counter[str]] = defaultdict(Counter)
        zones: dict[dt.date, Counter[str]] = defaultdict(Counter)
        if wave is None:  # reports cover officers' people in every wave
            _plan_reports(conn, stored, now, _reported(conn, stored.id), days)
            for day, n in planned_digests(conn, stored, now).items():  # escalations, likewise
                days[day][Kind.ESCALATION.value] += n
    home = program.program.timezone
    for day, counts in days.items():  # the officers' reports: in the program's zone
        zones[day][home] += sum(counts.values())
    for due, kind, tz in pending:
        day = _local_day(program, max(due, now))
        days[day][kind] += 1
        zones[day][tz or home] += 1
    held: list[dict[str, Any]] = []
    for r in rows:
        state = standing.person_state(r, steps=steps.get(r.person_id, set()))
        wave_state = waves.get(r.wave_key)
        launched = wave_state.launched_at if wave_state else None
        scheduled = wave_state.launch_at if wave_state else None
        future = _future(program, launched, state, now, scheduled)
        if r.person_id in pausing:  # a pending request holds their reminders for a while
            future = _without_paused(program, r, pausing[r.person_id], future, held)
        for p in future:
            day = _local_day(program, p.due_at)
            days[day][p.kind] += 1
            zones[day][r.timezone or home] += 1
    data = _render(stored, now, wave, days, zones)
    data["closed_unlaunched"] = [
        w.key
        for w in program.waves
        if wave in (None, w.key)
        and (waves.get(w.key) is None or waves[w.key].launched_at is None)
        and (waves.get(w.key) is None or waves[w.key].launch_at is None)
        and launch_window(program, w, now)[0] == "over"
    ]
    data["paused"] = held
    data["scheduled_launches"] = {
        k: w.launch_at.isoformat()
        for k, w in sorted(waves.items())
        if w.launch_at is not None and w.launched_at is None and wave in (None, k)
    }
    return data


def _enrolled() -> Any:
    """What the cadence decides by (`store.standing`), with the person's id."""
    return select(
        enrollments.c.person_id,
        enrollments.c.launch_sent_at,
        people.c.external_id,
        *standing.COLUMNS,
    ).select_from(standing.joined())


def _without_paused(
    program: Program,
    r: Any,
    pending: tuple[int, dt.datetime],
    future: list[Planned],
    held: list[dict[str, Any]],
) -> list[Planned]:
    """The reminders a pending request holds back (until its pause ends) left out, and
    said in `held`: "request 12 pending"."""
    request_id, filed = pending
    ends = request_rules.pause_ends(program, filed)
    kept = [p for p in future if p.kind not in _PAUSED or p.due_at >= ends]
    if len(kept) < len(future):
        held.append(
            {
                "person": r.external_id,
                "reason": request_rules.paused_reason(request_id),
                "until": ends.isoformat(),
                "reminders": len(future) - len(kept),
            }
        )
    return kept


_PAUSED = (Kind.REMINDER.value, Kind.OVERDUE.value)


def person_plan(
    conn: Connection, stored: StoredProgram, person_id: int, now: dt.datetime
) -> list[Planned]:
    """What the scheduler will queue for one person from now on, if nothing changes: the
    same answer `build_plan` counts for everyone (the console's person timeline)."""
    row = conn.execute(
        _enrolled().where(
            enrollments.c.program_id == stored.id,
            enrollments.c.person_id == person_id,
            standing.present(),
        )
    ).first()
    if row is None:
        return []
    q = select(messages.c.kind, messages.c.step).where(
        messages.c.program_id == stored.id, messages.c.person_id == person_id
    )
    steps = {"launch" if kind == "launch" else step for kind, step in conn.execute(q)}
    state = program_repo.wave_states(conn, stored.id).get(row.wave_key)
    launched = state.launched_at if state else None
    return _future(stored.program, launched, standing.person_state(row, steps=steps), now)


def _reported(conn: Any, program_id: int) -> set[tuple[str, str]]:
    """(officer, night) of every report already in the outbox."""
    q = select(messages.c.recipient_email, messages.c.step).where(
        messages.c.program_id == program_id, messages.c.kind == Kind.REPORT.value
    )
    return {(r.lower(), step) for r, step in conn.execute(q)}


def _plan_reports(
    conn: Any,
    stored: StoredProgram,
    now: dt.datetime,
    done: set[tuple[str, str]],
    days: dict[dt.date, Counter[str]],
) -> None:
    """One report a night per officer, from the night after their first launch (assumed on
    the opening day for waves not yet launched) to the night after their last deadline."""
    program = stored.program
    today = _local_day(program, now)
    for w in officer_windows(conn, stored):
        first = w.first_launch.astimezone(program.tz).date() if w.first_launch else w.first_opens
        if first is None or w.last_deadline is None:
            continue
        night = max(first + dt.timedelta(days=1), today)
        while night <= w.last_deadline + dt.timedelta(days=1):
            if (w.address.lower(), night.isoformat()) not in done and (
                program.sending.reports_on(night)
            ):
                days[night][Kind.REPORT.value] += 1
            night += dt.timedelta(days=1)


def _outbox(
    conn: Any, program_id: int, wave: str | None
) -> tuple[dict[int, set[str]], list[tuple[dt.datetime, str, str | None]]]:
    q = (
        select(
            messages.c.person_id,
            messages.c.kind,
            messages.c.step,
            messages.c.state,
            messages.c.due_at,
            people.c.timezone,
        )
        .outerjoin(people, people.c.id == messages.c.person_id)
        .where(messages.c.program_id == program_id)
    )
    if wave is not None:
        q = q.where(messages.c.wave_key == wave)
    steps: dict[int, set[str]] = {}
    pending: list[tuple[dt.datetime, str, str | None]] = []
    for pid, kind, step, state, due, tz in conn.execute(q):
        if pid is not None:
            steps.setdefault(pid, set()).add("launch" if kind == Kind.LAUNCH.value else step)
        if state in [s.value for s in PENDING]:
            pending.append((due, kind, tz))
    return steps, pending


def _future(
    program: Program,
    launched: dt.datetime | None,
    person: PersonState,
    now: dt.datetime,
    scheduled: dt.datetime | None = None,
) -> list[Planned]:
    """What the scheduler will queue for this person from now on, if nothing changes. A wave
    not launched launches when scheduled (`launch --at`), else assumed at the start of working
    hours on its opening day; each person's email then goes at the next opening in their own
    zone."""
    tz = policy.person_zone(program, person.timezone)
    if launched is None:
        wave = program.wave(person.wave_key)
        start = scheduled or dt.datetime.combine(
            wave.opens, program.sending.working_hours.start, program.tz
        )
        if scheduled is None and launch_window(program, wave, max(start, now))[0] == "over":
            return []  # `launch` refuses a wave whose window has closed: nothing will go
        launch = next_sending_instant(max(start, now), program.sending, program.tz)
        launched = next_sending_instant(launch, program.sending, tz)
        assumed = PersonState(**{**person.__dict__, "launch_queued": True, "launch_sent_at": None})
        first = policy.first_message(program, person.standing)
        if first is Kind.LAUNCH:
            return [
                Planned(launched, Kind.LAUNCH.value, "0"),
                *(p for p in timeline(program, assumed, launched) if p.due_at > launched),
            ]
        if first is Kind.INVITATION:
            return [Planned(launched, Kind.INVITATION.value, "invitation")]
        return []
    decision = decide(program, launched, person, max(now, launched))
    out = list(decision.queue)
    launch_at = person.launch_sent_at
    if launch_at is None:
        queued = [p.due_at for p in out if p.kind == Kind.LAUNCH.value]
        if queued or person.launch_queued:  # goes out on the next pass in working hours
            launch_at = queued[0] if queued else next_sending_instant(now, program.sending, tz)
    if launch_at is not None and policy.owes_training(person.standing):
        queued_steps = person.steps_queued | {p.step for p in out}
        out += [
            p
            for p in timeline(program, person, launch_at)
            if p.due_at > now and p.step not in queued_steps
        ]
    return out


def _local_day(program: Program, at: dt.datetime) -> dt.date:
    return at.astimezone(program.tz).date()


def _render(
    stored: StoredProgram,
    now: dt.datetime,
    wave: str | None,
    days: dict[dt.date, Counter[str]],
    zones: dict[dt.date, Counter[str]],
) -> dict[str, Any]:
    totals: Counter[str] = Counter()
    for counts in days.values():
        totals.update(counts)
    return {
        "program": stored.key,
        "wave": wave,
        "now": now.isoformat(),
        "timezone": stored.program.program.timezone,
        "days": [
            {
                "date": day.isoformat(),
                **{k: days[day].get(k, 0) for k in KINDS if days[day].get(k)},
                "zones": dict(sorted(zones[day].items())),
            }
            for day in sorted(days)
        ],
        "totals": {k: totals[k] for k in KINDS if totals.get(k)},
    }
