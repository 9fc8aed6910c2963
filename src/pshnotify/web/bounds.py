"""The HTTP side's bounds: how many connections, how long a request may take to arrive.

The endpoints share the daemon's process, so every descriptor an idle or trickling client
holds is one the sender cannot use to reach the relay or open a template. uvicorn bounds what
happens once a request has arrived (`limit_concurrency`) and the wait between requests
(`timeout_keep_alive`), but not a connection that never finishes its request: one byte a
second kept 800 connections open, and with the descriptors gone the daemon failed its mail.

`bounded_protocol` makes uvicorn's h11 protocol keep two more rules:
- a request (its headers and its body) must arrive within `read_timeout` seconds of the
  connection being ready for it, else the connection is closed;
- at most `max_connections` connections are open: when one more arrives, the connection that
  has waited longest for its request is closed to make room (a client whose request has
  arrived and is being answered is never cut). A flood of slow clients therefore only ever
  evicts itself, and a monitor's `/healthz` still gets in.
Both are counted, and logged in aggregate (`Tally`), never once per connection.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# Descriptors the rest of the process needs besides the HTTP side: the relay connections, the
# database, templates, logs. The HTTP side takes at most a quarter of the limit.
_SHARE_OF_DESCRIPTORS = 4


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 100
    read_timeout: float = 10.0  # seconds for a request's headers and body to arrive
    keep_alive: float = 5.0  # seconds an idle connection is kept between requests

    def effective_connections(self) -> int:
        """`max_connections`, but never more than a quarter of the descriptors this process
        may open (`ulimit -n`), so the sending side always has the rest."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft // _SHARE_OF_DESCRIPTORS))


class Tally:
    """Counts events by kind and logs one WARNING line per `interval` seconds at most, so a
    flood costs a line a minute in the log instead of a line per event."""

    def __init__(self, what: str, interval: float = 60.0) -> None:
        self.what = what
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._flush: asyncio.TimerHandle | None = None

    MAX_KINDS = 1000  # beyond this many kinds in one period, the rest are counted together

    def add(self, kind: str, n: int = 1) -> None:
        if kind not in self.counts and len(self.counts) >= self.MAX_KINDS:
            kind = "(other)"
        self.counts[kind] = self.counts.get(kind, 0) + n
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            # The first event of a quiet period is logged at once; the rest when it ends.
            self.flush()
            self._flush = loop.call_later(self.interval, self._end_period)

    def _end_period(self) -> None:
        self._flush = None
        self.flush()

    def flush(self) -> None:
        if self.counts:
            ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
            parts = ", ".join(f"{n} {kind}" for kind, n in ranked[:10])
            if len(ranked) > 10:
                parts += f", and {sum(n for _, n in ranked[10:])} more of {len(ranked) - 10} kinds"
            log.warning("%s: %s", self.what, parts)
            self.counts.clear()


class _Waiting:
    """The connections whose request has not fully arrived, oldest first, with their timers."""

    def __init__(self) -> None:
        self.order: OrderedDict[H11Protocol, asyncio.TimerHandle] = OrderedDict()


def bounded_protocol(limits: HttpLimits, tally: Tally | None = None) -> type[H11Protocol]:
    """uvicorn's h11 protocol keeping `limits` (see the module docstring)."""
    max_connections = limits.effective_connections()
    waiting = _Waiting()
    counted = tally or Tally("http connections closed")

    class BoundedH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                oldest = next(iter(waiting.order), None)
                if oldest is None:  # every connection is being answered: this one waits outside
                    counted.add("over the connection limit")
                    transport.abort()
                    return
                counted.add("evicted for a newer connection (at the limit)")
                _close(oldest)
            self._wait()

        def connection_lost(self, exc: Exception | None) -> None:
            self._done_waiting()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                self._wait()
            else:
                self._done_waiting()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._wait()

        def _wait(self) -> None:
            if self not in waiting.order and not self.transport.is_closing():
                timer = self.loop.call_later(limits.read_timeout, self._read_timed_out)
                waiting.order[self] = timer

        def _done_waiting(self) -> None:
            timer = waiting.order.pop(self, None)
            if timer is not None:
                timer.cancel()

        def _read_timed_out(self) -> None:
            waiting.order.pop(self, None)
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                counted.add(f"request not received within {limits.read_timeout:g} s")
                _close(self)

    def _close(protocol: H11Protocol) -> None:
        timer = waiting.order.pop(protocol, None)
        if timer is not None:
            timer.cancel()
        protocol.transport.abort()  # frees the descriptor now; nothing is owed to this client

    return BoundedH11Protocol


def uvicorn_options(limits: HttpLimits) -> dict[str, Any]:
    """uvicorn's own bounds, matching ours: requests being answered at once (beyond them a
    503), the idle wait between requests, the largest header block, and the backlog, which
    is also how many connections asyncio accepts in one go before any can be closed (uvicorn's
    2,048 would take that many descriptors at once)."""
    connections = limits.effective_connections()
    return {
        "backlog": max(8, min(64, connections // 2)),
        "limit_concurrency": connections + 8,
        "timeout_keep_alive": limits.keep_alive,
        "h11_max_incomplete_event_size": 16 * 1024,
    }
