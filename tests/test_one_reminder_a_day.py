"""At most one reminder per person per local day, whatever the times of the passes (issue 13,
defect 1): in the decision, and again when sending."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, update

from pshnotify.clock import FixedClock
from pshnotify.domain import policy
from pshnotify.domain.cadence import PersonState, decide
from pshnotify.domain.delivery import Kind, idempotency_key
from pshnotify.runtime.wiring import Runtime
from pshnotify.store import outbox
from pshnotify.store.schema import messages, people
from tests.smtp_server import SmtpServer
from tests.test_cadence import local
from tests.test_launch_and_send import launch, send, setup_pilot
from tests.test_program import SEED

LAUNCHED = local(2023, 9, 11, 9, 0)
BEFORE_3 = "before:3:2023-10-06"  # Tuesday 2023-10-03 09:00
BEFORE_1 = "before:1:2023-10-06"  # Thursday 2023-10-05 09:00


def _person(queued: set[str], reminder_days: set[dt.date] = frozenset()) -> PersonState:  # type: ignore[assignment]
    return PersonState(
        wave_key="pilot",
        status="required",
        launch_queued=True,
        launch_sent_at=LAUNCHED,
        steps_queued=frozenset(queued),
        reminder_days=frozenset(reminder_days),
    )


@pytest.mark.fast
def test_a_catch_up_at_0830_on_a_step_day_queues_one_reminder() -> None:
    # Down from Monday 10-02 to Wednesday 10-04, around the 3-days-before step; the first
    # pass after it runs at 08:30 on the day of the 1-day-before step.
    done = {"after:7", "after:14"}
    decision = decide(SEED, LAUNCHED, _person(done), local(2023, 10, 5, 8, 30))
    assert [(p.step, p.due_at) for p in decision.queue] == [(BEFORE_1, local(2023, 10, 5))]
    assert [(p.step, why) for p, why in decision.skip] == [(BEFORE_3, policy.SUPERSEDED)]
    # and the 09:00 pass finds nothing more for that day
    after = _person(done | {BEFORE_1, BEFORE_3}, {dt.date(2023, 10, 5)})
    assert decide(SEED, LAUNCHED, after, local(2023, 10, 5, 9, 0)).queue == []


@pytest.mark.fast
def test_a_step_for_a_day_that_has_its_reminder_is_skipped_with_the_reason() -> None:
    # The catch-up reminder went at 09:00 (queued by an earlier pass); the 1-day step then
    # comes due the same day: skipped, saying why.
    person = _person({"after:7", "after:14", BEFORE_3}, {dt.date(2023, 10, 5)})
    decision = decide(SEED, LAUNCHED, person, local(2023, 10, 5, 9, 0))
    assert decision.queue == []
    assert [(p.step, why) for p, why in decision.skip] == [(BEFORE_1, policy.ONE_A_DAY)]


def test_the_sender_skips_a_second_reminder_on_a_day_that_had_one(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    assert launch(runtime) == 3
    assert send(runtime) == {"sent": 3}
    stored = runtime.program(None)
    clock.set(local(2023, 10, 5, 9, 0))
    with runtime.engine.begin() as conn:
        ada = conn.execute(select(people).where(people.c.external_id == "H1")).one()
        rows = [
            {
                "program_id": stored.id,
                "person_id": ada.id,
                "kind": Kind.REMINDER.value,
                "wave_key": "pilot",
                "step": step,
                "idempotency_key": idempotency_key(stored.key, "pilot", "H1", "reminder", step),
                "message_id": outbox.new_message_id("test.invalid"),
                "recipient_email": ada.email,
                "recipient_name": ada.name,
                "context": {"step": step},
                "due_at": local(2023, 10, 5, 9, 0),
            }
            for step in (BEFORE_3, BEFORE_1)
        ]
        assert outbox.queue(conn, rows, clock.now()) == 2
        # the first went out at 09:00 (an earlier pass); the second is claimed at 09:05
        conn.execute(
            update(messages)
            .where(messages.c.step == BEFORE_3)
            .values(state="sent", sent_at=local(2023, 10, 5, 9, 0))
        )
    clock.set(local(2023, 10, 5, 9, 5))
    assert send(runtime) == {"skipped": 1}
    with runtime.engine.connect() as conn:
        reason = conn.scalar(select(messages.c.reason).where(messages.c.step == BEFORE_1))
    assert reason == policy.ONE_A_DAY
    assert len(smtp.received) == 3  # the launch emails only
