"""The command line as an operator uses it: real console script, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.smtp_server import SmtpServer
from tests.test_launch_and_send import PILOT
from tests.test_roster_import import HEADER, write

NOW = "2023-09-11T10:00:00-04:00"


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pshnotify", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        input=stdin,
        timeout=60,
        check=False,
    )


def test_the_whole_path_from_the_command_line(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    roster = write(tmp_path, [HEADER, *PILOT])
    assert cli(env, "init").returncode == 0
    imported = cli(env, "roster", "import", str(roster), "--json", "--now", NOW)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout)["by_reason"] == {
        "exempt-new-hire": 1,
        "exempt-unpaid": 1,
        "required": 3,
    }
    dry = cli(env, "launch", "pilot", "--dry-run", "--json", "--now", NOW)
    assert json.loads(dry.stdout)["to_queue"] == 3
    refused = cli(env, "launch", "pilot", "--now", NOW)  # no terminal, no --yes
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    launched = cli(env, "launch", "pilot", "--yes", "--json", "--now", NOW)
    assert json.loads(launched.stdout)["queued"] == 3
    ran = cli(env, "run", "--once", "--json", "--now", NOW)
    assert json.loads(ran.stdout)["outcomes"] == {"delivered": 3}
    assert len(smtp.received) == 3
    status = json.loads(cli(env, "status", "--json").stdout)
    pilot = status["waves"]["pilot"]
    assert pilot["people"]["required"] == 3
    assert pilot["people"]["launched"] == 3
    assert pilot["people"]["not_required"] == {"exempt-new-hire": 1, "exempt-unpaid": 1}
    assert pilot["messages"]["delivered"] == 3
    assert status["waves"]["grad"]["launched_at"] is None
    preview = cli(env, "preview", "launch", "--person", "H2", "--raw", "--now", NOW)
    assert preview.returncode == 0
    assert "X-Pshnotify-Kind: launch" in preview.stdout
    assert len(smtp.received) == 3  # preview sends nothing


def test_preview_shows_the_email_as_its_recipient_reads_it(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    """Issue 26: `preview` printed raw MIME, the text quoted-printable ("Jos=C3=A9"); it shows
    the headers a reader sees, the text decoded and the attachments named; --raw the bytes."""
    assert cli(env, "init").returncode == 0
    assert cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT]))).returncode == 0
    shown = cli(env, "preview", "launch", "--person", "H2", "--now", NOW)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "From:     PSH Training <pshtraining@example.edu>"
    assert "To:       José Núñez-Ångström <jose@example.edu>" in lines
    assert any(line.startswith("Subject:  Action required: Preventing Sexual") for line in lines)
    assert "Date:     Mon, 11 Sep 2023 10:00:00 -0400" in lines
    assert "Dear José Núñez-Ångström," in lines
    assert "The attached calendar file (deadline.ics) puts the deadline in your calendar." in lines
    attachment = lines[lines.index("Attachments:") + 1].split()
    assert attachment[:2] == ["deadline.ics", "text/calendar"]
    assert attachment[3] == "bytes"
    assert int(attachment[2]) > 200
    for mime in ("=C3", "Content-Transfer-Encoding", "MIME-Version", "X-Pshnotify", "multipart/"):
        assert mime not in shown.stdout, mime
    assert max(len(line) for line in lines[: lines.index("Dear José Núñez-Ångström,")]) <= 80
    raw = cli(env, "preview", "launch", "--person", "H2", "--raw", "--now", NOW)
    assert raw.returncode == 0
    assert "Content-Transfer-Encoding: quoted-printable" in raw.stdout
    assert "Jos=C3=A9" in raw.stdout
    assert len(smtp.received) == 0  # neither sends anything


def test_a_department_nobody_is_in_is_named_with_the_closest_on_the_roster(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 26: `user add --department "Human Resorces"` was accepted without a word, and the
    viewer then saw nobody. The user is still added (the roster may bring the department
    later), with a warning naming the roster's closest departments."""
    assert cli(env, "init").returncode == 0
    assert cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT]))).returncode == 0
    args = ["--department", "Human Resorces", "--department", "information systems and technology"]
    added = cli(env, "user", "add", "hr1", "--role", "viewer", *args, "--password-stdin",
                stdin="a long enough password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    warning = " ".join(added.stderr.split())
    assert "warning: nobody on the roster is in 'Human Resorces'; closest: Human Resources" in (
        warning
    )
    assert "information systems" not in warning  # matches the roster, case aside
    assert "added viewer hr1" in added.stdout
    assert "hr1" in cli(env, "user", "list").stdout
    spelt = cli(env, "user", "add", "hr2", "--role", "viewer", "--department", "Human Resources",
                "--password-stdin", stdin="a long enough password\n")  # fmt: skip
    assert spelt.returncode == 0
    assert spelt.stderr == ""


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the file is refused before SQL
def test_a_bad_roster_exits_2_listing_every_problem(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "init").returncode == 0
    roster = write(
        tmp_path,
        [
            HEADER,
            PILOT[0].replace("2010-01-04", "yesterday"),
            PILOT[1].replace("jose@example.edu", "not-an-address"),
        ],
    )
    result = cli(env, "roster", "import", str(roster))
    assert result.returncode == 2
    assert f"{roster}:2: start_date: expected a date" in result.stderr
    assert f"{roster}:3: email: invalid address" in result.stderr
    assert "nothing was changed" in result.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # refused before the database
def test_bad_settings_name_the_variable(env: dict[str, str]) -> None:
    result = cli({**env, "PSHNOTIFY_SMTP_TLS": "sometimes"}, "status")
    assert result.returncode == 2
    assert "PSHNOTIFY_SMTP_TLS" in result.stderr
    result = cli({**env, "PSHNOTIFY_SMTP_PORT": "many"}, "status")
    assert "PSHNOTIFY_SMTP_PORT" in result.stderr


def test_an_uninitialised_database_says_what_to_do(env: dict[str, str], tmp_path: Path) -> None:
    fresh = {**env, "PSHNOTIFY_DATABASE_URL": f"sqlite:///{tmp_path / 'new.db'}"}
    result = cli(fresh, "status")
    assert result.returncode == 2
    assert "pshnotify init" in result.stderr


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "command", [("status",), ("user", "list"), ("run", "--once"), ("plan", "--json")]
)
def test_a_command_before_init_leaves_no_empty_database_behind(
    env: dict[str, str], tmp_path: Path, command: tuple[str, ...]
) -> None:
    """Issue 26: `status` before `init` created an empty var/pshnotify.db; only init does."""
    database = tmp_path / "var" / "pshnotify.db"
    fresh = {**env, "PSHNOTIFY_DATABASE_URL": f"sqlite:///{database}"}
    result = cli(fresh, *command)
    assert result.returncode == 2, result.stderr
    said = " ".join(result.stderr.split())
    assert f"no database at {database}" in said
    assert "run `pshnotify init` to create it" in said
    assert not database.exists()
    assert not database.parent.exists()
    assert cli(fresh, "init").returncode == 0
    assert database.exists()


def test_plan_predicts_no_launch_that_launch_would_refuse(
    env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 26: on a rehearsal database (the program's dates past, driven with --now), `plan`
    without --now predicted the pilot's launch emails for the next morning, while `launch`
    refuses a wave whose window has closed. Both now ask the same rule."""
    assert cli(env, "init").returncode == 0
    roster = write(tmp_path, [HEADER, *PILOT])
    assert cli(env, "roster", "import", str(roster), "--now", NOW).returncode == 0
    inside = json.loads(cli(env, "plan", "--json", "--wave", "pilot", "--now", NOW).stdout)
    assert inside["totals"]["launch"] == 3
    assert inside["closed_unlaunched"] == []
    after = "2023-10-20T10:00:00-04:00"  # the pilot's window closed on 2023-10-06
    for now in (("--now", after), ()):  # and today, years later, without --now
        plan = json.loads(cli(env, "plan", "--json", "--wave", "pilot", *now).stdout)
        assert "launch" not in plan["totals"], plan["days"]
        assert plan["closed_unlaunched"] == ["pilot"]
        refused = cli(env, "launch", "pilot", "--yes", *now)
        assert refused.returncode == 1  # a conflict with the program, as every refusal
        assert "closed on 2023-10-06" in refused.stderr
    said = " ".join(cli(env, "plan", "--wave", "pilot").stdout.split())
    assert "never launched, window over: pilot (closed 2023-10-06)" in said


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # refused before the database
def test_a_bad_now_is_refused(env: dict[str, str]) -> None:
    result = cli(env, "launch", "pilot", "--now", "2023-09-11 10:00")
    assert result.returncode == 2
    assert "--now" in result.stderr
    assert "offset" in result.stderr
