"""A large completions export imports at the roster's pace (issue 13, defect 4): the statements
an import runs do not grow with its rows, its confirmations are queued in bulk, and
`outbox.queue` never counts the scope's messages before and after. (The speed itself is
measured in bench/completions.py, against the roster import in the same run.)"""

from __future__ import annotations

import csv
import datetime as dt
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select, text, update

from pshnotify.domain.delivery import Kind, idempotency_key
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.completions import (
    completion_key,
    import_completions,
    record_completion,
)
from pshnotify.services.campaign.roster import import_roster
from pshnotify.store import outbox
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import completions, enrollments, messages, people
from tests.smtp_server import SmtpServer
from tests.test_completions import OPTION_B, _queue_reminders, counts, message_states, of_kind
from tests.test_launch_and_send import PILOT, launch, send, setup_pilot
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


def _run_import(runtime: Runtime, path: Path) -> Any:
    return import_completions(
        runtime.engine,
        runtime.program(None),
        path,
        runtime.clock,
        actor=ACTOR,
        message_id_domain=runtime.settings.message_id_domain,
    )


def _statements(runtime: Runtime, path: Path) -> tuple[list[str], Any]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", count)
    try:
        report = _run_import(runtime, path)
    finally:
        event.remove(runtime.engine, "before_cursor_execute", count)
    return seen, report


@pytest.mark.fast
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


# -- what a batch does to the people it names, on both backends ------------------------------------
TEAM = [
    *PILOT,
    "H6,hedy@example.edu,Hedy Lamarr,Human Resources,staff,,2001-01-01,,,,",
    "H7,ida@example.edu,Ida Rhodes,Human Resources,staff,,2001-01-01,,,,",
]


def _import(runtime: Runtime, path: Path) -> dict[str, Any]:
    return _run_import(runtime, path).as_dict()


def _export(tmp_path: Path, rows: list[str], name: str = "export.csv") -> Path:
    return write(tmp_path, ["id,email,option,completed_at", *rows], name)


def test_an_export_stops_the_named_peoples_reminders_and_confirms_each_once(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path, TEAM)
    assert launch(runtime) == 5  # H1, H2, H3, H6, H7
    assert send(runtime) == {"sent": 5}
    for person in ("H1", "H2", "H3", "H6", "H7"):
        _queue_reminders(runtime, person, days=(7,))
    with runtime.engine.begin() as conn:  # H6's reminder failed once and waits for its retry
        h6 = select(people.c.id).where(people.c.external_id == "H6").scalar_subquery()
        conn.execute(
            update(messages)
            .where(messages.c.person_id == h6, messages.c.kind == "reminder")
            .values(state="retry")
        )
    without_h2 = [row for row in TEAM if not row.startswith("H2,")]
    setup_pilot(runtime, tmp_path, without_h2)  # H2 leaves: their reminder is cancelled
    export = _export(
        tmp_path,
        [
            "H1,,B,2023-09-11T09:00:00-04:00",
            ",HEDY@example.edu,A,2023-09-11T08:00:00-04:00",
            "H2,,A,2023-09-11T08:30:00-04:00",  # left the roster: recorded, not written to
            "H1,,C,2023-09-11T09:10:00-04:00",  # a second course: an extra
            "X9,,A,2023-09-11T09:00:00-04:00",  # nobody: kept for review
        ],
    )
    first = _import(runtime, export)
    assert {k: first[k] for k in ("recorded", "extra", "duplicate", "unmatched")} == {
        "recorded": 3,
        "extra": 1,
        "duplicate": 0,
        "unmatched": 1,
    }
    assert (first["confirmations"], first["cancelled_messages"]) == (2, 2)
    assert message_states(runtime.engine) == [
        ("H1", "confirmation", "queued", None),
        ("H1", "launch", "sent", None),
        ("H1", "reminder", "cancelled", "completed"),
        ("H2", "launch", "sent", None),
        ("H2", "reminder", "cancelled", "removed from the roster"),
        ("H3", "launch", "sent", None),
        ("H3", "reminder", "queued", None),  # not in the export: still owes the training
        ("H6", "confirmation", "queued", None),
        ("H6", "launch", "sent", None),
        ("H6", "reminder", "cancelled", "completed"),
        ("H7", "launch", "sent", None),
        ("H7", "reminder", "queued", None),
    ]
    with runtime.engine.connect() as conn:
        done = conn.execute(
            select(
                people.c.external_id, enrollments.c.completed_at, enrollments.c.completion_option
            )
            .join(people, people.c.id == enrollments.c.person_id)
            .where(enrollments.c.completed_at.is_not(None))
            .order_by(people.c.external_id)
        ).all()
    assert [tuple(r) for r in done] == [
        ("H1", dt.datetime(2023, 9, 11, 13, 0, tzinfo=dt.UTC), "B"),  # the first, not the extra
        ("H2", dt.datetime(2023, 9, 11, 12, 30, tzinfo=dt.UTC), "A"),
        ("H6", dt.datetime(2023, 9, 11, 12, 0, tzinfo=dt.UTC), "A"),
    ]
    before = counts(runtime.engine)
    again = _import(runtime, export)
    assert (again["duplicate"], again["recorded"], again["confirmations"]) == (5, 0, 0)
    assert counts(runtime.engine) == before
    assert send(runtime) == {"sent": 2}
    confirmations = {m["To"].addresses[0].addr_spec: m for m in of_kind(smtp, "confirmation")}
    assert sorted(confirmations) == ["ada@example.edu", "hedy@example.edu"]
    body = confirmations["ada@example.edu"].get_body(("plain",))
    assert body is not None
    assert OPTION_B in body.get_content()
    assert "Monday, September 11, 2023" in body.get_content()


@pytest.mark.fast
def test_a_person_with_a_confirmation_in_the_outbox_gets_no_second_one(
    runtime: Runtime, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    stored = runtime.program(None)
    now = runtime.clock.now()
    with runtime.engine.begin() as conn:  # left by an earlier version, say
        person = conn.execute(select(people).where(people.c.external_id == "H1")).one()
        key = idempotency_key(stored.key, "pilot", "H1", Kind.CONFIRMATION.value)
        row = {
            "program_id": stored.id,
            "person_id": person.id,
            "kind": Kind.CONFIRMATION.value,
            "wave_key": "pilot",
            "step": "0",
            "idempotency_key": key,
            "message_id": outbox.new_message_id("test.invalid"),
            "recipient_email": person.email,
            "recipient_name": person.name,
            "context": {"option": "A", "completed_at": now.isoformat()},
            "due_at": now,
        }
        assert outbox.queue(conn, [row], now) == 1
    report = _import(
        runtime,
        _export(tmp_path, ["H1,,B,2023-09-11T09:00:00-04:00", "H3,,A,2023-09-11T09:00:00-04:00"]),
    )
    assert (report["recorded"], report["confirmations"]) == (2, 1)  # H3's only
    with runtime.engine.connect() as conn:
        confirmed = conn.scalars(
            select(people.c.external_id)
            .join(messages, messages.c.person_id == people.c.id)
            .where(messages.c.kind == "confirmation")
            .order_by(people.c.external_id)
        ).all()
    assert confirmed == ["H1", "H3"]


# -- a concurrent writer ---------------------------------------------------------------------------
def _while_held(runtime: Runtime, hold: Any, export: Path) -> dict[str, Any]:
    """Import `export` while another transaction, having run `hold(conn)`, is open; commit that
    one once the import waits for it (PostgreSQL: a lock wait; SQLite: its one writer), then
    return the import's report."""
    reports: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reports.append(_import(runtime, export))
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    with runtime.engine.connect() as holder:
        trans = holder.begin()
        hold(holder)
        importer = threading.Thread(target=run)
        importer.start()
        _wait_until_blocked(runtime, holder)
        trans.commit()
    importer.join(timeout=60)
    assert not importer.is_alive()
    if errors:
        raise errors[0]
    return reports[0]


def _wait_until_blocked(runtime: Runtime, holder: Connection) -> None:
    if runtime.engine.dialect.name != "postgresql":
        time.sleep(0.5)  # SQLite: the import's BEGIN IMMEDIATE waits for the holder either way
        return
    pid = holder.scalar(text("SELECT pg_backend_pid()"))
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
    deadline = time.monotonic() + 20
    with runtime.engine.connect() as watcher:
        while time.monotonic() < deadline:
            if watcher.scalar(waiting, {"pid": pid}):
                return
            watcher.rollback()
            time.sleep(0.02)
    raise AssertionError("the import never waited for the other transaction")


def _complete(
    runtime: Runtime, conn: Connection, stored: StoredProgram, ref: str, option: str, at: str
) -> None:
    when = dt.datetime.fromisoformat(at)
    result = record_completion(
        conn,
        stored,
        person_ref=ref,
        option=option,
        completed_at=when,
        source="webhook",
        dedupe_key=completion_key(ref, option, when),
        note=None,
        now=runtime.clock.now(),
        message_id_domain=runtime.settings.message_id_domain,
    )
    assert result.outcome == "recorded"


@pytest.mark.fast
def test_a_completion_stored_meanwhile_by_another_way_in_is_a_duplicate(
    runtime: Runtime, tmp_path: Path
) -> None:
    """The webhook stores H1's completion while the nightly export, naming the same one and a
    later one of H1's, is being imported: the same one is a duplicate, the later an extra."""
    setup_pilot(runtime, tmp_path)
    launch(runtime)
    export = _export(
        tmp_path, ["H1,,B,2023-09-11T09:00:00-04:00", "H1,,C,2023-09-11T09:10:00-04:00"]
    )

    stored = runtime.program(None)

    def webhook(conn: Connection) -> None:
        _complete(runtime, conn, stored, "H1", "B", "2023-09-11T09:00:00-04:00")

    report = _while_held(runtime, webhook, export)
    assert {k: report[k] for k in ("recorded", "extra", "duplicate", "confirmations")} == {
        "recorded": 0,
        "extra": 1,
        "duplicate": 1,
        "confirmations": 0,
    }
    assert report["cancelled_messages"] == 0  # the webhook cancelled H1's launch email
    _assert_h1_once(runtime, option="B", kept=2)


@pytest.mark.fast
def test_a_person_completed_meanwhile_by_another_way_in_makes_the_export_an_extra(
    runtime: Runtime, tmp_path: Path
) -> None:
    setup_pilot(runtime, tmp_path)
    launch(runtime)
    export = _export(tmp_path, ["H1,,B,2023-09-11T09:00:00-04:00"])

    stored = runtime.program(None)

    def operator(conn: Connection) -> None:  # another course, so another completion
        _complete(runtime, conn, stored, "H1", "A", "2023-09-11T08:00:00-04:00")

    report = _while_held(runtime, operator, export)
    assert (report["recorded"], report["extra"], report["confirmations"]) == (0, 1, 0)
    _assert_h1_once(runtime, option="A", kept=2)


def _assert_h1_once(runtime: Runtime, *, option: str, kept: int) -> None:
    """H1 is complete by the other way in's completion, with its one confirmation."""
    with runtime.engine.connect() as conn:
        h1 = select(people.c.id).where(people.c.external_id == "H1").scalar_subquery()
        stored = select(func.count()).where(completions.c.person_id == h1)
        assert conn.scalar(stored) == kept
        chosen = select(enrollments.c.completion_option).where(enrollments.c.person_id == h1)
        assert conn.scalar(chosen) == option
        kinds = conn.execute(
            select(messages.c.kind, messages.c.state)
            .where(messages.c.person_id == h1)
            .order_by(messages.c.kind)
        ).all()
    assert [tuple(k) for k in kinds] == [("confirmation", "queued"), ("launch", "cancelled")]
