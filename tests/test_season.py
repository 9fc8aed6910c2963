"""A whole season of the seed program in virtual time, through `run --once --now` steps.

The expected emails per person come from an oracle written here from the issue's words (not
from `domain.cadence`), so the two implementations check each other.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import typer.main
import typer.testing
from typer.testing import CliRunner

from pshnotify.cli import app
from pshnotify.demo.sample_roster import COLUMNS, sample_people
from pshnotify.domain.program import Program
from tests.smtp_server import SmtpServer
from tests.test_program import SEED

TZ = ZoneInfo("America/New_York")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _build_the_cli_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Typer rebuilds its command tree from signatures on every in-process invoke (~50 ms);
    a season makes hundreds of calls, so build it once. A real command line builds it once too."""
    command = typer.main.get_command(app)
    monkeypatch.setattr(typer.testing, "_get_command", lambda _app: command)


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def at(day: dt.date, hour: int, minute: int = 0) -> str:
    return dt.datetime.combine(day, dt.time(hour, minute), TZ).isoformat()


def days(start: dt.date, end: dt.date) -> Iterator[dt.date]:
    d = start
    while d <= end:
        yield d
        d += dt.timedelta(days=1)


def write_roster(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


# -- the oracle ---------------------------------------------------------------------------------
def next_working_day(d: dt.date) -> dt.date:
    """Weekends and the institute's closures (the seed's holidays) move to the next day."""
    while d.weekday() >= 5 or d in SEED.sending.closed:
        d += dt.timedelta(days=1)
    return d


def expected_reminders(launch: dt.date, deadline: dt.date, until: dt.date | None) -> list[dt.date]:
    """Reminders 7 and 14 days after launch, 3 and 1 before the deadline; weekends and closures
    move to the next working day unless past the deadline; none in the 3 days after launch;
    one per day; none on or after `until` (completion or exemption day: it happens after the
    09:00 send)."""
    raw = [
        launch + dt.timedelta(days=7),
        launch + dt.timedelta(days=14),
        deadline - dt.timedelta(days=3),
        deadline - dt.timedelta(days=1),
    ]
    out = set()
    for d in raw:
        d = next_working_day(d)
        if d > deadline or d < launch + dt.timedelta(days=3) or d <= launch:
            continue
        if until is not None and d > until:
            continue
        out.add(d)
    return sorted(out)


def required_people(program: Program, rows: list[dict[str, str]]) -> dict[str, tuple[str, str]]:
    """id -> (email, wave) for everyone the shipped rules require."""
    out = {}
    for r in rows:
        rec: dict[str, object] = {
            **r,
            "paid": r["paid"].lower() not in ("no", "false", "0"),
            "start_date": dt.date.fromisoformat(r["start_date"]) if r["start_date"] else None,
            "program_year": int(r["program_year"]) if r["program_year"] else None,
        }
        rule = program.assess(rec)
        if rule is not None and rule.status == "required":
            wave = program.assign_wave(rec)
            assert wave is not None
            out[r["id"]] = (r["email"].lower(), wave)
    return out


def received(smtp: SmtpServer) -> dict[str, list[tuple[str, str]]]:
    """recipient -> [(kind, local 'YYYY-MM-DD HH:MM')] in arrival order."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    parser = BytesHeaderParser()  # headers only: thousands of messages, parsed quickly
    for item in list(smtp.received):
        msg = parser.parsebytes(item.data)
        when = parsedate_to_datetime(msg["Date"]).astimezone(TZ)
        out[parseaddr(msg["To"])[1].lower()].append(
            (msg["X-Pshnotify-Kind"], when.strftime("%Y-%m-%d %H:%M"))
        )
    return out


# -- the season ---------------------------------------------------------------------------------
LAUNCHES = {w.opens: w.key for w in SEED.waves}
SEASON_END = dt.date(2024, 3, 31)
# A pass at 08:30 on the day of the pilot's 1-day-before step (issue 13): it must not queue a
# second reminder beside the 09:00 one (nor anything early); the officers' reports, not held
# to working hours, go at 08:30 that day.
EARLY_PASS = dt.date(2023, 10, 5)


def run_season(
    tmp_path: Path, rows: list[dict[str, str]], events: dict[dt.date, list[tuple[str, ...]]]
) -> None:
    """Every day: 09:00 launches due that day, then a pass; on event days, the events at 10:00
    and a pass right after them."""
    roster = write_roster(tmp_path / "roster.csv", rows)
    cli("init", "--now", at(dt.date(2023, 9, 1), 9))
    cli("roster", "import", str(roster), "--now", at(dt.date(2023, 9, 1), 9))
    for day in days(min([dt.date(2023, 9, 11), *events]), SEASON_END):
        for event in events.get(day, []):
            if event[0] == "import":  # a roster change before the morning pass
                cli("roster", "import", "--merge", event[1], "--now", at(day, 8))
        if day == EARLY_PASS:
            cli("run", "--once", "--now", at(day, 8, 30))
        if day in LAUNCHES:
            cli("launch", LAUNCHES[day], "--yes", "--now", at(day, 9))
        cli("run", "--once", "--now", at(day, 9))
        todays = [e for e in events.get(day, []) if e[0] != "import"]
        for event in todays:
            cli(*event, "--now", at(day, 10))
        if todays:
            cli("run", "--once", "--now", at(day, 10, 5))


@pytest.mark.timeout(300)  # a whole season of passes: 56 s quiet, 120 s seen at load 5
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.slow
def test_a_whole_season_sends_exactly_the_expected_emails(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    rows = sample_people(800, seed=7)
    reasons = Counter(
        SEED.assess(
            {
                **r,
                "paid": r["paid"] != "no",
                "start_date": dt.date.fromisoformat(r["start_date"]) if r["start_date"] else None,
                "program_year": int(r["program_year"]) if r["program_year"] else None,
            }
        ).reason  # type: ignore[union-attr]
        for r in rows
    )
    assert set(reasons) == {
        "required",
        "exempt-affiliate",
        "not-in-scope",
        "exempt-unpaid",
        "exempt-new-hire",
    }
    required = required_people(SEED, rows)
    by_wave: dict[str, list[str]] = defaultdict(list)
    for pid, (_, wave) in sorted(required.items()):
        by_wave[wave].append(pid)
    extended = by_wave["pilot"][0]  # extension to 2023-10-20, granted 2023-10-02
    exempted = by_wave["pilot"][1]  # exempted by an operator on 2023-09-20
    late = {
        **rows[0],
        "id": "LATE1",
        "email": "late.joiner@example.edu",
        "name": "Late Joiner",
        "role": "graduate_student",
        "program_year": "4",
        "affiliation": "",
        "paid": "",
        "wave": "",
    }
    late_file = write_roster(tmp_path / "late.csv", [late])
    events: dict[dt.date, list[tuple[str, ...]]] = defaultdict(list)
    events[dt.date(2023, 9, 20)].append(("exempt", exempted, "--reason", "approved alternative"))
    events[dt.date(2023, 10, 2)].append(("extend", extended, "--until", "2023-10-20"))
    # Monday after the grad wave opened, a week before the Monday after the DST change.
    events[dt.date(2023, 10, 30)].append(("import", str(late_file)))
    # Completions arriving over time from the learning system's export, at 10:00 local.
    rng = random.Random(9)
    completed: dict[str, dt.date] = {}
    for pid in sorted(required):
        if pid in (extended, exempted) or rng.random() > 0.35:
            continue
        wave = SEED.wave(required[pid][1])
        span = (wave.closes - wave.opens).days
        completed[pid] = wave.opens + dt.timedelta(days=rng.randint(-5, span - 1))
    by_day: dict[dt.date, list[str]] = defaultdict(list)
    for pid, day in completed.items():
        by_day[day].append(pid)
    for day, pids in sorted(by_day.items()):
        lines = ["id,option,completed_at"] + [
            f"{p},{'ABC'[i % 3]},{day}" for i, p in enumerate(pids)
        ]
        export = tmp_path / f"done-{day}.csv"
        export.write_text("\n".join(lines) + "\n")
        events[day].append(("completions", "import", str(export)))
        # The next day's export repeats them (no second confirmation) and adds another option
        # for one of them (recorded, no second confirmation either).
        again = tmp_path / f"again-{day}.csv"
        again.write_text("\n".join([*lines, f"{pids[0]},C,{day}T15:00:00-05:00"]) + "\n")
        events[day + dt.timedelta(days=1)].append(("completions", "import", str(again)))
    run_season(tmp_path, rows, events)

    got = received(smtp)
    reports = {e: got.pop(e) for e in list(got) if e.startswith("ao-")}
    expected: dict[str, list[tuple[str, str]]] = {}
    for pid, (email, wave_key) in required.items():
        wave = SEED.wave(wave_key)
        deadline = dt.date(2023, 10, 20) if pid == extended else wave.closes
        until = dt.date(2023, 9, 20) if pid == exempted else completed.get(pid)
        mails = (
            [] if until is not None and until < wave.opens else [("launch", f"{wave.opens} 09:00")]
        )
        mails += [
            ("reminder", f"{d} 09:00")
            for d in expected_reminders(wave.opens, deadline, until)
            if pid not in completed or d <= completed[pid]
        ]
        if pid in completed:
            mails.append(("confirmation", f"{completed[pid]} 10:05"))
        if pid == extended:  # the extension's confirmation, with the updated calendar event
            mails.append(("extension", "2023-10-02 10:05"))
        expected[email] = mails
    late_launch = dt.date(2023, 10, 30)
    expected["late.joiner@example.edu"] = [("launch", f"{late_launch} 09:00")] + [
        ("reminder", f"{d} 09:00")
        for d in expected_reminders(late_launch, SEED.wave("grad").closes, None)
    ]
    assert ("reminder", "2023-11-06 09:00") in expected["late.joiner@example.edu"]  # after DST
    assert any(d < SEED.wave(required[p][1]).opens for p, d in completed.items())
    mismatches = {
        e: (got.get(e, []), want)
        for e, want in expected.items()
        if sorted(got.get(e, [])) != sorted(want)
    }
    assert not mismatches, list(mismatches.items())[:5]
    assert set(got) == set(expected)  # nobody else got anything (exempt people included)
    assert reports == expected_reports([*rows, late], extended)


def expected_reports(rows: list[dict[str, str]], extended: str) -> dict[str, list[tuple[str, str]]]:
    """One report a night at the 09:00 pass, from the night after the officer's first launch
    to the night after their people's last deadline."""
    spans: dict[str, list[dt.date]] = defaultdict(list)
    for r in rows:
        rec = {
            **r,
            "paid": r["paid"] != "no",
            "program_year": int(r["program_year"] or 0),
            "start_date": None,
        }
        wave = SEED.wave(SEED.assign_wave(rec) or "")
        deadline = dt.date(2023, 10, 20) if r["id"] == extended else wave.closes
        spans[r["admin_officer"]] += [wave.opens, deadline]
    out = {}
    for officer, dates in spans.items():
        first, last = min(dates), max(dates)
        out[officer] = [
            ("report", f"{d} {'08:30' if d == EARLY_PASS else '09:00'}")
            for d in days(first + dt.timedelta(days=1), last + dt.timedelta(days=1))
        ]
    return out


@pytest.mark.parametrize("db_url", ["sqlite", "postgres"], indirect=True)
@pytest.mark.slow
def test_plan_on_day_one_is_what_the_season_sends(
    env: dict[str, str], db_url: str, smtp: SmtpServer, tmp_path: Path
) -> None:
    rows = sample_people(150, seed=11)
    roster = write_roster(tmp_path / "roster.csv", rows)
    cli("init")
    cli("roster", "import", str(roster), "--now", at(dt.date(2023, 9, 1), 9))
    plan = json.loads(cli("plan", "--json", "--now", at(dt.date(2023, 9, 1), 9)))
    planned = {
        (d["date"], k): n for d in plan["days"] for k, n in d.items() if k not in ("date", "zones")
    }
    # Passes on the planned days only: a message due on any other day would go out at a later
    # pass, with that pass's date, and show up below as a difference.
    # PostgreSQL runs the first two waves' worth (the full season runs on SQLite above).
    end = SEASON_END if db_url.startswith("sqlite") else dt.date(2023, 11, 10)
    planned_days = {dt.date.fromisoformat(d["date"]) for d in plan["days"]}
    planned = {k: n for k, n in planned.items() if dt.date.fromisoformat(k[0]) <= end}
    for day in sorted(d for d in planned_days | set(LAUNCHES) if d <= end):
        if day in LAUNCHES:
            cli("launch", LAUNCHES[day], "--yes", "--now", at(day, 9))
        cli("run", "--once", "--now", at(day, 9))
    sent: Counter[tuple[str, str]] = Counter()
    for mails in received(smtp).values():
        for kind, when in mails:
            sent[(when[:10], kind)] += 1
    assert dict(sent) == planned
    assert sum(planned.values()) > 200


def test_the_november_change_keeps_reminders_at_nine_local(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, db_url: str
) -> None:
    person = dict.fromkeys(COLUMNS, "") | {
        "id": "G1",
        "email": "g1@example.edu",
        "name": "G One",
        "department": "School of Science",
        "role": "graduate_student",
        "program_year": "3",
    }
    roster = write_roster(tmp_path / "g.csv", [person])
    cli("init")
    cli("roster", "import", str(roster), "--now", at(dt.date(2023, 10, 30), 8))
    cli("launch", "grad", "--yes", "--now", at(dt.date(2023, 10, 30), 9))
    cli("run", "--once", "--now", at(dt.date(2023, 10, 30), 9))
    # Hourly passes across the change (Sunday 2023-11-05 02:00 EDT -> 01:00 EST) and through
    # the Monday: the 09:00 reminder must not go out at 08:00 or 10:00, nor twice.
    start = dt.datetime(2023, 11, 4, 12, 0, tzinfo=dt.UTC)
    for hours in range(56):
        cli("run", "--once", "--now", (start + dt.timedelta(hours=hours)).isoformat())
    got = received(smtp)["g1@example.edu"]
    assert got == [("launch", "2023-10-30 09:00"), ("reminder", "2023-11-06 09:00")]


@pytest.mark.timeout(300)  # a whole season of passes: 56 s quiet, 120 s seen at load 5
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_after_three_days_down_a_catch_up_at_0830_sends_one_reminder_that_day(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13, defect 1, as it happened: the daemon does not run from Monday 2023-10-02 to
    Wednesday 10-04, around the pilot's 3-days-before step (Tuesday 10-03); its first pass
    after that is at 08:30 on Thursday 10-05, the day of the 1-day-before step, and passes
    follow every five minutes, then hourly, then the next morning. Each person gets one
    reminder that day, at their 09:00, and the missed step is skipped.

    More people than a claimed batch (2 here; 200 by default, for thousands of people): a
    person's two reminders, if both were queued, would not meet in one batch, where the
    dispatcher keeps only the later of them."""
    monkeypatch.setenv("PSHNOTIFY_BATCH_SIZE", "2")
    base = dict.fromkeys(COLUMNS, "") | {
        "department": "Human Resources",
        "role": "staff",
        "start_date": "2001-01-01",
        "wave": "pilot",
        "timezone": "",
    }
    people = [
        base | {"id": "P1", "email": "p1@example.edu", "name": "P One"},
        base | {"id": "P2", "email": "p2@example.edu", "name": "P Two"},
        base | {"id": "P4", "email": "p4@example.edu", "name": "P Four"},
        # in Chicago: their 09:00 is 10:00 in the program's zone
        base | {"id": "P3", "email": "p3@example.edu", "name": "P Three"}
        | {"timezone": "America/Chicago"},
    ]  # fmt: skip
    roster = tmp_path / "pilot.csv"
    with roster.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=[*COLUMNS, "timezone"])
        w.writeheader()
        w.writerows(people)
    launch = dt.date(2023, 9, 11)
    cli("init")
    cli("roster", "import", str(roster), "--now", at(launch, 8))
    cli("launch", "pilot", "--yes", "--now", at(launch, 9))
    for day in days(launch, dt.date(2023, 10, 1)):  # then down on 10-02, 10-03 and 10-04
        cli("run", "--once", "--now", at(day, 10))  # 10:00: everyone's 09:00 has come
    catch_up = dt.date(2023, 10, 5)
    times = [(8, 30), *((9, m) for m in range(0, 60, 5)), (10, 0), (10, 5), (10, 10)]
    for hour, minute in [*times, *((h, 0) for h in range(11, 18))]:
        cli("run", "--once", "--now", at(catch_up, hour, minute))
    for hour, minute in ((9, 0), (9, 5), (10, 0), (10, 5)):
        cli("run", "--once", "--now", at(catch_up + dt.timedelta(days=1), hour, minute))

    got = received(smtp)
    for person in people:
        nine = "10:00" if person["timezone"] else "09:00"  # their 09:00, in New York
        assert got[person["email"]] == [
            ("launch", "2023-09-11 10:00"),
            ("reminder", "2023-09-18 10:00"),
            ("reminder", "2023-09-25 10:00"),
            ("reminder", f"2023-10-05 {nine}"),  # one, on the catch-up day; none the next
        ], person["id"]
    reminders = json.loads(cli("messages", "--kind", "reminder", "--json"))
    for person in people:
        mine = {r["step"]: r for r in reminders if r["recipient_email"] == person["email"]}
        sent = sorted(s for s, r in mine.items() if r["state"] == "delivered")
        assert sent == ["after:14", "after:7", "before:1:2023-10-06"], (person["id"], mine)
        missed = mine.get("before:3:2023-10-06")  # never queued, or queued and skipped
        assert missed is None or missed["state"] == "skipped", missed
