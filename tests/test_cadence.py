"""The cadence decision, on its own: pure, fast, every rule of the shipped program."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from pshnotify.domain.cadence import PersonState, decide, timeline
from pshnotify.domain.program import parse_program
from tests.test_program import SEED, SEED_TEXT

pytestmark = pytest.mark.fast  # no server: `make test-fast`

TZ = ZoneInfo("America/New_York")


def local(y: int, m: int, d: int, h: int = 9, minute: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, minute, tzinfo=TZ)


def steps(wave: str, launch: dt.datetime, until: dt.date | None = None) -> list[tuple[str, str]]:
    person = PersonState(
        wave_key=wave,
        status="required",
        launch_queued=True,
        launch_sent_at=launch,
        extended_until=until,
    )
    return [
        (p.step, p.due_at.astimezone(TZ).strftime("%a %Y-%m-%d %H:%M"))
        for p in timeline(SEED, person, launch)
    ]


def test_the_pilot_timeline() -> None:
    assert steps("pilot", local(2023, 9, 11, 9, 30)) == [
        ("after:7", "Mon 2023-09-18 09:00"),
        ("after:14", "Mon 2023-09-25 09:00"),
        ("before:3:2023-10-06", "Tue 2023-10-03 09:00"),
        ("before:1:2023-10-06", "Thu 2023-10-05 09:00"),
    ]


def test_weekend_steps_move_to_monday_and_never_past_the_deadline() -> None:
    # Launched Wednesday 2023-11-22: +7 is Wednesday; the VPR wave closes Wednesday 12-20,
    # so "3 days before" is Sunday 12-17 -> Monday 12-18, "1 day before" Tuesday 12-19.
    assert steps("vpr", local(2023, 11, 22)) == [
        ("after:7", "Wed 2023-11-29 09:00"),
        ("after:14", "Wed 2023-12-06 09:00"),
        ("before:3:2023-12-20", "Mon 2023-12-18 09:00"),
        ("before:1:2023-12-20", "Tue 2023-12-19 09:00"),
    ]
    # A deadline on a Monday: "1 day before" is Sunday -> Monday, the deadline day itself,
    # still before the window closes at midnight; "3 days before" is Friday.
    got = steps("pilot", local(2023, 9, 11), until=dt.date(2023, 10, 16))
    assert ("before:1:2023-10-16", "Mon 2023-10-16 09:00") in got
    assert ("before:3:2023-10-16", "Fri 2023-10-13 09:00") in got


def test_nothing_in_the_quiet_days_and_one_reminder_a_day() -> None:
    # A late joiner launched two days before the close: every step falls in the quiet days.
    assert steps("pilot", local(2023, 10, 4)) == []
    # Launched 2023-09-21 (Thu): +14 is 10-05, the same day as "1 day before": one email.
    got = steps("pilot", local(2023, 9, 21))
    days = [when[:14] for _, when in got]
    assert len(days) == len(set(days))
    assert ("before:1:2023-10-06", "Thu 2023-10-05 09:00") in got
    assert not any(step == "after:14" for step, _ in got)


def test_the_day_after_the_november_change_stays_at_nine_local() -> None:
    got = steps("grad", local(2023, 10, 30))  # after:7 is Monday 2023-11-06, after the change
    assert ("after:7", "Mon 2023-11-06 09:00") in got
    person = PersonState(
        wave_key="grad", status="required", launch_queued=True, launch_sent_at=local(2023, 10, 30)
    )
    (step,) = [p for p in timeline(SEED, person, local(2023, 10, 30)) if p.step == "after:7"]
    assert step.due_at == dt.datetime(2023, 11, 6, 14, 0, tzinfo=dt.UTC)  # EST, UTC-5


def test_catch_up_sends_only_the_latest_step_and_says_why() -> None:
    person = PersonState(
        wave_key="pilot",
        status="required",
        launch_queued=True,
        launch_sent_at=local(2023, 9, 11, 9, 30),
    )
    # Down from 2023-09-15 to Wednesday 2023-10-04 10:00: after:7, after:14, before:3 came due.
    decision = decide(SEED, local(2023, 9, 11), person, local(2023, 10, 4, 10))
    assert [(p.step, p.due_at) for p in decision.queue] == [
        ("before:3:2023-10-06", local(2023, 10, 4, 10))
    ]
    assert sorted((p.step, why) for p, why in decision.skip) == [
        ("after:14", "superseded by a later reminder"),
        ("after:7", "superseded by a later reminder"),
    ]
    assert decision.next_action_at == local(2023, 10, 5)


def test_after_the_deadline_a_missed_reminder_is_skipped_not_sent() -> None:
    person = PersonState(
        wave_key="pilot",
        status="required",
        launch_queued=True,
        launch_sent_at=local(2023, 9, 11, 9, 30),
        steps_queued=frozenset({"after:7", "after:14", "before:3:2023-10-06"}),
    )
    decision = decide(SEED, local(2023, 9, 11), person, local(2023, 10, 9, 9))
    assert decision.queue == []
    assert [(p.step, why) for p, why in decision.skip] == [
        ("before:1:2023-10-06", "deadline passed")
    ]
    assert decision.next_action_at is None


def test_who_gets_nothing() -> None:
    launched = local(2023, 9, 11)
    now = local(2023, 9, 25)
    for state in (
        PersonState(wave_key="pilot", status="exempt"),
        PersonState(wave_key="pilot", status="encouraged"),  # invitations are off
        PersonState(wave_key="pilot", status="required", completed=True, launch_queued=True),
        PersonState(wave_key="pilot", status="required", exempted=True),
        PersonState(wave_key="pilot", status="required", removed=True),
    ):
        assert decide(SEED, launched, state, now).queue == []
    assert decide(SEED, None, PersonState(wave_key="pilot", status="required"), now).queue == []


def test_late_joiner_gets_a_launch_in_working_hours_and_invitations_when_enabled() -> None:
    joiner = PersonState(wave_key="pilot", status="required")
    saturday = local(2023, 9, 16, 11)
    (launch,) = decide(SEED, local(2023, 9, 11), joiner, saturday).queue
    assert (launch.kind, launch.due_at) == ("launch", local(2023, 9, 18, 9))
    after_close = decide(SEED, local(2023, 9, 11), joiner, local(2023, 10, 7, 9))
    assert [why for _, why in after_close.skip] == ["joined after the deadline"]
    inviting = parse_program(
        SEED_TEXT.replace("invite_encouraged = false", "invite_encouraged = true"), "x.toml"
    )
    encouraged = PersonState(wave_key="pilot", status="encouraged")
    (invite,) = decide(inviting, local(2023, 9, 11), encouraged, local(2023, 9, 11, 9, 5)).queue
    assert invite.kind == "invitation"
    again = PersonState(
        wave_key="pilot", status="encouraged", steps_queued=frozenset({"invitation"})
    )
    assert decide(inviting, local(2023, 9, 11), again, local(2023, 9, 20)).queue == []


def test_a_step_on_a_closure_moves_to_the_next_working_day_never_past_the_deadline() -> None:
    # Grad wave launched Thursday 2023-11-16: +7 is Thanksgiving (closed), so Friday (closed
    # too), so Monday 11-27; +14 is Thursday 11-30, also "1 day before" the 12-01 close.
    got = steps("grad", local(2023, 11, 16))
    assert ("after:7", "Mon 2023-11-27 09:00") in got
    assert not any(when.startswith(("Thu 2023-11-23", "Fri 2023-11-24")) for _, when in got)
    # Veterans Day (Friday 11-10) moves to Monday 11-13.
    got = steps("grad", local(2023, 11, 3))
    assert ("after:7", "Mon 2023-11-13 09:00") in got
    # A deadline of Wednesday 12-27, in the winter break: "1 day before" (Tuesday, closed)
    # would move past the deadline, so it is dropped, not sent late.
    # "3 days before" is Sunday 12-24, and the next working day is 2024-01-02: dropped too.
    assert steps("vpr", local(2023, 11, 20), until=dt.date(2023, 12, 27)) == [
        ("after:7", "Mon 2023-11-27 09:00"),
        ("after:14", "Mon 2023-12-04 09:00"),
    ]
