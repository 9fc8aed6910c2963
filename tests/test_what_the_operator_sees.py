"""What the operator could not see (issue 13, defect 6): a paused program or wave in `status`
and in a pass, why messages were deferred (and the setting to check), a second `exempt` or a
`resume` of a running wave that changes nothing, an unknown wave given to `messages`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.smtp_server import SmtpServer
from tests.test_cli import NOW, cli
from tests.test_launch_and_send import PILOT
from tests.test_roster_import import HEADER, write


@pytest.mark.slow  # many whole commands: started first
def test_paused_no_op_and_unknown_wave_are_said(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    assert cli(env, "init").returncode == 0
    assert cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT]))).returncode == 0
    assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0

    assert cli(env, "pause", "pilot").returncode == 0
    status = cli(env, "status").stdout
    assert "pilot (paused)" in status
    ran = cli(env, "run", "--once", "--now", NOW)
    assert "paused: wave pilot" in ran.stdout, ran.stdout
    again = cli(env, "pause", "pilot")
    assert "already paused: nothing changed" in again.stdout
    assert cli(env, "resume", "pilot").returncode == 0
    idle = cli(env, "resume", "pilot")
    assert idle.returncode == 0
    assert "was not paused: nothing changed" in idle.stdout

    assert cli(env, "pause").returncode == 0
    assert "PAUSED" in cli(env, "status").stdout
    assert cli(env, "resume").returncode == 0

    first = cli(env, "exempt", "H1", "--reason", "approved alternative", "--now", NOW)
    assert first.returncode == 0
    second = cli(env, "exempt", "H1", "--reason", "approved alternative", "--now", NOW)
    assert second.returncode == 0
    assert "already exempt" in second.stdout
    assert "nothing changed" in second.stdout

    unknown = cli(env, "messages", "--wave", "pilto")
    assert unknown.returncode == 2
    assert "unknown wave 'pilto'" in unknown.stderr


def test_a_pass_after_deferrals_says_why_and_what_to_check(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    assert cli(env, "init").returncode == 0
    assert cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT]))).returncode == 0
    assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0
    # STARTTLS asked for; the relay (plain aiosmtpd) does not offer it
    tls_env = {**env, "PSHNOTIFY_SMTP_TLS": "starttls"}
    ran = cli(tls_env, "run", "--once", "--now", NOW)
    assert "outcomes: 3 deferred" in ran.stdout, ran.stdout + ran.stderr
    assert "STARTTLS" in ran.stdout
    assert "check PSHNOTIFY_SMTP_TLS" in ran.stdout
    as_json = json.loads(cli(tls_env, "run", "--once", "--json", "--now", NOW).stdout)
    assert as_json["outcomes"] == {}  # deferred: not due again yet


def test_a_roster_import_that_removes_many_asks_first(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    everyone = [
        f"P{i:03d},p{i}@example.edu,Person {i},Human Resources,staff,,2010-01-04,,,,"
        for i in range(30)
    ]
    assert cli(env, "init").returncode == 0
    assert cli(env, "roster", "import", str(write(tmp_path, [HEADER, *everyone]))).returncode == 0
    partial = write(tmp_path, [HEADER, *everyone[:5]], "partial.csv")
    asked = cli(env, "roster", "import", str(partial))
    assert asked.returncode == 2, asked.stdout + asked.stderr
    assert "would mark 25 of the 30 people on the roster removed" in " ".join(asked.stderr.split())
    status = json.loads(cli(env, "status", "--json").stdout)
    assert status["waves"]["pilot"]["people"]["removed"] == 0  # nothing changed
    dry = json.loads(cli(env, "roster", "import", str(partial), "--dry-run", "--json").stdout)
    assert dry["removed"] == 25
    done = cli(env, "roster", "import", str(partial), "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == 25


def test_preview_says_when_the_person_would_never_get_that_email(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    assert cli(env, "init").returncode == 0
    assert cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT]))).returncode == 0
    unpaid = cli(env, "preview", "launch", "--person", "H4", "--now", NOW)  # exempt-unpaid
    assert unpaid.returncode == 0
    assert "H4 would never get this email: not required" in " ".join(unpaid.stderr.split())
    ada = cli(env, "preview", "reminder", "--person", "H1", "--now", NOW)
    assert ada.returncode == 0
    assert "would never get" not in ada.stderr


def test_launch_dry_run_lists_who_and_why(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    assert cli(env, "init").returncode == 0
    assert cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT]))).returncode == 0
    listed = cli(env, "launch", "pilot", "--dry-run", "--list", "--json", "--now", NOW)
    assert listed.returncode == 0, listed.stderr
    people = {p["id"]: p["launch"] for p in json.loads(listed.stdout)["people"]}
    assert people == {
        "H1": "gets the launch email",
        "H2": "gets the launch email",
        "H3": "gets the launch email",
        "H4": "not required: exempt-unpaid",
        "H5": "not required: exempt-new-hire",
    }
    text = cli(env, "launch", "pilot", "--dry-run", "--list", "--now", NOW).stdout
    assert "exempt-unpaid" in text
    assert "dry run: nothing was queued" in text
