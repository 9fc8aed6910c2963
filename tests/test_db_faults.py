"""The delivery core against its own database's faults, and crashes at any instant.

A private PostgreSQL (tests/private_pg.py) is restarted, has its backends terminated and is
stopped for 30 s in the middle of a drain by the daemon, a subprocess; SQLite fills up under
an in-process drain; the daemon is SIGKILLed and started again at once; two replicas run
with clocks ten minutes apart. Copies are counted at the relay by Message-ID: a crash or a
fault may cost at most two per SMTP connection (message k being recorded, k+1 in flight).

Sizes are the issue's (5,000 for the PostgreSQL faults, 20,000 for the kills) except where
they would cost the suite much time and the property does not need them (it is per
connection, not per message): the kills drain 5,000 on PostgreSQL, and the faults under a
20 msg/s limit 300 (the limit, not the size, is what they test).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text

from pshnotify.clock import FixedClock
from pshnotify.runtime.daemon import Daemon
from pshnotify.runtime.wiring import Runtime
from pshnotify.store.retry import Guard
from pshnotify.store.schema import attempts, messages
from tests.private_pg import PrivatePostgres, private_postgres, remove
from tests.smtp_server import Behaviour, SmtpServer
from tests.test_daemon import NOW, cli, pilot_roster, states
from tests.test_delivery import pilot, wait_for
from tests.test_launch_and_send import launch

CONNECTIONS = 4


@pytest.fixture
def pg() -> Iterator[PrivatePostgres]:
    server = private_postgres()
    try:
        yield server
    finally:
        remove(server)


def prepared(env: dict[str, str], tmp_path: Path, total: int) -> None:
    assert cli(env, "init").returncode == 0
    roster = pilot_roster(tmp_path / "p.csv", total)
    assert cli(env, "roster", "import", str(roster), "--now", NOW).returncode == 0
    assert cli(env, "launch", "pilot", "--yes", "--now", NOW).returncode == 0


def daemon(env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pshnotify", "run", "--now", NOW, "--interval", "1", *extra],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def message_ids(smtp: SmtpServer) -> list[str]:
    parser = BytesHeaderParser()
    with smtp.lock:
        received = list(smtp.received)
    return [str(parser.parsebytes(r.data)["Message-ID"]) for r in received]


def extra_copies(smtp: SmtpServer) -> tuple[int, int]:
    """(messages delivered, copies beyond the first)."""
    ids = message_ids(smtp)
    return len(set(ids)), len(ids) - len(set(ids))


def sent_count(url: str) -> int:
    try:
        return states(url).get("sent", 0)
    except Exception:  # the database is down at this instant
        return -1


def stop(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()  # a daemon that ignored SIGTERM fails the test, and is not left running
        process.communicate()
        raise
    return process.returncode, err


@pytest.mark.timeout(300)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the private server is the one
@pytest.mark.slow
def test_postgresql_restarted_cut_off_and_stopped_mid_drain(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, pg: PrivatePostgres
) -> None:
    """Every message reaches its person; each fault costs at most two copies per connection;
    nothing goes out while the database is down; the daemon keeps running and says when the
    database went and when it came back."""
    total, faults = 5000, 3
    env = {**env, "PSHNOTIFY_DATABASE_URL": pg.url, "PSHNOTIFY_SMTP_CONNECTIONS": "4"}
    prepared(env, tmp_path, total)
    smtp.behaviour = Behaviour(delay=0.01)  # a drain of some seconds, to fault in the middle
    run = daemon({**env, "PSHNOTIFY_BATCH_SIZE": "100"})
    try:
        wait_for(lambda: len(smtp.received) > 300, 60)
        pg.restart()
        mark = len(smtp.received)
        wait_for(lambda: len(smtp.received) > mark + 300, 60)
        assert pg.terminate_backends() >= 1
        mark = len(smtp.received)
        wait_for(lambda: len(smtp.received) > mark + 300, 60)
        pg.stop()
        time.sleep(2)  # what was in flight when it stopped ends
        held = len(smtp.received)
        time.sleep(28)
        assert len(smtp.received) == held < total  # nothing sent while it cannot be recorded
        assert run.poll() is None  # still running
        pg.start()
        wait_for(lambda: sent_count(pg.url) == total, 120, every=0.5)
        assert run.poll() is None
    finally:
        code, err = stop(run)
    assert code == 0, err[-3000:]
    delivered, copies = extra_copies(smtp)
    assert delivered == total
    assert copies <= 2 * CONNECTIONS * faults, copies
    assert states(pg.url) == {"sent": total}
    assert "database unavailable" in err
    assert "database back after" in err
    assert "Task exception was never retrieved" not in err
    assert "Traceback" not in err, err[-3000:]


@pytest.mark.timeout(200)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_run_once_gives_up_on_a_database_gone_for_good_and_says_so(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, pg: PrivatePostgres
) -> None:
    total = 400
    env = {
        **env,
        "PSHNOTIFY_DATABASE_URL": pg.url,
        "PSHNOTIFY_DB_RETRY_SECONDS": "3",
        "PSHNOTIFY_BATCH_SIZE": "50",
    }
    prepared(env, tmp_path, total)
    smtp.behaviour = Behaviour(delay=0.03)
    once = subprocess.Popen(
        [sys.executable, "-m", "pshnotify", "run", "--once", "--now", NOW],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(smtp.received) > 40, 60)
    pg.stop()
    started = time.monotonic()
    _, err = once.communicate(timeout=60)
    assert once.returncode == 1, err
    assert time.monotonic() - started < 30  # a bounded wait, not forever
    assert "the database stayed unavailable" in " ".join(err.split())
    assert "Traceback" not in err
    pg.start()
    done = cli(env, "run", "--once", "--now", NOW)
    assert done.returncode == 0, done.stderr
    delivered, copies = extra_copies(smtp)
    assert delivered == total
    assert copies <= 2  # one connection: at most two copies for the fault
    assert states(pg.url) == {"sent": total}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.slow
def test_under_a_relay_limit_database_faults_neither_hang_the_drain_nor_keep_sigterm_waiting(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, pg: PrivatePostgres
) -> None:
    """At 20 msg/s the senders wait for their slots with the queue full and the producer
    waiting to put into it: PostgreSQL restarted, its backends terminated, stopped for 30 s
    and stopped again for a SIGTERM, all in one drain. Sending stops while it is away and goes
    on by itself when it is back, SIGTERM ends the daemon in seconds even while the database
    is down, and each fault costs at most two copies per connection."""
    total, faults, batch = 300, 4, 20  # the queue holds two batches: it is full at 20 msg/s
    env = {
        **env,
        "PSHNOTIFY_DATABASE_URL": pg.url,
        "PSHNOTIFY_SMTP_CONNECTIONS": str(CONNECTIONS),
        "PSHNOTIFY_RATE_PER_SECOND": "20",
        "PSHNOTIFY_BATCH_SIZE": str(batch),
    }
    prepared(env, tmp_path, total)

    def more(n: int) -> None:
        mark = len(smtp.received)
        wait_for(lambda: len(smtp.received) >= mark + n, 60)

    run = daemon(env)
    try:
        more(40)
        pg.restart()
        more(40)
        assert pg.terminate_backends() >= 1
        more(40)
        pg.stop()
        time.sleep(2)  # what was in flight when it stopped ends
        held = len(smtp.received)
        time.sleep(28)
        assert len(smtp.received) == held < total  # nothing sent while it cannot be recorded
        assert run.poll() is None  # still running, not ended by the faults
        pg.start()
        more(40)  # it goes on by itself: nothing hangs
        pg.stop()
        time.sleep(3)  # every sender now waits on the database, the producer on the queue
    finally:
        asked = time.monotonic()
        code, err = stop(run, timeout=60)
    assert time.monotonic() - asked < 15, "SIGTERM waited for the database"
    assert code == 0, err[-3000:]
    assert err.count("database unavailable") >= 2, err[-3000:]  # the stops (a restart may pass)
    assert "database back after" in err
    assert "Traceback" not in err, err[-3000:]
    pg.start()
    run = daemon(env)
    try:
        wait_for(lambda: sent_count(pg.url) == total, 120, every=0.5)
    finally:
        asked = time.monotonic()
        code, err = stop(run)
    assert time.monotonic() - asked < 15
    assert code == 0, err[-3000:]
    delivered, copies = extra_copies(smtp)
    assert delivered == total
    assert copies <= 2 * CONNECTIONS * faults, copies
    assert states(pg.url) == {"sent": total}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # SQLite's disk full
def test_sqlite_full_stops_the_sending_says_why_and_goes_on_once_there_is_room(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path, db_url: str, caplog: Any
) -> None:
    total = 1500
    pilot(runtime, tmp_path, total)
    launch(runtime)
    with runtime.engine.connect() as conn:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar() or 0)
    limit = {"pages": pages + 8}  # room for a few hundred outcomes, not for all of them

    @event.listens_for(runtime.engine, "checkout")
    def _limit(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA max_page_count = {limit['pages']}")
        cur.close()

    runtime.settings.smtp_connections = CONNECTIONS
    dispatcher = runtime.dispatcher(Guard(give_up_after=None))
    smtp.behaviour = Behaviour(delay=0.002)
    report: dict[str, Any] = {}
    caplog.set_level(logging.WARNING, logger="pshnotify")
    logging.getLogger("pshnotify").addHandler(caplog.handler)  # also where it does not propagate
    worker = threading.Thread(
        target=lambda: report.update(r=asyncio.run(dispatcher.run_once())), daemon=True
    )
    worker.start()
    try:
        _wait_out_a_full_disk(smtp, caplog, limit, total)
    finally:
        logging.getLogger("pshnotify").removeHandler(caplog.handler)
    worker.join(timeout=120)
    assert not worker.is_alive()
    assert report["r"].outcomes == Counter({"sent": total})
    delivered, copies = extra_copies(smtp)
    assert (delivered, copies) == (total, 0)  # the process lived: nothing lost, nothing twice
    assert any("database back after" in m for m in caplog.messages)
    with runtime.engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
        assert conn.scalar(select(func.count()).select_from(attempts)) == total


def _wait_out_a_full_disk(smtp: SmtpServer, caplog: Any, limit: dict[str, int], total: int) -> None:
    wait_for(lambda: any("database or disk is full" in m for m in caplog.messages), 60)
    time.sleep(1)
    held = len(smtp.received)
    time.sleep(2)
    assert len(smtp.received) == held < total  # the sending stopped
    (line,) = {m for m in caplog.messages if "database unavailable" in m}  # once
    assert "full; free space" in line
    limit["pages"] = 1_000_000  # space freed


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_sigkill_and_an_immediate_restart_wait_for_no_lease(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path
) -> None:
    """A service manager's Restart=always: the new process takes back the dead one's claims at
    once (the default five-minute lease never runs out here), and each kill costs at most two
    copies per connection, at full speed."""
    # The 20,000 on SQLite; 5,000 on PostgreSQL, where the drain is slower and 20,000
    # cost the suite over a minute more. The bound is per connection: size adds kill moments.
    sqlite = env["PSHNOTIFY_DATABASE_URL"].startswith("sqlite")
    total, kills = (20_000 if sqlite else 5_000), 2
    prepared(env, tmp_path, total)
    run_env = {**env, "PSHNOTIFY_SMTP_CONNECTIONS": str(CONNECTIONS)}
    rng = random.Random(5)
    for _ in range(kills):
        run = daemon(run_env)
        before = len(smtp.received)
        step = rng.randint(total // 10, total // 4)
        wait_for(lambda b=before, n=step: len(smtp.received) > b + n, 120)  # type: ignore[misc]
        run.send_signal(signal.SIGKILL)
        run.communicate(timeout=30)
    run = daemon(run_env)
    try:
        wait_for(lambda: sent_count(env["PSHNOTIFY_DATABASE_URL"]) == total, 240, every=0.5)
    finally:
        code, err = stop(run)
    assert code == 0, err[-3000:]
    assert "took back" in err
    delivered, copies = extra_copies(smtp)
    assert delivered == total
    assert copies <= 2 * CONNECTIONS * kills, copies
    assert states(env["PSHNOTIFY_DATABASE_URL"]) == {"sent": total}


class SkewedClock(FixedClock):
    """A host whose clock runs ten minutes ahead."""

    def wall(self) -> dt.datetime:
        return super().wall() + dt.timedelta(minutes=10)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_replicas_ten_minutes_apart_never_claim_the_same_message(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    total = 400
    pilot(runtime, tmp_path, total)
    launch(runtime)
    smtp.behaviour = Behaviour(delay=0.02)
    settings = runtime.settings.model_copy(update={"smtp_connections": 2, "batch_size": 50})
    replicas = [
        Runtime(settings.model_copy(update={"worker_name": "host-a:1"}), runtime.clock),
        Runtime(
            settings.model_copy(update={"worker_name": "host-b:1"}),
            SkewedClock(runtime.clock.now()),
        ),
    ]
    threads = [
        threading.Thread(target=lambda rt=rt: asyncio.run(rt.dispatcher().run_once()))
        for rt in replicas
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for rt in replicas:
        rt.close()
    with runtime.engine.connect() as conn:
        workers = conn.execute(
            select(attempts.c.message_id, func.count(func.distinct(attempts.c.worker)))
            .group_by(attempts.c.message_id)
            .having(func.count(func.distinct(attempts.c.worker)) > 1)
        ).all()
        by_worker = dict(
            conn.execute(select(attempts.c.worker, func.count()).group_by(attempts.c.worker)).all()
        )
        sent = conn.scalar(
            select(func.count()).select_from(messages).where(messages.c.state == "sent")
        )
    assert workers == []  # no message claimed by both
    assert sent == total
    assert extra_copies(smtp) == (total, 0)
    assert set(by_worker) == {"host-a:1", "host-b:1"}  # both did share the work


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # one exit rule for both
def test_run_once_exits_1_when_the_relay_refuses_everything(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, db_url: str
) -> None:
    prepared(env, tmp_path, 5)
    smtp.behaviour = Behaviour(data=lambda _addr: "451 4.3.0 try again later")
    done = cli(env, "run", "--once", "--now", NOW)
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert "every attempt of this pass failed (5 transient)" in said
    assert "messages --state deferred" in said
    smtp.behaviour = Behaviour()
    later = "2023-09-11T12:30:00-04:00"
    assert cli(env, "run", "--once", "--now", later).returncode == 0


class Records(logging.Handler):
    """Every record the daemon logs, kept with its level and fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the alarm is the daemon's
def test_a_relay_refusing_everything_for_an_hour_is_an_error_said_again_each_hour(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path, clock: FixedClock
) -> None:
    """The daemon itself (its scheduler, passes and log) on the runtime's clock, moved by hand
    through three hours of a relay answering 5xx to one address and 4xx to the rest: each
    pass that tried and got nothing through is a WARNING, the first one an hour or more into
    the refusals is an ERROR, said again an hour later and not in between; a message accepted
    starts the hour anew."""
    total = 6
    pilot(runtime, tmp_path, total)
    launch(runtime)
    refused = {"p0@": "550 5.7.1 relaying denied", "p": "451 4.3.0 try again later"}

    def reply(address: str) -> str | None:
        return next((r for start, r in refused.items() if address.startswith(start)), None)

    smtp.behaviour = Behaviour(data=reply)
    start = clock.now()
    records = Records()
    logger = logging.getLogger("pshnotify")
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    daemon = Daemon(runtime, 0.2, logging.getLogger("pshnotify.daemon"))

    async def pass_at(minutes: int) -> list[logging.LogRecord]:
        """Move the clock to `minutes` after the start; what the pass that tried again then
        logged (the retries' backoff, at most 1.2 times 1, 2, 4, 8, 16 minutes, has run out)."""
        first = len(records.records)
        clock.set(start + dt.timedelta(minutes=minutes))
        at = clock.now().isoformat()
        deadline = time.monotonic() + 30
        while not any(
            r.getMessage() == "pass" and getattr(r, "at", None) == at and getattr(r, "claimed", 0)
            for r in records.records[first:]
        ):
            assert time.monotonic() < deadline, f"no pass tried anything at +{minutes} min"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a pass that may follow at the same instant tries nothing
        return records.records[first:]

    def said(got: list[logging.LogRecord], level: int, words: str) -> list[str]:
        return [r.getMessage() for r in got if r.levelno == level and words in r.getMessage()]

    alarm = "the relay has refused every message for"
    all_failed = "every attempt of this pass failed"

    async def rehearse() -> dict[int, list[logging.LogRecord]]:
        serving = asyncio.create_task(daemon.serve())
        try:
            passes = {m: await pass_at(m) for m in (0, 30, 61, 91, 122)}
            refused.clear()
            refused["p5@"] = "451 4.3.0 try again later"  # all but one get through
            passes[150] = await pass_at(150)
            passes[189] = await pass_at(189)  # that one refused again: the hour starts anew
        finally:
            daemon.stop.set()
            await serving
        return passes

    try:
        passes = asyncio.run(rehearse())
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)
    assert said(passes[0], logging.WARNING, f"{all_failed} (1 permanent, 5 transient)")
    for minutes in (30, 61, 91, 122):
        assert said(passes[minutes], logging.WARNING, f"{all_failed} (5 transient)"), minutes
    alarms = {m: said(got, logging.ERROR, alarm) for m, got in passes.items()}
    assert alarms == {
        0: [],
        30: [],  # half an hour: only the passes' warnings
        61: [
            f"{alarm} 61 minutes; check the relay and `pshnotify messages --state deferred`"
            " for its replies"
        ],
        91: [],  # said 30 minutes ago
        122: [
            f"{alarm} 122 minutes; check the relay and `pshnotify messages --state deferred`"
            " for its replies"
        ],
        150: [],
        189: [],  # refused for 39 minutes since the relay last accepted something
    }
    assert said(passes[150], logging.WARNING, "the relay accepts messages again")
    assert not said(passes[150], logging.WARNING, all_failed)
    assert said(passes[189], logging.WARNING, f"{all_failed} (1 transient)")
    assert states(runtime.settings.database_url) == {"sent": total - 2, "failed": 1, "retry": 1}
    assert extra_copies(smtp) == (total - 2, 0)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # SQLite's write lock
def test_a_write_lock_held_by_another_connection_pauses_the_drain_and_loses_nothing(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path, db_url: str, caplog: Any
) -> None:
    """Another connection holding SQLite's write lock for a while (a command's import, say):
    the drain's writes wait for it, at most two messages per connection go out meanwhile, no
    outage is reported for a lock that is only busy, and the drain goes on when the lock is
    free, with every outcome recorded once. The pool's connections come back as they went
    (the drain's own writes ask for the lock without waiting, on the loop)."""
    total = 600
    pilot(runtime, tmp_path, total)
    launch(runtime)
    runtime.settings.smtp_connections = CONNECTIONS
    smtp.behaviour = Behaviour(delay=0.002)
    report: dict[str, Any] = {}
    worker = threading.Thread(
        target=lambda: report.update(r=asyncio.run(runtime.dispatcher().run_once())), daemon=True
    )
    worker.start()
    caplog.set_level(logging.WARNING, logger="pshnotify")
    wait_for(lambda: len(smtp.received) > 100, 60)
    path = db_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")
    try:
        time.sleep(0.3)  # what was in flight ends
        held = len(smtp.received)
        assert held < total - 2 * CONNECTIONS  # the drain is still under way
        time.sleep(1.2)
        assert len(smtp.received) - held <= 2 * CONNECTIONS  # waiting, not sending
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert report["r"].outcomes == Counter({"sent": total})
    assert extra_copies(smtp) == (total, 0)
    assert not [m for m in caplog.messages if "database unavailable" in m]
    with runtime.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(attempts)) == total
    idle = runtime.engine.pool.checkedin()  # type: ignore[attr-defined]
    pooled = [runtime.engine.raw_connection() for _ in range(idle)]  # each, no transaction
    try:
        timeouts = {c.cursor().execute("PRAGMA busy_timeout").fetchone()[0] for c in pooled}
        assert timeouts == {30_000}
    finally:
        for c in pooled:
            c.close()


@pytest.mark.parametrize("on_loop", [False, True], ids=["thread", "loop"])
@pytest.mark.fast
def test_the_guard_retries_a_locked_database_until_it_is_free_and_says_when_it_is_back(
    tmp_path: Path, caplog: Any, on_loop: bool
) -> None:
    """A call that meets `database is locked` (no busy wait) is tried again with backoff until
    the lock holder lets go; the outage is logged once, and so is the return."""
    path = tmp_path / "locked.db"
    sqlite3.connect(path).execute("CREATE TABLE t (n INTEGER)").connection.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    def write() -> int:
        conn = sqlite3.connect(path, isolation_level=None, timeout=0)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("COMMIT")
            return 1
        finally:
            conn.close()

    async def write_async() -> int:
        return write()

    async def main() -> int:
        guard = Guard(give_up_after=30)
        loop = asyncio.get_running_loop()
        loop.call_later(0.4, holder.execute, "ROLLBACK")
        if on_loop:
            return await guard.call_async(write_async)
        return await guard.call(write)

    caplog.set_level(logging.INFO, logger="pshnotify.database")
    started = time.monotonic()
    assert asyncio.run(main()) == 1
    assert time.monotonic() - started >= 0.4
    holder.close()
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM t").fetchone() == (1,)
    check.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "pshnotify.database"]
    assert len([m for m in lines if "database unavailable: database is locked" in m]) == 1, lines
    assert len([m for m in lines if "database back after" in m]) == 1, lines
