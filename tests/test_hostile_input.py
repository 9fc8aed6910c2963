"""Hostile and careless input (issue 14): every bad value refused cleanly, with the file, line
and field (exit 2) or a 4xx, never a traceback; data never read as markup; files private."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, insert, select

from pshnotify.domain.errors import InputError
from pshnotify.domain.values import Instant
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign import completions as completions_service
from pshnotify.services.campaign.completions import (
    CompletionOutcome,
    complete_by_operator,
)
from pshnotify.services.campaign.roster import import_roster
from pshnotify.settings import load_settings
from pshnotify.store.receipts import claim_receipt
from pshnotify.store.schema import completions, webhook_receipts
from tests.conftest import PROGRAM_FILE
from tests.test_launch_and_send import PILOT
from tests.test_roster_import import HEADER, write
from tests.test_web import (
    LRS,
    SECRET,
    program_with_activities,
    running,
    signed,
    statement,
)

NOW = "2023-09-11T10:00:00-04:00"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pshnotify", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        preexec_fn=lambda: os.umask(0o022),  # a usual login's umask: the code must not rely on one
    )


def no_traceback(run: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in run.stderr, run.stderr
    assert "Traceback" not in run.stdout, run.stdout


# -- 10: data is never markup; control characters are shown, not obeyed ---------------------------
@SQLITE_ONLY
def test_markup_in_data_is_printed_as_written(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "init").returncode == 0
    bad = write(
        tmp_path,
        [
            HEADER,
            "X1,[/red]@@x,Ada,Human Resources,staff,,,,,,",
            "X2,eve@example.edu,Eve,Human Resources,staff,,,,,,[blink]pilot",
        ],
    )
    refused = cli(env, "roster", "import", str(bad), "--now", NOW)
    no_traceback(refused)
    assert refused.returncode == 2
    assert f"{bad}:2: email: invalid address '[/red]@@x'" in refused.stderr
    assert f"{bad}:3: wave: unknown wave '[blink]pilot'" in refused.stderr

    good = write(tmp_path, [HEADER, "H1,ada@example.edu,[bold]Ada[/],Human Resources,staff,,,,,,"])
    assert cli(env, "roster", "import", str(good), "--now", NOW).returncode == 0
    exempted = cli(env, "exempt", "H1", "--reason", "[/red] on leave", "--now", NOW)
    no_traceback(exempted)
    assert exempted.returncode == 0
    shown = cli(env, "report", "--department", "Human Resources", "--now", NOW)
    assert shown.returncode == 0, shown.stderr
    assert "[bold]Ada[/]" in shown.stdout


@SQLITE_ONLY
def test_control_characters_at_rest_reach_no_terminal(
    env: dict[str, str], runtime: Runtime
) -> None:
    """A note stored by an earlier version (or written into the database by hand) with ESC in
    it is shown escaped by `completions unmatched`, not sent to the operator's terminal."""
    stored = runtime.program(None)
    with runtime.engine.begin() as conn:
        conn.execute(
            insert(completions).values(
                program_id=stored.id,
                person_id=None,
                person_ref="ghost@example.edu",
                option="B",
                completed_at=dt.datetime(2023, 9, 1, tzinfo=dt.UTC),
                source="webhook",
                dedupe_key="k1",
                note="\x1b]0;pwned\x07\x1b[2J[/red]",
                recorded_at=dt.datetime(2023, 9, 1, tzinfo=dt.UTC),
            )
        )
    shown = cli(env, "completions", "unmatched")
    no_traceback(shown)
    assert shown.returncode == 0
    assert "\x1b" not in shown.stdout
    assert "\x07" not in shown.stdout
    assert "\\x1b" in shown.stdout


# -- 3, 4: the same field rules at every way in ----------------------------------------------------
EDGE = "0001-01-01T00:00:00+14:00"


@SQLITE_ONLY
def test_dates_at_the_edge_of_the_range_are_bad_input(env: dict[str, str], tmp_path: Path) -> None:
    assert cli(env, "init").returncode == 0
    for value in (EDGE, "9999-12-31T23:59:59-12:00", "0001-01-01"):
        path = tmp_path / "done.csv"
        path.write_text(f"id,option,completed_at\nH1,B,{value}\n")
        refused = cli(env, "completions", "import", str(path), "--now", NOW)
        no_traceback(refused)
        assert refused.returncode == 2
        outside = "is outside the dates this program can mean"
        assert f"{path}:2: completed_at: '{value}' {outside}" in refused.stderr


@pytest.fixture
def web_rt(runtime: Runtime, tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(
        runtime.settings.model_copy(
            update={
                "program_file": program_with_activities(tmp_path),
                "webhook_secret": SecretStr(SECRET),
                "xapi_username": LRS[0],
                "xapi_password": SecretStr(LRS[1]),
            }
        ),
        runtime.clock,
    )
    import_roster(
        rt.engine, rt.program(None), write(tmp_path, [HEADER, *PILOT]), rt.clock, actor="o"
    )
    yield rt
    rt.engine.dispose()


def test_the_http_ways_in_refuse_what_the_file_refuses(web_rt: Runtime) -> None:
    from pshnotify.web import create_app

    app = create_app(web_rt.engine, web_rt.clock, web_rt.settings, web_rt.program)
    with running(app) as client:

        def hook(payload: dict[str, str]) -> tuple[int, dict[str, object]]:
            body, headers = signed(payload)
            r = client.post("/webhooks/completions", content=body, headers=headers)
            return r.status_code, r.json()

        base = {"person": "H1", "option": "B", "completed_at": "2023-09-11T09:00:00-04:00"}
        status, body = hook({**base, "completed_at": EDGE})
        assert status == 400, body
        assert "outside the dates this program can mean" in str(body["problems"])
        for bad_note in ("a\x00b", "a\x1b[2Jb", "a\rb"):
            status, body = hook({**base, "note": bad_note})
            assert status == 400, body
            assert body["problems"] == ["note: contains a line break or control character"]
        status, body = hook({**base, "note": "n" * 5000})
        assert status == 400
        assert "note: is longer than 1000 characters" in str(body["problems"])
        status, body = hook({**base, "person": "<script>@@@"})
        assert status == 400
        assert str(body["problems"][0]).startswith("person: invalid address")

        def xapi(st: dict[str, object]) -> tuple[int, dict[str, object]]:
            r = client.post("/xapi/statements", json=st, auth=LRS)
            return r.status_code, r.json()

        status, body = xapi({**statement("ada@example.edu", "b"), "timestamp": EDGE})
        assert status == 400, body
        outside = "is outside the dates this program can mean"
        assert f"statement[0].timestamp: '0001-01-01T00:00:00+14:00' {outside}" in str(body)
        for actor in ("mailto:<script>@@@", "mailto:[/red]@x"):
            status, body = xapi(statement(actor.removeprefix("mailto:"), "b"))
            assert status == 400, body
            assert "statement[0].actor.mbox: invalid address" in str(body)
    with web_rt.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(completions)) == 0


# -- 6: one completion, named two ways -------------------------------------------------------------
def test_the_same_completion_by_id_then_by_email_is_a_duplicate(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = runtime.program(None)
    import_roster(
        runtime.engine, stored, write(tmp_path, [HEADER, *PILOT]), runtime.clock, actor="o"
    )
    when = Instant(dt.datetime(2023, 9, 11, 12, tzinfo=dt.UTC), stored.program.reach)
    outcomes = [
        complete_by_operator(
            runtime.engine,
            stored,
            runtime.clock,
            person_ref=ref,
            option="B",
            actor="op",
            message_id_domain="x.invalid",
            completed_at=when,
        ).outcome
        for ref in ("H1", "Ada@Example.edu", "H3", "grace@example.edu", "H3")
    ]
    assert outcomes == [
        CompletionOutcome.RECORDED,
        CompletionOutcome.DUPLICATE,
        CompletionOutcome.RECORDED,
        CompletionOutcome.DUPLICATE,
        CompletionOutcome.DUPLICATE,
    ]
    with runtime.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(completions)) == 2


# -- 12: the program file --------------------------------------------------------------------------
@SQLITE_ONLY
def test_a_hostile_program_file_is_refused_with_its_name(
    env: dict[str, str], tmp_path: Path
) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "1" + "]" * 5000 + "\n")
    big = tmp_path / "big.toml"
    big.write_text(PROGRAM_FILE.read_text() + "# " + "x" * (2 * 1024 * 1024) + "\n")
    twice = tmp_path / "twice.toml"
    text = program_with_activities(tmp_path).read_text()
    iri_b = "https://learning.example.edu/xapi/activities/psh-2023-2024/option-b"
    iri_c = "https://learning.example.edu/xapi/activities/psh-2023-2024/option-c"
    twice.write_text(text.replace(f'activity_ids = ["{iri_c}"]', f'activity_ids = ["{iri_b}"]'))
    expected = {
        deep: f"{deep}: nested more than 32 levels deep",
        big: f"{big}: larger than 1024 KB; not a program file",
        twice: f"{twice}: options[2].activity_ids: '{iri_b}' is already an activity of option 'B'",
    }
    for path, message in expected.items():
        checked = cli(env, "program", "check", str(path))
        no_traceback(checked)
        assert checked.returncode == 2, checked.stdout
        assert message in checked.stderr.replace("\n", " "), checked.stderr


# -- 13: the database URL --------------------------------------------------------------------------
@SQLITE_ONLY
def test_a_bad_or_unreachable_database_url_names_the_variable(
    env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing" / "dir"
    cases = {
        "not a url": "PSHNOTIFY_DATABASE_URL: not a database URL",
        "postgresql://nobody@127.0.0.1:1/x": (
            "PSHNOTIFY_DATABASE_URL: cannot connect to postgresql+psycopg://nobody@127.0.0.1:1/x"
        ),
        "nosuchdb://h/x": "PSHNOTIFY_DATABASE_URL: cannot use",
        f"sqlite:///{missing}/x.db": f"PSHNOTIFY_DATABASE_URL: no database at {missing}/x.db",
    }
    for url, message in cases.items():
        ran = cli({**env, "PSHNOTIFY_DATABASE_URL": url}, "status")
        no_traceback(ran)
        assert ran.returncode == 2, (url, ran.stderr)
        assert message in ran.stderr, ran.stderr
    assert not missing.parent.exists()


# -- 14: personal data at rest ---------------------------------------------------------------------
@SQLITE_ONLY
def test_the_database_and_reports_are_private(env: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "deploy"
    work.mkdir()
    env = {**env, "PSHNOTIFY_DATABASE_URL": "sqlite:///var/pshnotify.db"}
    assert cli(env, "init", cwd=work).returncode == 0
    roster = write(tmp_path, [HEADER, *PILOT])
    assert cli(env, "roster", "import", str(roster), "--now", NOW, cwd=work).returncode == 0
    report = work / "hr.csv"
    made = cli(env, "report", "--department", "Human Resources", "--csv", str(report), cwd=work)
    assert made.returncode == 0, made.stderr
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in [work / "var", *sorted((work / "var").iterdir()), report]
    }
    assert modes.pop("var") == 0o700
    assert {"pshnotify.db", "hr.csv"} <= set(modes)
    assert set(modes.values()) == {0o600}, modes
    unit = (PROGRAM_FILE.parent / "pshnotify.service").read_text()
    assert "\nUMask=0077\n" in unit


def test_the_demo_writes_its_sample_roster_and_caught_emails_for_their_owner_only(
    tmp_path: Path,
) -> None:
    import smtplib
    import socket

    from pshnotify.demo import catcher
    from pshnotify.demo.sample_roster import write_sample_roster

    roster = tmp_path / "demo" / "roster.csv"
    write_sample_roster(roster, count=5)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = catcher.start(tmp_path / "mail", port=port)
    try:
        with smtplib.SMTP("127.0.0.1", port) as relay:
            relay.sendmail("a@example.edu", ["b@example.edu"], b"Subject: hi\r\n\r\nbody\r\n")
    finally:
        controller.stop()
    (eml,) = (tmp_path / "mail").glob("*.eml")
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [roster, tmp_path / "mail", eml]}
    assert modes == {roster: 0o600, tmp_path / "mail": 0o700, eml: 0o600}


# -- 15: no password in clear ----------------------------------------------------------------------
@pytest.mark.fast
def test_auth_without_tls_is_refused_unless_loopback_or_allowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(PROGRAM_FILE.parent)  # no .env here
    monkeypatch.setenv("PSHNOTIFY_SMTP_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("PSHNOTIFY_SMTP_TLS", "none")
    monkeypatch.setenv("PSHNOTIFY_SMTP_HOST", "smtp.example.edu")
    with pytest.raises(InputError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith("PSHNOTIFY_SMTP_TLS: none would send the SMTP password in clear")
    assert "hunter2" not in problem
    monkeypatch.setenv(
        "PSHNOTIFY_SMTP_RELAYS", json.dumps([{"host": "10.0.0.9", "tls": "none", "password": "p"}])
    )
    monkeypatch.setenv("PSHNOTIFY_SMTP_TLS", "starttls")
    with pytest.raises(InputError) as caught:
        load_settings()
    assert caught.value.problems[0].startswith("PSHNOTIFY_SMTP_RELAYS[0].tls: none would send")
    monkeypatch.setenv("PSHNOTIFY_SMTP_ALLOW_PLAIN_AUTH", "true")
    assert load_settings().smtp_allow_plain_auth
    monkeypatch.delenv("PSHNOTIFY_SMTP_ALLOW_PLAIN_AUTH")
    monkeypatch.delenv("PSHNOTIFY_SMTP_RELAYS")
    for host in ("127.0.0.1", "localhost", "::1"):
        monkeypatch.setenv("PSHNOTIFY_SMTP_TLS", "none")
        monkeypatch.setenv("PSHNOTIFY_SMTP_HOST", host)
        assert load_settings().smtp_host == host


# -- 5: what the endpoints leave behind is bounded and pruned -----------------------------------
@SQLITE_ONLY
def test_receipts_are_pruned_and_unmatched_can_be_purged(
    env: dict[str, str], runtime: Runtime, tmp_path: Path
) -> None:
    wall = dt.datetime.now(dt.UTC)
    with runtime.engine.begin() as conn:
        for i, age in enumerate((dt.timedelta(hours=3), dt.timedelta(minutes=10))):
            claim_receipt(conn, "webhook", f"msg_{i}", wall - age)
    done = tmp_path / "done.csv"
    done.write_text(
        "email,option,completed_at\n"
        "ghost1@example.edu,B,2023-09-01\nghost2@example.edu,B,2023-09-02\n"
    )
    first = cli(env, "completions", "import", str(done), "--now", "2023-09-05T10:00:00-04:00")
    assert first.returncode == 0, first.stderr
    later = tmp_path / "later.csv"
    later.write_text("email,option,completed_at\nghost3@example.edu,B,2023-09-10\n")
    assert cli(env, "completions", "import", str(later), "--now", NOW).returncode == 0
    assert cli(env, "run", "--once", "--now", NOW).returncode == 0
    with runtime.engine.connect() as conn:
        kept = conn.scalars(select(webhook_receipts.c.receipt_id)).all()
    assert kept == ["msg_1"]  # the three-hour-old receipt is gone

    purged = cli(env, "completions", "unmatched", "--purge-before", "2023-09-06", "--json")
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout)["purged"] == 2
    left = json.loads(cli(env, "completions", "unmatched", "--json").stdout)
    assert [r["person_ref"] for r in left] == ["ghost3@example.edu"]
    bad = cli(env, "completions", "unmatched", "--purge-before", "last week")
    assert bad.returncode == 2
    assert "--purge-before: expected a date as YYYY-MM-DD" in bad.stderr


def test_unmatched_completions_are_bounded(
    runtime: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(completions_service, "MAX_UNMATCHED", 2)
    stored = runtime.program(None)
    done = tmp_path / "done.csv"
    rows = "".join(f"ghost{i}@example.edu,B,2023-09-0{i + 1}\n" for i in range(3))
    done.write_text("email,option,completed_at\n" + rows)
    with pytest.raises(completions_service.UnmatchedFullError) as caught:
        completions_service.import_completions(
            runtime.engine, stored, done, runtime.clock, actor="op", message_id_domain="x.invalid"
        )
    assert "completions unmatched" in caught.value.hint
    with runtime.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(completions)) == 0


# -- 11: every roster field has a length or a range ------------------------------------------------
@SQLITE_ONLY
def test_roster_fields_have_limits_named_by_file_and_line(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert cli(env, "init").returncode == 0

    def row(ident: str, name: str = "Ann", year: str = "") -> str:
        return f"{ident},{ident.lower()[:8]}@example.edu,{name},Human Resources,staff,,,{year},,,"

    roster = write(
        tmp_path,
        [
            HEADER,
            row("L1", name="N" * 100_000),
            row("I" * 200),
            row("L3", year="99999999999999999999999"),
            row("L4", year="١٢"),
            row("L5", year="1_0"),
            row("L6", year="3"),
        ],
    )
    checked = cli(env, "roster", "import", str(roster), "--dry-run", "--now", NOW)
    no_traceback(checked)
    assert checked.returncode == 2
    errors = [line for line in checked.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {roster}:2: name: is longer than 2000 characters (100000)",
        f"error: {roster}:3: id: is longer than 128 characters (200)",
        f"error: {roster}:4: program_year: expected a number from 0 to 99, got "
        "'99999999999999999999999'",
        f"error: {roster}:5: program_year: expected a whole number, got '١٢'",
        f"error: {roster}:6: program_year: expected a whole number, got '1_0'",
    ]
