"""A real Postfix relay with a message rate limit (anvil), and pshnotify configured to it: not
one 4xx. Postfix counts every MAIL FROM of a client from the whole second of its first event
until `anvil_rate_time_unit` seconds later, both seconds included; a limiter that keeps the
limit over a rolling unit (the old one) draws `450 4.7.1 Error: too much mail` at each unit's
last second."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from pshnotify.store.schema import attempts
from tests.ci import missing
from tests.private_postfix import Postfix, available, start_postfix
from tests.smtp_server import SmtpServer
from tests.test_daemon import NOW, cli, pilot_roster

# Postfix's own limit, scaled down so that a few hundred messages take under a minute: 50
# messages per 10 s unit (in production typically 120 per 60 s).
UNIT, LIMIT, TOTAL = 10, 50, 250


@dataclass
class Drain:
    deferred: int  # attempts Postfix answered with a 4xx
    refused_by_anvil: int  # Postfix's own count: "rate limit exceeded" in its log
    seconds: float  # the `run --once` from start to exit
    relayed: int  # distinct messages that reached the sink through Postfix
    exit_status: int  # of the `run --once`


@pytest.fixture
def relay(smtp: SmtpServer) -> Iterator[Postfix]:
    problem = available()
    if problem:
        missing(problem)
    server = start_postfix(
        (smtp.host, smtp.port),
        {
            "anvil_rate_time_unit": f"{UNIT}s",
            "smtpd_client_message_rate_limit": str(LIMIT),
        },
    )
    try:
        yield server
    finally:
        server.stop()


def drain_through(
    relay: Postfix, smtp: SmtpServer, env: dict[str, str], tmp_path: Path, rate: dict[str, str]
) -> Drain:
    """Launch TOTAL messages and send them with one `run --once` through the relay, with the
    rate settings given; what Postfix said about them."""
    assert cli(env, "init").returncode == 0
    roster = pilot_roster(tmp_path / "pilot.csv", TOTAL)
    assert cli(env, "roster", "import", str(roster), "--now", NOW).returncode == 0
    assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0
    # anvil's unit may have started at the relay's start (our readiness probe connected):
    # begin on a clean count, as a relay that has not heard from us for a while would have.
    time.sleep(UNIT + 1)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pshnotify", "run", "--once", "--now", NOW],
        env={
            **os.environ,
            **env,
            "PSHNOTIFY_SMTP_PORT": str(relay.port),
            "PSHNOTIFY_SMTP_CONNECTIONS": "4",
            "PSHNOTIFY_SMTP_MESSAGES_PER_CONNECTION": "30",  # reconnects inside each unit too
            **rate,
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    seconds = time.monotonic() - started
    engine = create_engine(env["PSHNOTIFY_DATABASE_URL"])
    with engine.connect() as conn:
        deferred = conn.scalar(
            select(func.count()).select_from(attempts).where(attempts.c.code.between(400, 499))
        )
    engine.dispose()
    deadline = time.monotonic() + 60  # Postfix's queue hands on what it accepted
    while len(smtp.received) < TOTAL - int(deferred or 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    ids = {r.message_id for r in smtp.received}
    assert run.returncode in (0, 1), run.stderr
    return Drain(
        int(deferred or 0),
        relay.log().count("Message delivery request rate limit exceeded"),
        seconds,
        len(ids),
        run.returncode,
    )


@pytest.mark.timeout(300)  # about 70 s: the drain itself takes four units
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the limiter is in the process
@pytest.mark.slow
def test_a_real_postfix_with_a_message_rate_limit_never_defers_what_pshnotify_sends(
    relay: Postfix, smtp: SmtpServer, env: dict[str, str], tmp_path: Path
) -> None:
    # What the README says to set for a Postfix relay: its limit and its unit, as they are.
    rate = {"PSHNOTIFY_RATE_PER_WINDOW": str(LIMIT), "PSHNOTIFY_RATE_WINDOW_SECONDS": str(UNIT)}
    drain = drain_through(relay, smtp, env, tmp_path, rate)
    assert drain.deferred == 0, drain
    assert drain.refused_by_anvil == 0, drain
    assert drain.relayed == TOTAL, drain
    assert drain.exit_status == 0, drain
    # Not by crawling: the messages after the first unit's go at about the limit (LIMIT per
    # UNIT + 1 seconds), 4 units' worth in about 44 s.
    achieved = (TOTAL - LIMIT) / drain.seconds
    assert achieved >= 0.7 * LIMIT / (UNIT + 1), drain
