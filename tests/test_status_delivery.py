"""`status --json`'s relay numbers are the ones /metrics exports (issue 29): status reads them
with queries of its own, without /metrics' count of every message by state, and says the
same attempts, reply classes and oldest wait."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from pshnotify.runtime.wiring import Runtime
from pshnotify.services.delivery.delivery_stats import delivery_stats
from pshnotify.services.reporting.status import program_status
from tests.smtp_server import Behaviour, SmtpServer
from tests.test_launch_and_send import launch, send, setup_pilot


def test_status_says_the_relay_numbers_metrics_exports(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    # One refused for good, one deferred, one delivered.
    smtp.behaviour = Behaviour(
        rcpt=lambda addr: {
            "ada@example.edu": "550 5.1.1 no such user",
            "jose@example.edu": "451 4.3.0 try later",
        }.get(addr)
    )
    assert launch(runtime) == 3
    outcomes = send(runtime)
    assert sum(outcomes.values()) == 3
    now = runtime.clock.now() + dt.timedelta(hours=2)  # the deferred one is waiting by then

    stored = runtime.program(None)
    shown = program_status(runtime.engine, stored, now)["delivery"]
    stats = delivery_stats(runtime.engine, now)
    assert shown == {
        "oldest_due_seconds": round(stats.oldest_due_seconds, 1),
        "attempts": dict(sorted(stats.attempts_by_outcome.items())),
        "replies": dict(sorted(stats.replies_by_class.items())),
    }
    assert set(shown["replies"]) == {"2xx", "4xx", "5xx"}  # not vacuous
    assert shown["oldest_due_seconds"] > 0
