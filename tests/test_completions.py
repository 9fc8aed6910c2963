"""Completions: one rule for every way in, checked end to end at a real SMTP server."""

from __future__ import annotations

import datetime as dt
import json
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from pshnotify.clock import FixedClock
from pshnotify.domain.errors import InputError, NotFoundError
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.completions import (
    CompletionResult,
    complete_by_operator,
    completion_key,
    import_completions,
    match_unmatched,
    record_completion,
    unmatched_completions,
)
from pshnotify.services.campaign.launch import preview_launch
from pshnotify.services.campaign.roster import import_roster
from pshnotify.store import outbox
from pshnotify.store.schema import audit_log, completions, enrollments, messages, people
from tests.conftest import NY
from tests.smtp_server import SmtpServer
from tests.test_cli import NOW, cli
from tests.test_launch_and_send import launch, send, setup_pilot
from tests.test_roster_import import HEADER, write

BEFORE_LAUNCH = dt.datetime(2023, 9, 11, 8, 0, tzinfo=NY)
OPTION_B = "Responding to Disclosures at MIT"


def complete(
    runtime: Runtime,
    ref: str,
    option: str = "B",
    at: dt.datetime = BEFORE_LAUNCH,
    source: str = "webhook",
    confirm: bool = True,
) -> CompletionResult:
    stored = runtime.program(None)
    with runtime.engine.begin() as conn:
        return record_completion(
            conn,
            stored,
            person_ref=ref,
            option=option,
            completed_at=at,
            source=source,
            dedupe_key=completion_key(ref, option, at),
            note=None,
            now=runtime.clock.now(),
            message_id_domain=runtime.settings.message_id_domain,
            confirm=confirm,
            actor="op",
        )


def of_kind(smtp: SmtpServer, kind: str) -> list[EmailMessage]:
    return [m for m in smtp.messages() if m["X-Pshnotify-Kind"] == kind]


def message_states(engine: Engine) -> list[tuple[str, str, str, str | None]]:
    q = (
        select(people.c.external_id, messages.c.kind, messages.c.state, messages.c.reason)
        .join(people, people.c.id == messages.c.person_id)
        .order_by(people.c.external_id, messages.c.kind)
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(q)]  # type: ignore[misc]


def counts(engine: Engine) -> tuple[int, int, int]:
    """Completions, messages, completed enrollments."""
    completed = select(func.count()).where(enrollments.c.completed_at.is_not(None))
    with engine.connect() as conn:
        return (
            int(conn.scalar(select(func.count()).select_from(completions)) or 0),
            int(conn.scalar(select(func.count()).select_from(messages)) or 0),
            int(conn.scalar(completed) or 0),
        )


def test_first_completion_cancels_pending_mail_and_confirms_once(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    assert launch(runtime) == 3
    first = complete(runtime, "ADA@Example.edu")  # an email, in another case
    assert (first.outcome, first.person, first.confirmation_queued) == ("recorded", "H1", True)
    assert first.cancelled_messages == 1
    again = complete(runtime, "ada@example.edu")  # the same completion again
    assert (again.outcome, again.person, again.confirmation_queued) == ("duplicate", "H1", False)
    extra = complete(runtime, "H1", option="C", at=BEFORE_LAUNCH + dt.timedelta(minutes=5))
    assert (extra.outcome, extra.confirmation_queued) == ("extra", False)
    assert send(runtime) == {"sent": 3}
    assert send(runtime) == {}
    assert message_states(runtime.engine) == [
        ("H1", "confirmation", "sent", None),
        ("H1", "launch", "cancelled", "completed"),
        ("H2", "launch", "sent", None),
        ("H3", "launch", "sent", None),
    ]
    [confirmation] = of_kind(smtp, "confirmation")
    assert confirmation["To"].addresses[0].addr_spec == "ada@example.edu"
    assert str(confirmation["Subject"]).startswith("Completed:")
    for part in ("plain", "html"):
        body = confirmation.get_body((part,))
        assert body is not None
        text = body.get_content()
        assert OPTION_B in text
        assert "Monday, September 11, 2023" in text
    with runtime.engine.connect() as conn:
        row = conn.execute(
            select(
                enrollments.c.completed_at,
                enrollments.c.completion_option,
                enrollments.c.next_action_at,
            )
            .join(people, people.c.id == enrollments.c.person_id)
            .where(people.c.external_id == "H1")
        ).one()
        stored = conn.scalars(select(completions.c.option).order_by(completions.c.id)).all()
    assert tuple(row) == (BEFORE_LAUNCH.astimezone(dt.UTC), "B", None)
    assert stored == ["B", "C"]  # the extra is kept; the duplicate is not stored twice


def test_a_completion_between_reminders_stops_the_later_ones(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    early = complete(runtime, "H3", option="A")  # before the launch: no launch email at all
    assert early.outcome == "recorded"
    summary = preview_launch(runtime.engine, runtime.program(None), "pilot", runtime.clock)
    assert (summary.to_queue, summary.completed) == (2, 1)
    assert launch(runtime) == 2
    assert send(runtime) == {"sent": 3}  # two launches and H3's confirmation
    _queue_reminders(runtime, "H2", days=(7, 14))  # what the scheduler would have queued
    clock.advance(dt.timedelta(days=8))
    assert send(runtime) == {"sent": 1}  # the first reminder
    clock.advance(dt.timedelta(days=1))
    done = complete(runtime, "jose@example.edu", option="A", at=clock.now())
    assert (done.outcome, done.cancelled_messages) == ("recorded", 1)
    clock.advance(dt.timedelta(days=7))
    assert send(runtime) == {"sent": 1}  # the confirmation; the second reminder never goes
    kinds = [(m["To"].addresses[0].addr_spec, m["X-Pshnotify-Kind"]) for m in smtp.messages()]
    assert kinds.count(("jose@example.edu", "reminder")) == 1
    assert kinds.count(("jose@example.edu", "confirmation")) == 1
    assert ("grace@example.edu", "launch") not in kinds
    assert ("H2", "reminder", "cancelled", "completed") in message_states(runtime.engine)


def _queue_reminders(runtime: Runtime, external_id: str, days: tuple[int, ...]) -> None:
    stored = runtime.program(None)
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:
        person = conn.execute(select(people).where(people.c.external_id == external_id)).one()
        rows = [
            {
                "program_id": stored.id,
                "person_id": person.id,
                "kind": "reminder",
                "wave_key": "pilot",
                "step": f"after:{d}",
                "idempotency_key": f"{stored.key}:pilot:{external_id}:reminder:after:{d}",
                "message_id": outbox.new_message_id("test.invalid"),
                "recipient_email": person.email,
                "recipient_name": person.name,
                "context": {"step": f"after:{d}"},
                "due_at": now + dt.timedelta(days=d),
            }
            for d in days
        ]
        outbox.queue(conn, rows, now)


def test_a_back_filled_completion_matched_later_still_emails_nobody(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    assert complete(runtime, "H9", confirm=False).outcome == "unmatched"  # --no-confirmations
    assert complete(runtime, "H8").outcome == "unmatched"  # an ordinary one, for contrast
    joiners = [
        "H9,hedy@example.edu,Hedy Lamarr,Human Resources,staff,,2001-01-01,,,,",
        "H8,ida@example.edu,Ida Rhodes,Human Resources,staff,,2001-01-01,,,,",
    ]
    report = import_roster(
        runtime.engine,
        runtime.program(None),
        write(tmp_path, [HEADER, *joiners], "joiners.csv"),
        runtime.clock,
        actor="op",
        merge=True,
        message_id_domain=runtime.settings.message_id_domain,
    )
    assert report.matched_completions == 2  # both are complete now
    send(runtime)
    confirmed = [m["To"].addresses[0].addr_spec for m in of_kind(smtp, "confirmation")]
    assert confirmed == ["ida@example.edu"]


def test_unmatched_completions_are_kept_and_matched_after_the_roster_names_them(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    assert complete(runtime, "H9").outcome == "unmatched"
    assert complete(runtime, "H9").outcome == "duplicate"
    assert complete(runtime, "nobody@example.edu", option="A").outcome == "unmatched"
    stored = runtime.program(None)
    with runtime.engine.connect() as conn:
        refs = [r["person_ref"] for r in unmatched_completions(conn, stored.id)]
    assert refs == ["H9", "nobody@example.edu"]
    joiner = "H9,hedy@example.edu,Hedy Lamarr,Human Resources,staff,,2001-01-01,,,,"
    roster = write(tmp_path, [HEADER, joiner], "joiner.csv")
    report = import_roster(
        runtime.engine,
        stored,
        roster,
        runtime.clock,
        actor="op",
        merge=True,
        message_id_domain=runtime.settings.message_id_domain,
    )
    assert report.matched_completions == 1  # the import itself matches them
    with runtime.engine.begin() as conn:
        assert match_unmatched(conn, stored, runtime.clock.now(), "x.invalid") == 0
        refs = [r["person_ref"] for r in unmatched_completions(conn, stored.id)]
    assert refs == ["nobody@example.edu"]
    assert launch(runtime) == 3  # H9 is complete: no launch email for them
    assert send(runtime) == {"sent": 4}
    [confirmation] = of_kind(smtp, "confirmation")
    assert confirmation["To"].addresses[0].addr_spec == "hedy@example.edu"


@pytest.mark.fast
def test_what_each_way_in_may_record(runtime: Runtime, tmp_path: Path) -> None:
    setup_pilot(runtime, tmp_path)
    with pytest.raises(InputError, match="unknown option 'alternative'"):
        complete(runtime, "H1", option="alternative", source="import")
    with pytest.raises(InputError, match="unknown option 'Z'"):
        complete(runtime, "H1", option="Z")
    with pytest.raises(InputError, match=r"completed_at: .* is in the future"):
        complete(runtime, "H1", at=runtime.clock.now() + dt.timedelta(hours=1))
    stored = runtime.program(None)
    by_hand = {
        "actor": "alice",
        "message_id_domain": "x.invalid",
        "note": "approved alternative (ticket 42)",
    }
    with pytest.raises(NotFoundError, match="nobody with id or email 'H77'"):
        complete_by_operator(
            runtime.engine, stored, runtime.clock, person_ref="H77", option="A", **by_hand
        )
    with pytest.raises(InputError, match=r"^option: unknown option 'Z'"):
        complete_by_operator(
            runtime.engine, stored, runtime.clock, person_ref="H1", option="Z", **by_hand
        )
    result = complete_by_operator(
        runtime.engine, stored, runtime.clock, person_ref="H1", option="alternative", **by_hand
    )
    assert (result.outcome, result.confirmation_queued) == ("recorded", True)
    with runtime.engine.connect() as conn:
        entry = conn.execute(
            select(audit_log.c.actor, audit_log.c.subject, audit_log.c.details).where(
                audit_log.c.action == "completion.record"
            )
        ).one()
        row = conn.execute(select(completions.c.source, completions.c.note)).one()
    assert entry.actor == "alice"
    assert entry.subject == "H1"
    assert entry.details["option"] == "alternative"
    assert entry.details["outcome"] == "recorded"
    assert tuple(row) == ("operator", "approved alternative (ticket 42)")


COMPLETIONS_HEADER = "id,email,option,completed_at,note"
COMPLETIONS = [
    "H1,,B,2023-09-08T16:30:00Z,",
    ",JOSE@example.edu,A,2023-09-08T10:00:00-04:00,",
    "H3,ignored@example.edu,C,2023-09-08,taken on paper",  # id wins; a date is local midnight
    "H9,,A,2023-09-08,",  # nobody: kept as unmatched
]


@pytest.mark.fast
def test_importing_the_same_file_twice_changes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    setup_pilot(runtime, tmp_path)
    launch(runtime)
    stored = runtime.program(None)
    path = write(tmp_path, [COMPLETIONS_HEADER, *COMPLETIONS], "completions.csv", bom=True)

    def run(dry_run: bool = False) -> dict[str, object]:
        report = import_completions(
            runtime.engine,
            stored,
            path,
            runtime.clock,
            actor="op",
            message_id_domain="x.invalid",
            dry_run=dry_run,
        )
        return report.as_dict()

    before = counts(runtime.engine)
    dry = run(dry_run=True)
    assert (dry["recorded"], dry["unmatched"], dry["confirmations"]) == (3, 1, 3)
    assert counts(runtime.engine) == before
    first = run()
    assert (first["recorded"], first["unmatched"], first["cancelled_messages"]) == (3, 1, 3)
    after_first = counts(runtime.engine)
    assert after_first == (4, 6, 3)  # four completions, three launches + three confirmations
    second = run()
    assert (second["duplicate"], second["recorded"], second["confirmations"]) == (4, 0, 0)
    assert counts(runtime.engine) == after_first
    with runtime.engine.connect() as conn:
        when = conn.scalar(
            select(enrollments.c.completed_at)
            .join(people, people.c.id == enrollments.c.person_id)
            .where(people.c.external_id == "H3")
        )
        note = conn.scalar(select(completions.c.note).where(completions.c.person_ref == "H3"))
    assert when == dt.datetime(2023, 9, 8, 4, 0, tzinfo=dt.UTC)  # midnight in New York
    assert note == "taken on paper"


BAD_COMPLETIONS = [
    (
        "H1,,Z,2023-09-08,",
        "completions.csv:2: option: unknown option 'Z' (expected one of A, B, C)",
    ),
    (",,A,2023-09-08,", "completions.csv:3: id/email: is empty; fill id or email"),
    (",not-an-address,A,2023-09-08,", "completions.csv:4: email: invalid address"),
    ("H1,,A,08/09/2023,", "completions.csv:5: completed_at: expected an ISO-8601 instant"),
    ("H1,,A,2023-09-08T10:00:00,", "completions.csv:6: completed_at: '2023-09-08T10:00:00' has"),
    ('H1,,A,2023-09-08,"a\x07bell"', "completions.csv:7: note: contains a line break or control"),
    ("H1,,A", "completions.csv:8: (row): has 3 fields, the header has 5"),
]


@pytest.mark.fast
def test_a_bad_file_is_refused_whole_with_file_and_line(runtime: Runtime, tmp_path: Path) -> None:
    setup_pilot(runtime, tmp_path)
    stored = runtime.program(None)
    # One good row after the bad ones: it is not taken either.
    rows = [*(line for line, _ in BAD_COMPLETIONS), COMPLETIONS[0]]
    path = write(tmp_path, [COMPLETIONS_HEADER, *rows], "completions.csv")
    before = counts(runtime.engine)
    with pytest.raises(InputError) as caught:
        import_completions(
            runtime.engine, stored, path, runtime.clock, actor="op", message_id_domain="x"
        )
    problems = [p.replace(str(tmp_path) + "/", "") for p in caught.value.problems]
    for _, want in BAD_COMPLETIONS:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(BAD_COMPLETIONS)
    assert counts(runtime.engine) == before
    header = write(tmp_path, ["person,option,completed_at,grade", "H1,A,2023-09-08,5"], "h.csv")
    with pytest.raises(InputError) as caught:
        import_completions(
            runtime.engine, stored, header, runtime.clock, actor="op", message_id_domain="x"
        )
    assert [p.replace(str(tmp_path) + "/", "") for p in caught.value.problems] == [
        "h.csv:1: person: unknown column (expected id, email, option, completed_at, note)",
        "h.csv:1: grade: unknown column (expected id, email, option, completed_at, note)",
        "h.csv:1: id: the file needs an id or an email column (or both)",
    ]
    future = write(tmp_path, [COMPLETIONS_HEADER, "H1,,A,2023-09-12,"], "future.csv")
    # Times the operator reads are in the program's zone with its abbreviation, not UTC.
    with pytest.raises(
        InputError,
        match=r"future.csv:2: completed_at: 2023-09-1\d \d\d:\d\d EDT is in the future "
        r"\(now 2023-09-\d\d \d\d:\d\d EDT\)",
    ):
        import_completions(
            runtime.engine, stored, future, runtime.clock, actor="op", message_id_domain="x"
        )
    assert counts(runtime.engine) == before


@pytest.mark.fast
def test_the_command_line_imports_records_and_lists(
    env: dict[str, str], runtime: Runtime, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    launch(runtime)
    path = write(tmp_path, [COMPLETIONS_HEADER, *COMPLETIONS], "completions.csv")
    imported = cli(env, "completions", "import", str(path), "--no-confirmations", "--json")
    assert imported.returncode == 0, imported.stderr
    report = json.loads(imported.stdout)
    assert (report["recorded"], report["unmatched"], report["confirmations"]) == (3, 1, 0)
    by_hand = cli(
        env, "complete", "H1", "--option", "alternative", "--note", "exempt by HR", "--now", NOW
    )
    assert by_hand.returncode == 0, by_hand.stderr
    assert "already complete" in by_hand.stdout
    unmatched = cli(env, "completions", "unmatched", "--json")
    assert [r["person_ref"] for r in json.loads(unmatched.stdout)] == ["H9"]
    bad = write(tmp_path, [COMPLETIONS_HEADER, "H1,,Z,2023-09-08,"], "bad.csv")
    refused = cli(env, "completions", "import", str(bad), "--now", NOW)
    assert refused.returncode == 2
    assert f"{bad}:2: option: unknown option 'Z'" in refused.stderr
    assert [(k, s) for _, k, s, _ in message_states(runtime.engine)] == [
        ("launch", "cancelled"),
        ("launch", "cancelled"),
        ("launch", "cancelled"),
    ]  # completed people get no launch email, and back-filling emailed nobody
