"""bench/season.py: a tiny season on SQLite reports every moment with what it did, the ratios it
says, and 80 columns; bad input is refused with status 2, a failing command said with status 1.

The figures themselves are the benchmark's business (bench/README.md), not a test's."""

from __future__ import annotations

import importlib.util
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "season.py"
MOMENTS = [
    "bare aiosmtplib loop",
    "roster import",
    "launch",
    "launch drain",
    "pass after launch",
    "first reports",
    "reminder morning",
    "completions import",
    "confirmations",
    "plan --json",
    "status --json",
    "nightly reports",
    "idle pass",
]


def _season_module() -> ModuleType:
    # As when run as a script: its own folder first on the path, for the modules beside it.
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_season", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_season"] = module
    spec.loader.exec_module(module)
    return module


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


# 13 whole commands and a sink: 30 s at a load average of 7 on 2 cores.
def test_a_tiny_season_reports_each_moment_its_work_and_its_ratio(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    done = _run(
        "--people", "200", "--officers", "20", "--backends", "sqlite", "--json", "--keep", str(kept)
    )
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr  # each command did what the moment expects
    report = json.loads(done.stdout)
    assert (report["people"], report["officers"]) == (200, 20)
    moments = report["backends"]["sqlite"]["moments"]
    assert [m["name"] for m in moments] == MOMENTS
    got = {m["name"]: (m["items"], m["unit"]) for m in moments}
    assert got == {
        "bare aiosmtplib loop": (200, "msg"),
        "roster import": (200, "rows"),
        "launch": (200, "rows"),
        "launch drain": (200, "msg"),
        "pass after launch": (0, "msg"),
        "first reports": (20, "msg"),  # one per officer
        "reminder morning": (200, "msg"),
        "completions import": (100, "rows"),  # half of them
        "confirmations": (100, "msg"),
        "plan --json": (0, ""),
        "status --json": (0, ""),
        "nightly reports": (20, "msg"),
        "idle pass": (0, "msg"),
    }
    by = {m["name"]: m for m in moments}
    # The reminder morning decided on everyone and queued their reminder itself.
    assert by["reminder morning"]["output"]["scheduled"]["queued"] == {"reminder": 200}
    assert by["nightly reports"]["output"]["scheduled"]["queued"] == {"report": 20}
    bare, drain = by["bare aiosmtplib loop"], by["launch drain"]
    assert drain["ratio"] == pytest.approx(bare["seconds"] / drain["seconds"])
    assert drain["ratio_to"] == "bare loop rate"
    morning = by["reminder morning"]
    assert morning["ratio"] == pytest.approx(morning["seconds"] / drain["seconds"])
    assert morning["ratio_to"] == "drain per msg"
    confirmations = by["confirmations"]
    per_msg = (confirmations["seconds"] / 100) / (drain["seconds"] / 200)
    assert confirmations["ratio"] == pytest.approx(per_msg)
    assert by["plan --json"]["ratio"] == pytest.approx(
        by["plan --json"]["seconds"] / drain["seconds"]
    )
    for m in moments[1:]:  # whole commands: their own time and memory
        assert m["seconds"] > 0
        assert 20 < m["peak_rss_mb"] < 1000, m

    # --keep: the database as it was just before the nightly reports, with the instant.
    about = json.loads((kept / "sqlite.json").read_text(encoding="utf-8"))
    assert about["people"] == 200
    assert about["nightly"]
    with sqlite3.connect(kept / "sqlite.db") as db:
        done_count = db.execute(
            "SELECT count(*) FROM enrollments WHERE completed_at IS NOT NULL"
        ).fetchone()[0]
    assert done_count == 100  # half of them complete, the reports not yet sent

    season = _season_module()
    rows = [season.Moment(**{k: v for k, v in m.items() if k != "per_s"}) for m in moments]
    text = season.format_backend("sqlite", rows, 200, 20)
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "reminder morning" in text
    assert "drain per msg" in text


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--people", "1"], "--people: at least 2"),
        (["--people", "many"], "--people: invalid int value: 'many'"),
        (["--backends", "sqlite,mysql"], "--backends: unknown mysql; choose from sqlite, postgres"),
        (["--people", "100", "--officers", "101"], "--officers: from 1 to --people (100), got 101"),
        (["--officers", "0"], "--officers: from 1 to --people (100,000), got 0"),
        (["--connections", "0"], "--connections: from 1 to 64, got 0"),
    ],
)
def test_bad_input_is_status_2_with_what_was_wrong(args: list[str], said: str) -> None:
    done = _run(*args)
    assert done.returncode == 2
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_a_command_that_fails_is_said_in_a_few_lines_with_status_1() -> None:
    env = {**os.environ, "PSHNOTIFY_BATCH_SIZE": "not-a-number"}
    done = _run("--people", "10", "--backends", "sqlite", env=env)
    assert done.returncode == 1, done.stderr
    assert "bench/season.py: `pshnotify init" in done.stderr
    assert "PSHNOTIFY_BATCH_SIZE: Input should be a valid integer" in done.stderr  # its words
    assert "Traceback" not in done.stderr
