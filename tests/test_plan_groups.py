"""`plan` asks the cadence once per group of people who share a future (issue 29): for a
varied roster (every combination of the facts of a standing, three zones, launch emails sent
on and either side of the instants the cadence compares them to, steps already in the outbox,
paused reminders, a launched, a scheduled and an unlaunched wave), the plan counted by groups
is the plan counted person by person, on SQLite and PostgreSQL, at instants across the season,
for the whole program and for one wave; with the shipped cadence, with one that has no quiet
days and sends overdue notices, and with working hours that start on a second."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from pshnotify.clock import FixedClock
from pshnotify.domain.delivery import Kind, State
from pshnotify.services.campaign.programs import select_program
from pshnotify.services.reporting import plan
from pshnotify.store import programs as program_repo
from pshnotify.store import standing
from pshnotify.store.db import make_engine
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people, requests
from tests.conftest import NY, PROGRAM_FILE
from tests.test_standing import START, build_roster

UTC = dt.UTC

# Launch emails' instants: on the minute, a microsecond either side, within a minute; the
# local midnights that start a launch's day (New York, Singapore); the start of working hours
# three days before the pilot's "before:3" reminder (the quiet days' edge: Saturday 30
# September, 09:00 in New York and in Los Angeles); on a reminder's own instant.
MICRO = dt.timedelta(microseconds=1)
EDGES = [
    dt.datetime(2023, 9, 11, 13, 0, tzinfo=UTC),
    dt.datetime(2023, 9, 12, 4, 0, tzinfo=UTC),  # midnight in New York
    dt.datetime(2023, 9, 11, 16, 0, tzinfo=UTC),  # midnight in Singapore
    dt.datetime(2023, 9, 30, 13, 0, tzinfo=UTC),  # 09:00 in New York, 3 days before before:3
    dt.datetime(2023, 9, 30, 16, 0, tzinfo=UTC),  # 09:00 in Los Angeles, likewise
    dt.datetime(2023, 10, 3, 13, 0, tzinfo=UTC),  # before:3 itself, in New York
]
LAUNCHES: list[dt.datetime | None] = [None]
for edge in EDGES:
    LAUNCHES += [edge - MICRO, edge, edge + MICRO, edge + dt.timedelta(seconds=41, microseconds=5)]

NOWS = [
    dt.datetime(2023, 9, 11, 8, 0, tzinfo=NY),  # before the launch
    dt.datetime(2023, 9, 14, 10, 0, tzinfo=NY),
    dt.datetime(2023, 9, 29, 12, 0, tzinfo=NY),
    dt.datetime(2023, 10, 3, 9, 30, tzinfo=NY),
    dt.datetime(2023, 10, 30, 10, 0, tzinfo=NY),  # the grad wave's scheduled launch has passed
]


def _program_file(tmp_path: Path, variant: str) -> Path:
    text = PROGRAM_FILE.read_text(encoding="utf-8")
    if variant == "no quiet days, overdue notices":
        text = re.sub(r"quiet_days_after_launch = \d+", "quiet_days_after_launch = 0", text)
        text = re.sub(r"overdue_after_days = \[\]", "overdue_after_days = [1, 8]", text)
        text = re.sub(r"max_per_day = \d+", "max_per_day = 2", text)
    elif variant == "hours start on a second":
        text = text.replace('start = "09:00"', 'start = "09:00:30"')
    path = tmp_path / "program.toml"
    path.write_text(text, encoding="utf-8")
    return path


ZONES = ("America/New_York", "Asia/Singapore", "America/Los_Angeles")


def _more_people(engine: Engine, stored: StoredProgram) -> None:
    """Beside the roster of every combination (where nine people of the pilot owe the
    training): people of the pilot who owe it, one per launch instant, zone and deadline."""
    person_rows, enrollment_rows = [], []
    deadlines = (None, dt.date(2023, 10, 20))
    for i, _ in enumerate(itertools.product(LAUNCHES, ZONES, deadlines), start=5001):
        person_rows.append(
            {
                "id": i,
                "external_id": f"P{i}",
                "email": f"p{i}@example.edu",
                "email_key": f"p{i}@example.edu",
                "name": f"Person {i}",
                "department": "Human Resources",
                "role": "staff",
                "paid": True,
                "timezone": ZONES[i % 3] if i % 4 else None,
                "extra": {},
                "created_at": START,
                "updated_at": START,
            }
        )
        enrollment_rows.append(
            {
                "program_id": stored.id,
                "person_id": i,
                "wave_key": "pilot",
                "status": "required",
                "reason": "rule",
                "extended_until": deadlines[(i // 3) % 2],
                "created_at": START,
                "updated_at": START,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(people), person_rows)
        conn.execute(insert(enrollments), enrollment_rows)


def _season(engine: Engine, stored: StoredProgram) -> None:
    """The roster, then a season's traces: waves launched and scheduled, launch emails sent
    at the instants above, steps queued and sent, pending requests."""
    build_roster(engine, stored)
    _more_people(engine, stored)
    with engine.begin() as conn:
        # A wave no longer in the program file stops the plan (a KeyError): those are vpr's,
        # a wave neither launched nor scheduled.
        conn.execute(
            enrollments.update().where(enrollments.c.wave_key == "gone").values(wave_key="vpr")
        )
        program_repo.mark_launched(conn, stored.id, "pilot", EDGES[0] - MICRO, "op")
        grad_at = dt.datetime(2023, 10, 26, 14, 0, tzinfo=UTC)
        assert program_repo.schedule_launch(conn, stored.id, "grad", grad_at, "op")
        rows = conn.execute(
            select(
                people.c.id,
                people.c.external_id,
                people.c.email,
                enrollments.c.wave_key,
                standing.owes().label("owes"),
            )
            .join(enrollments, enrollments.c.person_id == people.c.id)
            .order_by(people.c.id)
        ).all()
        outbox: list[dict[str, Any]] = []

        def message(r: Any, kind: Kind, step: str, state: State, due: dt.datetime) -> None:
            outbox.append(
                {
                    "program_id": stored.id,
                    "person_id": r.id,
                    "kind": kind.value,
                    "wave_key": r.wave_key,
                    "step": step,
                    "idempotency_key": f"{r.external_id}:{kind.value}:{step}",
                    "message_id": f"<{r.external_id}.{kind.value}.{step}@test.invalid>",
                    "recipient_email": r.email,
                    "recipient_name": r.external_id,
                    "context": {},
                    "state": state.value,
                    "due_at": due,
                    "created_at": START,
                    "updated_at": START,
                }
            )

        pilot = [r for r in rows if r.wave_key == "pilot"]
        for i, r in enumerate(pilot):
            sent = LAUNCHES[i % len(LAUNCHES)]
            if sent is None:
                if i % 2:  # launched, the email still waiting (or not queued at all)
                    message(r, Kind.LAUNCH, "0", State.QUEUED, EDGES[0])
                continue
            conn.execute(
                enrollments.update()
                .where(enrollments.c.person_id == r.id)
                .values(launch_sent_at=sent)
            )
            message(r, Kind.LAUNCH, "0", State.SENT, EDGES[0])
            if i % 4 == 1:
                message(r, Kind.REMINDER, "after:7", State.SENT, sent + dt.timedelta(days=7))
            if i % 5 == 2:
                due = dt.datetime(2023, 10, 3, 13, 0, tzinfo=UTC)
                message(r, Kind.REMINDER, "before:3:2023-10-06", State.QUEUED, due)
            if i % 7 == 3:
                message(r, Kind.CONFIRMATION, "0", State.RETRY, EDGES[3])
        outbox.append(
            {
                **outbox[0],
                "person_id": None,
                "kind": Kind.REPORT.value,
                "step": "2023-09-12",
                "idempotency_key": "report:2023-09-12",
                "message_id": "<report@test.invalid>",
                "state": State.QUEUED.value,
            }
        )
        conn.execute(insert(messages), outbox)
        # Requests that pause the reminders of some who owe the training, filed at times
        # that hold some of their reminders at some of the instants below.
        filed = [NOWS[1] - dt.timedelta(days=1), NOWS[2] - dt.timedelta(hours=5), NOWS[3]]
        owing = [r for r in pilot if r.owes]
        conn.execute(
            insert(requests),
            [
                {
                    "program_id": stored.id,
                    "person_id": r.id,
                    "kind": "more_time",
                    "state": "pending",
                    "payload": {},
                    "created_at": filed[i % len(filed)],
                }
                for i, r in enumerate(owing[::5])
            ],
        )


@pytest.mark.parametrize(
    "variant", ["shipped", "no quiet days, overdue notices", "hours start on a second"]
)
def test_the_plan_by_groups_is_the_plan_person_by_person(
    db_url: str, tmp_path: Path, variant: str
) -> None:
    engine = make_engine(db_url)
    try:
        program_file = _program_file(tmp_path, variant)
        stored = select_program(engine, program_file, None, FixedClock(START), "test")
        _season(engine, stored)
        held_seen = 0
        for now in NOWS:
            clock = FixedClock(now)
            for wave in (None, "pilot", "grad"):
                grouped = plan.build_plan(engine, stored, clock, wave)
                one_by_one = plan.build_plan(engine, stored, clock, wave, by_person=True)
                for data in (grouped, one_by_one):
                    data["paused"].sort(key=lambda h: h["person"])
                assert grouped == one_by_one, (variant, now, wave)
                held_seen += len(grouped["paused"])
        assert held_seen  # the pauses were planned
        # Not vacuous: reminders are planned, in several zones, and the groups are fewer than
        # the people.
        data = plan.build_plan(engine, stored, FixedClock(NOWS[1]))
        assert data["totals"].get("reminder", 0) > 100
        assert len({z for day in data["days"] for z in day["zones"]}) == 3
        with engine.connect() as conn:
            groups = plan._groups(conn, stored, None, None)
        assert len(groups) < sum(n for *_, n in groups)
    finally:
        engine.dispose()
