"""One policy decides what happens to a message (`domain.policy`), and every part asks it.

The pure rules on their own, then what a user sees: an officer's reports queued on nights the
sending was down are skipped with a reason, and only tonight's arrives.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from sqlalchemy import select

from pshnotify.clock import FixedClock
from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind, Outcome, State
from pshnotify.runtime.wiring import Runtime
from pshnotify.store.schema import messages
from tests.smtp_server import SmtpServer
from tests.test_program import SEED
from tests.test_reports import HR, IST, at, queue_at, reports_received, send, setup_campaign

NOW = at(2023, 9, 20, 10)


@pytest.mark.fast
def test_kind_groups_are_properties_of_the_kind() -> None:
    asking = {k for k in Kind if k.stops_on_completion}
    assert asking == {Kind.LAUNCH, Kind.INVITATION, Kind.REMINDER, Kind.OVERDUE, Kind.EXTENSION}
    assert sorted(Kind.asking()) == sorted(k.value for k in asking)
    assert {k for k in Kind if not k.held_to_working_hours} == {
        Kind.CONFIRMATION,
        Kind.REPORT,
        Kind.EXTENSION,  # answers the person's request for more time, like a confirmation
        Kind.ACKNOWLEDGEMENT,  # a participant's request was received (issue 27)
        Kind.DECISION,  # and decided
    }
    assert {k for k in Kind if k.ends_at_deadline} == {Kind.REMINDER}


@pytest.mark.parametrize(
    ("kind", "person", "reason"),
    [
        (Kind.REMINDER, None, "person no longer enrolled"),
        (Kind.REMINDER, policy.Standing(removed=True, completed=True), "removed from the roster"),
        (Kind.LAUNCH, policy.Standing(exempted_reason="on leave"), "exempted: on leave"),
        (Kind.OVERDUE, policy.Standing(completed=True), "already complete"),
        (Kind.LAUNCH, policy.Standing(status="exempt"), "not required"),
        (Kind.REMINDER, policy.Standing(status="encouraged"), "no longer required"),
        (Kind.INVITATION, policy.Standing(status="encouraged"), None),
        (Kind.REMINDER, policy.Standing(wave_key="pilot"), "deadline passed"),
        (
            Kind.REMINDER,
            policy.Standing(wave_key="pilot", extended_until=dt.date(2023, 10, 30)),
            None,
        ),
        (Kind.OVERDUE, policy.Standing(wave_key="pilot"), None),
        (Kind.CONFIRMATION, policy.Standing(completed=True, removed=True), None),
        (Kind.CONFIRMATION, None, None),
    ],
)
@pytest.mark.fast
def test_whether_a_person_still_gets_a_message(
    kind: Kind, person: policy.Standing | None, reason: str | None
) -> None:
    # The pilot wave closes on Friday 6 October; NOW is later, in an extension to the 30th.
    now = at(2023, 10, 10, 10)
    assert policy.skip_reason(SEED, kind, person, now) == reason


@pytest.mark.fast
def test_the_next_state_of_each_outcome() -> None:
    rules = policy.RetryRules(max_attempts=3, max_age=dt.timedelta(hours=96))
    first = NOW - dt.timedelta(hours=1)

    def after(
        outcome: Outcome, attempt: int = 1, with_rules: policy.RetryRules = rules
    ) -> policy.Next:
        return policy.after_attempt(
            SEED,
            Kind.REMINDER,
            outcome,
            attempt=attempt,
            first_attempt_at=first,
            now=NOW,
            rules=with_rules,
            rng=random.Random(1),
        )

    assert after(Outcome.SENT) == policy.Next(State.SENT)
    assert after(Outcome.PERMANENT) == policy.Next(State.FAILED)
    retry = after(Outcome.TRANSIENT)
    assert retry.state == State.RETRY
    assert retry.due_at is not None
    assert dt.timedelta(seconds=48) <= retry.due_at - NOW <= dt.timedelta(seconds=72)
    gave_up = after(Outcome.TRANSIENT, attempt=3)
    assert (gave_up.state, gave_up.note) == (State.FAILED, "gave up after 3 attempts over 1.0 h")
    assert after(Outcome.UNKNOWN, attempt=3).state == State.UNKNOWN
    assert after(Outcome.UNKNOWN).state == State.RETRY  # resent under the same Message-ID
    held = policy.RetryRules(max_attempts=3, unknown_policy="hold")
    assert after(Outcome.UNKNOWN, with_rules=held) == policy.Next(State.UNKNOWN)
    # A reminder deferred at 16:59 waits for the next working morning; a report does not.
    evening = at(2023, 9, 20, 16, 59) + dt.timedelta(seconds=15)
    late = policy.after_attempt(
        SEED,
        Kind.REMINDER,
        Outcome.TRANSIENT,
        attempt=1,
        first_attempt_at=evening,
        now=evening,
        rules=rules,
    )
    assert late.due_at == at(2023, 9, 21, 9)
    report = policy.after_attempt(
        SEED,
        Kind.REPORT,
        Outcome.TRANSIENT,
        attempt=1,
        first_attempt_at=evening,
        now=evening,
        rules=rules,
    )
    assert report.due_at is not None
    assert report.due_at < at(2023, 9, 20, 17, 30)
    assert policy.released(0) == State.QUEUED
    assert policy.released(2) == State.RETRY


@pytest.mark.fast
def test_several_reminders_waiting_for_one_person_send_only_the_last() -> None:
    waiting = [
        ("ada", Kind.REMINDER, 3),
        ("ada", Kind.REMINDER, 9),
        ("ada", Kind.LAUNCH, 1),
        ("bob", Kind.REMINDER, 4),
        ("ada", Kind.REMINDER, 5),
    ]
    assert policy.superseded(waiting) == {3, 5}


@pytest.mark.fast
def test_the_latest_report_night_is_today_from_the_report_time_else_yesterday() -> None:
    assert policy.report_night(SEED, at(2023, 9, 12, 5, 59)) == dt.date(2023, 9, 11)
    assert policy.report_night(SEED, at(2023, 9, 12, 6, 0)) == dt.date(2023, 9, 12)
    assert policy.missed_night(SEED, "2023-09-11", at(2023, 9, 12, 5, 59)) is None
    assert policy.missed_night(SEED, "2023-09-11", at(2023, 9, 12, 6)) == (
        "missed night: the report of 2023-09-12 replaces it"
    )


def test_after_an_outage_only_tonights_report_goes_to_each_officer(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    """Reports were queued Saturday, Sunday and Monday while nothing was sent; on Monday the
    officers get Monday's report only, and the missed nights are kept as skipped, with why."""
    stored = setup_campaign(runtime, tmp_path)
    assert send(runtime) == {"sent": 3, "skipped": 2}
    for day in (16, 17, 18):
        assert queue_at(runtime.engine, stored, at(2023, 9, day)) == 2
    clock.set(at(2023, 9, 18, 7))
    assert send(runtime) == {"sent": 2, "skipped": 4}
    received = reports_received(smtp)
    assert sorted(received) == [HR, IST]
    assert all("Monday, September 18, 2023" in m["Subject"] for m in received.values())
    assert len([m for m in smtp.messages() if m["X-Pshnotify-Kind"] == "report"]) == 2
    with runtime.engine.connect() as conn:
        skipped = conn.execute(
            select(messages.c.step, messages.c.reason).where(
                messages.c.kind == "report", messages.c.state == "skipped"
            )
        ).all()
    assert sorted(step for step, _ in skipped) == ["2023-09-16"] * 2 + ["2023-09-17"] * 2
    assert {reason for _, reason in skipped} == {
        "missed night: the report of 2023-09-18 replaces it"
    }
