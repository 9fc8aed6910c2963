"""Every command and setting the README names, through its own door (the command line as an
operator types it, or HTTP as a browser or monitor asks), asserting what the user sees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROGRAM_FILE
from tests.smtp_server import Behaviour, SmtpServer
from tests.test_bounces import BOUNCE_ADDRESS, SECRET, deliver, dsn
from tests.test_cli import NOW, cli
from tests.test_completions import COMPLETIONS, COMPLETIONS_HEADER
from tests.test_launch_and_send import PILOT
from tests.test_roster_import import HEADER, write

# These doors do not depend on the backend: each runs on SQLite files (the SQL behind them
# is tested on both backends elsewhere).
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def said(done: subprocess.CompletedProcess[str]) -> str:
    """What the operator read, stdout and stderr, with the lines' wrapping undone."""
    return " ".join((done.stdout + done.stderr).split())


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def pilot_launched(env: dict[str, str], tmp_path: Path) -> None:
    ok(cli(env, "init"))
    ok(cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT])), "--now", NOW))
    ok(cli(env, "launch", "pilot", "--yes", "--now", NOW))


def status(env: dict[str, str], *args: str) -> dict[str, object]:
    return json.loads(ok(cli(env, "status", "--json", *args)).stdout)  # type: ignore[no-any-return]


# -- program load / --program ----------------------------------------------------------------------
def test_program_load_stores_a_second_program_and_commands_reach_it_with_program(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    ok(cli(env, "init"))
    text = PROGRAM_FILE.read_text().replace('key = "psh-2023-2024"', 'key = "psh-next"', 1)
    other = tmp_path / "next.toml"
    other.write_text(text)
    loaded = ok(cli(env, "program", "load", str(other)))
    assert "stored program psh-next; use it with --program psh-next" in said(loaded)
    listed = said(ok(cli(env, "program", "list")))
    assert "psh-2023-2024" in listed
    assert "psh-next" in listed
    roster = str(write(tmp_path, [HEADER, *PILOT]))
    ok(cli(env, "roster", "import", roster, "--program", "psh-next", "--now", NOW))
    launched = ok(cli(env, "launch", "pilot", "--yes", "--program", "psh-next", "--now", NOW))
    assert "3" in launched.stdout
    assert status(env, "--program", "psh-next")["waves"]["pilot"]["launched_at"]  # type: ignore[index]
    assert status(env)["waves"]["pilot"]["launched_at"] is None  # type: ignore[index]
    unknown = cli(env, "status", "--program", "nope")
    assert unknown.returncode == 2
    assert "no program 'nope' in the database" in said(unknown)
    assert "known programs: psh-2023-2024, psh-next" in said(unknown)
    broken = tmp_path / "broken.toml"
    broken.write_text(text.replace('timezone = "America/New_York"', 'timezone = "Mars/Olympus"'))
    refused = cli(env, "program", "load", str(broken))
    assert refused.returncode == 2
    assert f"{broken}: program.timezone: unknown time zone 'Mars/Olympus'" in said(refused)


# -- messages retry --id ---------------------------------------------------------------------------
def test_messages_retry_by_id_requeues_that_message_only(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    pilot_launched(env, tmp_path)
    refused = {"ada@example.edu", "jose@example.edu"}
    smtp.behaviour = Behaviour(rcpt=lambda a: "550 5.1.1 no such user" if a in refused else None)
    cli(env, "run", "--once", "--now", NOW)
    failed = json.loads(ok(cli(env, "messages", "--state", "failed", "--json")).stdout)
    ids = {m["recipient_email"]: m["id"] for m in failed}
    assert set(ids) == refused
    smtp.behaviour = Behaviour()
    retried = ok(cli(env, "messages", "retry", "--id", str(ids["ada@example.edu"]), "--now", NOW))
    assert "requeued 1 messages; they go out on the next pass" in said(retried)
    ok(cli(env, "run", "--once", "--now", NOW))
    assert [r.rcpt_tos[0] for r in smtp.received[-1:]] == ["ada@example.edu"]
    still = json.loads(ok(cli(env, "messages", "--state", "failed", "--json")).stdout)
    assert [m["recipient_email"] for m in still] == ["jose@example.edu"]
    unknown = cli(env, "messages", "retry", "--id", "999999", "--now", NOW)
    assert unknown.returncode in (0, 2)
    assert "requeued 1" not in said(unknown)


# -- launch --force --------------------------------------------------------------------------------
GRAD = [
    "G1,g1@example.edu,Gina Grad,School of Science,graduate_student,,,4,,,",
    "G2,g2@example.edu,Gus Grad,School of Science,graduate_student,,,5,,,",
]


def test_launch_force_sends_a_wave_before_its_window_opens(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    ok(cli(env, "init"))
    ok(cli(env, "roster", "import", str(write(tmp_path, [HEADER, *GRAD])), "--now", NOW))
    refused = cli(env, "launch", "grad", "--yes", "--now", NOW)
    assert refused.returncode == 1
    assert "opens on 2023-10-25" in said(refused)
    forced = ok(cli(env, "launch", "grad", "--yes", "--force", "--now", NOW))
    assert "2" in forced.stdout
    assert status(env)["waves"]["grad"]["messages"]["queued"] == 2  # type: ignore[index]
    ok(cli(env, "run", "--once", "--now", NOW))
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == ["g1@example.edu", "g2@example.edu"]


# -- completions import --dry-run -------------------------------------------------------------------
def test_completions_import_dry_run_counts_and_changes_nothing(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    pilot_launched(env, tmp_path)
    export = write(tmp_path, [COMPLETIONS_HEADER, *COMPLETIONS], "done.csv")
    before = status(env)["waves"]
    dry = ok(cli(env, "completions", "import", str(export), "--dry-run", "--now", NOW))
    assert "dry run: nothing was changed" in said(dry)
    assert "3" in dry.stdout  # the three it would record
    assert status(env)["waves"] == before
    assert json.loads(ok(cli(env, "completions", "unmatched", "--json")).stdout) == []
    real = ok(cli(env, "completions", "import", str(export), "--now", NOW))
    assert "dry run" not in said(real)
    assert status(env)["waves"]["pilot"]["people"]["completed"] == 3  # type: ignore[index]
