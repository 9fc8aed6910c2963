"""bench/startup.py times the command line as whole processes (issue 26): it runs, and says
what it measured, on a campaign folder `pshnotify new` made."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_the_startup_benchmark_times_help_and_status(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSHNOTIFY_")}
    folder = tmp_path / "campaign"
    for args in (("new", str(folder)), ("init",)):
        done = subprocess.run(
            [sys.executable, "-m", "pshnotify", *args],
            cwd=folder if args == ("init",) else tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    bench = str(ROOT / "bench/startup.py")
    run = subprocess.run(
        [sys.executable, bench, "-n", "2", "--json", "--folder", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["runs"] == 2
    assert set(report["seconds"]) == {"python -c pass", "--help", "status"}
    for figures in report["seconds"].values():
        assert 0 < figures["min"] <= figures["median"] <= figures["max"]
        assert figures["cpu_median"] > 0
    # a process that starts the whole command line costs more than bare Python
    assert report["seconds"]["status"]["min"] > report["seconds"]["python -c pass"]["min"]
