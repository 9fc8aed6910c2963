"""The calendar people live by: the deadline in their calendar (.ics), their own time zone,
the institute's closures, rehearsed through the real commands and a real SMTP server."""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import typer.main
import typer.testing
from icalendar import Calendar
from typer.testing import CliRunner

from pshnotify.cli import app
from tests.smtp_server import SmtpServer

NY = ZoneInfo("America/New_York")
runner = CliRunner()
HEADER = "id,email,name,department,role,timezone"


@pytest.fixture(autouse=True)
def _build_the_cli_once(monkeypatch: pytest.MonkeyPatch) -> None:
    command = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def at(day: dt.date, hour: int, minute: int = 0, tz: ZoneInfo = NY) -> str:
    return dt.datetime.combine(day, dt.time(hour, minute), tz).isoformat()


def by_kind(smtp: SmtpServer, address: str) -> list[tuple[str, EmailMessage]]:
    out = []
    for item in list(smtp.received):
        msg = item.message()
        if str(msg["To"]).endswith(f"<{address}>") or str(msg["To"]) == address:
            out.append((str(msg["X-Pshnotify-Kind"]), msg))
    return out


def calendar_of(msg: EmailMessage) -> Calendar:
    (part,) = [p for p in msg.iter_attachments() if p.get_content_type() == "text/calendar"]
    assert part.get_filename() == "deadline.ics"
    assert part.get_param("method") == "PUBLISH"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return Calendar.from_ical(payload)


def text_of(msg: EmailMessage) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_deadline_is_an_ics_event_that_each_extension_updates(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text(
        f"{HEADER}\n"
        "S1,sg@example.edu,Siew Goh,Human Resources,staff,Asia/Singapore\n"
        "B1,bos@example.edu,Bo Stone,Human Resources,staff,\n"
    )
    day = dt.date(2023, 9, 11)
    cli("init", "--now", at(day, 8))
    cli("roster", "import", str(roster), "--now", at(day, 8))
    cli("launch", "pilot", "--yes", "--now", at(day, 9))
    cli("run", "--once", "--now", at(day, 9))  # Boston's launch; Singapore's waits for 09:00
    cli("run", "--once", "--now", at(dt.date(2023, 9, 12), 9, tz=ZoneInfo("Asia/Singapore")))
    done = cli("extend", "S1", "--until", "2023-10-20", "--now", at(dt.date(2023, 10, 2), 10))
    assert "a confirmation with the updated calendar event is queued" in " ".join(done.split())
    cli("run", "--once", "--now", at(dt.date(2023, 10, 2), 10, 5))
    cli("extend", "S1", "--until", "2023-10-27", "--now", at(dt.date(2023, 10, 3), 10))
    cli("run", "--once", "--now", at(dt.date(2023, 10, 3), 10, 5))

    # (A reminder caught up on a pass goes too; it carries no calendar.)
    mails = [(k, m) for k, m in by_kind(smtp, "sg@example.edu") if k != "reminder"]
    assert [k for k, _ in mails] == ["launch", "extension", "extension"]
    events = []
    for _, msg in mails:
        cal = calendar_of(msg)
        assert str(cal["METHOD"]) == "PUBLISH"
        assert str(cal["VERSION"]) == "2.0"
        (event,) = cal.walk("VEVENT")
        events.append(event)
    uids = {str(e["UID"]) for e in events}
    assert len(uids) == 1  # one event, updated
    assert [int(e["SEQUENCE"]) for e in events] == [0, 1, 2]
    # The deadline instant: 11:59 p.m. in Boston on the closing day (or the extension's).
    starts = [e.decoded("DTSTART") for e in events]
    assert starts == [
        dt.datetime(2023, 10, 6, 23, 59, tzinfo=NY),
        dt.datetime(2023, 10, 20, 23, 59, tzinfo=NY),
        dt.datetime(2023, 10, 27, 23, 59, tzinfo=NY),
    ]
    assert all("https://learning.example.edu/psh" in str(e["DESCRIPTION"]) for e in events)
    # The emails say the deadline in both zones where they differ.
    launch_text = text_of(mails[0][1])
    assert "Friday, October 6, 2023, 11:59 p.m. Eastern Time" in launch_text
    assert "(Saturday 11:59 a.m. in Singapore)" in launch_text
    assert "(Saturday 11:59 a.m. in Singapore)" in text_of(mails[2][1])
    assert "Friday, October 27, 2023" in text_of(mails[2][1])

    # Boston's person: the same kind of event, a UID of their own, no second zone.
    (boston,) = [m for k, m in by_kind(smtp, "bos@example.edu") if k == "launch"]
    (event,) = calendar_of(boston).walk("VEVENT")
    assert str(event["UID"]) not in uids
    assert " in Singapore" not in text_of(boston)
    assert "(Saturday" not in text_of(boston)
