"""Officers' reports: CSV a spreadsheet cannot execute, one email per officer per night, on demand.

The nightly path runs end to end: roster import, a real launch, queueing on SQLite and
PostgreSQL (twice, and from two engines at once), the real dispatcher with the report enricher
and a real SMTP server; the email is parsed back with the `email` and `csv` modules.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import Engine, select, update

import pshnotify.mail.report_kind  # noqa: F401 - registers the "report" kind (see the report)
from pshnotify.cli import reports as cli_reports
from pshnotify.clock import FixedClock
from pshnotify.domain.csv_safety import safe_cell, to_csv
from pshnotify.domain.errors import NotFoundError
from pshnotify.mail.kinds import KindInput, Recipient, sample_contexts
from pshnotify.mail.render import Templates
from pshnotify.mail.report_kind import CSV_COLUMNS, OFFICER_NAME, report_context
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.launch import launch_wave
from pshnotify.services.campaign.roster import import_roster
from pshnotify.services.delivery.dispatch import Dispatcher
from pshnotify.services.reporting.officer_report import action_sections
from pshnotify.services.reporting.reports import (
    build_report,
    department_report,
    queue_nightly_reports,
    report_enricher,
    report_night,
)
from pshnotify.store.db import make_engine
from pshnotify.store.outbox import Claimed
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import audit_log, enrollments, messages, people, undeliverable
from tests.conftest import TEMPLATES
from tests.smtp_server import SmtpServer
from tests.test_cli import cli
from tests.test_program import SEED
from tests.test_roster_import import HEADER, write

EVIL = "=cmd|' /C calc'!A0"
HR, IST = "ao-hr@example.edu", "ao-ist@example.edu"
ROSTER = [
    f"R1,ada@example.edu,Ada Lovelace,Human Resources,staff,,2010-01-04,,,{HR},",
    f"R2,mallory@example.edu,{EVIL},Human Resources,staff,,2010-01-04,,,{HR},",
    "R3,jose@example.edu,José Núñez,Human Resources,staff,,2001-09-01,,,AO-HR@example.edu,",
    f"R4,unpaid@example.edu,Un Paid,Human Resources,staff,no,2012-01-01,,,{HR},",
    f"R5,grace@example.edu,Grace Hopper,Information Systems and Technology,staff,,,,,{IST},",
    "R6,zoe@example.edu,Zoë Brontë,Information Systems and Technology,"
    f"graduate_student,,,4,,{IST},",
    "R7,nobody@example.edu,No Officer,Human Resources,staff,,2001-01-01,,,,",
]
EXEMPTION = "@leave: approved by HR"


def at(year: int, month: int, day: int, hour: int = 6, minute: int = 0) -> dt.datetime:
    """A wall-clock instant in New York, standard or daylight time as the date says."""
    return dt.datetime(year, month, day, hour, minute, tzinfo=SEED.tz)


# -- CSV safety ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (
            '=HYPERLINK("http://x.example/?"&A1,"Open")',
            '\'=HYPERLINK("http://x.example/?"&A1,"Open")',
        ),
        ("-2+3", "'-2+3"),
        ("+1", "'+1"),
        ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "' =1"),
        ("\n=1", "' =1"),
        (" =1+1", "' =1+1"),
        ("\u00a0@x", "'\u00a0@x"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("-Anne-Marie", "'-Anne-Marie"),
        (EVIL, "'" + EVIL),
        ("Anne-Marie O'Neil", "Anne-Marie O'Neil"),
        ("a=b", "a=b"),
        ("José Núñez", "José Núñez"),
        ("line\r\nbreak", "line break"),
        ("bell\x07and\x85next\u2028line", "bell and next line"),
        ("tab\tinside", "tab\tinside"),
        ("", ""),
        (None, ""),
        (42, "42"),
    ],
)
@pytest.mark.fast
def test_a_cell_never_starts_a_formula(value: object, cell: str) -> None:
    assert safe_cell(value) == cell


@pytest.mark.fast
def test_safe_cell_only_ever_adds_the_prefix() -> None:
    for value in ("=1", "-", "@", "+", "plain", "'already quoted"):
        assert safe_cell(value) in (value, "'" + value)


@pytest.mark.fast
def test_a_csv_file_opens_as_data_in_excel_and_parses_back() -> None:
    data = to_csv(["name", "=header"], [[EVIL, "Zoë"], ['say "hi", then =1', None]])
    assert data.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    text = data.decode("utf-8-sig")
    assert text.endswith("\r\n")
    assert "\n" not in text.replace("\r\n", "")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows == [["name", "'=header"], ["'" + EVIL, "Zoë"], ['say "hi", then =1', ""]]
    for row in rows:
        for cell in row:
            assert not cell or cell[0] not in "=+-@\t\r"


# -- the kind and its templates ----------------------------------------------------------------
@pytest.mark.fast
def test_the_report_templates_pass_the_start_up_check() -> None:
    samples = sample_contexts(SEED, ["report"])
    assert [k for k, _ in samples] == ["report"]
    Templates(TEMPLATES).check(samples)


@pytest.mark.fast
def test_a_report_without_its_rows_names_the_missing_wiring() -> None:
    officer = Recipient("", OFFICER_NAME, HR, "")
    data = KindInput(SEED, None, officer, None, {"officer": HR, "date": "2023-09-12"})
    with pytest.raises(ValueError, match="report enricher"):
        report_context(data)


@pytest.mark.fast
def test_the_night_is_the_local_date_once_the_report_time_has_come() -> None:
    assert report_night(SEED, at(2023, 9, 12, 5, 59)) is None
    assert report_night(SEED, at(2023, 9, 12, 6, 0)) == dt.date(2023, 9, 12)
    # 02:00 UTC on the 12th is still the evening of the 11th in New York.
    late = dt.datetime(2023, 9, 12, 2, 0, tzinfo=dt.UTC)
    assert report_night(SEED, late) == dt.date(2023, 9, 11)
    # After the change back to standard time 06:00 local is 11:00 UTC.
    assert report_night(SEED, dt.datetime(2023, 11, 6, 10, 59, tzinfo=dt.UTC)) is None
    assert report_night(SEED, dt.datetime(2023, 11, 6, 11, 0, tzinfo=dt.UTC)) is not None


# -- a campaign with two officers -------------------------------------------------------------
def setup_campaign(runtime: Runtime, tmp_path: Path) -> StoredProgram:
    """Import, launch the pilot on Monday 09:30, then one completion and one exemption."""
    stored = runtime.program(None)
    engine = runtime.engine
    import_roster(engine, stored, write(tmp_path, [HEADER, *ROSTER]), runtime.clock, actor="op")
    launch_wave(
        engine,
        stored,
        "pilot",
        runtime.clock,
        actor="op",
        message_id_domain=runtime.settings.message_id_domain,
    )
    # 22:30 in New York, already the next day in UTC: the report must say the local date.
    set_enrollment(engine, "R1", completed_at=at(2023, 9, 11, 22, 30), completion_option="B")
    set_enrollment(engine, "R3", exempted_reason=EXEMPTION)
    return stored


def set_enrollment(engine: Engine, external_id: str, **values: object) -> None:
    person = select(people.c.id).where(people.c.external_id == external_id).scalar_subquery()
    with engine.begin() as conn:
        conn.execute(update(enrollments).where(enrollments.c.person_id == person).values(**values))


def dispatcher_with_reports(runtime: Runtime) -> Dispatcher:
    """runtime.dispatcher() plus the report enricher, as runtime/wiring.py should build it."""
    d = runtime.dispatcher()
    return Dispatcher(
        d.engine,
        d.clock,
        d.templates,
        d.connections,
        d.config,
        enrichers={"report": report_enricher},
    )


def send(runtime: Runtime) -> dict[str, int]:
    return dict(asyncio.run(dispatcher_with_reports(runtime).run_once()).outcomes)


def queue_at(engine: Engine, stored: StoredProgram, now: dt.datetime) -> int:
    with engine.begin() as conn:
        return queue_nightly_reports(conn, stored, now, "test.pshnotify.invalid")


def report_steps(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(messages.c.recipient_email, messages.c.step)
            .where(messages.c.kind == "report")
            .order_by(messages.c.step, messages.c.recipient_email)
        ).all()
    return [(r.recipient_email.lower(), r.step) for r in rows]


@pytest.mark.fast
def test_one_report_per_officer_per_night_from_the_night_after_launch_to_the_day_after_the_deadline(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = setup_campaign(runtime, tmp_path)
    engine = runtime.engine
    assert queue_at(engine, stored, at(2023, 9, 11, 9, 30)) == 0  # the launch's own night
    assert queue_at(engine, stored, at(2023, 9, 11, 23, 59)) == 0
    assert queue_at(engine, stored, at(2023, 9, 12, 5, 59)) == 0  # before the report time
    assert queue_at(engine, stored, at(2023, 9, 12, 6, 0)) == 2
    assert queue_at(engine, stored, at(2023, 9, 12, 6, 0)) == 0
    assert queue_at(engine, stored, at(2023, 9, 12, 23, 0)) == 0
    assert queue_at(engine, stored, at(2023, 9, 16)) == 2  # Saturday: reports run every night
    # Down from Saturday to Tuesday 07:30: Tuesday's report goes out, Sunday's and Monday's never.
    assert queue_at(engine, stored, at(2023, 9, 19, 7, 30)) == 2
    assert report_steps(engine) == [
        (HR, "2023-09-12"),
        (IST, "2023-09-12"),
        (HR, "2023-09-16"),
        (IST, "2023-09-16"),
        (HR, "2023-09-19"),
        (IST, "2023-09-19"),
    ]
    # The pilot closes on Friday 6 October: its officer's last report is the next morning.
    assert queue_at(engine, stored, at(2023, 10, 7)) == 2
    assert queue_at(engine, stored, at(2023, 10, 8)) == 1  # IS&T also has a grad student
    set_enrollment(engine, "R2", extended_until=dt.date(2023, 10, 13))  # an extension counts
    assert queue_at(engine, stored, at(2023, 10, 14)) == 2
    assert queue_at(engine, stored, at(2023, 10, 15)) == 1
    assert queue_at(engine, stored, at(2023, 12, 2)) == 1  # the grad wave closes on 1 December
    assert queue_at(engine, stored, at(2023, 12, 3)) == 0
    with engine.connect() as conn:
        row = conn.execute(
            select(messages)
            .where(messages.c.kind == "report", messages.c.step == "2023-09-12")
            .order_by(messages.c.recipient_email)
        ).first()
    assert row is not None
    assert row.person_id is None
    assert row.wave_key is None
    assert row.recipient_name == OFFICER_NAME
    # Two spellings of one address on the roster are one officer (and one report).
    assert row.idempotency_key == f"psh-2023-2024:-:{HR}:report:2023-09-12"
    assert row.context == {"officer": row.recipient_email, "date": "2023-09-12"}
    assert row.due_at == at(2023, 9, 12)


@pytest.mark.fast
def test_replicas_queueing_at_the_same_instant_queue_each_report_once(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = setup_campaign(runtime, tmp_path)
    engines = [runtime.engine, make_engine(runtime.settings.database_url)]
    start = threading.Barrier(len(engines))

    def replica(engine: Engine) -> int:
        start.wait(timeout=10)
        return queue_at(engine, stored, at(2023, 9, 12))

    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            queued = list(pool.map(replica, engines))
        assert queue_at(engines[1], stored, at(2023, 9, 12, 7)) == 0
    finally:
        engines[1].dispose()
    assert sum(queued) == 2
    assert report_steps(runtime.engine) == [(HR, "2023-09-12"), (IST, "2023-09-12")]


def reports_received(smtp: SmtpServer) -> dict[str, EmailMessage]:
    return {
        m["To"].addresses[0].addr_spec.lower(): m
        for m in smtp.messages()
        if m["X-Pshnotify-Kind"] == "report"
    }


def attachment_rows(msg: EmailMessage) -> tuple[str, list[dict[str, str]]]:
    (part,) = list(msg.iter_attachments())
    assert part.get_content_type() == "text/csv"
    data = part.get_payload(decode=True)
    assert isinstance(data, bytes)
    assert data.startswith(b"\xef\xbb\xbf")
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return str(part.get_filename()), list(reader)


def test_the_nightly_report_arrives_with_a_table_and_a_safe_csv(
    runtime: Runtime, clock: FixedClock, smtp: SmtpServer, tmp_path: Path
) -> None:
    stored = setup_campaign(runtime, tmp_path)
    # R1 complete and R3 exempted: their launch emails are skipped; R2, R5 and R7 get theirs.
    assert send(runtime) == {"sent": 3, "skipped": 2}
    clock.set(at(2023, 9, 12))
    assert queue_at(runtime.engine, stored, clock.now()) == 2
    # Fresh data at send time: Grace completes between the queueing and the sending.
    set_enrollment(runtime.engine, "R5", completed_at=at(2023, 9, 12, 5), completion_option="C")
    assert send(runtime) == {"sent": 2}
    received = reports_received(smtp)
    assert sorted(received) == [HR, IST]
    hr = received[HR]
    assert hr["X-Pshnotify-Wave"] is None
    assert hr["To"].addresses[0].display_name == OFFICER_NAME
    assert "Tuesday, September 12, 2023" in hr["Subject"]
    assert "1 of 4 complete" in hr["Subject"]
    html_part, text_part = hr.get_body(("html",)), hr.get_body(("plain",))
    assert html_part is not None
    assert text_part is not None
    html, text = html_part.get_content(), text_part.get_content()
    assert "<table" in html
    assert "<tr><td>Ada Lovelace</td><td>R1</td>" in html
    assert "=cmd|&#39; /C calc&#39;!A0" in html  # autoescaped
    assert "Option B - Responding to Disclosures at MIT, on 2023-09-11" in text
    assert "No Officer" not in text  # people without this officer are not in their report
    filename, rows = attachment_rows(hr)
    assert filename == "psh-2023-2024-status-2023-09-12.csv"
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["R1", "R2", "R3", "R4"]
    assert (by_id["R1"]["status"], by_id["R1"]["option"], by_id["R1"]["completed_on"]) == (
        "complete",
        "B",
        "2023-09-11",
    )
    assert by_id["R2"]["name"] == "'" + EVIL
    assert (by_id["R2"]["status"], by_id["R2"]["deadline"]) == ("emailed", "2023-10-06")
    assert by_id["R2"]["launch_email_sent"] == "yes"
    assert (by_id["R3"]["status"], by_id["R3"]["exemption_reason"]) == ("exempt", "'" + EXEMPTION)
    assert by_id["R3"]["name"] == "José Núñez"
    # The program file's note for the reason, not its code.
    assert by_id["R4"]["status"] == "not_required"  # the rules say so, no operator did
    assert by_id["R4"]["exemption_reason"] == "Unpaid appointees may ask for access (FAQ 16)."
    for row in rows:
        assert all(not v or v[0] not in "=+-@\t\r" for v in row.values())
    _, ist_rows = attachment_rows(received[IST])
    assert [(r["id"], r["status"]) for r in ist_rows] == [
        ("R5", "complete"),
        ("R6", "not_launched"),
    ]
    assert send(runtime) == {}  # sent once; the next pass finds nothing to send


@pytest.mark.fast
def test_the_on_demand_report_matches_departments_without_case(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = setup_campaign(runtime, tmp_path)
    with runtime.engine.connect() as conn:
        report = department_report(conn, stored, department="human resources", now=at(2023, 10, 7))
        with pytest.raises(NotFoundError) as caught:
            department_report(conn, stored, department="Human Resource", now=at(2023, 10, 7))
        by_officer = department_report(
            conn, stored, officer="AO-IST@example.edu", now=at(2023, 10, 7)
        )
    assert report.title.endswith(": Human Resources")
    assert [r.id for r in report.rows] == ["R2", "R1", "R3", "R7", "R4"]  # by name
    assert report.summary == {
        "people": 5,
        "complete": 1,
        "emailed": 2,
        "overdue": 2,  # 7 October: the pilot closed the day before
        "not_launched": 0,
        "exempt": 1,
        "not_required": 1,
    }
    assert caught.value.problems == [
        "--department: nobody enrolled in psh-2023-2024 has the department 'Human Resource'"
    ]
    assert "Human Resources" in caught.value.hint
    assert [r.id for r in by_officer.rows] == ["R5", "R6"]
    console = Console(width=200, record=True, file=io.StringIO())
    monkeypatch.setattr(cli_reports, "out", console)
    cli_reports._show(report)
    shown = console.export_text()
    assert EVIL in shown  # printed as written, never taken as markup
    assert "5 people: 1 complete, 2 emailed and not complete (2 past the deadline)" in shown


@pytest.mark.fast
def test_the_report_command_writes_the_same_csv(
    runtime: Runtime, env: dict[str, str], tmp_path: Path
) -> None:
    setup_campaign(runtime, tmp_path)
    target = tmp_path / "hr.csv"
    now = "2023-09-12T06:00:00-04:00"
    result = cli(
        env,
        "report",
        "--department",
        "Human Resources",
        "--csv",
        str(target),
        "--json",
        "--now",
        now,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["summary"]["people"] == 5
    assert {r["id"]: r["status"] for r in data["rows"]} == {
        "R1": "complete",
        "R2": "emailed",
        "R3": "exempt",
        "R4": "not_required",
        "R7": "emailed",
    }
    rows = list(csv.DictReader(io.StringIO(target.read_bytes().decode("utf-8-sig"), newline="")))
    assert [r["name"] for r in rows] == [
        "'" + EVIL,
        "Ada Lovelace",
        "José Núñez",
        "No Officer",
        "Un Paid",
    ]
    unknown = cli(env, "report", "--department", "Payroll", "--now", now)
    assert unknown.returncode == 2
    assert "--department: nobody enrolled in psh-2023-2024 has the department 'Payroll'" in (
        unknown.stderr.replace("\n", " ")
    )


def test_the_nightly_extras_taken_from_the_reports_rows_are_what_their_queries_say(
    runtime: Runtime, tmp_path: Path
) -> None:
    """The nightly path takes the officer's name and whether anyone is undeliverable from the
    report's own rows: on a roster with a tie and blank names, an officer spelled in another
    case, a removed person and marks (one cleared), it says what each query says alone."""
    stored = setup_campaign(runtime, tmp_path)
    engine = runtime.engine
    given = {"R1": "Hal Officer", "R2": "Bea Officer", "R3": "Bea Officer", "R4": "Hal Officer"}
    given |= {"R5": "Ivy Officer", "R6": "Abe Officer", "R7": ""}
    marks = {"R2": None, "R5": at(2023, 9, 12, 9)}  # R5's mark is cleared
    now = at(2023, 9, 13)
    with engine.begin() as conn:
        for pid, name in given.items():
            conn.execute(
                update(people).where(people.c.external_id == pid).values(admin_officer_name=name)
            )
        for pid, cleared in marks.items():
            row = conn.execute(
                select(people.c.id, people.c.email).where(people.c.external_id == pid)
            ).one()
            conn.execute(
                undeliverable.insert().values(
                    person_id=row.id,
                    email_key=row.email.lower(),
                    since=at(2023, 9, 11, 10),
                    reason="hard bounce 5.1.1: user unknown",
                    cleared_at=cleared,
                )
            )
    set_enrollment(engine, "R4", removed_at=at(2023, 9, 12))  # Hal is one of two now: a tie
    night = now.date()
    said = {}
    for officer in (HR, "AO-HR@EXAMPLE.EDU", IST, "nobody@example.edu"):
        claimed = Claimed(
            1, stored.id, None, "report", None, night.isoformat(), "<m@x>", officer, "AO",
            {"officer": officer, "date": night.isoformat()}, 0, None, "token",
        )  # fmt: skip
        nightly = report_enricher(engine, stored, claimed)
        as_of = dt.datetime.combine(night, SEED.sending.report_time, SEED.tz)
        with engine.connect() as conn:
            report = build_report(conn, stored, officer=officer, now=as_of)
            alone = action_sections(
                conn,
                stored,
                officer=officer,
                night=night,
                as_of=as_of,
                rows=report.row_dicts(),
                list_limit=30,
            )
        assert nightly["rows"] == report.row_dicts()
        assert {k: nightly[k] for k in alone} == alone
        said[officer] = (
            alone["officer_name"],
            [u["id"] for u in alone["attention"]["undeliverable"]],
        )
    assert said[HR] == said["AO-HR@EXAMPLE.EDU"] == ("Bea Officer", ["R2"])
    assert said[IST] == ("Abe Officer", [])  # a tie: the first in order
    assert said["nobody@example.edu"] == (None, [])


def test_the_report_says_who_completed_joined_left_or_was_extended_since_the_last_one(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = setup_campaign(runtime, tmp_path)  # imported Monday 09:30; R1 complete at 22:30
    engine = runtime.engine
    last = at(2023, 9, 11, 12)  # HR's previous report went out at noon
    with engine.begin() as conn:
        conn.execute(
            messages.insert().values(
                program_id=stored.id, person_id=None, kind="report", step="2023-09-11",
                idempotency_key="previous-report", message_id="<previous@test.invalid>",
                recipient_email=HR, recipient_name=OFFICER_NAME, context={}, state="sent",
                due_at=last, sent_at=last, created_at=last, updated_at=last,
            )
        )  # fmt: skip
        for subject in ("R2", "R5"):  # R5 is IST's: not in HR's report
            conn.execute(
                audit_log.insert().values(
                    at=at(2023, 9, 12, 10), actor="op", action="person.extend",
                    program_id=stored.id, subject=subject, details={"until": "2023-12-01"},
                )
            )  # fmt: skip
    set_enrollment(engine, "R2", created_at=at(2023, 9, 12, 8))  # joined
    set_enrollment(engine, "R4", removed_at=at(2023, 9, 12, 9))  # left
    claimed = Claimed(
        1, stored.id, None, "report", None, "2023-09-13", "<m@x>", HR, OFFICER_NAME,
        {"officer": HR, "date": "2023-09-13"}, 0, None, "token",
    )  # fmt: skip
    since = report_enricher(engine, stored, claimed)["since"]
    ids = {k: [p["id"] for p in since[k]] for k in ("completed", "joined", "left", "extended")}
    assert ids == {"completed": ["R1"], "joined": ["R2"], "left": ["R4"], "extended": ["R2"]}
    assert since["extended"][0]["until"] == "2023-12-01"
