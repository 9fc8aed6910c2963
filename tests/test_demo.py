"""`make demo` works every time it is run (issue 13, defect 5), and prints no escape codes when
its output is not a terminal (defect 7)."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_demo_runs_twice_showing_its_own_emails_each_time(tmp_path: Path) -> None:
    for name in (".venv", "config", "templates", "scripts"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSHNOTIFY_")}
    port = str(_free_port())
    runs = [
        subprocess.run(
            ["bash", "scripts/demo.sh", "2023-09-11T10:00:00-04:00", port],
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
    # the second run's emails are its own (a fresh rehearsal database, a fresh folder)
    first_count = runs[0].stdout.split(" emails are in")[0].rsplit("\n", 1)[-1]
    second_count = runs[1].stdout.split(" emails are in")[0].rsplit("\n", 1)[-1]
    assert first_count == second_count
    assert int(second_count) > 0
    assert len(list((tmp_path / "var" / "demo" / "mail").glob("*.eml"))) == int(second_count)
