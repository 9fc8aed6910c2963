"""The plan: what will go out, per day and kind, from what is known now.

Days are the program's local dates (what an operator reads); each day also counts its
messages per recipient zone, since a person's 09:00 is in their own zone (Singapore's
Tuesday 09:00 is Monday evening in Boston, and is counted on Monday).

It asks `domain.cadence` the same questions the scheduler's pass does (`decide` for what is
due now, `timeline` for what comes later), so the plan and the sending cannot disagree. An
unlaunched wave is assumed to launch at the start of working hours on its opening day (or
now, if that has passed); completions not yet known are not guessed.

People who share the facts the cadence decides by (`store.standing.STATE_FACTS`: wave,
standing, deadline, zone, mark), their steps in the outbox and their launch email's minute
share a future: the database counts them in groups, and the cadence is asked once a group
(100,000 people in one wave make a few groups, not 100,000 timelines). The people a pending
request pauses are planned one by one, as each has a pause of their own.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, case, func, literal, select, true

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
from pshnotify.store.db import is_postgresql
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people
from pshnotify.store.sql import SET_SEPARATOR, minute_of, string_set

KINDS = tuple(k.value for k in Kind)


def build_plan(
    engine: Engine,
    stored: StoredProgram,
    clock: Clock,
    wave: str | None = None,
    *,
    by_person: bool = False,
) -> dict[str, Any]:
    """The plan. `by_person`: ask the cadence once per person rather than once per group of
    people who share a future (the same answer, slower: the reference the groups are held to
    in tests/test_plan_groups.py)."""
    program, now = stored.program, clock.now()
    if wave is not None:
        program.wave(wave)  # KeyError for an unknown wave, turned into a clear error by the CLI
    with engine.connect() as conn:
        waves = program_repo.wave_states(conn, stored.id)
        pending = _pending(conn, stored.id, wave)
        pausing = requests_repo.pausing_requests(conn, program, stored.id, now)
        # Those a request pauses are planned one by one, everyone else in groups.
        paused_ids = requests_repo.pausing_ids(program, stored.id, now) if pausing else None
        groups = [] if by_person else _groups(conn, stored, wave, paused_ids)
        rows: Sequence[Any] = []
        steps: dict[int, set[str]] = {}
        if by_person or paused_ids is not None:
            q = _enrolled().where(enrollments.c.program_id == stored.id, standing.present())
            if wave is not None:
                q = q.where(enrollments.c.wave_key == wave)
            among = None if by_person else paused_ids
            if among is not None:
                q = q.where(enrollments.c.person_id.in_(among))
            rows = conn.execute(q).all()
            steps = _steps(conn, stored.id, wave, among)
        days: dict[dt.date, Counter[str]] = defaultdict(Counter)
        zones: dict[dt.date, Counter[str]] = defaultdict(Counter)
        if wave is None:  # reports cover officers' people in every wave
            _plan_reports(conn, stored, now, _reported(conn, stored.id), days)
            for day, n in planned_digests(conn, stored, now).items():  # escalations, likewise
                days[day][Kind.ESCALATION.value] += n
    home = program.program.timezone
    for day, counts in days.items():  # the officers' reports: in the program's zone
        zones[day][home] += sum(counts.values())
    for due, kind, tz, n in pending:
        day = _local_day(program, max(due, now))
        days[day][kind] += n
        zones[day][tz or home] += n
    futures: dict[PersonState, list[tuple[dt.date, str]]] = {}
    for g, group_steps, launch, n in groups:
        state = standing.group_state(g, steps=group_steps, launch_sent_at=launch)
        if (counted := futures.get(state)) is None:
            wave_state = waves.get(g.wave_key)
            launched = wave_state.launched_at if wave_state else None
            scheduled = wave_state.launch_at if wave_state else None
            planned = _future(program, launched, state, now, scheduled)
            counted = futures[state] = [(_local_day(program, p.due_at), p.kind) for p in planned]
        for day, kind in counted:
            days[day][kind] += n
            zones[day][g.timezone or home] += n
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


# A message's step as the cadence knows it: "launch" for the launch email.
_STEP = case((messages.c.kind == Kind.LAUNCH.value, literal("launch")), else_=messages.c.step)


def _outbox_of(program_id: int, wave: str | None) -> list[Any]:
    """The messages the plan reads: the program's (that wave's, with --wave)."""
    where = [messages.c.program_id == program_id]
    return where if wave is None else [*where, messages.c.wave_key == wave]


def _pending(
    conn: Connection, program_id: int, wave: str | None
) -> list[tuple[dt.datetime, str, str | None, int]]:
    """(due, kind, recipient's zone, how many) of the messages waiting to go."""
    q = (
        select(messages.c.due_at, messages.c.kind, people.c.timezone, func.count())
        .outerjoin(people, people.c.id == messages.c.person_id)
        .where(*_outbox_of(program_id, wave), messages.c.state.in_([s.value for s in PENDING]))
        .group_by(messages.c.due_at, messages.c.kind, people.c.timezone)
    )
    return [(due, kind, tz, int(n)) for due, kind, tz, n in conn.execute(q)]


def _steps(
    conn: Connection, program_id: int, wave: str | None, among: Any | None
) -> dict[int, set[str]]:
    """Each person's steps in the outbox ("launch" for the launch email); `among`: only the
    people of this subquery of ids."""
    q = select(messages.c.person_id, _STEP).where(
        *_outbox_of(program_id, wave), messages.c.person_id.is_not(None)
    )
    if among is not None:
        q = q.where(messages.c.person_id.in_(among))
    steps: dict[int, set[str]] = {}
    for pid, step in conn.execute(q):
        steps.setdefault(pid, set()).add(step)
    return steps


def _groups(
    conn: Connection, stored: StoredProgram, wave: str | None, paused_ids: Any | None
) -> list[tuple[Any, frozenset[str], dt.datetime | None, int]]:
    """The people on the roster (but those of `paused_ids`), counted in groups that share a
    future: their `STATE_FACTS`, their steps in the outbox, and their launch email's minute.
    Each is (a row of the facts, the steps, an instant of that minute or None, how many).

    Why a minute: a launch email's instant counts in the cadence only as compared to the
    instants of its timeline (`cadence.timeline`): a step's due instant (the start of working
    hours on a day, in the person's zone), that instant less the quiet days, and the local
    midnight that starts the launch's day. All are whole minutes when working hours start on
    a whole minute (every zone's offset has been whole minutes since 1972). So all the
    launches of one minute after its first instant compare alike, and one of them (the
    minute and a microsecond) stands for them; a launch on the minute exactly stands for
    itself. Working hours that start on a second: launches are grouped by their instant."""
    pg = is_postgresql(conn)
    sig = (
        select(messages.c.person_id, string_set(_STEP, on_postgresql=pg).label("steps"))
        .where(*_outbox_of(stored.id, wave), messages.c.person_id.is_not(None))
        .group_by(messages.c.person_id)
        .subquery()
    )
    start = stored.program.sending.working_hours.start
    sent = enrollments.c.launch_sent_at
    if (start.second, start.microsecond) == (0, 0):
        minute, exact = minute_of(sent, on_postgresql=pg)
        bucket = [minute, exact]
    else:
        minute, exact = sent, true()
        bucket = [sent]
    facts = [c.element if hasattr(c, "element") else c for c in standing.STATE_FACTS]
    q = (
        select(
            *standing.STATE_FACTS,
            minute.label("minute"),
            exact.label("exact"),
            sig.c.steps,
            func.count().label("n"),
        )
        .select_from(standing.joined().outerjoin(sig, sig.c.person_id == enrollments.c.person_id))
        .where(enrollments.c.program_id == stored.id, standing.present())
        .group_by(*facts, *bucket, sig.c.steps)
    )
    if wave is not None:
        q = q.where(enrollments.c.wave_key == wave)
    if paused_ids is not None:
        q = q.where(enrollments.c.person_id.not_in(paused_ids))
    out = []
    for r in conn.execute(q):
        launch = r.minute
        if launch is not None and not r.exact:
            launch += dt.timedelta(microseconds=1)
        steps = frozenset(r.steps.split(SET_SEPARATOR)) if r.steps is not None else frozenset()
        out.append((r, steps, launch, int(r.n)))
    return out


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
