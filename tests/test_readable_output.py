"""Readable output (issue 13, defect 7): times in the program's zone with its abbreviation,
ISO-8601 JSON, tables that fit 80 columns uncut and without escape codes when piped,
semicolon- and tab-separated rosters, a sample roster whose addresses keep their letters.
(Program-file errors naming items as the file does: tests/test_program.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pshnotify.demo.sample_roster import DEPARTMENTS, sample_people
from tests.smtp_server import SmtpServer
from tests.test_cli import NOW, cli
from tests.test_launch_and_send import PILOT
from tests.test_roster_import import HEADER, write

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d$")


def test_times_json_and_tables_read_well_when_piped(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    env = {**env, "COLUMNS": "80"}
    assert cli(env, "init").returncode == 0
    assert cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT]))).returncode == 0
    launched = cli(env, "launch", "pilot", "--yes", "--now", NOW)
    assert "acting as if it were 2023-09-11 10:00 EDT" in launched.stderr
    assert cli(env, "run", "--once", "--now", NOW).returncode == 0

    plan = cli(env, "plan", "--now", NOW)
    assert "from 2023-09-11 10:00 EDT" in " ".join(plan.stdout.split())

    rows = json.loads(cli(env, "messages", "--json").stdout)
    stamps = [v for r in rows for k, v in r.items() if k.endswith("_at") and v]
    assert stamps
    assert all(ISO.match(v) for v in stamps), stamps

    for args in (("status",), ("messages",), ("plan", "--now", NOW)):
        done = cli(env, *args)
        assert done.returncode == 0, done.stderr
        assert "\x1b[" not in done.stdout + done.stderr, args
        assert "…" not in done.stdout, (args, done.stdout)
        assert max(len(line) for line in done.stdout.splitlines()) <= 80, (args, done.stdout)
    status = cli(env, "status").stdout
    assert re.search(r"^\s*pilot\s.*\s3\s", status, re.M), status  # the row is there, whole
    assert "launched" in status


def test_a_semicolon_or_tab_separated_roster_is_read(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "init").returncode == 0
    lines = [HEADER, *PILOT]
    for separator, name in ((";", "semicolons.csv"), ("\t", "tabs.csv")):
        roster = write(tmp_path, [line.replace(",", separator) for line in lines], name)
        done = cli(env, "roster", "import", str(roster), "--dry-run", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["rows"] == len(PILOT)


def test_the_sample_roster_keeps_every_letter() -> None:
    people = sample_people(3000)
    officers = {
        f"ao-{re.sub(r'[^a-z0-9]+', '-', d.lower()).strip('-')}@example.edu" for d in DEPARTMENTS
    }
    for p in people:
        last = p["name"].split(" ", 1)[1]
        local = p["email"].split("@")[0]
        assert "maller" not in local
        if last == "Müller":
            assert ".mueller." in local or ".muller." in local
        if last == "O'Brien":
            assert ".obrien." in local
        assert p["admin_officer"] in officers  # never truncated
        # as many letters as the name has, or more (ü -> ue)
        assert len(local.split(".")[1]) >= len(re.sub(r"[^\w]", "", last))
