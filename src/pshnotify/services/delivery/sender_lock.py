"""Who is sending: SQLite's one dispatching process, the live senders sharing the rate limits,
and the claims of processes of this host that are gone (taken back at once, not after their
leases run out).

Every time here is the database's (`db.server_time`): PostgreSQL's `now()` for replicas on
several hosts, the host's clock for SQLite, which lives on one.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket

from sqlalchemy import Connection, Engine

from pshnotify.clock import Clock
from pshnotify.domain.errors import ConflictError
from pshnotify.store import locks, outbox
from pshnotify.store.db import is_sqlite, server_time

# How long a sender counts as alive for sharing the rate limits after its last claim.
SENDER_HEARTBEAT = dt.timedelta(seconds=15)

log = logging.getLogger("pshnotify.dispatch")


class SenderLock:
    """This process's place among the senders of one database. Blocking calls: run them through
    the database guard (`store.retry.Guard`)."""

    def __init__(self, engine: Engine, clock: Clock, worker: str, lease: dt.timedelta) -> None:
        self.engine = engine
        self.clock = clock
        self.worker = worker
        self.lease = lease

    def hold(self) -> None:
        """At each pass's start: be the one SQLite sender (or refuse clearly), and take back
        the claims that processes of this host left behind when they died."""
        with self.engine.begin() as conn:
            wall = server_time(conn, self.clock.wall())
            if is_sqlite(self.engine):
                self._single_sender(conn, wall)
            gone = [o for o in outbox.claim_owners(conn) if o != self.worker and not alive(o)]
            taken = outbox.take_back(conn, gone, self.clock.now())
        if taken:
            log.warning(
                "took back %d messages claimed by stopped processes of this host (%s)",
                taken,
                ", ".join(sorted(gone)),
            )

    def _single_sender(self, conn: Connection, wall: dt.datetime) -> None:
        """SQLite has one writer: one dispatching process per database, and it says so."""
        if locks.acquire(conn, "dispatch", self.worker, wall, self.lease):
            return
        held = locks.holder(conn, "dispatch")
        if held and not alive(held[0]):
            locks.release(conn, "dispatch", held[0])
            if locks.acquire(conn, "dispatch", self.worker, wall, self.lease):
                return
        owner, until = held if held else ("?", wall)
        # How long, not until when: the lease is on the machine's clock (a rehearsal's --now
        # is elsewhere), and a clock time here would be in UTC, not the program's zone.
        left = max(0, round((until - wall).total_seconds()))
        raise ConflictError(
            f"another pshnotify process ({owner}) is sending from this SQLite database (its "
            f"lease runs {left} s more, renewed while it runs); SQLite supports one sending "
            "process",
            hint="stop the other process, or use PostgreSQL (PSHNOTIFY_DATABASE_URL) to run "
            "several",
        )

    def release(self) -> None:
        """Let another process send from this SQLite database (at exit)."""
        if not is_sqlite(self.engine):
            return
        with self.engine.begin() as conn:
            locks.release(conn, "dispatch", self.worker)

    def senders_alive(self) -> int:
        """Announce this sender (a short lease) and count the live ones sharing the relay."""
        with self.engine.begin() as conn:
            wall = server_time(conn, self.clock.wall())
            locks.acquire(conn, f"sender:{self.worker}", self.worker, wall, SENDER_HEARTBEAT)
            return locks.live(conn, "sender:", wall)

    def leave(self) -> None:
        with self.engine.begin() as conn:
            locks.release(conn, f"sender:{self.worker}", self.worker)


def alive(owner: str) -> bool:
    """Is the process named host:pid still running? Other hosts' processes count as alive."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
