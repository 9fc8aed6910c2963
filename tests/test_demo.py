"""`make demo` works every time it is run (issue 13, defect 5), prints no escape codes when
its output is not a terminal (defect 7), and ends with a console operator whose password it
shows once; `make console` serves the demo's campaign and that sign-in works (issue 26)."""

from __future__ import annotations

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.conftest import ROOT

NOW = "2023-09-11T10:00:00-04:00"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_demo_runs_twice_showing_its_own_emails_each_time(tmp_path: Path) -> None:
    for name in (".venv", "scripts", "Makefile"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSHNOTIFY_")}
    port = str(_free_port())
    runs = [
        subprocess.run(
            ["bash", "scripts/demo.sh", NOW, port],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert "emails are in var/demo/mail/" in run.stdout
        assert "X-Pshnotify-Kind: launch" in run.stdout
        assert "\x1b[" not in run.stdout + run.stderr  # piped: no escape codes
    # the second run's emails are its own (a fresh campaign folder, a fresh mail folder)
    first_count = runs[0].stdout.split(" emails are in")[0].rsplit("\n", 1)[-1]
    second_count = runs[1].stdout.split(" emails are in")[0].rsplit("\n", 1)[-1]
    assert first_count == second_count
    assert int(second_count) > 0
    assert len(list((tmp_path / "var" / "demo" / "mail").glob("*.eml"))) == int(second_count)
    # the campaign folder is the one `pshnotify new` writes
    assert (tmp_path / "var" / "demo" / "program.toml").is_file()
    assert (tmp_path / "var" / "demo" / ".env").is_file()

    # each run made its own operator password, and the last one signs in to `make console`
    passwords = [re.findall(r"^  password: (\S+)$", run.stdout, re.M) for run in runs]
    assert all(len(p) == 1 for p in passwords), runs[1].stdout[-1500:]
    assert passwords[0] != passwords[1]
    assert "make console" in runs[1].stdout
    assert "  login:    demo" in runs[1].stdout
    _sign_in_to_make_console(tmp_path, env, passwords[1][0])


def _sign_in_to_make_console(folder: Path, env: dict[str, str], password: str) -> None:
    port = _free_port()
    console = subprocess.Popen(
        # -o: the install stamp counts as made (this test runs in the checkout's venv)
        ["make", "-s", "-o", ".venv/.installed-run", "console", f"CONSOLE_PORT={port}"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        page = ""
        while time.monotonic() < deadline and console.poll() is None:
            try:
                page = opener.open(f"{base}/login", timeout=5).read().decode()
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert "<h1>Sign in</h1>" in page, console.communicate()
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page))
        form = {**fields, "username": "demo", "password": password}
        answer = opener.open(f"{base}/login", urllib.parse.urlencode(form).encode(), timeout=10)
        dashboard = answer.read().decode()
        assert answer.status == 200
        assert answer.url.rstrip("/") == base  # signed in: the dashboard, not the form again
        assert "Sign in</h1>" not in dashboard
        assert "demo" in dashboard
    finally:
        os.killpg(console.pid, signal.SIGTERM)
        console.communicate(timeout=30)
