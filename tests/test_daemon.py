"""The daemon as a service runs it: a subprocess, stopped with SIGTERM in the middle of a send."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from pshnotify.demo.sample_roster import COLUMNS
from pshnotify.store.db import make_engine
from pshnotify.store.schema import messages
from tests.smtp_server import Behaviour, SmtpServer
from tests.test_season import write_roster

NOW = "2023-09-11T09:30:00-04:00"
# Secrets the daemon is given that do not change how it sends: none may reach its log.
SECRETS = {
    "PSHNOTIFY_WEB_SECRET": "hunter2-web-secret-do-not-print-ever",
    "PSHNOTIFY_XAPI_USERNAME": "lrs",
    "PSHNOTIFY_XAPI_PASSWORD": "hunter2-xapi-password-do-not-print",
    "PSHNOTIFY_BOUNCE_ADDRESS": "bounces@example.edu",
    "PSHNOTIFY_BOUNCE_SECRET": "hunter2-bounce-secret-do-not-print",
}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pshnotify", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def pilot_roster(path: Path, count: int, officers: int = 0) -> Path:
    rows = [
        dict.fromkeys(COLUMNS, "")
        | {
            "id": f"P{i}",
            "email": f"p{i}@example.edu",
            "name": f"Person {i}",
            "department": "Human Resources",
            "role": "staff",
            "admin_officer": f"ao{i % officers}@example.edu" if officers else "",
        }
        for i in range(count)
    ]
    return write_roster(path, rows)


def states(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(messages.c.state, func.count()).group_by(messages.c.state))
        out = {s: int(n) for s, n in rows}
    engine.dispose()
    return out


def test_sigterm_mid_send_loses_nothing_and_exits_0(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    total = 300
    assert cli(env, "init").returncode == 0
    roster = pilot_roster(tmp_path / "pilot.csv", total)
    assert cli(env, "roster", "import", str(roster), "--now", NOW).returncode == 0
    assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0
    smtp.behaviour = Behaviour(delay=0.01)  # a slow relay: the drain takes seconds
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pshnotify",
            "run",
            "--now",
            NOW,
            "--interval",
            "1",
            "--log-format",
            "json",
        ],
        env={**os.environ, **env, **SECRETS, "PSHNOTIFY_BATCH_SIZE": "50"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while len(smtp.received) < 60 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert 0 < len(smtp.received) < total, "the daemon should be mid-send"
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert logs[0]["event"].startswith("pshnotify daemon starting")
    for name, secret in SECRETS.items():  # set for this daemon, never in what it prints
        if name.endswith(("_SECRET", "_PASSWORD")):
            assert secret not in out + err, name
    assert logs[0]["smtp"] == f"{smtp.host}:{smtp.port}"  # the settings are logged, but not those
    assert any(e["event"].startswith("stopping") for e in logs)
    at_stop = states(env["PSHNOTIFY_DATABASE_URL"])
    assert "claimed" not in at_stop  # what was in flight finished; the rest was handed back
    assert at_stop["sent"] == len(smtp.received)
    assert at_stop["sent"] < total
    smtp.behaviour = Behaviour()
    assert cli(env, "run", "--once", "--now", NOW).returncode == 0
    ids = [r.message().get("Message-ID") for r in smtp.received]
    assert len(ids) == total
    assert len(set(ids)) == total  # nothing twice
    assert states(env["PSHNOTIFY_DATABASE_URL"]) == {"sent": total}
