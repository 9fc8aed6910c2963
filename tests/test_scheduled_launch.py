"""Launching before the window opens (issue 13, defect 2): refused like a closed wave, or
scheduled with `launch WAVE --at` (status and plan show it, people added meanwhile included,
`--cancel` withdraws it)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.smtp_server import SmtpServer
from tests.test_cli import NOW, cli
from tests.test_roster_import import HEADER, write

GRAD = [
    "G1,g1@example.edu,Gina Grad,School of Science,graduate_student,,,4,,,",
    "G2,g2@example.edu,Gus Grad,School of Science,graduate_student,,,5,,,",
]
LATE = "G3,g3@example.edu,Gail Late,School of Science,graduate_student,,,3,,,"
VPR = (
    "V1,v1@example.edu,Val Research,Office of the Vice President for Research,staff,,2001-01-01,,,,"
)
OPENING = "2023-10-25T09:05:00-04:00"


def _status(env: dict[str, str]) -> dict[str, object]:
    done = cli(env, "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["waves"]  # type: ignore[no-any-return]


def test_a_launch_before_the_window_is_refused_or_scheduled(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    assert cli(env, "init").returncode == 0
    roster = write(tmp_path, [HEADER, *GRAD, VPR])
    assert cli(env, "roster", "import", str(roster), "--now", NOW).returncode == 0

    early = cli(env, "launch", "grad", "--yes", "--now", NOW)
    assert early.returncode == 1, early.stdout + early.stderr
    assert "opens on 2023-10-25" in early.stderr
    assert "--at" in early.stderr
    assert _status(env)["grad"]["messages"]["queued"] == 0  # type: ignore[index]

    scheduled = cli(env, "launch", "grad", "--at", "2023-10-25T09:00", "--now", NOW)
    assert scheduled.returncode == 0, scheduled.stderr
    assert "2023-10-25 09:00 EDT" in scheduled.stdout
    grad = _status(env)["grad"]
    assert grad["launch_at"] == "2023-10-25T13:00:00+00:00"  # type: ignore[index]
    assert grad["launched_at"] is None  # type: ignore[index]
    assert "at 10-25 09:00" in cli(env, "status").stdout
    plan = json.loads(cli(env, "plan", "--wave", "grad", "--json", "--now", NOW).stdout)
    assert plan["scheduled_launches"] == {"grad": "2023-10-25T13:00:00+00:00"}
    launches = {d["date"]: d.get("launch") for d in plan["days"] if d.get("launch")}
    assert launches == {"2023-10-25": 2}

    # someone joins before the launch: included
    later = write(tmp_path, [HEADER, *GRAD, LATE, VPR], "later.csv")
    assert cli(env, "roster", "import", str(later), "--now", NOW).returncode == 0
    # nothing goes before the time
    before = cli(env, "run", "--once", "--json", "--now", "2023-10-25T08:55:00-04:00")
    assert json.loads(before.stdout)["outcomes"] == {}
    ran = cli(env, "run", "--once", "--json", "--now", OPENING)
    assert json.loads(ran.stdout)["outcomes"] == {"delivered": 3}, ran.stdout
    assert sorted(r.rcpt_tos[0] for r in smtp.received) == [
        "g1@example.edu",
        "g2@example.edu",
        "g3@example.edu",
    ]
    assert _status(env)["grad"]["launched_at"] is not None  # type: ignore[index]
    refused = cli(env, "launch", "grad", "--cancel", "--now", OPENING)
    assert refused.returncode == 1  # it has begun: nothing to withdraw

    # a scheduled launch withdrawn before it begins sends nothing
    assert cli(env, "launch", "vpr", "--at", "2023-11-20T09:00", "--now", NOW).returncode == 0
    withdrawn = cli(env, "launch", "vpr", "--cancel", "--now", NOW)
    assert withdrawn.returncode == 0
    assert "withdrew" in withdrawn.stdout
    assert _status(env)["vpr"]["launch_at"] is None  # type: ignore[index]
    before = len(smtp.received)
    ran = cli(env, "run", "--once", "--json", "--now", "2023-11-20T10:00:00-05:00")
    assert ran.returncode == 0, ran.stderr
    # the pass at the withdrawn time sends the graduate wave's reminders and nothing to V1
    assert json.loads(ran.stdout)["outcomes"] == {"delivered": 3}, ran.stdout
    assert sorted(r.rcpt_tos[0] for r in smtp.received[before:]) == [
        "g1@example.edu",
        "g2@example.edu",
        "g3@example.edu",
    ]
    assert "v1@example.edu" not in [r.rcpt_tos[0] for r in smtp.received]
    vpr = _status(env)["vpr"]
    assert vpr["launched_at"] is None  # type: ignore[index]
    assert vpr["messages"]["queued"] == 0  # type: ignore[index]
