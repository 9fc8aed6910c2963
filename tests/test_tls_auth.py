"""TLS and AUTH towards the relay, against real aiosmtpd servers on loopback (no mocks).

Proves that a message reaches the relay over STARTTLS and over implicit TLS, byte for byte;
that the relay's certificate is checked by default (an unknown CA or a certificate for another
name stops the delivery before anything is sent); that STARTTLS never falls back to clear
text; that AUTH logs in with the right password, fails clearly with a wrong one and never
shows the password; and that the PSHNOTIFY_SMTP_* settings (TLS mode, CA file, user name,
password) reach the connection the service uses.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.smtp import AuthResult, LoginPassword

from pshnotify.clock import FixedClock
from pshnotify.domain.errors import TransientDeliveryError
from pshnotify.mail.transport import Reply, SmtpConfig, SmtpConnection
from pshnotify.runtime.wiring import Runtime
from pshnotify.settings import Settings
from tests.conftest import LINK_SECRET, NY, PROGRAM_FILE, TEMPLATES
from tests.smtp_server import SmtpServer

pytestmark = pytest.mark.timeout(30)

SENDER = "training@example.test"
RECIPIENT = "alice@example.test"
DATA = (
    b"From: Training <training@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: Your mandatory training\r\n"
    b"\r\n"
    b"Hello Alice,\r\n"
    b".a line that starts with a dot\r\n"
)
Tls = Literal["starttls", "tls"]
USER, PASSWORD = "pshnotify", "s3cret-relay-Pa55word"


@pytest.fixture(autouse=True)
def _no_leaked_sockets() -> Iterator[None]:
    """A refused handshake or login must not leave its socket open: collect now, so an unclosed
    transport's ResourceWarning fails the test that leaked it, not a later one."""
    yield
    gc.collect()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    """A relay's TLS context with a certificate, signed by the test CA, for `names`."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@contextmanager
def running(**options: Any) -> Iterator[SmtpServer]:
    server = SmtpServer(options=options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def check_login(
    server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    # handled=False: aiosmtpd answers itself (235, or 535 on a wrong password).
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


@pytest.fixture
def starttls_relay(ca: trustme.CA) -> Iterator[SmtpServer]:
    context = server_context(ca, "127.0.0.1", "localhost")
    with running(tls_context=context, require_starttls=True) as server:
        yield server


@pytest.fixture
def tls_relay(ca: trustme.CA) -> Iterator[SmtpServer]:
    with running(ssl_context=server_context(ca, "127.0.0.1", "localhost")) as server:
        yield server


@pytest.fixture
def auth_relay(ca: trustme.CA) -> Iterator[SmtpServer]:
    """STARTTLS required; AUTH offered only after it, and required before MAIL."""
    with running(
        tls_context=server_context(ca, "127.0.0.1", "localhost"),
        require_starttls=True,
        authenticator=check_login,
        auth_require_tls=True,
        auth_required=True,
    ) as server:
        yield server


def send(config: SmtpConfig) -> Reply:
    async def one() -> Reply:
        conn = SmtpConnection(config)
        try:
            return await conn.send(SENDER, RECIPIENT, DATA)
        finally:
            await conn.close()

    return asyncio.run(one())


def config(server: SmtpServer, tls: Tls, **more: Any) -> SmtpConfig:
    return SmtpConfig(server.host, server.port, tls=tls, timeout=5.0, data_timeout=5.0, **more)


def assert_delivered_over_tls(server: SmtpServer, login: str | None = None) -> None:
    [received] = server.received
    assert received.tls in ("TLSv1.2", "TLSv1.3")  # it came over TLS, not in clear
    assert (received.mail_from, received.rcpt_tos) == (SENDER, [RECIPIENT])
    assert received.data == DATA
    assert received.login == login


def test_starttls_delivers_with_the_given_ca(starttls_relay: SmtpServer, ca_file: Path) -> None:
    reply = send(config(starttls_relay, "starttls", ca_file=ca_file))
    assert reply.code == 250
    assert_delivered_over_tls(starttls_relay)


def test_implicit_tls_delivers_with_the_given_ca(tls_relay: SmtpServer, ca_file: Path) -> None:
    reply = send(config(tls_relay, "tls", ca_file=ca_file))
    assert reply.code == 250
    assert_delivered_over_tls(tls_relay)


@pytest.mark.parametrize("tls", ["starttls", "tls"])
def test_an_unknown_ca_is_refused_by_default(
    tls: Tls, starttls_relay: SmtpServer, tls_relay: SmtpServer
) -> None:
    relay = starttls_relay if tls == "starttls" else tls_relay
    with pytest.raises(TransientDeliveryError, match="certificate verify failed"):
        send(config(relay, tls))  # no ca_file: the system trust store knows no test CA
    assert relay.received == []


def test_a_certificate_for_another_name_is_refused(ca: trustme.CA, ca_file: Path) -> None:
    context = server_context(ca, "mail.example.test")
    with running(tls_context=context, require_starttls=True) as relay:
        with pytest.raises(TransientDeliveryError) as caught:
            send(config(relay, "starttls", ca_file=ca_file))
        assert relay.received == []
    assert "certificate verify failed: IP address mismatch" in str(caught.value)


def test_starttls_is_never_skipped_when_the_relay_does_not_offer_it(smtp: SmtpServer) -> None:
    """No fallback to clear text: the connection is refused and nothing is sent."""
    with pytest.raises(TransientDeliveryError, match="STARTTLS") as caught:
        send(config(smtp, "starttls", username=USER, password=PASSWORD))
    assert PASSWORD not in str(caught.value)
    assert smtp.received == []


def test_auth_with_the_right_password_delivers(auth_relay: SmtpServer, ca_file: Path) -> None:
    send(config(auth_relay, "starttls", ca_file=ca_file, username=USER, password=PASSWORD))
    assert_delivered_over_tls(auth_relay, login=USER)


def test_auth_with_a_wrong_password_fails_and_does_not_show_it(
    auth_relay: SmtpServer, ca_file: Path
) -> None:
    wrong = "wrong-Pa55word-do-not-print"
    with pytest.raises(TransientDeliveryError) as caught:
        send(config(auth_relay, "starttls", ca_file=ca_file, username=USER, password=wrong))
    text = str(caught.value)
    assert "535" in text
    assert "Authentication credentials invalid" in text
    assert wrong not in text
    assert auth_relay.received == []


def auth_settings(relay: SmtpServer, ca_file: Path, db: Path, password: str) -> Settings:
    """Settings for the STARTTLS + AUTH relay, with the shipped program and templates."""
    return Settings(
        database_url=f"sqlite:///{db}",
        program_file=PROGRAM_FILE,
        templates_dir=TEMPLATES,
        message_id_domain="test.pshnotify.invalid",
        smtp_host=relay.host,
        smtp_port=relay.port,
        smtp_tls="starttls",
        smtp_ca_file=ca_file,
        smtp_username=USER,
        smtp_password=password,
        smtp_timeout=5.0,
        link_secret=LINK_SECRET,
        _env_file=None,
    )


def test_the_settings_reach_the_connection(
    auth_relay: SmtpServer, ca_file: Path, tmp_path: Path
) -> None:
    settings = auth_settings(auth_relay, ca_file, tmp_path / "unused.db", PASSWORD)
    runtime = Runtime(settings, FixedClock(dt.datetime(2023, 9, 11, 9, 30, tzinfo=dt.UTC)))
    conn = runtime.smtp_connections()[0]

    async def one() -> Reply:
        try:
            return await conn.send(SENDER, RECIPIENT, DATA)
        finally:
            await conn.close()

    assert asyncio.run(one()).code == 250
    assert_delivered_over_tls(auth_relay, login=USER)
    runtime.close()


def test_a_refused_login_stops_the_drain_and_spends_no_attempts(
    auth_relay: SmtpServer, ca_file: Path, tmp_path: Path
) -> None:
    """A wrong password is a setting to fix, not a fault of any message: nothing is marked
    retried or failed, and the messages go out once the login is accepted."""
    from sqlalchemy import select

    from pshnotify.store import migrate
    from pshnotify.store.schema import messages
    from tests.test_launch_and_send import launch, setup_pilot

    wrong = "wrong-Pa55word-do-not-print"

    def runtime(password: str) -> Runtime:
        settings = auth_settings(auth_relay, ca_file, tmp_path / "pshnotify.db", password)
        return Runtime(settings, FixedClock(dt.datetime(2023, 9, 11, 10, 0, tzinfo=NY)))

    rt = runtime(wrong)
    migrate.upgrade(rt.engine)
    setup_pilot(rt, tmp_path)
    assert launch(rt) == 3
    report = asyncio.run(rt.dispatcher().run_once())
    assert report.problem is not None
    assert "535" in report.problem
    assert "PSHNOTIFY_SMTP_PASSWORD" in report.problem
    assert wrong not in report.problem
    assert set(report.outcomes) <= {"queued"}  # released, not retried or failed
    with rt.engine.connect() as conn:
        rows = conn.execute(select(messages.c.state, messages.c.attempts)).all()
    assert sorted(tuple(r) for r in rows) == [("queued", 0)] * 3
    assert auth_relay.received == []
    rt.engine.dispose()

    fixed = runtime(PASSWORD)
    report = asyncio.run(fixed.dispatcher().run_once())
    assert (report.problem, dict(report.outcomes)) == (None, {"sent": 3})
    fixed.engine.dispose()
