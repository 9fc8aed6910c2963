"""Database calls that survive the database going away for a while.

Every call of the daemon and of `run --once` goes through one `Guard`: an error that can pass
(a lost connection, a server restarting, a serialization failure, a lock timeout, SQLite's
`database is locked` or its disk being full) is retried with backoff, bounded by a wait
(`run --once`) or by a stop (the daemon, which otherwise waits as long as it takes). The
first failure is logged once, and so is the return; what else waits meanwhile (the senders)
waits on the calls that are retrying, so nothing goes out whose outcome cannot be recorded.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import tenacity
from sqlalchemy.exc import DBAPIError

from pshnotify.domain.errors import ConflictError

T = TypeVar("T")

log = logging.getLogger("pshnotify.database")

# SQLSTATEs that pass: serialization failure, deadlock, lock not available, query cancelled
# (lock_timeout), admin shutdown, crash shutdown, cannot connect now, too many connections.
_TRANSIENT_STATES = {"40001", "40P01", "55P03", "57014", "57P01", "57P02", "57P03", "53300"}
_SQLITE_TRANSIENT = ("database is locked", "database or disk is full", "disk i/o error")


class DatabaseUnavailableError(ConflictError):
    """The database stayed out of reach longer than this command waits."""


def is_transient(exc: BaseException) -> bool:
    """Can this database error pass by itself (so the same call may simply be tried again)?

    SQLAlchemy's wrapped errors, and the drivers' own from the calls that use a driver's
    connection directly (`store.outcomes`, the drain's hot path)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        return exc.orig is not None and _driver_error_passes(exc.orig)
    if isinstance(exc, _driver_errors()):
        return _driver_error_passes(exc)
    return False


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The drivers' own error classes. psycopg's only once something has loaded it (an
    engine or a connection for PostgreSQL): importing it took 80 ms of every command's
    start, and no psycopg error can come from a process that never loaded it."""
    psycopg = sys.modules.get("psycopg")
    return (sqlite3.Error,) if psycopg is None else (sqlite3.Error, psycopg.Error)


def _driver_error_passes(orig: BaseException) -> bool:
    state = getattr(orig, "sqlstate", None)
    if state in _TRANSIENT_STATES:
        return True
    if isinstance(orig, sqlite3.OperationalError):
        return any(m in str(orig).lower() for m in _SQLITE_TRANSIENT)
    # psycopg: a connection that broke (server gone, restart) is an OperationalError
    # without a SQLSTATE from the server.
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(orig, psycopg.OperationalError) and state is None


def describe(exc: BaseException) -> str:
    """What went wrong, in one line an operator can act on."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    if "database or disk is full" in text.lower():
        return f"{text}: the disk holding the SQLite file (or its size limit) is full; free space"
    return text[:300]


class Guard:
    """Runs database calls (blocking ones in a thread, coroutines on the loop), retrying those
    that fail transiently."""

    def __init__(
        self,
        *,
        give_up_after: float | None = None,
        stopping: asyncio.Event | None = None,
        stop_grace: float = 5.0,
        initial: float = 0.05,
        longest: float = 5.0,
    ) -> None:
        self.give_up_after = give_up_after  # None: wait as long as it takes (the daemon)
        self.stopping = stopping
        self.stop_grace = stop_grace  # once stopping, how long a call still tries
        self.initial, self.longest = initial, longest
        self.down_since: float | None = None  # the first failure of the current outage
        self._began: float | None = None  # the same, kept after a call gave up on it
        self._failing: set[str] = set()  # the calls failing now (a read may pass meanwhile)
        self._stop_seen: float | None = None
        self.outages = 0

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a thread; transient errors are retried with jittered backoff."""

        async def attempt() -> T:
            return await asyncio.to_thread(fn, *args)

        return await self._run(attempt, fn)

    async def call_async(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """The same for a coroutine function, which waits for its database on the loop."""

        async def attempt() -> T:
            return await fn(*args)

        return await self._run(attempt, fn)

    async def _run(
        self, attempt: Callable[[], Coroutine[Any, Any, T]], fn: Callable[..., object]
    ) -> T:
        # `attempt` must be a coroutine function: tenacity awaits only those.
        # The first try goes without tenacity: a drain makes hundreds of calls a second, and
        # setting up its retry state for each cost 20 us of the event loop's time, a
        # twentieth of a message. Only a call that failed transiently enters the retry loop.
        try:
            first: T = await attempt()
        except Exception as exc:
            if not is_transient(exc):
                raise
            name = _name(fn)
            self._failed(name, exc)
            await self._sleep(random.uniform(0, 2 * self.initial))  # jittered, as tenacity's
        else:
            if self.down_since is not None:
                self._back(_name(fn))
            return first
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_random_exponential(multiplier=self.initial, max=self.longest),
            stop=self._should_stop,
            sleep=self._sleep,
            before_sleep=lambda state: self._failed(name, _exception(state)),
            reraise=True,
        )
        try:
            result: T = await retrying(attempt)
        except Exception as exc:
            if is_transient(exc):
                raise self._gave_up(exc) from exc
            raise
        self._back(name)
        return result

    def call_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """The same for code that runs outside the event loop (a command's one-off work)."""
        name = _name(fn)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_random_exponential(multiplier=self.initial, max=self.longest),
            stop=self._should_stop,
            before_sleep=lambda state: self._failed(name, _exception(state)),
            reraise=True,
        )
        try:
            result: T = retrying(fn, *args)
        except Exception as exc:
            if is_transient(exc):
                raise self._gave_up(exc) from exc
            raise
        self._back(name)
        return result

    # -- tenacity's hooks ---------------------------------------------------------------------
    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        if self.stopping is not None and self.stopping.is_set():
            if self._stop_seen is None:
                self._stop_seen = time.monotonic()
            if time.monotonic() - self._stop_seen >= self.stop_grace:
                return True
        if self.give_up_after is None or self.down_since is None:
            return False
        return time.monotonic() - self.down_since >= self.give_up_after

    async def _sleep(self, seconds: float) -> None:
        """Backoff that a stop cuts short (the daemon's SIGTERM must not wait for the DB)."""
        if self.stopping is None:
            await asyncio.sleep(seconds)
            return
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            return
        await asyncio.sleep(min(seconds, 0.2))

    def _failed(self, name: str, exc: BaseException | None) -> None:
        self._failing.add(name)
        if self.down_since is not None:
            return
        self.down_since = self._began = time.monotonic()
        self.outages += 1
        waits = (
            "waiting as long as it takes"
            if self.give_up_after is None
            else f"waiting up to {self.give_up_after:g} s"
        )
        log.error(
            "database unavailable: %s; nothing is sent until it is back (%s)",
            describe(exc) if exc else "unknown error",
            waits,
        )

    def _back(self, name: str) -> None:
        """Back once every call that failed has passed (a read may pass while writes fail)."""
        self._failing.discard(name)
        if self.down_since is None or self._failing:
            return
        gone = time.monotonic() - self.down_since
        self.down_since = None
        log.warning("database back after %.1f s; sending resumes", gone)

    def _gave_up(self, exc: BaseException) -> DatabaseUnavailableError:
        # The calls waiting on the same outage give up one after the other: each says how long
        # it has lasted, not the time since the first of them gave up.
        began = self.down_since if self.down_since is not None else self._began
        gone = time.monotonic() - began if began is not None else 0.0
        self.down_since = None
        self._failing.clear()
        return DatabaseUnavailableError(
            f"the database stayed unavailable for {gone:.0f} s: {describe(exc)}; "
            "what was sent and not yet recorded is resent by the next run",
            hint="check the database (PSHNOTIFY_DATABASE_URL), then run again; "
            "PSHNOTIFY_DB_RETRY_SECONDS sets how long `run --once` waits",
        )


def _exception(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None


def _name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)
