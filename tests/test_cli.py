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
    assert json.loads(ran.stdout)["outcomes"] == {"sent": 3}
    assert len(smtp.received) == 3
    status = json.loads(cli(env, "status", "--json").stdout)
    pilot = status["waves"]["pilot"]
    assert pilot["people"]["required"] == 3
    assert pilot["people"]["launched"] == 3
    assert pilot["people"]["not_required"] == {"exempt-new-hire": 1, "exempt-unpaid": 1}
    assert pilot["messages"]["sent"] == 3
    assert status["waves"]["grad"]["launched_at"] is None
    preview = cli(env, "preview", "launch", "--person", "H2", "--now", NOW)
    assert preview.returncode == 0
    assert "X-Pshnotify-Kind: launch" in preview.stdout
    assert len(smtp.received) == 3  # preview sends nothing


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


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # refused before the database
def test_a_bad_now_is_refused(env: dict[str, str]) -> None:
    result = cli(env, "launch", "pilot", "--now", "2023-09-11 10:00")
    assert result.returncode == 2
    assert "--now" in result.stderr
    assert "offset" in result.stderr
