"""The HTTP side against a hostile client (issue 14, items 1 and 2): the daemon runs as a
subprocess with a lowered `ulimit -n`, exactly as a service would be flooded."""

from __future__ import annotations

import base64
import json
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.smtp_server import SmtpServer
from tests.test_daemon import pilot_roster
from tests.test_web import LRS, SECRET, program_with_activities, signed

NOW = "2023-09-11T09:30:00-04:00"
DESCRIPTORS = 128  # the daemon's `ulimit -n`
JSON_LOG = ("--log-format", "json")
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pshnotify", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _low_ulimit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (DESCRIPTORS, DESCRIPTORS))


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    url: str = ""
    lines: list[str] = field(default_factory=list)

    def log(self) -> list[dict[str, object]]:
        return [json.loads(x) for x in list(self.lines) if x.startswith("{")]


@pytest.fixture
def daemon(env: dict[str, str], tmp_path: Path) -> Iterator[Daemon]:
    """`pshnotify run` with xAPI and webhooks on, a 2-second read timeout, ulimit -n 128."""
    assert cli(env, "init").returncode == 0
    extra = {
        "PSHNOTIFY_PROGRAM_FILE": str(program_with_activities(tmp_path)),
        "PSHNOTIFY_XAPI_USERNAME": LRS[0],
        "PSHNOTIFY_XAPI_PASSWORD": LRS[1],
        "PSHNOTIFY_WEBHOOK_SECRET": SECRET,
        "PSHNOTIFY_HTTP_READ_TIMEOUT": "2",
        "PSHNOTIFY_HTTP_KEEP_ALIVE": "1",
        "PSHNOTIFY_HTTP_HOST": "127.0.0.1",
    }
    env.update(extra)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pshnotify", "run", "--now", NOW, "--interval", "1", *JSON_LOG],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_low_ulimit,
    )
    d = Daemon(proc)
    assert proc.stderr is not None
    stream = proc.stderr
    reader = threading.Thread(target=lambda: d.lines.extend(iter(stream.readline, "")))
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not d.url and time.monotonic() < deadline and proc.poll() is None:
            for line in list(d.lines):
                if m := re.search(r"listening on (http://127\.0\.0\.1:\d+)", line):
                    d.url = m.group(1)
            time.sleep(0.05)
        assert d.url, "".join(d.lines)
        yield d
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(5)
            stream.close()


def slow_clients(url: str, count: int) -> list[socket.socket]:
    """`count` connections that start a request and never finish it (one byte now and then)."""
    port = int(url.rsplit(":", 1)[1])
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /xapi/statements HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n{")
        socks.append(s)
    return socks


def descriptors(daemon: Daemon) -> int:
    """How many files and sockets the daemon holds open now."""
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


@SQLITE_ONLY
def test_a_flood_of_slow_clients_is_bounded_and_the_mail_still_goes(
    daemon: Daemon, env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    before = descriptors(daemon)
    flood = slow_clients(daemon.url, 3 * DESCRIPTORS)  # more than the daemon has descriptors
    try:
        # Answered at all while the flood holds every slot; how fast is the machine's, measured
        # by bench/http_flood.py (a generous timeout here: only a daemon that cannot answer
        # fails).
        health = httpx.get(f"{daemon.url}/healthz", timeout=30)
        assert health.status_code == 200
        # A launch queued while the flood holds on: the sending side must not notice it.
        roster = pilot_roster(tmp_path / "pilot.csv", 20)
        assert cli(env, "roster", "import", str(roster), "--now", NOW).returncode == 0
        assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0
        flood += slow_clients(daemon.url, DESCRIPTORS)
        held = descriptors(daemon)
        deadline = time.monotonic() + 30
        while len(smtp.received) < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
            held = max(held, descriptors(daemon))
        assert len(smtp.received) == 20
        # A quarter of the descriptors for HTTP connections, some accepted on top of them
        # (and being closed): far from the limit, where mail would fail.
        assert held <= DESCRIPTORS * 3 // 4, (before, held)
        time.sleep(2.5)  # the read timeout: every unfinished request has been cut by now
        assert descriptors(daemon) <= before + 2
        assert httpx.get(f"{daemon.url}/healthz", timeout=5).status_code == 200
    finally:
        for s in flood:
            s.close()
    assert daemon.proc.poll() is None
    text = "".join(daemon.lines)
    assert "out of system resource" not in text
    assert "Too many open files" not in text
    closed = [e for e in daemon.log() if str(e["event"]).startswith("http connections closed")]
    assert closed, text  # logged...
    assert len(closed) <= 4  # ...in aggregate, not once per connection


@SQLITE_ONLY
def test_failed_authentication_is_throttled_per_address(daemon: Daemon) -> None:
    bad = "Basic " + base64.b64encode(b"lrs:guess").decode()
    with httpx.Client(base_url=daemon.url, timeout=5) as client:
        codes = [
            client.post(
                "/xapi/statements", content=b"{}", headers={"authorization": bad}
            ).status_code
            for _ in range(30)
        ]
        assert codes[:10] == [401] * 10
        assert set(codes[10:]) == {429}
        right = client.post("/xapi/statements", json={}, auth=LRS)
        assert right.status_code == 429  # the right password no longer works at once
        assert 1 <= int(right.headers["retry-after"]) <= 60
        body, headers = signed({"person": "x"})
        headers["webhook-signature"] = "v1,Zm9yZ2Vk"
        assert (
            client.post("/webhooks/completions", content=body, headers=headers).status_code == 429
        )
        assert client.get("/healthz").status_code == 200  # a monitor is never throttled
    time.sleep(0.5)
    failures = [e for e in daemon.log() if str(e["event"]).startswith("authentication failures")]
    assert failures, "".join(daemon.lines)
    assert "401 on /xapi/statements from 127.0.0.1" in str(failures)
    assert len(failures) <= 2  # aggregate: not one line per attempt
