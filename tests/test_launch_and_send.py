"""Launching a wave and sending its emails to a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select

from pshnotify.clock import FixedClock
from pshnotify.domain.errors import ConflictError
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.launch import launch_wave, preview_launch
from pshnotify.services.campaign.pause import set_paused
from pshnotify.services.campaign.roster import import_roster
from pshnotify.services.delivery.messages import retry_messages
from pshnotify.store.schema import attempts, audit_log, messages, people
from tests.conftest import NY
from tests.smtp_server import Behaviour, SmtpServer
from tests.test_roster_import import GOOD, HEADER, write

PILOT = [
    "H1,ada@example.edu,Ada Lovelace,Human Resources,staff,,2010-01-04,,,ao-hr@example.edu,",
    "H2,jose@example.edu,José Núñez-Ångström,Human Resources,staff,,2001-09-01,,,ao-hr@x.edu,",
    "H3,grace@example.edu,Grace Hopper,Information Systems and Technology,staff,,2001-01-01,,,,",
    "H4,unpaid@example.edu,Un Paid,Human Resources,staff,no,2012-01-01,,,,",
    "H5,new@example.edu,New Hire,Human Resources,staff,,2023-08-01,,,,",
]


def setup_pilot(runtime: Runtime, tmp_path: Path, rows: list[str] = PILOT) -> None:
    stored = runtime.program(None)
    import_roster(
        runtime.engine, stored, write(tmp_path, [HEADER, *rows]), runtime.clock, actor="op"
    )


def launch(runtime: Runtime, wave: str = "pilot", force: bool = False) -> int:
    stored = runtime.program(None)
    return launch_wave(
        runtime.engine,
        stored,
        wave,
        runtime.clock,
        actor="op",
        message_id_domain=runtime.settings.message_id_domain,
        force=force,
    ).queued


def send(runtime: Runtime) -> dict[str, int]:
    return dict(asyncio.run(runtime.dispatcher().run_once()).outcomes)


def by_recipient(smtp: SmtpServer) -> dict[str, EmailMessage]:
    return {m["To"].addresses[0].addr_spec: m for m in smtp.messages()}


def test_launch_emails_arrive_as_real_mime(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    assert launch(runtime) == 3
    assert send(runtime) == {"sent": 3}
    received = by_recipient(smtp)
    assert sorted(received) == ["ada@example.edu", "grace@example.edu", "jose@example.edu"]
    msg = received["jose@example.edu"]
    assert msg["To"].addresses[0].display_name == "José Núñez-Ångström"
    assert str(msg["From"]) == "PSH Training <pshtraining@example.edu>"
    assert str(msg["Reply-To"]) == "pshtraining@example.edu"
    assert msg["X-Pshnotify-Program"] == "psh-2023-2024"
    assert msg["X-Pshnotify-Wave"] == "pilot"
    assert msg["X-Pshnotify-Kind"] == "launch"
    assert parsedate_to_datetime(msg["Date"]) == dt.datetime(2023, 9, 11, 9, 30, tzinfo=NY)
    # The text and HTML alternatives, and the deadline as a calendar file beside them.
    assert msg.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in msg.iter_parts()] == [
        "multipart/alternative",
        "text/calendar",
    ]
    text_part = msg.get_body(("plain",))
    html_part = msg.get_body(("html",))
    assert text_part is not None
    assert html_part is not None
    text, html = text_part.get_content(), html_part.get_content()
    for body in (text, html):
        assert "José Núñez-Ångström" in body
        # The window, in the program's zone, written for people.
        assert "Monday, September 11, 2023" in body
        assert "Friday, October 6, 2023" in body
        assert "pshtraining@example.edu" in body
        for title in ("LBGTQ+ 101", "Responding to Disclosures at MIT", "Power Dynamics"):
            assert title in body
        assert "https://learning.example.edu/psh" in body
    assert "HR and IS&amp;T Pilot" in html  # autoescaped
    assert "HR and IS&T Pilot" in text  # and not in text
    with runtime.engine.connect() as conn:
        stored_ids = set(conn.scalars(select(messages.c.message_id)))
        states = set(conn.scalars(select(messages.c.state)))
        replies = list(conn.scalars(select(attempts.c.code)))
    assert {m["Message-ID"] for m in received.values()} == stored_ids
    assert states == {"sent"}
    assert replies == [250, 250, 250]
    assert smtp.connections == 1  # one connection reused for every message


def test_launching_twice_queues_once_and_late_joiners_get_theirs(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, PILOT[:2])
    assert launch(runtime) == 2
    assert launch(runtime) == 0
    send(runtime)
    assert launch(runtime) == 0
    setup_pilot(runtime, tmp_path, PILOT)  # H3 joins the pilot after launch
    assert launch(runtime) == 1
    send(runtime)
    recipients = [m["To"].addresses[0].addr_spec for m in smtp.messages()]
    assert sorted(recipients) == ["ada@example.edu", "grace@example.edu", "jose@example.edu"]
    with runtime.engine.connect() as conn:
        audits = conn.execute(
            select(audit_log.c.action, audit_log.c.actor, audit_log.c.subject).where(
                audit_log.c.action == "wave.launch"
            )
        ).all()
    assert [tuple(a) for a in audits] == [("wave.launch", "op", "pilot")] * 4


def test_a_closed_wave_needs_force(runtime: Runtime, clock: FixedClock, tmp_path: Path) -> None:
    setup_pilot(runtime, tmp_path)
    clock.set(dt.datetime(2023, 10, 7, 0, 0, tzinfo=NY))  # the midnight after the last day
    with pytest.raises(ConflictError, match="closed on 2023-10-06"):
        launch(runtime)
    with runtime.engine.connect() as conn:
        assert conn.scalar(select(messages.c.id)) is None
    assert launch(runtime, force=True) == 3
    clock.set(dt.datetime(2023, 10, 6, 23, 59, tzinfo=NY))  # still the last day


def test_the_launch_summary_counts_who_gets_it_and_who_not(
    runtime: Runtime, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    summary = preview_launch(runtime.engine, runtime.program(None), "pilot", runtime.clock)
    assert summary.to_queue == 3
    assert dict(summary.not_required) == {"exempt-unpaid": 1, "exempt-new-hire": 1}
    with runtime.engine.connect() as conn:
        assert conn.scalar(select(messages.c.id)) is None


def test_launch_outside_working_hours_goes_out_at_nine(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    clock.set(dt.datetime(2023, 9, 9, 20, 0, tzinfo=NY))  # Saturday evening
    launch(runtime)
    assert send(runtime) == {}
    clock.set(dt.datetime(2023, 9, 11, 9, 0, tzinfo=NY))  # Monday 09:00
    assert send(runtime) == {"sent": 3}


def test_refusals_fail_deferrals_retry_with_the_same_message_id(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    deferred = {"n": 0}

    def data_reply(addr: str) -> str | None:
        if addr == "jose@example.edu" and deferred["n"] == 0:
            deferred["n"] += 1
            return "451 4.3.0 try again later"
        return None

    smtp.behaviour = Behaviour(
        rcpt=lambda a: "550 5.1.1 no such user" if a == "grace@example.edu" else None,
        data=data_reply,
    )
    launch(runtime)
    assert send(runtime) == {"sent": 1, "failed": 1, "retry": 1}
    with runtime.engine.connect() as conn:
        failed = conn.execute(
            select(messages.c.recipient_email, messages.c.last_code, messages.c.last_reply).where(
                messages.c.state == "failed"
            )
        ).one()
        retry_id = conn.scalar(select(messages.c.message_id).where(messages.c.state == "retry"))
    assert tuple(failed) == ("grace@example.edu", 550, "5.1.1 no such user")
    assert send(runtime) == {}  # the retry is not due yet
    clock.advance(dt.timedelta(hours=2))
    assert send(runtime) == {"sent": 1}
    assert by_recipient(smtp)["jose@example.edu"]["Message-ID"] == retry_id
    assert "grace@example.edu" not in by_recipient(smtp)  # a 5xx is never retried
    with runtime.engine.connect() as conn:
        outcomes = conn.execute(
            select(attempts.c.outcome, attempts.c.code).order_by(attempts.c.id)
        ).all()
    assert sorted(tuple(o) for o in outcomes) == [
        ("permanent", 550),
        ("sent", 250),
        ("sent", 250),
        ("transient", 451),
    ]


def drop_the_first_after_data() -> Behaviour:
    """A relay that takes the first message's data and drops the connection before replying."""
    dropped = {"n": 0}

    def drop(_addr: str) -> bool:
        dropped["n"] += 1
        return dropped["n"] == 1

    return Behaviour(drop_after_data=drop)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the transport
def test_a_dropped_connection_after_the_data_is_an_unknown_outcome(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, PILOT[:1])
    smtp.behaviour = drop_the_first_after_data()
    launch(runtime)
    assert send(runtime) == {"retry": 1}
    clock.advance(dt.timedelta(hours=2))
    assert send(runtime) == {"sent": 1}
    ids = [m["Message-ID"] for m in smtp.messages()]
    assert len(ids) == 2
    assert ids[0] == ids[1]
    with runtime.engine.connect() as conn:
        outcomes = list(conn.scalars(select(attempts.c.outcome).order_by(attempts.c.id)))
    assert outcomes == ["unknown", "sent"]


def test_deferrals_give_up_at_the_configured_age_not_only_the_count(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, PILOT[:1])
    runtime.settings.max_attempts = 100  # the age, not the count, must end it
    runtime.settings.retry_max_age_hours = 3
    smtp.behaviour = Behaviour(data=lambda _a: "451 4.3.0 mailbox busy")
    launch(runtime)
    rounds = 0
    while (outcomes := send(runtime)) != {"failed": 1}:
        assert outcomes in ({"retry": 1}, {}), outcomes
        clock.advance(dt.timedelta(minutes=30))
        rounds += 1
        assert rounds < 20, "still retrying long after the age limit"
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(messages.c.state, messages.c.last_reply, messages.c.attempts)
        ).one()
        tried = list(conn.scalars(select(attempts.c.started_at).order_by(attempts.c.id)))
    # Given up at the first attempt three hours or more after the first one, not later, and
    # long before the count (100) could end it; every attempt before it was inside the age.
    age = dt.timedelta(hours=3)
    assert row.attempts == len(tried) < 20
    assert [at - tried[0] >= age for at in tried] == [False] * (len(tried) - 1) + [True]
    assert row.state == "failed"
    assert "mailbox busy" in row.last_reply
    assert "gave up after" in row.last_reply
    assert smtp.messages() == []


def test_the_hold_policy_keeps_an_unknown_outcome_for_the_operator(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, PILOT[:1])
    runtime.settings.unknown_policy = "hold"
    smtp.behaviour = drop_the_first_after_data()
    launch(runtime)
    assert send(runtime) == {"unknown": 1}
    clock.advance(dt.timedelta(hours=6))
    assert send(runtime) == {}  # held: never resent on its own
    assert len(smtp.messages()) == 1  # the relay did take it once
    with runtime.engine.connect() as conn:
        state = conn.scalar(select(messages.c.state))
    assert state == "unknown"
    clock.advance(dt.timedelta(days=7))  # long past the retry age: the operator's retry is new
    stored = runtime.program(None)
    assert retry_messages(runtime.engine, stored, runtime.clock, actor="op", state="unknown") == 1
    smtp.behaviour = Behaviour(data=lambda _a: "451 4.3.0 busy")
    assert send(runtime) == {"retry": 1}  # a fresh count and age, not given up at once
    smtp.behaviour = Behaviour()
    clock.advance(dt.timedelta(minutes=10))  # past the first backoff, inside working hours
    assert send(runtime) == {"sent": 1}
    ids = {m["Message-ID"] for m in smtp.messages()}
    assert len(ids) == 1  # the same Message-ID both times


def test_a_drain_that_runs_past_five_stops_and_resumes_at_nine(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, PILOT[:3])
    clock.set(dt.datetime(2023, 9, 12, 16, 59, 30, tzinfo=NY))  # a Tuesday, 30 s before 17:00
    launch(runtime)

    def slow_first(_addr: str) -> str | None:
        clock.advance(dt.timedelta(minutes=1))  # the first send takes us past five o'clock
        return None

    smtp.behaviour = Behaviour(data=slow_first)
    assert send(runtime) == {"sent": 1, "queued": 2}
    assert len(smtp.messages()) == 1
    with runtime.engine.connect() as conn:
        due = set(conn.scalars(select(messages.c.due_at).where(messages.c.state == "queued")))
    assert due == {dt.datetime(2023, 9, 13, 9, 0, tzinfo=NY)}
    smtp.behaviour = Behaviour()
    assert send(runtime) == {}  # still evening
    clock.set(dt.datetime(2023, 9, 13, 9, 0, tzinfo=NY))
    assert send(runtime) == {"sent": 2}


def test_a_pause_that_comes_while_a_message_waits_for_its_rate_slot_holds_it(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, PILOT[:2])
    runtime.settings.rate_per_second = 0.5  # the second message waits 2 s for its slot
    launch(runtime)
    stored = runtime.program(None)

    def pause_after_first(_addr: str) -> str | None:
        set_paused(runtime.engine, stored, None, True, runtime.clock, actor="op")
        return None

    smtp.behaviour = Behaviour(data=pause_after_first)
    assert send(runtime) == {"sent": 1, "queued": 1}
    assert len(smtp.messages()) == 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the transport
def test_a_relay_that_is_down_loses_nothing(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, PILOT[:2])
    launch(runtime)
    smtp.stop()
    assert send(runtime) == {"retry": 2}
    smtp.start()
    runtime.settings.smtp_port = smtp.port
    clock.advance(dt.timedelta(hours=2))
    assert send(runtime) == {"sent": 2}


def test_people_no_longer_required_are_skipped_not_sent(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    launch(runtime)
    setup_pilot(runtime, tmp_path, PILOT[:1])  # the others left the roster before sending
    assert send(runtime) == {"sent": 1}
    with runtime.engine.connect() as conn:
        states = dict(conn.execute(select(messages.c.recipient_email, messages.c.state)).all())
    assert states["jose@example.edu"] == "cancelled"


def test_a_message_whose_person_was_deleted_by_hand_is_skipped_not_sent(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    """messages carry no foreign keys (migration 0006): a person removed from the database
    behind pshnotify's back leaves a message that must end visibly, not go out."""
    setup_pilot(runtime, tmp_path)
    assert launch(runtime) == 3  # the unpaid one is not required
    with runtime.engine.begin() as conn:
        conn.execute(delete(people).where(people.c.external_id == "H2"))
    assert send(runtime) == {"sent": 2, "skipped": 1}
    assert "jose@example.edu" not in by_recipient(smtp)
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(messages.c.state, messages.c.reason).where(
                messages.c.recipient_email == "jose@example.edu"
            )
        ).one()
    assert tuple(row) == ("skipped", "person no longer enrolled")


def test_good_roster_other_waves_do_not_leak_into_the_pilot(
    runtime: Runtime, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, GOOD)
    assert launch(runtime) == 1  # only P1 is in HR
