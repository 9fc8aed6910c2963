"""International addresses (issue 13, defect 3): a non-ASCII domain goes out in its IDNA form;
a non-ASCII local part goes out with SMTPUTF8 where the relay offers it and otherwise ends
`failed` saying why; a long name is folded, never sent as one long header line."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from pshnotify.cli import app
from pshnotify.clock import FixedClock
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.delivery.messages import retry_messages
from pshnotify.settings import Settings
from pshnotify.store.schema import messages
from tests.smtp_server import SmtpServer
from tests.test_launch_and_send import launch, send, setup_pilot
from tests.test_roster_import import HEADER, write

BUECHER = "H1,ann@bücher.de,Ann Lee,Human Resources,staff,,2010-01-04,,,,"
JOERG = "H2,jörg@bücher.de,Jörg Lee,Human Resources,staff,,2010-01-04,,,,"
LONG_NAME = "Maximilian " * 110 + "Long"  # 1,214 characters, all ASCII


@pytest.fixture
def plain_relay() -> Iterator[SmtpServer]:
    """A relay that does not offer SMTPUTF8 (aiosmtpd's Controller offers it by default)."""
    server = SmtpServer(options={"enable_SMTPUTF8": False})
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _states(runtime: Runtime) -> dict[str, tuple[str, str | None]]:
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(messages.c.recipient_email, messages.c.state, messages.c.last_reply)
        )
        return {r.recipient_email: (r.state, r.last_reply) for r in rows}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # address encoding
def test_a_non_ascii_domain_goes_out_in_punycode(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    long_name = f"H3,max@example.edu,{LONG_NAME},Human Resources,staff,,2010-01-04,,,,"
    setup_pilot(runtime, tmp_path, [BUECHER, long_name])
    assert launch(runtime) == 2
    assert send(runtime) == {"sent": 2}
    by_rcpt = {r.rcpt_tos[0]: r for r in smtp.received}
    assert sorted(by_rcpt) == ["ann@xn--bcher-kva.de", "max@example.edu"]
    msg = by_rcpt["ann@xn--bcher-kva.de"].message()
    assert msg["To"].addresses[0].addr_spec == "ann@xn--bcher-kva.de"
    assert msg["To"].addresses[0].domain.encode().decode("idna") == "bücher.de"
    # the long name is folded as RFC 5322 says, and reads back whole
    raw = by_rcpt["max@example.edu"].data
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 100  # not one 1,200-octet line
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert by_rcpt["max@example.edu"].message()["To"].addresses[0].display_name == LONG_NAME


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # address encoding
def test_a_non_ascii_local_part_needs_smtputf8(
    runtime: Runtime,
    settings: Settings,
    clock: FixedClock,
    smtp: SmtpServer,
    plain_relay: SmtpServer,
    tmp_path: Path,
) -> None:
    setup_pilot(runtime, tmp_path, [JOERG])
    assert launch(runtime) == 1
    # a relay without SMTPUTF8: failed for good, with a reason that says so
    other = Runtime(settings.model_copy(update={"smtp_port": plain_relay.port}), clock)
    try:
        assert dict(asyncio.run(other.dispatcher().run_once()).outcomes) == {"failed": 1}
    finally:
        other.engine.dispose()
    assert plain_relay.received == []
    state, reply = _states(runtime)["jörg@bücher.de"]
    assert state == "failed"
    assert reply is not None
    assert "SMTPUTF8" in reply

    # the same message through a relay that offers it (requeued by the operator)
    retry_messages(runtime.engine, runtime.program(None), runtime.clock, actor="op", state="failed")
    assert send(runtime) == {"sent": 1}
    (received,) = smtp.received
    assert received.mail_from == "pshtraining@example.edu"
    assert received.rcpt_tos == ["jörg@xn--bcher-kva.de"]
    # the header in UTF-8 (RFC 6532), read as such
    msg = email.message_from_string(received.data.decode("utf-8"), policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == "jörg@xn--bcher-kva.de"
    assert msg["To"].addresses[0].display_name == "Jörg Lee"


@pytest.mark.fast
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # a reader warning
def test_roster_import_warns_about_a_non_ascii_local_part(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = CliRunner().invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    roster = write(tmp_path, [HEADER, BUECHER, JOERG])
    result = CliRunner().invoke(app, ["roster", "import", str(roster)])
    assert result.exit_code == 0, result.output
    assert f"{roster}:3: email: 'jörg@bücher.de' has a non-ASCII local part" in " ".join(
        result.output.split()
    )
    assert "ann@bücher.de" not in result.output
