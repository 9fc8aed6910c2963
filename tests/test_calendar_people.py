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
    # Issue 26: a reminder three days before, at nine in the morning (program time), that
    # each client shows; nothing of the person in the file but the UID's digest.
    for event, start in zip(events, starts, strict=True):
        (alarm,) = event.walk("VALARM")
        assert str(alarm["ACTION"]) == "DISPLAY"
        assert "Deadline in 3 days: Preventing Sexual Harassment Training" in str(
            alarm["DESCRIPTION"]
        )
        rings = start + alarm.decoded("TRIGGER")
        day = start.astimezone(NY).date() - dt.timedelta(days=3)
        assert rings == dt.datetime.combine(day, dt.time(9), NY)
    for _, msg in mails:
        ics = next(p for p in msg.iter_attachments() if p.get_filename() == "deadline.ics")
        raw = ics.get_content()
        raw = raw.decode() if isinstance(raw, bytes) else raw
        for roster_data in ("S1", "Siew", "Goh", "sg@example.edu", "Singapore"):
            assert roster_data not in raw, roster_data
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


# -- a season in four zones ---------------------------------------------------------------------
ZONES = {
    "ny": ZoneInfo("America/New_York"),  # summer time ends 2023-11-05, starts 2024-03-10
    "be": ZoneInfo("Europe/Berlin"),  # ends 2023-10-29, starts 2024-03-31
    "sg": ZoneInfo("Asia/Singapore"),  # none
    "sy": ZoneInfo("Australia/Sydney"),  # starts 2023-10-01, ends 2024-04-07
}
# The test's own program: the seed's, with two waves whose windows hold every change above,
# a reminder every week, and two more closures on which weekly steps fall.
FALL = (dt.date(2023, 9, 25), dt.date(2023, 11, 17))
SPRING = (dt.date(2024, 3, 25), dt.date(2024, 4, 19))
EXTENDED_TO = dt.date(2023, 11, 24)  # a closure (Thanksgiving's Friday): the deadline anyway


def season_program(tmp_path: Path) -> Path:
    text = (Path(__file__).parent.parent / "config" / "program.toml").read_text()
    for old, new in [
        ("opens = 2023-09-11\ncloses = 2023-10-06", f"opens = {FALL[0]}\ncloses = {FALL[1]}"),
        ("opens = 2023-10-25\ncloses = 2023-12-01", f"opens = {SPRING[0]}\ncloses = {SPRING[1]}"),
        ("after_launch_days = [7, 14]", "after_launch_days = [7, 14, 21, 28, 35, 42]"),
        ("  2023-11-10,", "  2023-10-09, 2023-11-10, 2024-04-01,"),
    ]:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "program.toml"
    path.write_text(text)
    return path


def ticks(first: dt.date, last: dt.date) -> list[dt.datetime]:
    """Passes every four hours, day and night (UTC 00:17, 04:17, ...): whatever the zone and
    its offset, working hours hold at least one; the others must send nothing to it."""
    out = []
    day = first
    while day <= last:
        out += [dt.datetime.combine(day, dt.time(h, 17), dt.UTC) for h in range(0, 24, 4)]
        day += dt.timedelta(days=1)
    return out


@pytest.mark.timeout(300)  # a whole season of passes: 56 s quiet, 120 s seen at load 5
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.slow
def test_a_season_in_four_zones_keeps_each_persons_working_hours_and_closures(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pshnotify.domain.program import load_program

    program_file = season_program(tmp_path)
    monkeypatch.setenv("PSHNOTIFY_PROGRAM_FILE", str(program_file))
    program, _ = load_program(program_file)
    people: dict[str, tuple[ZoneInfo, str]] = {}  # address -> (zone, wave)
    lines = [f"{HEADER},wave"]
    for tag, tz in ZONES.items():
        for wave in ("pilot", "grad"):
            for n in (1, 2):
                pid = f"{tag}-{wave}-{n}"
                people[f"{pid}@example.edu"] = (tz, wave)
                lines.append(
                    f"{pid},{pid}@example.edu,P {pid},Human Resources,staff,{tz.key},{wave}"
                )
    roster = tmp_path / "roster.csv"
    roster.write_text("\n".join(lines) + "\n")
    cli("init", "--now", at(FALL[0] - dt.timedelta(days=3), 9))
    cli("roster", "import", str(roster), "--now", at(FALL[0] - dt.timedelta(days=3), 9))
    extended = "sy-pilot-1@example.edu"
    for first, last, wave in ((*FALL, "pilot"), (*SPRING, "grad")):
        end = max(last, EXTENDED_TO) + dt.timedelta(days=1) if wave == "pilot" else last
        for tick in ticks(first, end):
            if tick.date() == first and tick.hour == 12:  # 08:17 in Boston: launch, then pass
                cli("launch", wave, "--yes", "--now", tick.isoformat())
            if wave == "pilot" and tick == dt.datetime(2023, 11, 1, 16, 17, tzinfo=dt.UTC):
                cli("extend", extended, "--until", str(EXTENDED_TO), "--now", tick.isoformat())
            cli("run", "--once", "--now", tick.isoformat())

    closed = program.sending.closed
    got: dict[str, list[tuple[str, dt.datetime, EmailMessage]]] = {a: [] for a in people}
    for item in list(smtp.received):
        msg = item.message()
        address = str(msg["To"].addresses[0].addr_spec)
        got[address].append((str(msg["X-Pshnotify-Kind"]), msg["Date"].datetime, msg))
    for address, (tz, wave_key) in people.items():
        wave = program.wave(wave_key)
        deadline = EXTENDED_TO if address == extended else wave.closes
        ends = program.closes_at(deadline)
        mails = got[address]
        kinds = [k for k, _, _ in mails]
        assert kinds.count("launch") == 1, (address, kinds)
        assert kinds.count("reminder") >= 4, (address, kinds)
        reminder_days = []
        for kind, sent, _ in mails:
            if kind not in ("launch", "reminder"):
                continue
            local = sent.astimezone(tz)
            where = (address, kind, local.isoformat())
            assert dt.time(9) <= local.time() < dt.time(17), where
            assert local.weekday() < 5, where
            assert local.date() not in closed, where
            assert sent < ends, where
            if kind == "reminder":
                reminder_days.append(local.date())
        assert len(reminder_days) == len(set(reminder_days)), address  # one a day at most
    # The season crosses each zone's change of offset with reminders on both sides of it.
    for tag, change in (
        ("ny", dt.date(2023, 11, 5)),
        ("be", dt.date(2023, 10, 29)),
        ("sy", dt.date(2023, 10, 1)),
        ("sy", dt.date(2024, 4, 7)),
        ("be", dt.date(2024, 3, 31)),
    ):
        wave = "pilot" if change.year == 2023 else "grad"
        days = [
            sent.astimezone(ZONES[tag]).date()
            for k, sent, _ in got[f"{tag}-{wave}-2@example.edu"]
            if k in ("launch", "reminder")
        ]
        assert min(days) < change < max(days), (tag, change, days)
    # The extension: the confirmation carries the same event, one SEQUENCE higher.
    launch = next(m for k, _, m in got[extended] if k == "launch")
    extension = next(m for k, _, m in got[extended] if k == "extension")
    (before,) = calendar_of(launch).walk("VEVENT")
    (after,) = calendar_of(extension).walk("VEVENT")
    assert str(before["UID"]) == str(after["UID"])
    assert int(after["SEQUENCE"]) > int(before["SEQUENCE"])
    assert after.decoded("DTSTART") == dt.datetime.combine(EXTENDED_TO, dt.time(23, 59), NY)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.fast
def test_plan_counts_each_day_of_the_program_per_recipient_zone(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("PSHNOTIFY_PROGRAM_FILE", str(season_program(tmp_path)))
    roster = tmp_path / "roster.csv"
    rows = [f"{HEADER},wave"] + [
        f"{tag}{n},{tag}{n}@example.edu,P {tag}{n},Human Resources,staff,{tz.key},pilot"
        for tag, tz in ZONES.items()
        for n in (1, 2)
    ]
    rows.append("home,home@example.edu,P home,Human Resources,staff,,pilot")
    roster.write_text("\n".join(rows) + "\n")
    before = at(FALL[0] - dt.timedelta(days=3), 9)
    cli("init", "--now", before)
    cli("roster", "import", str(roster), "--now", before)
    plan = json.loads(cli("plan", "--json", "--now", before))
    days = {d["date"]: d for d in plan["days"]}
    # Launched Monday 09:00 in Boston: Singapore's and Sydney's emails go at their Tuesday
    # 09:00, which is still Monday in Boston: counted on the program's Monday, per zone.
    assert days["2023-09-25"]["launch"] == 9
    assert days["2023-09-25"]["zones"] == {
        "America/New_York": 3,  # the two in New York and the one with no zone of their own
        "Asia/Singapore": 2,
        "Australia/Sydney": 2,
        "Europe/Berlin": 2,
    }
    # A week later the same: Sydney's and Singapore's reminders (their Tuesday 09:00) are
    # the program's Monday, and nothing is left for its Tuesday.
    assert days["2023-10-02"]["reminder"] == 9
    assert days["2023-10-02"]["zones"] == days["2023-09-25"]["zones"]
    assert "2023-10-03" not in days
    table = " ".join(cli("plan", "--now", before).split())
    assert "by zone" in table
    assert "Singapore 2" in table
