"""Every command and setting the README names, through its own door (the command line as an
operator types it, or HTTP as a browser or monitor asks), asserting what the user sees."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trustme
from imapclient import IMAPClient
from typer.testing import CliRunner

from pshnotify.bounces.sources import parse_imap_url
from pshnotify.cli import app
from tests.conftest import PROGRAM_FILE
from tests.imap_server import PASSWORD as IMAP_PASSWORD
from tests.imap_server import start_dovecot
from tests.smtp_server import Behaviour, SmtpServer
from tests.test_bounces import BOUNCE_ADDRESS, SECRET, deliver, dsn
from tests.test_cli import NOW, cli
from tests.test_completions import COMPLETIONS, COMPLETIONS_HEADER
from tests.test_console import OPERATOR, free_port
from tests.test_console_http import sign_in
from tests.test_daemon import pilot_roster
from tests.test_launch_and_send import PILOT
from tests.test_roster_import import HEADER, write
from tests.test_tls_auth import PASSWORD, USER, check_login, running, server_context

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
    """`pshnotify status --json` in this process (CliRunner): a check, not the door under
    test, asked often; each subprocess costs a second or more on a loaded machine."""
    done = CliRunner().invoke(app, ["status", "--json", *args], env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)  # type: ignore[no-any-return]


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
    # An id that names no message is bad input, named; nothing is requeued.
    unknown = cli(env, "messages", "retry", "--id", "999999", "--now", NOW)
    assert unknown.returncode == 2
    assert "--id: no message 999999 in program psh-2023-2024" in said(unknown)


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


# -- completions import --dry-run ------------------------------------------------------------------
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


# -- bounces scan --maildir / --json, then address ok ----------------------------------------------
def test_bounces_scan_of_a_maildir_marks_the_address_and_address_ok_clears_it(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    env = {**env, "PSHNOTIFY_BOUNCE_ADDRESS": BOUNCE_ADDRESS, "PSHNOTIFY_BOUNCE_SECRET": SECRET}
    pilot_launched(env, tmp_path)
    ok(cli(env, "run", "--once", "--now", NOW))
    got = {r.rcpt_tos[0]: r for r in smtp.received}
    box = tmp_path / "bounces"
    deliver(box, dsn(got["ada@example.edu"], "5.1.1", "550 5.1.1 <ada@example.edu>: unknown"))
    deliver(box, b"From: someone@example.org\nSubject: hello?\n\nIs this the training office?\n")
    scanned = json.loads(ok(cli(env, "bounces", "scan", "--maildir", str(box), "--json")).stdout)
    assert scanned["read"] == 2
    assert scanned["bounces"] == {"hard": 1}
    assert scanned["marked_undeliverable"] == ["H1"]
    assert scanned["unrecognised"] == 1
    assert sorted(p.name for p in (box / "new").iterdir()) == []  # moved, not deleted
    again = ok(cli(env, "bounces", "scan", "--maildir", str(box), "--now", NOW))
    assert "read 0" in said(again)
    missing = cli(env, "bounces", "scan", "--maildir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2
    assert "--maildir:" in said(missing)
    assert status(env)["waves"]["pilot"]["people"]["undeliverable"] == 1  # type: ignore[index]

    cleared = ok(cli(env, "address", "ok", "H1", "--now", NOW))
    assert "H1 (ada@example.edu): mark cleared (hard bounce 5.1.1" in said(cleared)
    assert "their launch email goes out again on the next pass" in said(cleared)
    again = ok(cli(env, "address", "ok", "H1", "--now", NOW))
    assert "is not marked undeliverable; nothing changed" in said(again)
    ok(cli(env, "run", "--once", "--now", NOW))
    assert smtp.received[-1].rcpt_tos == ["ada@example.edu"]
    assert status(env)["waves"]["pilot"]["people"]["undeliverable"] == 0  # type: ignore[index]


# -- per-minute and per-day rates; SIGINT ----------------------------------------------------------
def daemon(env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pshnotify", "run", "--now", NOW, "--interval", "1", *extra],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize("variable", ["PSHNOTIFY_RATE_PER_MINUTE", "PSHNOTIFY_RATE_PER_DAY"])
def test_a_per_minute_or_per_day_rate_holds_the_rest_and_sigint_ends_the_wait(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, variable: str
) -> None:
    """Two a minute (or a day) for three people: two go at once, the third waits for its slot;
    Ctrl-C (SIGINT) ends the wait at once, the daemon exits 0 and the third stays queued."""
    pilot_launched(env, tmp_path)
    run = daemon({**env, variable: "2"})
    try:
        wait_for(lambda: len(smtp.received) >= 2)
        time.sleep(3)  # a pass or two later: the third still waits
        assert len(smtp.received) == 2
        asked = time.monotonic()
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err
    assert time.monotonic() - asked < 15  # not the rest of the minute, or of the day
    assert "stopping" in err
    assert "Traceback" not in err
    messages = status(env)["waves"]["pilot"]["messages"]  # type: ignore[index]
    assert (messages["delivered"], messages["queued"]) == (2, 1)  # type: ignore[index]


# -- relay shares ----------------------------------------------------------------------------------
def test_connections_are_spread_over_the_relays_by_share(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    second = SmtpServer()
    second.start()
    try:
        ok(cli(env, "init"))
        ok(cli(env, "roster", "import", str(pilot_roster(tmp_path / "p.csv", 40)), "--now", NOW))
        ok(cli(env, "launch", "pilot", "--yes", "--now", NOW))
        relays = [{"host": second.host, "port": second.port, "tls": "none", "share": 3}]
        shared = {
            **env,
            "PSHNOTIFY_SMTP_RELAYS": json.dumps(relays),
            "PSHNOTIFY_SMTP_CONNECTIONS": "4",
        }
        smtp.behaviour = second.behaviour = Behaviour(delay=0.05)  # every connection has work
        ok(cli(shared, "run", "--once", "--now", NOW))
        assert len(smtp.received) + len(second.received) == 40
        assert (smtp.connections, second.connections) == (1, 3)  # 1:3 of four connections
        assert len(second.received) > len(smtp.received)
        # A share of 0 for the first relay: everything goes through the other.
        more = pilot_roster(tmp_path / "more.csv", 44)
        ok(cli(env, "roster", "import", str(more), "--now", NOW))
        ok(cli(env, "launch", "pilot", "--yes", "--now", NOW))
        first_had = len(smtp.received)
        ok(cli({**shared, "PSHNOTIFY_SMTP_SHARE": "0"}, "run", "--once", "--now", NOW))
        assert len(smtp.received) == first_had
        assert len(second.received) - (40 - first_had) == 4
    finally:
        second.stop()


# -- a rejected AUTH -------------------------------------------------------------------------------
def test_a_refused_login_says_which_settings_to_fix_and_never_shows_the_password(
    env: dict[str, str], tmp_path: Path
) -> None:
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with running(
        tls_context=server_context(ca, "127.0.0.1", "localhost"),
        require_starttls=True,
        authenticator=check_login,
        auth_require_tls=True,
        auth_required=True,
    ) as auth_relay:
        refused_login(env, auth_relay, ca_file, tmp_path)


def refused_login(
    env: dict[str, str], auth_relay: SmtpServer, ca_file: Path, tmp_path: Path
) -> None:
    wrong = "wrong-Pa55word-do-not-print"
    relay = {
        **env,
        "PSHNOTIFY_SMTP_HOST": auth_relay.host,
        "PSHNOTIFY_SMTP_PORT": str(auth_relay.port),
        "PSHNOTIFY_SMTP_TLS": "starttls",
        "PSHNOTIFY_SMTP_CA_FILE": str(ca_file),
        "PSHNOTIFY_SMTP_USERNAME": USER,
        "PSHNOTIFY_SMTP_PASSWORD": wrong,
    }
    pilot_launched(relay, tmp_path)
    refused = cli(relay, "run", "--once", "--now", NOW)
    assert refused.returncode == 1
    words = said(refused)
    assert "stopped: the relay refused our login" in words
    assert "535" in words
    assert "check PSHNOTIFY_SMTP_USERNAME and PSHNOTIFY_SMTP_PASSWORD" in words
    assert wrong not in refused.stdout + refused.stderr
    assert auth_relay.received == []
    assert status(relay)["waves"]["pilot"]["messages"]["queued"] == 3  # type: ignore[index]
    ok(cli({**relay, "PSHNOTIFY_SMTP_PASSWORD": PASSWORD}, "run", "--once", "--now", NOW))
    assert len(auth_relay.received) == 3


# -- .env ------------------------------------------------------------------------------------------
def test_a_dotenv_file_in_the_working_directory_is_read(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    """The settings from `.env` beside where the command runs, none from the environment; a
    variable set in the environment wins over the file."""
    workdir = tmp_path / "service"
    workdir.mkdir()
    (workdir / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    bare = {k: v for k, v in os.environ.items() if not k.startswith("PSHNOTIFY_")}

    def here(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pshnotify", *args],
            env={**bare, **extra},
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    ok(here("init"))
    roster = str(write(tmp_path, [HEADER, *PILOT]))
    ok(here("roster", "import", roster, "--now", NOW))
    ok(here("launch", "pilot", "--yes", "--now", NOW))
    ok(here("run", "--once", "--now", NOW))
    assert len(smtp.received) == 3  # the relay named only in .env
    assert status(env)["waves"]["pilot"]["messages"]["delivered"] == 3  # type: ignore[index]
    elsewhere = here("status", PSHNOTIFY_DATABASE_URL=f"sqlite:///{tmp_path / 'other.db'}")
    assert elsewhere.returncode == 2  # the environment wins over the file
    assert f"no database at {tmp_path / 'other.db'}" in said(elsewhere)
    broken = workdir / ".env"
    broken.write_text(broken.read_text() + "PSHNOTIFY_SMTP_PORT=not-a-port\n")
    refused = here("status")
    assert refused.returncode == 2
    assert "PSHNOTIFY_SMTP_PORT" in said(refused)


# -- the console's settings: switched off, its secret, its session hours, the Secure cookie -------
@contextmanager
def web(env: dict[str, str], **settings: str) -> Iterator[str]:
    """`pshnotify web` as a subprocess with these settings; yields its URL once /healthz
    answers, and stops it afterwards (exit status 0)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pshnotify", "web", "--now", NOW],
        env={**os.environ, **env, "PSHNOTIFY_HTTP_PORT": str(port), **settings},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "pshnotify web did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out


def with_operator(env: dict[str, str], tmp_path: Path) -> None:
    ok(cli(env, "init"))
    ok(cli(env, "roster", "import", str(write(tmp_path, [HEADER, *PILOT])), "--now", NOW))
    added = cli(env, "user", "add", OPERATOR[0], "--role", "operator", "--password-stdin",
                stdin=OPERATOR[1] + "\n")  # fmt: skip
    ok(added)


@contextmanager
def signed_in(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, follow_redirects=False, timeout=30) as client:
        response = sign_in(client, OPERATOR)
        assert response.status_code == 303, response.text
        yield client


def test_the_console_and_the_metrics_can_each_be_switched_off(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    with_operator(env, tmp_path)
    with web(env, PSHNOTIFY_CONSOLE="false") as url:
        assert httpx.get(f"{url}/login", timeout=30).status_code == 404
        assert httpx.get(f"{url}/", timeout=30).status_code == 404
        metrics = httpx.get(f"{url}/metrics", timeout=30)
        assert metrics.status_code == 200
        assert "pshnotify_messages" in metrics.text
    with web(env, PSHNOTIFY_METRICS="false") as url:
        assert httpx.get(f"{url}/metrics", timeout=30).status_code == 404
        assert httpx.get(f"{url}/login", timeout=30).status_code == 200
        with signed_in(url) as client:
            assert "HR and IS&amp;T Pilot" in client.get("/").text


def test_the_web_secret_keeps_sessions_over_a_restart_and_the_hours_bound_them(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    with_operator(env, tmp_path)
    keyed = {
        "PSHNOTIFY_WEB_SECRET": "a-console-secret-for-the-tests-of-32+-chars",
        "PSHNOTIFY_WEB_SESSION_HOURS": "2",
    }
    with web(env, **keyed) as url, signed_in(url) as client:
        cookie = dict(client.cookies)
        assert client.get("/").status_code == 200
    with web(env, **keyed) as url:  # restarted with the same secret: still signed in
        again = httpx.get(f"{url}/", cookies=cookie, timeout=30)
        assert again.status_code == 200
        assert "HR and IS&amp;T Pilot" in again.text
    with web(env) as url:  # restarted without it (a key of its own): signed out
        out = httpx.get(f"{url}/", cookies=cookie, timeout=30)
        assert out.status_code == 303
        assert out.headers["location"].startswith("/login")


def test_the_session_cookie_is_secure_over_https_only(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    """Behind a TLS-terminating proxy named in PSHNOTIFY_WEB_TRUSTED_PROXIES (here this host)
    saying X-Forwarded-Proto: https, the cookie is Secure; over plain HTTP it is not (a
    browser would drop it). The same header from anyone else changes nothing (issue 28)."""
    with_operator(env, tmp_path)
    with web(
        env, PSHNOTIFY_WEB_SESSION_HOURS="2", PSHNOTIFY_WEB_TRUSTED_PROXIES='["127.0.0.1"]'
    ) as url:
        plain = httpx.Client(base_url=url, follow_redirects=False, timeout=30)
        answer = sign_in(plain, OPERATOR)
        assert answer.status_code == 303
        cookie = answer.headers["set-cookie"]
        assert "Secure" not in cookie
        assert "Max-Age=7200" in cookie  # PSHNOTIFY_WEB_SESSION_HOURS=2
        # Behind the proxy, the first page already sets the cookie (its CSRF token) Secure:
        # a browser then sends it back over HTTPS only.
        login = httpx.get(f"{url}/login", headers={"X-Forwarded-Proto": "https"}, timeout=30)
        assert login.status_code == 200
        assert "; Secure" in login.headers["set-cookie"]
        assert "HttpOnly" in login.headers["set-cookie"]
        plain.close()


# -- the cadence's optional emails: invitations and overdue notices --------------------------------
def program_with(tmp_path: Path, **cadence: str) -> dict[str, str]:
    """The shipped program with some [cadence] settings changed, as PSHNOTIFY_PROGRAM_FILE."""
    text = PROGRAM_FILE.read_text()
    for key, value in cadence.items():
        old = next(line for line in text.splitlines() if line.startswith(f"{key} = "))
        text = text.replace(old, f"{key} = {value}", 1)
    path = tmp_path / "program.toml"
    path.write_text(text)
    return {"PSHNOTIFY_PROGRAM_FILE": str(path)}


def kinds(smtp: SmtpServer, since: int = 0) -> dict[str, str]:
    """recipient -> the kind of email they got, for what arrived after the first `since`."""
    return {r.rcpt_tos[0]: r.message()["X-Pshnotify-Kind"] for r in smtp.received[since:]}


def body(smtp: SmtpServer, recipient: str) -> str:
    got = [r.message() for r in smtp.received if r.rcpt_tos[0] == recipient]
    text = got[-1].get_body(("plain",))
    assert text is not None
    return str(text.get_content())


def test_an_encouraged_person_gets_an_invitation_when_the_program_asks_for_it(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    env = {**env, **program_with(tmp_path, invite_encouraged="true")}
    pilot_launched(env, tmp_path)
    ok(cli(env, "run", "--once", "--now", NOW))
    assert kinds(smtp) == {
        "ada@example.edu": "launch",
        "jose@example.edu": "launch",
        "grace@example.edu": "launch",
        "new@example.edu": "invitation",  # H5, a new hire: encouraged, not required
    }
    assert "New Hire" in body(smtp, "new@example.edu")
    ok(cli(env, "run", "--once", "--now", "2023-09-12T10:00:00-04:00"))
    assert "new@example.edu" not in kinds(smtp, 4)  # invited once


def test_overdue_notices_go_to_those_past_their_deadline_when_the_program_asks_for_them(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    env = {**env, **program_with(tmp_path, overdue_after_days="[1]")}
    pilot_launched(env, tmp_path)
    ok(cli(env, "run", "--once", "--now", NOW))
    ok(cli(env, "complete", "H2", "--option", "A", "--now", NOW))
    ok(cli(env, "run", "--once", "--now", NOW))
    assert kinds(smtp, 3) == {"jose@example.edu": "confirmation"}
    sent = len(smtp.received)
    # The deadline ends Friday 2023-10-06; a day after is a Saturday: the notices wait for
    # the next working day.
    ok(cli(env, "run", "--once", "--now", "2023-10-07T10:00:00-04:00"))
    assert set(kinds(smtp, sent).values()) == {"report"}  # the officers' nightly reports only
    sent = len(smtp.received)
    ok(cli(env, "run", "--once", "--now", "2023-10-09T10:00:00-04:00"))
    assert kinds(smtp, sent) == {"ada@example.edu": "overdue", "grace@example.edu": "overdue"}
    assert "Friday, October 6, 2023" in body(smtp, "ada@example.edu")
    ok(cli(env, "run", "--once", "--now", "2023-10-10T10:00:00-04:00"))
    assert "overdue" not in kinds(smtp, sent + 2).values()  # one notice each


# -- the officer's nightly report: since the last one, past the deadline ---------------------------
OFFICER = "ao-hr@example.edu"
LAGGARD = "H6,lag@example.edu,Lee Laggard,Human Resources,staff,,2001-01-01,,,ao-hr@example.edu,"


@pytest.mark.slow  # many whole commands: started first
def test_the_officers_report_lists_what_changed_since_the_last_and_who_is_past_the_deadline(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    ok(cli(env, "init"))
    roster = str(write(tmp_path, [HEADER, *PILOT, LAGGARD]))
    ok(cli(env, "roster", "import", roster, "--now", NOW))
    ok(cli(env, "launch", "pilot", "--yes", "--now", NOW))
    ok(cli(env, "run", "--once", "--now", NOW))
    ok(cli(env, "run", "--once", "--now", "2023-09-12T06:30:00-04:00"))
    assert "This is your first report." in body(smtp, OFFICER)
    ok(cli(env, "complete", "H1", "--option", "A", "--now", "2023-09-12T12:00:00-04:00"))
    ok(cli(env, "run", "--once", "--now", "2023-09-13T06:30:00-04:00"))
    since = body(smtp, OFFICER)
    assert "SINCE YOUR LAST REPORT" in since
    assert "- completed: Ada Lovelace (H1)" in since
    assert "Past their deadline" not in since
    ok(cli(env, "run", "--once", "--now", "2023-09-14T06:30:00-04:00"))
    assert "No changes since" in body(smtp, OFFICER)
    # The night after the deadline (Friday 10-06): Lee has not done it.
    ok(cli(env, "run", "--once", "--now", "2023-10-07T06:30:00-04:00"))
    late = " ".join(body(smtp, OFFICER).split())
    assert "Past their deadline: - Lee Laggard (H6, lag@example.edu): deadline" in late
    assert "(1 past their deadline)" in late
    assert "Ada Lovelace (H1, ada@example.edu): deadline" not in late
    # The same, on demand, from the command line.
    asked = said(ok(cli(env, "report", "--officer", OFFICER, "--now", "2023-10-07T12:00:00-04:00")))
    assert "Lee Laggard" in asked
    assert "past" in asked.lower()


# -- IMAP polling by the daemon --------------------------------------------------------------------
def test_the_daemon_reads_the_bounce_mailbox_over_imap_on_its_passes(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    imap = start_dovecot()
    try:
        env = {
            **env,
            "PSHNOTIFY_BOUNCE_ADDRESS": BOUNCE_ADDRESS,
            "PSHNOTIFY_BOUNCE_SECRET": SECRET,
            "PSHNOTIFY_BOUNCE_IMAP_URL": imap.url,
            "PSHNOTIFY_BOUNCE_IMAP_PASSWORD": IMAP_PASSWORD,
        }
        pilot_launched(env, tmp_path)
        run = daemon(env)
        try:
            wait_for(lambda: len(smtp.received) == 3)
            ada = next(r for r in smtp.received if r.rcpt_tos == ["ada@example.edu"])
            mta = IMAPClient("127.0.0.1", port=imap.port, ssl=False)
            mta.login(parse_imap_url(imap.url).username, IMAP_PASSWORD)
            mta.append("INBOX", dsn(ada, "5.1.1", "550 5.1.1 <ada@example.edu>: user unknown"))

            def read() -> bool:
                if not mta.folder_exists("Processed"):  # made by the first scan that moves
                    return False
                mta.select_folder("Processed")
                return len(mta.search(["ALL"])) == 1

            wait_for(read)  # a pass or two later, with nobody running `bounces scan`
            mta.select_folder("INBOX")
            assert mta.search(["ALL"]) == []
            mta.logout()
        finally:
            run.send_signal(signal.SIGTERM)
            _, err = run.communicate(timeout=60)
        assert run.returncode == 0, err
        assert IMAP_PASSWORD not in err
        assert "Traceback" not in err
    finally:
        imap.stop()
    pilot = status(env)["waves"]["pilot"]
    assert pilot["people"]["undeliverable"] == 1  # type: ignore[index]
    assert pilot["messages"]["bounced"] == 1  # type: ignore[index]
