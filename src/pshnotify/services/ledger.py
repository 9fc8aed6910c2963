"""Results on their way to the database, and the rule that bounds what a crash can cost.

Postfix marks a delivery done before it starts the next on that connection. Here a
connection may send message k+1 while k is being recorded, never k+2: before each send it
waits until at most one of its own results is unwritten (`ready`). Results of all
connections are written together (group commit): a write starts `_GATHER` seconds after an
attempt's result came (while its connection sends the next message, so that it seldom waits
for it), at once when a connection does wait, and every `_LONGEST` seconds for results nobody
waits for. One commit then carries about one result per connection, and a crash at any
instant costs at most two copies per connection, whatever the rate. While the database
cannot be written, the connections wait here: nothing more goes out whose outcome could not
be recorded, and nothing collected is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from pshnotify.store import outbox

Writer = Callable[[list[outbox.Result]], Awaitable[None]]

# Results nobody waits for (skips, releases) are written within this many seconds.
_LONGEST = 0.1
# An attempt's result is written at most this many seconds after it came, while its
# connection sends the next message (so that it rarely has to wait for it), together with
# the results the other connections bring meanwhile.
_GATHER = 0.002


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
        self.failure: BaseException | None = None

    def add(self, result: outbox.Result, connection: int | None = None) -> None:
        """Keep a result for the next write; `connection` for a message that was attempted."""
        if self.failure is not None:
            raise RecorderFailedError(str(self.failure)) from self.failure
        self._pending.append((connection, result))
        if connection is not None:
            self._unwritten[connection] += 1
            if self._soon is None:
                self._soon = asyncio.get_running_loop().call_later(_GATHER, self._needed.set)

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
                    await self._write([r for _, r in taken])
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
