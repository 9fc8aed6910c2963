"""A person's standing is written once (issue 25): the SQL of `store.standing` and the pure
policy agree person by person, for a roster of every combination of the facts, on SQLite and
PostgreSQL; and the places that used to build a `Standing` of their own now say what the
sender does ("address undeliverable"), and count a removed person nowhere."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select, update

from pshnotify.clock import FixedClock
from pshnotify.domain import policy
from pshnotify.domain.bounces import BounceClass
from pshnotify.domain.delivery import Kind, State
from pshnotify.domain.vocabulary import PersonWord
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.bounces.marks import record_event
from pshnotify.services.campaign.launch import preview_launch
from pshnotify.services.campaign.programs import select_program
from pshnotify.services.reporting import lookup, plan, preview, progress
from pshnotify.services.reporting.status import program_status
from pshnotify.store import outbox, standing
from pshnotify.store.db import make_engine
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people, undeliverable
from tests.conftest import NY, PROGRAM_FILE
from tests.test_launch_and_send import launch, send, setup_pilot

UTC = dt.UTC
START = dt.datetime(2023, 9, 1, 12, 0, tzinfo=UTC)

# Every combination of the facts a standing is made of. "gone": a wave no longer in the
# program file (no deadline unless extended). Extensions before and after the pilot's close.
STATUSES = (policy.REQUIRED, policy.ENCOURAGED, policy.EXEMPT)
FLAGS = (False, True)
MARKS = ("none", "marked", "cleared")  # cleared: a mark an operator or a new address lifted
EXTENSIONS = (None, dt.date(2023, 10, 3), dt.date(2023, 10, 20))
WAVES = ("pilot", "grad", "gone")
COMBINATIONS = list(itertools.product(STATUSES, FLAGS, FLAGS, FLAGS, MARKS, EXTENSIONS, WAVES))

# Instants either side of the deadlines' midnights in New York (EDT, then EST in December).
NOWS = [
    dt.datetime(2023, 10, 3, 23, 59, 59, tzinfo=NY),
    dt.datetime(2023, 10, 4, 0, 0, tzinfo=NY),
    dt.datetime(2023, 10, 6, 23, 59, 59, tzinfo=NY),
    dt.datetime(2023, 10, 7, 0, 0, tzinfo=NY),
    dt.datetime(2023, 10, 21, 3, 59, 59, tzinfo=UTC),  # 23:59:59 on the 20th in New York
    dt.datetime(2023, 10, 21, 4, 0, tzinfo=UTC),
    dt.datetime(2023, 12, 2, 4, 59, 59, tzinfo=UTC),  # EST: 23:59:59 on 1 December
    dt.datetime(2023, 12, 2, 5, 0, tzinfo=UTC),
]


def expected(combo: tuple[Any, ...], zone: str | None) -> policy.Standing:
    status, removed, exempted, completed, mark, extended, wave = combo
    return policy.Standing(
        status=status,
        removed=removed,
        exempted_reason="approved alternative" if exempted else None,
        completed=completed,
        wave_key=wave,
        extended_until=extended,
        undeliverable=mark == "marked",
        timezone=zone,
    )


def build_roster(engine: Engine, stored: StoredProgram) -> dict[str, policy.Standing]:
    """One person per combination, written as the importers and commands write them."""
    truth: dict[str, policy.Standing] = {}
    person_rows, enrollment_rows, marks = [], [], []
    for i, combo in enumerate(COMBINATIONS, start=1):
        ext_id = f"S{i:04d}"
        zone = ("Asia/Singapore", None, "America/Los_Angeles")[i % 3]
        truth[ext_id] = expected(combo, zone)
        status, removed, exempted, completed, mark, extended, wave = combo
        email = f"s{i}@example.edu"
        person_rows.append(
            {
                "id": i,
                "external_id": ext_id,
                "email": email,
                "email_key": email,
                "name": f"Person {i}",
                "department": ("Human Resources", "School of Science")[i % 2],
                "role": "staff",
                "paid": True,
                "timezone": zone,
                "extra": {},
                "created_at": START,
                "updated_at": START,
            }
        )
        enrollment_rows.append(
            {
                "program_id": stored.id,
                "person_id": i,
                "wave_key": wave,
                "status": status,
                "reason": "rule",
                "extended_until": extended,
                "exempted_reason": "approved alternative" if exempted else None,
                "completed_at": START if completed else None,
                "removed_at": START if removed else None,
                "created_at": START,
                "updated_at": START,
            }
        )
        if mark != "none":
            marks.append(
                {
                    "person_id": i,
                    "email_key": email,
                    "since": START,
                    "reason": "550 5.1.1 no such user",
                    "cleared_at": START if mark == "cleared" else None,
                    "cleared_by": "op" if mark == "cleared" else None,
                }
            )
    with engine.begin() as conn:
        conn.execute(people.insert(), person_rows)
        conn.execute(enrollments.insert(), enrollment_rows)
        conn.execute(undeliverable.insert(), marks)
    return truth


def ids_where(engine: Engine, stored: StoredProgram, *conds: Any) -> set[str]:
    q = (
        select(people.c.external_id)
        .select_from(standing.joined())
        .where(enrollments.c.program_id == stored.id, *conds)
    )
    with engine.connect() as conn:
        return set(conn.scalars(q))


def test_the_sql_and_the_policy_agree_for_every_combination_of_the_facts(
    db_url: str, tmp_path: Path
) -> None:
    engine = make_engine(db_url)
    try:
        stored = select_program(engine, PROGRAM_FILE, None, FixedClock(START), "test")
        truth = build_roster(engine, stored)
        program = stored.program
        assert len(truth) == 3 * 2 * 2 * 2 * 3 * 3 * 3

        # One row, one Standing: every field as the roster and the commands wrote it.
        q = (
            select(
                people.c.external_id,
                enrollments.c.launch_sent_at,
                standing.deadline(program).label("deadline"),
                *standing.COLUMNS,
            )
            .select_from(standing.joined())
            .where(enrollments.c.program_id == stored.id)
        )
        with engine.connect() as conn:
            rows = {r.external_id: r for r in conn.execute(q)}
            grouped = select(people.c.external_id, *standing.STATE_FACTS).select_from(
                standing.joined()
            )
            facts = {r.external_id: r for r in conn.execute(grouped)}
        assert set(rows) == set(truth)
        for ext_id, person in truth.items():
            row = rows[ext_id]
            assert standing.to_standing(row) == person, ext_id
            assert row.deadline == policy.deadline(program, person), ext_id
            # The cadence's view (scheduler, plan, escalation) judges by the same facts.
            state = standing.person_state(row).standing
            # and `plan`'s groups read them alike.
            steps = frozenset({"launch", "after:7"})
            assert standing.group_state(
                facts[ext_id], steps=steps, launch_sent_at=row.launch_sent_at
            ) == standing.person_state(row, steps=steps), ext_id
            assert policy.owes_training(state) == policy.owes_training(person), ext_id
            assert policy.asks(state) == policy.asks(person), ext_id
            assert state.undeliverable == person.undeliverable, ext_id

        def where(test: Any) -> set[str]:
            return {ext_id for ext_id, person in truth.items() if test(person)}

        assert ids_where(engine, stored, standing.owes()) == where(policy.owes_training)
        assert ids_where(engine, stored, standing.asked()) == where(policy.asks)
        assert ids_where(engine, stored, standing.present()) == where(lambda p: not p.removed)
        assert ids_where(engine, stored, standing.marked()) == where(lambda p: p.undeliverable)
        assert where(policy.owes_training)  # not vacuous
        assert where(policy.asks) != where(policy.owes_training)  # the encouraged

        # ASKED (what the SQL is generated from) says what the policy's reasons say: before
        # any deadline, an invitation is skipped only for a reason of `_not_asked`.
        early = dt.datetime(2023, 9, 5, 12, tzinfo=UTC)
        for person in truth.values():
            reachable = dataclasses.replace(person, undeliverable=False)
            why = policy.skip_reason(program, Kind.INVITATION, reachable, early)
            assert policy.asks(person) == (why is None), person

        seen: list[set[str]] = []
        for now in NOWS:
            passed = where(lambda p, now=now: policy.deadline_passed(program, p, now))
            seen.append(passed)
            assert ids_where(engine, stored, standing.deadline_passed(program, now)) == passed
            ahead = ids_where(engine, stored, standing.deadline_ahead(program, now))
            assert ahead == set(truth) - passed, now
        # Each pair of instants is a second either side of some deadline's midnight.
        assert all(seen[i] < seen[i + 1] for i in range(0, len(seen), 2))

        # The two counts of marked people, each named for whom it counts.
        with engine.connect() as conn:
            marked = standing.marked_by_wave(conn, stored.id)
            owing_marked = standing.owing_marked_by_wave(conn, stored.id)

        def per_wave(test: Any) -> dict[str, int]:
            out: dict[str, int] = {}
            for person in truth.values():
                if test(person) and person.wave_key:
                    out[person.wave_key] = out.get(person.wave_key, 0) + 1
            return out

        assert marked == per_wave(lambda p: p.undeliverable and not p.removed)
        assert owing_marked == per_wave(lambda p: p.undeliverable and policy.owes_training(p))
        assert owing_marked != marked

        # And the services that count by them: status, the console's bar, the launch preview.
        status = program_status(engine, stored, NOWS[0], delivery=False)
        for wave in ("pilot", "grad"):
            assert status["waves"][wave]["people"]["undeliverable"] == marked[wave]
        assert progress.owing_marked_by_wave(engine, stored) == owing_marked
        for wave in ("pilot", "grad"):
            summary = preview_launch(engine, stored, wave, FixedClock(START))
            assert summary.to_queue == len(
                where(lambda p, w=wave: p.wave_key == w and policy.owes_training(p))
            )
    finally:
        engine.dispose()


def test_reminder_days_are_counted_one_way_at_queue_and_at_send_time() -> None:
    tz = NY
    day = dt.datetime(2023, 9, 18, 13, 0, tzinfo=UTC)  # 09:00 in New York
    reminders = [
        (10, State.SENT.value, day, day + dt.timedelta(hours=12)),  # sent at 21:00 EDT: the 18th
        (11, State.QUEUED.value, day + dt.timedelta(days=1), None),
        (12, State.FAILED.value, day + dt.timedelta(days=2), None),  # gone nowhere
        (13, State.RETRY.value, day + dt.timedelta(days=3), None),
    ]
    d = dt.date
    # The scheduler queues after every one of them: all those going or gone count.
    assert standing.reminder_days(reminders, tz) == {
        d(2023, 9, 18),
        d(2023, 9, 19),
        d(2023, 9, 21),
    }
    # The sender, about to send message 12: the later-queued 13 does not count against it.
    assert standing.reminder_days(reminders, tz, before=12) == {d(2023, 9, 18), d(2023, 9, 19)}
    # Counted in the person's own zone: 21:00 in New York is the next morning in Singapore.
    singapore = ZoneInfo("Asia/Singapore")
    assert standing.reminder_days(reminders[:1], singapore) == {d(2023, 9, 19)}


def _mark_bounced(runtime: Runtime, external_id: str) -> None:
    """A hard bounce of the person's launch email, through the relay's bounce webhook."""
    with runtime.engine.connect() as conn:
        mid, to = conn.execute(
            select(messages.c.message_id, messages.c.recipient_email)
            .join(people, people.c.id == messages.c.person_id)
            .where(people.c.external_id == external_id, messages.c.kind == Kind.LAUNCH.value)
        ).one()
    result = record_event(
        runtime.engine,
        runtime.clock,
        receipt=f"r-{external_id}",
        message_id=mid,
        recipient=to,
        cls=BounceClass.HARD,
        status="5.1.1",
        diagnostic="550 5.1.1 no such user",
    )
    assert result is not None


def test_preview_and_the_console_say_undeliverable_where_the_sender_skips(
    runtime: Runtime, clock: FixedClock, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    launch(runtime)
    assert send(runtime)["sent"] >= 3
    _mark_bounced(runtime, "H1")
    stored = runtime.program(None)
    engine = runtime.engine
    clock.advance(dt.timedelta(days=7))
    now = clock.now()

    # What `pshnotify preview reminder --person H1` says, and what the console shows.
    why = preview.would_not_get(engine, stored, clock, kind="reminder", person_ref="H1")
    assert why == policy.UNDELIVERABLE
    said = f"{PersonWord.EMAILED.words}: {policy.UNDELIVERABLE}"
    assert lookup.person_view(engine, stored, "H1", now).standing == said
    found = lookup.find_people(engine, stored, now, query="H1").rows
    assert [r["standing"] for r in found] == [said]
    assert lookup.person_view(engine, stored, "H2", now).standing == PersonWord.EMAILED.words
    assert preview.would_not_get(engine, stored, clock, kind="reminder", person_ref="H2") is None

    # And the sender skips a reminder to H1 for that reason, while H2's goes.
    with engine.begin() as conn:
        rows = conn.execute(
            select(people.c.id, people.c.external_id, people.c.email, people.c.name).where(
                people.c.external_id.in_(["H1", "H2"])
            )
        ).all()
        outbox.queue(
            conn,
            [
                {
                    "program_id": stored.id,
                    "person_id": r.id,
                    "kind": Kind.REMINDER.value,
                    "wave_key": "pilot",
                    "step": "after:7",
                    "idempotency_key": f"test:{r.external_id}:reminder",
                    "message_id": outbox.new_message_id("test.pshnotify.invalid"),
                    "recipient_email": r.email,
                    "recipient_name": r.name,
                    "context": {"step": "after:7"},
                    "due_at": now,
                }
                for r in rows
            ],
            now,
        )
    asyncio.run(runtime.dispatcher().run_once())
    with engine.connect() as conn:
        outcome = dict(
            conn.execute(
                select(people.c.external_id, messages.c.reason)
                .join(people, people.c.id == messages.c.person_id)
                .where(messages.c.kind == Kind.REMINDER.value)
            ).all()
        )
        states = dict(
            conn.execute(
                select(people.c.external_id, messages.c.state)
                .join(people, people.c.id == messages.c.person_id)
                .where(messages.c.kind == Kind.REMINDER.value)
            ).all()
        )
    assert outcome["H1"] == policy.UNDELIVERABLE
    assert states == {"H1": State.SKIPPED.value, "H2": State.SENT.value}


def test_the_plan_counts_nothing_for_a_removed_or_undeliverable_person(
    runtime: Runtime, clock: FixedClock, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    launch(runtime)
    send(runtime)
    stored = runtime.program(None)
    engine = runtime.engine
    now = clock.now()

    def planned(external_id: str) -> list[Any]:
        with engine.connect() as conn:
            pid = conn.scalar(select(people.c.id).where(people.c.external_id == external_id))
            assert pid is not None
            return plan.person_plan(conn, stored, pid, now)

    def reminders() -> int:
        return int(plan.build_plan(engine, stored, clock)["totals"].get("reminder", 0))

    assert planned("H1")
    assert planned("H2")
    everyone = reminders()
    per_person = len([p for p in planned("H2") if p.kind == Kind.REMINDER.value])
    assert per_person > 0

    # Removed by a roster import (the flag as the import sets it): nothing planned for them.
    removed_at = now
    pid = select(people.c.id).where(people.c.external_id == "H2").scalar_subquery()
    with engine.begin() as conn:
        conn.execute(
            update(enrollments).where(enrollments.c.person_id == pid).values(removed_at=removed_at)
        )
    assert planned("H2") == []
    assert reminders() == everyone - per_person

    # Undeliverable: the cadence skips what would come due for them, and the plan says so.
    _mark_bounced(runtime, "H1")
    clock.advance(dt.timedelta(days=10))
    later = clock.now()

    def due_now(external_id: str) -> list[Any]:
        with engine.connect() as conn:
            pid = conn.scalar(select(people.c.id).where(people.c.external_id == external_id))
            assert pid is not None
            return [p for p in plan.person_plan(conn, stored, pid, later) if p.due_at <= later]

    assert due_now("H3")  # a reminder is due for everyone else who owes it
    assert due_now("H1") == []
