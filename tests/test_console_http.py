"""The console over HTTP on a real uvicorn server (SQLite and PostgreSQL): users, sign-in,
sessions, throttling, single sign-on, scope, audited actions; and `pshnotify run` serving it."""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from click.testing import Result
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from pshnotify.cli import app
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.access.users import add_user
from pshnotify.services.reporting.status import program_status
from pshnotify.store.schema import audit_log, enrollments, messages, people, users
from tests.smtp_server import SmtpServer
from tests.test_cli import NOW, cli
from tests.test_console import OPERATOR, VIEWER, free_port
from tests.test_launch_and_send import launch, send, setup_pilot
from tests.test_web import running


@pytest.fixture
def console_rt(runtime: Runtime, tmp_path: Path) -> Runtime:
    setup_pilot(runtime, tmp_path)
    add_user(
        runtime.engine,
        OPERATOR[0],
        role="operator",
        departments=[],
        password=OPERATOR[1],
        clock=runtime.clock,
        actor="test",
    )
    add_user(
        runtime.engine,
        VIEWER[0],
        role="viewer",
        departments=["human resources"],
        password=VIEWER[1],
        clock=runtime.clock,
        actor="test",
    )
    return runtime


_OWNED: list[Runtime] = []


def owned(rt: Runtime) -> Runtime:
    """A runtime whose engine `console` disposes when it is done."""
    _OWNED.append(rt)
    return rt


@contextmanager
def console(rt: Runtime) -> Iterator[httpx.Client]:
    try:
        with running(rt.http_app()) as client:
            client.follow_redirects = False
            yield client
    finally:
        if rt in _OWNED:
            _OWNED.remove(rt)
            rt.close()


def csrf(client: httpx.Client, path: str = "/login") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def sign_in(client: httpx.Client, who: tuple[str, str]) -> httpx.Response:
    token = csrf(client)
    return client.post("/login", data={"csrf_token": token, "username": who[0], "password": who[1]})


def user_cli(*args: str, stdin: str | None = None) -> Result:
    """The `user` commands in-process (CliRunner): each subprocess costs seconds here."""
    return CliRunner().invoke(app, ["user", *args], input=stdin, catch_exceptions=False)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_users_are_managed_from_the_command_line(env: dict[str, str], runtime: Runtime) -> None:
    added = user_cli(
        "add", "Olga", "--role", "operator", "--password-stdin", stdin="a long enough password\n"
    )
    assert added.exit_code == 0, added.output
    viewer = user_cli(
        "add",
        "hr",
        "--role",
        "viewer",
        "--department",
        "Human Resources",
        "--department",
        "Information Systems and Technology",
        "--password-stdin",
        stdin="another password\n",
    )
    assert viewer.exit_code == 0, viewer.output
    listed = user_cli("list", "--json")
    assert json.loads(listed.stdout) == [
        {
            "login": "hr",
            "role": "viewer",
            "departments": ["Human Resources", "Information Systems and Technology"],
        },
        {"login": "olga", "role": "operator", "departments": []},
    ]
    with runtime.engine.connect() as conn:
        hashes = conn.scalars(select(users.c.password_hash)).all()
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert not any("password" in h for h in hashes)

    again = user_cli(
        "add", "olga", "--role", "operator", "--password-stdin", stdin="a long enough password\n"
    )
    assert again.exit_code == 1
    assert "exists already" in again.stderr
    bad = user_cli("add", "x y", "--role", "admin", "--password-stdin", stdin="short\n")
    assert bad.exit_code == 2
    for expected in ("LOGIN:", "--role:", "password: at least 10"):
        assert expected in bad.stderr
    lonely = user_cli(
        "add", "v", "--role", "viewer", "--password-stdin", stdin="a long enough password\n"
    )
    assert lonely.exit_code == 2
    assert "--department" in lonely.stderr
    assert user_cli("add", "p", "--role", "viewer").exit_code == 2  # no --password-stdin

    assert user_cli("remove", "olga").exit_code == 0
    assert user_cli("remove", "olga").exit_code == 2
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(
                audit_log.c.action, audit_log.c.subject, audit_log.c.actor, audit_log.c.details
            ).order_by(audit_log.c.id)
        ).all()
    actions = [r for r in rows if r[0].startswith("user.")]
    done = [a[:2] for a in actions if a[3].get("outcome") != "refused"]
    assert done == [("user.add", "olga"), ("user.add", "hr"), ("user.remove", "olga")]
    # The refusals are in the log too: a second olga, a bad login, the second removal.
    refused = [a[:2] for a in actions if a[3].get("outcome") == "refused"]
    assert ("user.add", "olga") in refused
    assert ("user.add", "x y") in refused
    assert refused[-1] == ("user.remove", "olga")
    assert {a[2] for a in actions} == {"test-operator"}


def test_sign_in_sets_a_safe_session_and_pages_need_it(console_rt: Runtime) -> None:
    with console(console_rt) as client:
        page = client.get("/")
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=/"
        form = client.get("/login").text
        assert 'name="username"' in form
        assert 'name="password"' in form
        assert re.search(r"<button[^>]*>Sign in</button>", form)

        wrong = sign_in(client, (OPERATOR[0], "not the password"))
        assert wrong.status_code == 401
        assert "Wrong login or password" in wrong.text
        good = sign_in(client, OPERATOR)
        assert good.status_code == 303
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie
        assert "Secure" not in cookie  # plain HTTP here; behind HTTPS it is set
        dashboard = client.get("/")
        assert dashboard.status_code == 200
        assert "HR and IS&amp;T Pilot" in dashboard.text
        assert "default-src 'self'" in dashboard.headers["content-security-policy"]

        client.post("/logout", data={"csrf_token": csrf(client, "/")})
        assert client.get("/").status_code == 303


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the throttle is in the process
def test_sign_in_is_throttled_after_repeated_failures(console_rt: Runtime) -> None:
    with console(console_rt) as client:
        for _ in range(5):
            assert sign_in(client, (OPERATOR[0], "guess guess")).status_code == 401
        refused = sign_in(client, OPERATOR)  # even the right password, for a while
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 60
        assert "Too many failed sign-ins" in refused.text
        assert client.get("/").status_code == 303
        # The viewer, signing in from the same test address, is not locked out by it... yet.
        assert sign_in(client, VIEWER).status_code == 303


def test_one_wrong_password_is_one_clear_log_line(
    console_rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 26: one wrong console password wrote four WARNING lines, one of them garbled
    ("as 'op1' from op1"). One line now names the login and the address."""
    caplog.set_level(logging.WARNING, logger="pshnotify")
    logger = logging.getLogger("pshnotify")
    logger.addHandler(caplog.handler)  # also where it does not propagate
    try:
        with console(console_rt) as client:
            assert sign_in(client, (OPERATOR[0], "guess guess")).status_code == 401
    finally:
        logger.removeHandler(caplog.handler)
    records = {id(r): r for r in caplog.records}.values()  # each once, by whichever handler
    lines = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert lines == [f"failed console sign-ins: 1 as {OPERATOR[0]!r} from 127.0.0.1"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # header trust, no SQL of its own
def test_single_sign_on_header_is_taken_only_from_trusted_proxies(console_rt: Runtime) -> None:
    rt = console_rt
    trusted = rt.settings.model_copy(
        update={"web_trusted_header": "X-Remote-User", "web_trusted_proxies": ["127.0.0.1/32"]}
    )
    elsewhere = trusted.model_copy(update={"web_trusted_proxies": ["10.0.0.0/8"]})
    with console(owned(Runtime(trusted, rt.clock))) as client:
        page = client.get("/departments", headers={"X-Remote-User": VIEWER[0]})
        assert page.status_code == 200
        assert VIEWER[0] in page.text
        unknown = client.get("/", headers={"X-Remote-User": "mallory"})
        assert unknown.status_code == 403
    with console(owned(Runtime(elsewhere, rt.clock))) as client:
        assert client.get("/", headers={"X-Remote-User": OPERATOR[0]}).status_code == 303


def test_actions_are_audited_under_the_login_and_viewers_stay_in_scope(
    console_rt: Runtime,
) -> None:
    rt = console_rt
    assert launch(rt) == 3
    with console(rt) as client:
        sign_in(client, OPERATOR)
        token = csrf(client, "/people/H1")
        extended = client.post(
            "/people/H1/extend", data={"csrf_token": token, "until": "2023-10-20"}
        )
        assert extended.status_code == 303
        assert client.get("/people/H1").text.count("2023-10-20") >= 1
        bad = client.post("/people/H1/extend", data={"csrf_token": token, "until": "2023-09-01"})
        assert bad.status_code == 400
        assert "before the wave&#39;s close" in bad.text
        assert (
            client.post(
                "/people/H2/exempt", data={"csrf_token": token, "reason": "on leave"}
            ).status_code
            == 303
        )
        done = client.post(
            "/people/H3/complete",
            data={"csrf_token": token, "option": "B", "completed_on": "2023-09-10"},
        )
        assert done.status_code == 303
        assert (
            client.post(
                "/people/NOPE/exempt", data={"csrf_token": token, "reason": "x"}
            ).status_code
            == 404
        )
        audit = html.unescape(client.get("/audit").text)
        for done in (
            "Extended the deadline of H1 (Ada Lovelace)</td>",
            "Exempted H2 (José Núñez-Ångström)</td>",
            "Recorded a completion for H3",
            "reason on leave",
            "Refused: until: 2023-09-01 is before the wave's close (2023-10-06)",
        ):
            assert done in audit, done
        assert "{'" not in audit, "a Python dict on the audit page"
        # When: the real time in the program's zone, the rehearsal's instant beside it.
        today = dt.datetime.now(ZoneInfo("America/New_York")).strftime("%Y-%m-%d")
        assert re.search(rf"{today} \d\d:\d\d E[SD]T<br>", audit), audit
        assert "rehearsing 2023-09-11 09:30 EDT" in audit
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.subject).where(
                audit_log.c.actor == OPERATOR[0]
            )
        ).all()
        state = dict(
            conn.execute(
                select(people.c.external_id, enrollments.c.completion_option).join(
                    enrollments, enrollments.c.person_id == people.c.id
                )
            ).all()
        )
    assert {(a, s) for _, a, s in rows} >= {
        ("person.extend", "H1"),
        ("person.exempt", "H2"),
        ("completion.record", "H3"),
    }
    assert state["H3"] == "B"

    with console(rt) as client:
        sign_in(client, VIEWER)
        token = csrf(client, "/people/H1")
        assert client.get("/people/H3").status_code == 404  # Information Systems
        assert client.get("/people/H1").status_code == 200
        refused = client.post("/people/H1/exempt", data={"csrf_token": token, "reason": "x"})
        assert refused.status_code == 403
        assert client.get("/audit").status_code == 403
        found = client.get("/people", params={"q": "grace"}).text
        assert "Grace" not in found
        report = client.get("/departments/report.csv", params={"name": "Human Resources"})
        assert report.status_code == 200
        assert report.headers["content-type"].startswith("text/csv")
        assert "ada@example.edu" in report.text
        assert "grace@example.edu" not in report.text
        other = client.get(
            "/departments/report.csv", params={"name": "Information Systems and Technology"}
        )
        assert other.status_code == 404


def test_every_page_answers_on_both_backends(console_rt: Runtime, smtp: SmtpServer) -> None:
    rt = console_rt
    assert launch(rt) == 3
    assert send(rt) == {"sent": 3}
    with console(rt) as client:
        sign_in(client, OPERATOR)
        for path in (
            "/",
            "/waves/pilot",
            "/waves/pilot/progress",
            "/waves/pilot/launch",
            "/people",
            "/people?q=ada",
            "/people/H1",
            "/departments",
            "/departments?name=Human%20Resources&show=owing",
            "/departments?name=Human%20Resources&show=pending",  # the old name of the list
            "/audit",
            "/departments/report.csv?name=Human%20Resources",
        ):
            answer = client.get(path)
            assert answer.status_code == 200, (path, answer.text[:500])
        assert client.get("/waves/nope").status_code == 404
        assert client.get("/people/nobody").status_code == 404
        progress = client.get("/waves/pilot/progress").text
        assert 'data-delivered="3"' in progress
        summary = client.get("/departments").text
        assert "Human Resources" in summary
        assert "Information Systems and Technology" in summary


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_run_serves_the_console(env: dict[str, str], smtp: SmtpServer, tmp_path: Path) -> None:
    assert cli(env, "init").returncode == 0
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pshnotify", "run", "--now", NOW, "--interval", "60"],
        env={**os.environ, **env, "PSHNOTIFY_HTTP_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/login", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the console did not answer"
                time.sleep(0.2)
        assert page.status_code == 200
        assert 'name="username"' in page.text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


def test_an_operator_schedules_a_launch_and_withdraws_it(console_rt: Runtime) -> None:
    rt = console_rt
    with console(rt) as client:
        sign_in(client, OPERATOR)
        token = csrf(client, "/waves/pilot/launch")
        bad = client.post("/waves/pilot/schedule", data={"csrf_token": token, "at": "soon"})
        assert bad.status_code == 400
        past = client.post(
            "/waves/pilot/schedule", data={"csrf_token": token, "at": "2023-09-01T09:00"}
        )
        assert past.status_code == 409
        done = client.post(
            "/waves/pilot/schedule", data={"csrf_token": token, "at": "2023-09-12T09:00"}
        )
        assert done.status_code == 303
        page = client.get("/waves/pilot").text
        assert "scheduled for 2023-09-12 09:00 EDT" in page
        assert "Launch scheduled for <b>2023-09-12 09:00 EDT</b>" in page
        gone = client.post("/waves/pilot/unschedule", data={"csrf_token": token})
        assert gone.status_code == 303
        assert "The scheduled launch is withdrawn." in client.get("/waves/pilot").text
    with rt.engine.connect() as conn:
        actions = conn.execute(
            select(audit_log.c.action, audit_log.c.actor, audit_log.c.details)
            .where(audit_log.c.action.like("wave.%"))
            .order_by(audit_log.c.id)
        ).all()
    # The two refusals are in the log too, with why.
    assert [(a, who, d.get("outcome", "done")) for a, who, d in actions] == [
        ("wave.schedule_launch", OPERATOR[0], "refused"),
        ("wave.schedule_launch", OPERATOR[0], "refused"),
        ("wave.schedule_launch", OPERATOR[0], "done"),
        ("wave.cancel_launch", OPERATOR[0], "done"),
    ]
    assert "got 'soon'" in actions[0][2]["why"][0]
    assert "is not in the future" in actions[1][2]["why"][0]


def test_the_dashboard_says_the_oldest_wait_that_status_says(console_rt: Runtime) -> None:
    """The dashboard reads the oldest wait alone, not `status`'s other delivery figures: it
    says the same number of seconds as `status --json`."""
    launch(console_rt)
    now = console_rt.clock.now()
    with console_rt.engine.begin() as conn:
        conn.execute(
            update(messages)
            .where(messages.c.id == select(func.min(messages.c.id)).scalar_subquery())
            .values(due_at=now - dt.timedelta(minutes=61))
        )
    said = program_status(console_rt.engine, console_rt.program(None), now)
    assert said["delivery"]["oldest_due_seconds"] == 3660.0
    with console(console_rt) as client:
        sign_in(client, OPERATOR)
        page = client.get("/")
        assert page.status_code == 200
        assert "Oldest message waiting: 3660 s." in page.text
