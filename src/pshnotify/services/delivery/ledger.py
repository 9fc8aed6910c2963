"""Results on their way to the database, and the rule that bounds what a crash can cost.

Postfix marks a delivery done before it starts the next on that connection. Here a
connection may send message k+1 while k is being recorded, never k+2: before each send it
waits until at most one of its own results is unwritten (`ready`). Results of all
connections are written together (group commit): a write starts as late after an attempt's
result as it can while still done before that connection has sent the next message (`_Pace`,
from the sends' and writes' running times), at once when a connection does wait, and every
`_LONGEST` seconds for results nobody waits for. One commit then carries up to one result
per connection, and a crash at any instant costs at most two copies per connection,
whatever the rate. While the database cannot be written, the connections wait here:
nothing more goes out whose outcome could not be recorded, and nothing collected is
dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from pshnotify.store import outbox

Writer = Callable[[list[outbox.Result]], Awaitable[None]]

# Results nobody waits for (skips, releases) are written within this many seconds.
_LONGEST = 0.1
# How long an attempt's result waits for others before a write starts: the time its
# connection is likely to take to send the next message, less what a write takes and a
# margin (`_Pace`), kept within these bounds (seconds).
_GATHER_MIN = 0.001
_GATHER_MAX = 0.02
_MARGIN = 0.25  # of the connection's time a message: kept free for a write slower than usual
_SMOOTHING = 0.1  # weight of the newest figure in the running averages


class _Pace:
    """Running averages of how long a connection takes to send a message and how long a
    write takes. A write that starts as late as it can and is still done when the
    connection wants to send again carries the most results: about one of every
    connection, where a fixed 2 ms carried about five of eight (each commit is a
    transaction of the database's own, so fewer, fuller commits cost it less). Only the
    sends are timed, not a connection's waits for a write, which would lengthen the
    gather that caused them."""

    def __init__(self, connections: int) -> None:
        self._since: list[float | None] = [None] * connections
        self.send = 0.0  # seconds from a connection's leave to send to its result
        self.write = 0.0  # seconds a write takes, from start to done

    def sending(self, connection: int, now: float) -> None:
        self._since[connection] = now

    def result(self, connection: int, now: float) -> None:
        since, self._since[connection] = self._since[connection], None
        if since is not None:
            self.send = _average(self.send, now - since)

    def wrote(self, seconds: float) -> None:
        self.write = _average(self.write, seconds)

    def gather(self) -> float:
        wait = self.send * (1 - _MARGIN) - self.write
        return min(_GATHER_MAX, max(_GATHER_MIN, wait))


def _average(current: float, new: float) -> float:
    return new if current == 0.0 else current + _SMOOTHING * (new - current)


class RecorderFailedError(Exception):
    """The results could not be written (the database stayed away too long)."""


class Ledger:
    def __init__(self, write: Writer, connections: int) -> None:
        self._write = write
        self._pending: list[tuple[int | None, outbox.Result]] = []
        self._unwritten = [0] * connections  # per connection: its attempts not yet durable
        self._needed = asyncio.Event()  # a connection waits for a write, or the end came
        self._written = asyncio.Event()
        self._closed = False
        self._soon: asyncio.TimerHandle | None = None
        self._pace = _Pace(connections)
        self.failure: BaseException | None = None

    def add(self, result: outbox.Result, connection: int | None = None) -> None:
        """Keep a result for the next write; `connection` for a message that was attempted."""
        if self.failure is not None:
            raise RecorderFailedError(str(self.failure)) from self.failure
        self._pending.append((connection, result))
        if connection is not None:
            self._unwritten[connection] += 1
            loop = asyncio.get_running_loop()
            self._pace.result(connection, loop.time())
            if self._soon is None:
                self._soon = loop.call_later(self._pace.gather(), self._needed.set)

    async def ready(self, connection: int) -> None:
        """Return once this connection may send again: at most one result of it unwritten."""
        while self._unwritten[connection] > 1:
            if self.failure is not None:
                raise RecorderFailedError(str(self.failure)) from self.failure
            self._written.clear()
            self._needed.set()
            await self._written.wait()
        if self.failure is not None:
            raise RecorderFailedError(str(self.failure)) from self.failure
        self._pace.sending(connection, asyncio.get_running_loop().time())

    def close(self) -> None:
        """No more results will come: write what is left, then end."""
        self._closed = True
        self._needed.set()

    @property
    def unwritten(self) -> list[outbox.Result]:
        return [r for _, r in self._pending]

    async def run(self) -> None:
        """Write what has come, as soon as the previous write is done, until closed."""
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._needed.wait(), _LONGEST)
                self._needed.clear()
                if self._soon is not None:
                    self._soon.cancel()
                    self._soon = None
                if self._pending:
                    taken = self._pending[:]
                    # Kept in the list until written: a failed write loses nothing.
                    started = asyncio.get_running_loop().time()
                    await self._write([r for _, r in taken])
                    self._pace.wrote(asyncio.get_running_loop().time() - started)
                    del self._pending[: len(taken)]
                    for connection, _ in taken:
                        if connection is not None:
                            self._unwritten[connection] -= 1
                    self._written.set()
                if self._closed and not self._pending:
                    return
                if self._closed:
                    self._needed.set()  # the rest, at once
        except BaseException as exc:
            self.failure = exc
            self._written.set()  # wake the connections: they stop instead of waiting
            raise
