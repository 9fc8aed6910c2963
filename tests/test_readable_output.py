"""Readable output (issue 13, defect 7): times in the program's zone with its abbreviation,
ISO-8601 JSON, tables that fit 80 columns uncut and without escape codes when piped,
semicolon- and tab-separated rosters, a sample roster whose addresses keep their letters.
(Program-file errors naming items as the file does: tests/test_program.py.)"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from pshnotify.demo.sample_roster import DEPARTMENTS, sample_people
from tests.smtp_server import SmtpServer
from tests.test_cli import NOW, cli
from tests.test_launch_and_send import PILOT
from tests.test_roster_import import HEADER, write
from tests.test_scheduled_launch import GRAD, VPR

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


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the CSV dialect, before SQL
def test_a_semicolon_or_tab_separated_roster_is_read(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "init").returncode == 0
    lines = [HEADER, *PILOT]
    for separator, name in ((";", "semicolons.csv"), ("\t", "tabs.csv")):
        roster = write(tmp_path, [line.replace(",", separator) for line in lines], name)
        done = cli(env, "roster", "import", str(roster), "--dry-run", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["rows"] == len(PILOT)


@pytest.mark.fast
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


# -- every table the command line prints, at 80 columns, piped --------------------------------
LONG_EMAIL = "maximiliana.featherstonehaugh@ist.example.edu"
LONG = [  # long names and addresses: the tables cannot keep every column at 80
    f"H6,{LONG_EMAIL},Maximiliana Bartholomew-Featherstonehaugh de la Tour d'Auvergne,"
    "Information Systems and Technology,staff,,2001-01-01,,,ao-ist@example.edu,",
]
GHOST = "visiting.scholar.on.no.roster@example.org"


def _fits(args: tuple[str, ...], done: subprocess.CompletedProcess[str]) -> str:
    """The output of a command, checked: exit 0, no line over 80 columns, nothing cut short
    with an ellipsis, no escape code (it is a pipe, not a terminal)."""
    assert done.returncode == 0, (args, done.stderr)
    assert "\x1b" not in done.stdout + done.stderr, (args, done.stdout)
    assert "…" not in done.stdout, (args, done.stdout)
    too_long = [line for line in done.stdout.splitlines() if len(line) > 80]
    assert not too_long, (args, too_long)
    return done.stdout


def _left_out(table: str) -> set[str]:
    """The columns a table names as left out ("not shown, to fit: a, b (use --json ...)")."""
    words = " ".join(table.split())
    found = re.search(r"not shown, to fit: (.*?) \(use --json for all\)", words)
    return {c.strip() for c in found.group(1).split(",")} if found else set()


def _column(table: str, heading: str) -> str:
    """One column of a printed table read back, line by line below its heading (a wrapped
    or folded cell's pieces in order), without spaces: a value cut short is not in it."""
    lines = table.splitlines()
    rule = next(i for i, line in enumerate(lines) if "──" in line)
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", lines[rule - 1])]
    names = [m.group() for m in re.finditer(r"\S+(?: \S+)*", lines[rule - 1])]
    top = rule - 1  # a heading wrapped over lines above: its pieces start where it does
    while top > 0 and lines[top - 1].strip():
        top -= 1
        for m in re.finditer(r"\S+(?: \S+)*", lines[top]):
            if m.start() in starts:
                j = starts.index(m.start())
                names[j] = f"{m.group()} {names[j]}"
    i = names.index(heading)
    end = starts[i + 1] if i + 1 < len(names) else None
    return "".join("".join(line[starts[i] : end].split()) for line in lines[rule + 1 :])


def _whole(value: str, table: str, heading: str) -> bool:
    return "".join(value.split()) in _column(table, heading)


@pytest.mark.slow  # many whole commands: started first
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the same tables on both
def test_every_table_fits_80_columns_uncut_when_piped(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    env = {**env, "COLUMNS": "80"}
    roster = write(tmp_path, [HEADER, *PILOT, *LONG])
    assert cli(env, "init").returncode == 0
    tables: dict[tuple[str, ...], str] = {}

    def table(*args: str, stdin: str | None = None) -> str:
        tables[args] = _fits(args, cli(env, *args, stdin=stdin))
        return tables[args]

    table("roster", "import", str(roster), "--now", NOW)
    table("program", "list")
    table("launch", "pilot", "--dry-run", "--now", NOW)
    listed = table("launch", "pilot", "--dry-run", "--list", "--now", NOW)
    assert LONG_EMAIL in listed  # an address that fits is never folded or cut
    assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0
    assert cli(env, "run", "--once", "--now", NOW).returncode == 0
    table("status")
    messages = table("messages")
    assert LONG_EMAIL in messages
    assert _left_out(messages) == {"wave", "tries", "kind"}, messages
    assert _whole("250 2.0.0 OK queued", messages, "reply / reason")
    table("plan", "--now", NOW)
    report = table("report", "--department", "Information Systems and Technology", "--now", NOW)
    assert "department" in _left_out(report), report  # the title names it
    name = "Maximiliana Bartholomew-Featherstonehaugh de la Tour d'Auvergne"
    assert _whole(name, report, "name"), report
    assert "Bartholomew-Featherstonehaugh" in report  # words whole where they fit
    officer = table("report", "--officer", "ao-ist@example.edu", "--now", NOW)
    assert _whole(name, officer, "name"), officer
    assert _whole("due 2023-10-06; launch email sent", officer, "details"), officer
    done = tmp_path / "done.csv"
    done.write_text(
        "id,option,completed_at,note\n"
        f"{GHOST},B,2023-09-08T16:30:00-04:00,"
        "taken at the visiting scholars' orientation in the summer; certificate on file\n"
    )
    assert cli(env, "completions", "import", str(done), "--now", NOW).returncode == 0
    unmatched = table("completions", "unmatched")
    assert GHOST in unmatched
    assert "2023-09-08 16:30 EDT" in unmatched  # in the program's zone, not UTC
    assert _left_out(unmatched) >= {"recorded at"}, unmatched
    junk = tmp_path / "junk.eml"
    junk.write_bytes(
        b"From: Someone With A Long Name <someone.with.a.long.address@faraway.example.org>\n"
        b"Subject: a question about the training that goes on for a while and then some more\n"
        b"Date: Mon, 11 Sep 2023 14:30:00 +0000\n\nIs this the training office?\n"
    )
    assert cli(env, "bounces", "scan", str(junk), "--now", NOW).returncode == 0
    kept = table("bounces", "unrecognised")
    sender = "Someone With A Long Name <someone.with.a.long.address@faraway.example.org>"
    assert _whole(sender, kept, "from"), kept  # folded (it cannot fit beside the rest), not cut
    assert _left_out(kept), kept  # the subject and where it is kept are named, not cut
    departments = ["Information Systems and Technology", "Human Resources", "School of Science"]
    args = [a for d in departments for a in ("--department", d)]
    added = cli(env, "user", "add", "viewer1", "--role", "viewer", *args, "--password-stdin",
                stdin="a long enough password\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    users = table("user", "list")
    assert _whole(", ".join(departments), users, "departments"), users
    assert len(tables) == 12


# -- times in what a person reads: the program's zone, its abbreviation --------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_refusals_and_confirmations_tell_times_in_the_programs_zone(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    assert cli(env, "init").returncode == 0
    roster = write(tmp_path, [HEADER, *PILOT, *GRAD, VPR])
    assert cli(env, "roster", "import", str(roster), "--now", NOW).returncode == 0
    said: list[str] = []

    def words(done: subprocess.CompletedProcess[str], code: int) -> str:
        assert done.returncode == code, done.stdout + done.stderr
        said.append(done.stdout + done.stderr)
        return " ".join((done.stdout + done.stderr).split())

    early = words(cli(env, "launch", "grad", "--yes", "--now", NOW), 1)
    assert "opens on 2023-10-25 00:00 EDT" in early, early
    assert "would go out at 2023-09-11 10:00 EDT" in early, early
    assert "--at 2023-10-25T09:00` (09:00 EDT)" in early, early
    past = words(cli(env, "launch", "grad", "--at", "2023-09-01T09:00", "--now", NOW), 1)
    assert "2023-09-01 09:00 EDT is not in the future (now 2023-09-11 10:00 EDT)" in past
    closed = words(cli(env, "launch", "vpr", "--yes", "--now", "2023-12-21T10:00:00-05:00"), 1)
    assert "closed on 2023-12-20 23:59 EST" in closed, closed
    assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0
    cancel = words(cli(env, "launch", "pilot", "--cancel", "--now", NOW), 1)
    assert "was launched on 2023-09-11 10:00 EDT" in cancel, cancel
    extended = words(cli(env, "extend", "H1", "--until", "2023-11-10", "--now", NOW), 0)
    assert "deadline 2023-10-06 23:59 EDT -> 2023-11-10 23:59 EST" in extended, extended
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b"From: someone@example.org\nSubject: hello?\n\nIs this the office?\n")
    scanned = words(cli(env, "bounces", "scan", str(junk), "--now", NOW), 0)
    assert "acting as if it were 2023-09-11 10:00 EDT" in scanned, scanned
    for text in said:  # never the machine's UTC, nor ISO-8601 meant for programs
        assert "UTC" not in text, text
        assert "+00:00" not in text, text
        assert not re.search(r"\d\d:\d\d:\d\d", text), text
