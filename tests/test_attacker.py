"""Issue 28: the console, the bounce mailbox and the sign-in survive an attacker.

One test per defect the probe found (each failed before its fix), against real things: the
bounces through a real Maildir, the console on a real uvicorn server, the CLI as the operator
runs it. The date defects (3, 7, 11, 14) are tested where the command layer fixes them.
"""

from __future__ import annotations

import datetime as dt
import logging
import mailbox
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from pshnotify.bounces.sources import MaildirSource
from pshnotify.cli import app
from pshnotify.clock import FixedClock
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.access.users import add_user
from pshnotify.services.bounces.scan import scan
from pshnotify.settings import Settings
from pshnotify.store.schema import messages, people, undeliverable, users
from tests.smtp_server import Received, SmtpServer
from tests.test_bounces import BOUNCE_ADDRESS, SECRET, deliver, dsn, launched
from tests.test_console import OPERATOR, VIEWER
from tests.test_console_http import console, csrf, owned, sign_in, user_cli
from tests.test_launch_and_send import setup_pilot

runner = CliRunner()


@pytest.fixture
def verp_rt(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    s = settings.model_copy(
        update={"bounce_address": BOUNCE_ADDRESS, "bounce_secret": SecretStr(SECRET)}
    )
    rt = Runtime(s, clock)
    yield rt
    rt.engine.dispose()


def marked(engine: Engine) -> list[str]:
    """The addresses marked undeliverable now."""
    with engine.connect() as conn:
        q = select(undeliverable.c.email_key).where(undeliverable.c.cleared_at.is_(None))
        return sorted(conn.scalars(q))


def launch_states(engine: Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(select(messages.c.recipient_email, messages.c.state)).tuples().all()
        )


# -- 1. forged bounces ----------------------------------------------------------------------------
def test_1_with_verp_a_report_without_a_token_marks_nobody(
    verp_rt: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    """Grace writes a delivery report about Ada's message and mails it to the plain bounce
    address: Message-ID and recipient are right, but there is no token."""
    got = launched(verp_rt, smtp, tmp_path)
    box = tmp_path / "bounces"
    deliver(box, dsn(got["ada@example.edu"], "5.1.1", "550 5.1.1 unknown", to=BOUNCE_ADDRESS))
    report = scan(verp_rt.engine, verp_rt.clock, [MaildirSource(box)], verp_rt.scan_config())
    assert (report.marked, dict(report.bounces), report.unmatched) == ([], {}, 1)
    assert marked(verp_rt.engine) == []
    assert launch_states(verp_rt.engine)["ada@example.edu"] == "sent"
    assert len(mailbox.Maildir(box, create=False).get_folder("Unrecognised")) == 1
    # The same report to the address with Ada's message's token is believed.
    deliver(box, dsn(got["ada@example.edu"], "5.1.1", "550 5.1.1 unknown"))
    report = scan(verp_rt.engine, verp_rt.clock, [MaildirSource(box)], verp_rt.scan_config())
    assert marked(verp_rt.engine) == ["ada@example.edu"]


def _local_part(message_id: str) -> str:
    return message_id.strip("<>").rpartition("@")[0]


def test_1_without_verp_no_message_id_can_be_guessed_from_another(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    """Grace reads her own launch email's Message-ID and forges reports for the ids next to
    it, naming Ada: none of them is Ada's, so nobody is marked."""
    got = launched(runtime, smtp, tmp_path)
    ids = {rcpt: r.message()["Message-ID"] for rcpt, r in got.items()}
    locals_ = [_local_part(m) for m in ids.values()]
    shared = next((i for i, cs in enumerate(zip(*locals_, strict=False)) if len(set(cs)) > 1), 0)
    assert shared < 6  # no common part: random per message
    with runtime.engine.connect() as conn:
        rows = dict(conn.execute(select(people.c.email, people.c.id)).tuples().all())
    assert not any(_local_part(mid).endswith(f".{rows[rcpt]}") for rcpt, mid in ids.items())
    grace = got["grace@example.edu"]
    mine = ids["grace@example.edu"]
    stem = re.sub(r"\d+$", "", _local_part(mine))
    domain = mine.strip("<>").rpartition("@")[2]
    reports = tmp_path / "forged"
    reports.mkdir()
    for n in range(1, 50):
        forged = f"<{stem}{n}@{domain}>"
        data = dsn(grace, "5.1.1", "550 5.1.1 unknown").replace(mine.encode(), forged.encode())
        (reports / f"{n}.eml").write_bytes(data.replace(b"grace@example.edu", b"ada@example.edu"))
    from pshnotify.bounces.sources import FileSource

    files = sorted(reports.iterdir())
    report = scan(runtime.engine, runtime.clock, [FileSource(files)], runtime.scan_config())
    assert (report.read, report.marked, report.unmatched) == (49, [], 49)
    assert marked(runtime.engine) == []


# -- 2. one malformed bounce ----------------------------------------------------------------------
HOSTILE = {
    "invalid UTF-8 in an encoded word": b"From: x@example.org\nSubject: =?utf-8?b?/w==?=\n\nx\n",
    "an unknown charset": b"From: x@example.org\nSubject: =?x-nothing?q?hi?=\n\nx\n",
    "a text part in idna": (
        b"From: x@example.org\nSubject: idna\nContent-Type: text/plain; charset=idna\n\n\xff\xfe\n"
    ),
    "1,000 nested parts": b"From: x@example.org\nSubject: deep\n"
    + b"Content-Type: multipart/mixed; boundary=b0\n\n"
    + b"".join(
        b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1) for i in range(1000)
    ),
    "a NUL and raw bytes in the headers": b"From: x\x00@example.org\nSubject: \x00\xff\xfe\n\nx\n",
}


def test_2_unreadable_mail_is_kept_and_the_scan_goes_on(
    verp_rt: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    got = launched(verp_rt, smtp, tmp_path)
    box = tmp_path / "bounces"
    for data in HOSTILE.values():
        deliver(box, data)
    deliver(box, b"From: x@example.org\nSubject: huge\n\n" + b"x" * (11 * 1024 * 1024))
    deliver(box, dsn(got["ada@example.edu"], "5.1.1", "550 5.1.1 unknown"))  # after them all
    report = scan(verp_rt.engine, verp_rt.clock, [MaildirSource(box)], verp_rt.scan_config())
    assert report.read == len(HOSTILE) + 2
    assert report.unrecognised == len(HOSTILE) + 1
    assert marked(verp_rt.engine) == ["ada@example.edu"]
    md = mailbox.Maildir(box, create=False)
    assert len(md) == 0
    assert len(md.get_folder("Unrecognised")) == len(HOSTILE) + 1
    listed = runner.invoke(app, ["bounces", "unrecognised"], env=_env(verp_rt))
    assert listed.exit_code == 0, listed.output
    assert "nested deeper" in listed.output
    assert "larger than" in listed.output
    # `bounces scan` of the same files: exit 0, no traceback.
    files = [tmp_path / f"{i}.eml" for i in range(len(HOSTILE))]
    for path, data in zip(files, HOSTILE.values(), strict=True):
        path.write_bytes(data)
    scanned = runner.invoke(app, ["bounces", "scan", *map(str, files)], env=_env(verp_rt))
    assert scanned.exit_code == 0, scanned.output
    assert "Traceback" not in scanned.output


def _env(rt: Runtime) -> dict[str, str]:
    s = rt.settings
    return {
        "PSHNOTIFY_DATABASE_URL": s.database_url,
        "PSHNOTIFY_PROGRAM_FILE": str(s.program_file),
        "PSHNOTIFY_TEMPLATES_DIR": str(s.templates_dir),
        "PSHNOTIFY_BOUNCE_ADDRESS": BOUNCE_ADDRESS,
        "PSHNOTIFY_BOUNCE_SECRET": SECRET,
    }


# -- 15. links in the Maildir ---------------------------------------------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_15_a_link_in_the_bounce_maildir_is_not_followed(
    verp_rt: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    got: dict[str, Received] = launched(verp_rt, smtp, tmp_path)
    box = tmp_path / "bounces"
    mailbox.Maildir(box, create=True)
    outside = tmp_path / "outside.eml"  # stands for /etc/passwd: readable, not ours to read
    outside.write_bytes(dsn(got["ada@example.edu"], "5.1.1", "550 5.1.1 unknown"))
    (box / "new" / "1700000000.link.host").symlink_to(outside)
    (box / "cur" / "1700000000.dir.host").mkdir()
    os.mkfifo(box / "new" / "1700000000.fifo.host")
    report = scan(verp_rt.engine, verp_rt.clock, [MaildirSource(box)], verp_rt.scan_config())
    assert report.read == 0
    assert marked(verp_rt.engine) == []
    assert (box / "new" / "1700000000.link.host").is_symlink()  # left where it was
    assert outside.exists()


# -- the console ----------------------------------------------------------------------------------
@pytest.fixture
def crt(runtime: Runtime, tmp_path: Path) -> Runtime:
    """The pilot roster, an operator and a viewer (as tests/test_console_http.py has them)."""
    setup_pilot(runtime, tmp_path)
    for (login, password), role, departments in (
        (OPERATOR, "operator", []),
        (VIEWER, "viewer", ["human resources"]),
    ):
        add_user(
            runtime.engine,
            login,
            role=role,
            departments=departments,
            password=password,
            clock=runtime.clock,
            actor="test",
        )
    return runtime


def _with(rt: Runtime, **update: object) -> Runtime:
    return owned(Runtime(rt.settings.model_copy(update=update), rt.clock))


def test_4_the_sign_on_header_counts_only_from_the_proxy_itself(crt: Runtime) -> None:
    """A local process claims, by X-Forwarded-For, to be the trusted proxy."""
    rt = _with(crt, web_trusted_header="X-Remote-User", web_trusted_proxies=["10.0.0.5/32"])
    with console(rt) as client:
        spoofed = client.get("/", headers={"X-Forwarded-For": "10.0.0.5", "X-Remote-User": "olga"})
        assert spoofed.status_code == 303
        assert spoofed.headers["location"].startswith("/login")
    # The real proxy (here: this loopback connection) signs people on, and the address it
    # forwards is the one the audit log records for a sign-in.
    rt = _with(crt, web_trusted_header="X-Remote-User", web_trusted_proxies=["127.0.0.1/32"])
    with console(rt) as client:
        page = client.get("/", headers={"X-Forwarded-For": "203.0.113.9", "X-Remote-User": "olga"})
        assert page.status_code == 200


def test_5_signing_out_ends_every_copy_of_the_session(crt: Runtime) -> None:
    with console(crt) as client:
        assert sign_in(client, OPERATOR).status_code == 303
        saved = dict(client.cookies)
        with httpx.Client(base_url=str(client.base_url), cookies=saved) as other:  # a 2nd browser
            assert other.get("/").status_code == 200
            client.post("/logout", data={"csrf_token": csrf(client, "/")})
            assert client.get("/").status_code == 303
            with httpx.Client(base_url=str(client.base_url), cookies=saved) as stolen:
                assert stolen.get("/").status_code == 303  # the saved cookie is worth nothing
            assert other.get("/").status_code == 303


def test_5_a_login_removed_and_added_again_gets_no_old_cookie_back(
    crt: Runtime, env: dict[str, str]
) -> None:
    with console(crt) as client:
        assert sign_in(client, VIEWER).status_code == 303
        saved = dict(client.cookies)
        assert user_cli("remove", VIEWER[0]).exit_code == 0
        again = user_cli(
            "add", VIEWER[0], "--role", "operator", "--password-stdin", stdin="new password 12\n"
        )
        assert again.exit_code == 0, again.output
        with httpx.Client(base_url=str(client.base_url), cookies=saved) as old:
            assert old.get("/").status_code == 303  # not the new operator's rights
            assert old.get("/audit").status_code == 303


def test_5_a_new_password_or_role_ends_the_sessions(crt: Runtime) -> None:
    with console(crt) as client:
        assert sign_in(client, OPERATOR).status_code == 303
        saved = dict(client.cookies)
        with crt.engine.begin() as conn:  # as any command that changes the role would
            conn.execute(users.update().where(users.c.login == "olga").values(role="viewer"))
        with httpx.Client(base_url=str(client.base_url), cookies=saved) as old:
            page = old.get("/departments")  # a page a viewer may read: signed out all the same
            assert page.status_code == 303
            assert page.headers["location"].startswith("/login")


def test_6_a_short_web_secret_is_refused_at_start(env: dict[str, str]) -> None:
    """`pshnotify web` as the operator starts it (a subprocess: before the fix it served)."""
    for short in ("", "x" * 31):
        run = subprocess.run(
            [sys.executable, "-m", "pshnotify", "web"],
            env={**os.environ, **env, "PSHNOTIFY_WEB_SECRET": short},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert run.returncode == 2, run.stderr
        said = " ".join((run.stdout + run.stderr).split())
        assert "PSHNOTIFY_WEB_SECRET: must be at least 32 characters" in said
        assert "Traceback" not in said
        assert not short or short not in said  # the value itself is never printed


def test_8_rotating_x_forwarded_for_does_not_escape_the_throttle(crt: Runtime) -> None:
    """Each wrong guess claims a new client address: the connection's is the one counted."""
    with console(crt) as client:
        token = csrf(client)
        answers = []
        for n in range(35):
            r = client.post(
                "/login",
                data={"csrf_token": token, "username": f"guess{n}", "password": "guess guess"},
                headers={"X-Forwarded-For": f"198.51.100.{n}"},
            )
            answers.append(r.status_code)
        assert answers[:10] == [401] * 10
        assert set(answers[10:]) == {429}  # the HTTP side's rule: 10 failures a minute
        assert client.get("/login", headers={"X-Forwarded-For": "192.0.2.1"}).status_code == 429


def test_9_a_guesser_elsewhere_does_not_lock_the_operator_out(crt: Runtime) -> None:
    rt = _with(crt, web_trusted_proxies=["127.0.0.1/32"])  # a proxy names the client
    with console(rt) as client:
        attacker = {"X-Forwarded-For": "203.0.113.66"}
        for _ in range(5):
            token = csrf(client)
            data = {"csrf_token": token, "username": "olga", "password": "guess guess"}
            assert client.post("/login", data=data, headers=attacker).status_code == 401
        token = csrf(client)
        data = {"csrf_token": token, "username": "olga", "password": OPERATOR[1]}
        assert client.post("/login", data=data, headers=attacker).status_code == 429
        token = csrf(client)
        office = {"X-Forwarded-For": "198.51.100.7"}
        assert (
            client.post("/login", data=data | {"csrf_token": token}, headers=office).status_code
            == 303
        )


def test_10_behind_a_tls_proxy_the_cookie_is_secure(crt: Runtime) -> None:
    with console(crt) as client:
        assert "Secure" not in client.get("/login").headers["set-cookie"]  # plain HTTP
    rt = _with(crt, public_url="https://training.example.edu/")
    with console(rt) as client:  # the proxy ends TLS and talks plain HTTP to us
        assert "Secure" in client.get("/login").headers["set-cookie"]


# -- 12, 13. the console's CSV and search ---------------------------------------------------------
def test_12_the_csv_of_an_empty_department_is_no_500(crt: Runtime) -> None:
    with console(crt) as client:
        assert sign_in(client, OPERATOR).status_code == 303
        typo = client.get("/departments/report.csv", params={"name": "Human Resourcez"})
        assert typo.status_code == 404
        assert "Nobody enrolled is in the department" in typo.text
    with crt.engine.begin() as conn:  # the viewer's own department empties (people moved)
        conn.execute(
            people.update()
            .where(people.c.department == "Human Resources")
            .values(department="Moved Away")
        )
    with console(crt) as client:
        assert sign_in(client, VIEWER).status_code == 303
        own = client.get("/departments/report.csv", params={"name": "human resources"})
        assert own.status_code == 200
        assert own.text.lstrip("\ufeff").startswith('"id",')  # the header, nobody under it
        assert len(own.text.splitlines()) == 1


def test_13_a_search_longer_than_any_name_is_refused_politely(
    crt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pshnotify")
    typed = "a" * 50_001
    with console(crt) as client:
        assert sign_in(client, OPERATOR).status_code == 303
        found = client.get("/people", params={"q": typed})
        assert found.status_code == 400
        assert "at most 320 characters" in found.text
        assert 'value="' + "a" * 320 + '"' in found.text  # what was typed, as far as it fits
        wave = client.get("/waves/pilot", params={"q": typed})
        assert wave.status_code == 400
        assert client.get("/people", params={"q": "ada"}).status_code == 200
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "50001 characters" in logged
    assert typed not in logged


# -- 16. escalation to addresses outside the program ----------------------------------------------
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_16_escalations_go_to_no_outside_manager_and_sub_addresses_are_one_mailbox(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from email import message_from_bytes
    from email.utils import parseaddr

    from tests.test_escalation import HEADER, escalating_program
    from tests.test_roster_import import write
    from tests.test_season import at, cli

    monkeypatch.setenv("PSHNOTIFY_PROGRAM_FILE", str(escalating_program(tmp_path)))
    office = "Human Resources,staff,ao@example.edu,Olive Officer"
    roster = write(
        tmp_path,
        [
            HEADER,
            f"E1,ann@example.edu,Ann Idle,{office},mallory@evil.example.org",
            f"E2,bob@example.edu,Bob Idle,{office},victim+1@example.edu",
            f"E3,cyd@example.edu,Cyd Idle,{office},victim+2@example.edu",
            f"E4,dee@example.edu,Dee Idle,{office},Victim+3@example.edu",
        ],
    )
    day = dt.date
    cli("init", "--now", at(day(2023, 9, 1), 9))
    imported = cli("roster", "import", str(roster), "--now", at(day(2023, 9, 1), 9))
    cli("launch", "pilot", "--yes", "--now", at(day(2023, 9, 11), 9))
    for d in (day(2023, 9, 11), day(2023, 9, 18), day(2023, 9, 25), day(2023, 9, 26)):
        cli("run", "--once", "--now", at(d, 9))
    digests = {}
    for item in smtp.received:
        msg = message_from_bytes(item.data)
        if msg["X-Pshnotify-Kind"] == "escalation":
            body = msg.get_payload(0).get_payload(decode=True).decode()
            rcpt = parseaddr(msg["To"])[1].lower()
            digests[rcpt] = [p for p in ("E1", "E2", "E3", "E4") if f"({p}," in body]
    assert not any("evil.example.org" in r for r in digests)
    assert digests.pop("ao@example.edu") == ["E1"]  # the officer stands in for mallory
    assert len(digests) == 1  # one digest for the three spellings of one mailbox
    [(victim, listed)] = digests.items()
    assert victim.startswith("victim+")
    assert listed == ["E2", "E3", "E4"]
    # The import said so, once, at the first line naming mallory.
    assert imported.count("mallory@evil.example.org") == 1
    assert "roster.csv:2: manager_email" in " ".join(imported.split())
    assert "outside the program's domains (example.edu)" in " ".join(imported.split())


def test_16_manager_domains_are_checked_in_the_program_file() -> None:
    from pshnotify.domain.errors import InputError
    from pshnotify.domain.program import parse_program
    from tests.conftest import PROGRAM_FILE

    text = PROGRAM_FILE.read_text()
    assert 'manager_domains = ["example.edu"]' in text
    program = parse_program(text, "program.toml")
    assert program.manager_allowed("boss@example.edu")
    assert program.manager_allowed("boss@hr.EXAMPLE.edu")
    assert not program.manager_allowed("boss@example.edu.evil.org")
    assert not program.manager_allowed("boss@notexample.edu")
    bad = text.replace('manager_domains = ["example.edu"]', 'manager_domains = ["@evil"]')
    with pytest.raises(InputError) as caught:
        parse_program(bad, "program.toml")
    assert "manager_domains" in str(caught.value.problems)
