"""A large completions export imports at the roster's pace (issue 13, defect 4): the statements
an import runs do not grow with its rows, its confirmations are queued in bulk, and
`outbox.queue` never counts the scope's messages before and after. (The speed itself is
measured in bench/completions.py, against the roster import in the same run.)"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select

from pshnotify.runtime.wiring import Runtime
from pshnotify.services.completions import import_completions
from pshnotify.services.roster import import_roster
from pshnotify.store.schema import completions, enrollments, messages
from tests.test_roster_import import HEADER, write

ACTOR = "op"


def _roster(tmp_path: Path, count: int) -> Path:
    rows = [
        f"P{i:05d},p{i}@example.edu,Person {i},Human Resources,staff,,2010-01-04,,,,pilot"
        for i in range(count)
    ]
    return write(tmp_path, [HEADER, *rows], "roster.csv")


def _completions(tmp_path: Path, name: str, refs: list[str], later: int = 0) -> Path:
    """One row per ref, the instant made of the person's number (the same completion named by
    id or by email is the same instant); rows from `later` on are an hour later."""
    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "email", "option", "completed_at"])
        for i, ref in enumerate(refs):
            seconds = int("".join(c for c in ref if c.isdigit()) or 0)
            hours = 1 if later and i >= later else 0
            at = dt.datetime(2023, 9, 10, 9, 0) + dt.timedelta(hours=hours, seconds=seconds)
            who = [ref, ""] if "@" not in ref else ["", ref]
            w.writerow([*who, "B", at.isoformat() + "-04:00"])
    return path


def _statements(runtime: Runtime, path: Path) -> tuple[list[str], Any]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        report = import_completions(
            runtime.engine,
            runtime.program(None),
            path,
            runtime.clock,
            actor=ACTOR,
            message_id_domain=runtime.settings.message_id_domain,
        )
    finally:
        event.remove(runtime.engine, "before_cursor_execute", count)
    return seen, report


def test_an_import_runs_as_many_statements_for_400_rows_as_for_40(
    runtime: Runtime, tmp_path: Path
) -> None:
    stored = runtime.program(None)
    import_roster(runtime.engine, stored, _roster(tmp_path, 500), runtime.clock, actor=ACTOR)
    small, report = _statements(
        runtime, _completions(tmp_path, "small.csv", [f"P{i:05d}" for i in range(40)])
    )
    assert report.counts["recorded"] == 40
    assert report.confirmations == 40
    # 400 more: 320 new people by id and by email, the first 40 again by email (duplicates of
    # the first import, named the other way), 20 people twice (extras), 20 nobody knows
    refs = [f"P{i:05d}" for i in range(40, 230)] + [f"p{i}@example.edu" for i in range(230, 360)]
    refs += [f"p{i}@example.edu" for i in range(40)]
    refs += [f"X{i}" for i in range(20)] + [f"P{i:05d}" for i in range(40, 60)]
    large, report = _statements(runtime, _completions(tmp_path, "large.csv", refs, later=380))
    assert report.rows == 400
    assert report.counts == {"recorded": 320, "extra": 20, "duplicate": 40, "unmatched": 20}
    assert report.confirmations == 320
    # linear in the file, not a statement (or five) per row
    assert len(large) <= len(small) + 10, (len(small), len(large))
    counted = [s for s in large if "count(" in s.lower() and "messages" in s.lower()]
    assert counted == []
    with runtime.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(completions)) == 40 + 360
        done = select(func.count()).where(enrollments.c.completed_at.is_not(None))
        assert conn.scalar(done) == 360
        confirmations = select(func.count()).where(messages.c.kind == "confirmation")
        assert conn.scalar(confirmations) == 360
