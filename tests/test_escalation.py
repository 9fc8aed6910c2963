"""Escalation across a rehearsed season: a daily digest to each manager of their people who
are behind; only on days someone is behind, never after a completion, at most one a day."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from email import message_from_bytes
from email.utils import parseaddr, parsedate_to_datetime
from pathlib import Path

import pytest

from tests.conftest import PROGRAM_FILE
from tests.smtp_server import SmtpServer
from tests.test_roster_import import write
from tests.test_season import TZ, at, cli, days

HEADER = "id,email,name,department,role,admin_officer,admin_officer_name,manager_email"
ROSTER = [
    # Never completes: behind from the day after their second reminder.
    "E1,ann@example.edu,Ann Idle,Human Resources,staff,ao@example.edu,Olive Officer,"
    "boss@example.edu",
    # Completes on 2023-09-28 at 10:00, after that morning's digest went out.
    "E2,bob@example.edu,Bob Late,Human Resources,staff,ao@example.edu,Olive Officer,"
    "boss@example.edu",
    # Completes before anyone escalates: their manager never hears a thing.
    "E3,cyd@example.edu,Cyd Prompt,Human Resources,staff,ao@example.edu,Olive Officer,"
    "calm@example.edu",
    # No manager in the roster: their officer gets the digest.
    "E4,dee@example.edu,Dee Nomgr,Information Systems and Technology,staff,ao@example.edu,"
    "Olive Officer,",
]


def escalating_program(tmp_path: Path) -> Path:
    text = PROGRAM_FILE.read_text().replace(
        "[escalation]\nenabled = false", "[escalation]\nenabled = true"
    )
    assert "enabled = true" in text
    path = tmp_path / "program.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_digests_come_only_on_days_someone_is_behind_once_a_day_and_never_after_completion(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSHNOTIFY_PROGRAM_FILE", str(escalating_program(tmp_path)))
    roster = write(tmp_path, [HEADER, *ROSTER])
    cli("init", "--now", at(dt.date(2023, 9, 1), 9))
    cli("roster", "import", str(roster), "--now", at(dt.date(2023, 9, 1), 9))
    done = tmp_path / "done.csv"
    for day in days(dt.date(2023, 9, 11), dt.date(2023, 10, 13)):
        if day == dt.date(2023, 10, 2):
            # The report-time pass queues the day's digests (they wait for 09:00); Dee then
            # completes before they go: the officer's digest, about Dee alone, is skipped.
            cli("run", "--once", "--now", at(day, 6, 30))
            done.write_text(f"id,option,completed_at\nE4,A,{day}T08:00:00-04:00\n")
            cli("completions", "import", str(done), "--now", at(day, 8))
        if day == dt.date(2023, 9, 11):
            cli("launch", "pilot", "--yes", "--now", at(day, 9))
        cli("run", "--once", "--now", at(day, 9))
        if day == dt.date(2023, 9, 11):
            plan = cli("plan", "--json", "--now", at(day, 12))
        if day == dt.date(2023, 9, 14):
            done.write_text(f"id,option,completed_at\nE3,A,{day}\n")
            cli("completions", "import", str(done), "--now", at(day, 10))
        if day == dt.date(2023, 9, 28):
            done.write_text(f"id,option,completed_at\nE2,B,{day}T10:00:00-04:00\n")
            cli("completions", "import", str(done), "--now", at(day, 10))
        cli("run", "--once", "--now", at(day, 15))  # a second pass: no second digest

    digests: dict[str, list[tuple[dt.date, list[str]]]] = defaultdict(list)
    for item in smtp.received:
        msg = message_from_bytes(item.data)
        if msg["X-Pshnotify-Kind"] != "escalation":
            continue
        day = parsedate_to_datetime(msg["Date"]).astimezone(TZ).date()
        body = msg.get_payload(0).get_payload(decode=True).decode()
        people = [pid for pid in ("E1", "E2", "E3", "E4") if f"({pid}," in body]
        digests[parseaddr(msg["To"])[1]].append((day, people))
    assert set(digests) == {"boss@example.edu", "ao@example.edu"}  # calm@ never hears
    boss = digests["boss@example.edu"]
    working = [d for d in days(dt.date(2023, 9, 26), dt.date(2023, 10, 13)) if d.weekday() < 5]
    assert [d for d, _ in boss] == working  # every working day someone is behind, once
    assert all(p == ["E1", "E2"] for d, p in boss if d <= dt.date(2023, 9, 28))
    assert all(p == ["E1"] for d, p in boss if d > dt.date(2023, 9, 28))  # E2 completed
    officer = digests["ao@example.edu"]
    assert [d for d, _ in officer] == [d for d in working if d < dt.date(2023, 10, 2)]
    assert all(p == ["E4"] for _, p in officer)
    listed = json.loads(cli("messages", "--kind", "escalation", "--state", "skipped", "--json"))
    assert [(m["recipient_email"], m["reason"]) for m in listed] == [
        ("ao@example.edu", "nobody behind any more")
    ]
    # `plan` foresaw them from launch day, as if nobody completed: one a working day per
    # recipient from the day after the second reminder until the stop after the deadline.
    planned = json.loads(plan)
    foreseen = {d["date"]: d.get("escalation", 0) for d in planned["days"]}
    # boss (E1, E2), calm (E3, whose completion on the 14th was not known yet), the officer (E4)
    assert foreseen["2023-09-26"] == 3
    assert "2023-09-25" not in foreseen or foreseen["2023-09-25"] == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_no_digest_when_nobody_is_behind_and_none_in_the_shipped_program(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    roster = write(tmp_path, [HEADER, *ROSTER])
    cli("init", "--now", at(dt.date(2023, 9, 1), 9))
    cli("roster", "import", str(roster), "--now", at(dt.date(2023, 9, 1), 9))
    cli("launch", "pilot", "--yes", "--now", at(dt.date(2023, 9, 11), 9))
    for day in days(dt.date(2023, 9, 11), dt.date(2023, 10, 10)):
        cli("run", "--once", "--now", at(day, 9))
    kinds = {message_from_bytes(r.data)["X-Pshnotify-Kind"] for r in smtp.received}
    assert "reminder" in kinds
    assert "escalation" not in kinds  # [escalation] enabled = false as shipped
