"""Send no faster than the relay allows: at most N messages in any rolling second, minute, day,
or window of the relay's own length.

A sliding log per window (not a token bucket): a bucket lets a burst of its capacity through at
once, which a relay counting per rolling second answers with 4xx. A message holds a slot from
the moment it starts until one window after the relay's reply: the relay counts it somewhere in
between (Postfix at its MAIL FROM), so no window on the relay's side can ever see more than the
limit, whatever the latency. Every message counts, whatever its outcome (refused, reset, cut
off): the relay counted its MAIL FROM all the same. The cost is a rate a little under the limit
(by about latency/window). Real (monotonic) time: the relay's limits run on its clock, not the
rehearsal's.

Relays count in whole seconds. Postfix's anvil(8) counts a client's MAIL FROMs (refused ones
too) from the whole second of its first event, `start`, and resets the count at the first event
after `start + anvil_rate_time_unit`: the seconds `start` to `start + unit` both count, so its
"120 per 60 s" holds the MAIL FROMs of 61 real seconds. Every window of whole seconds is
therefore kept one second longer than it says (a minute as 61 s, a day as 86,401 s, a window of
the relay's as unit + 1 s), which costs a minute's rate 1.6%. The per-second limit is kept over
exactly one second (one more would halve it): it is for relays that measure finer than that,
and a Postfix relay's limit goes in the window of its own length (`Limits.per_window`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

# A window of whole seconds on the relay's side holds one second more (see above).
WHOLE_SECOND = 1.0


@dataclass(frozen=True)
class Limits:
    per_second: float | None = None
    per_minute: int | None = None
    per_day: int | None = None
    # The relay's own "N per unit": Postfix's smtpd_client_message_rate_limit per
    # anvil_rate_time_unit (whole seconds).
    per_window: int | None = None
    window_seconds: int = 60

    def windows(self) -> list[tuple[float, int]]:
        """(seconds, messages): at most that many messages in any rolling span that long."""
        out = []
        if self.per_second:
            # A fractional rate (0.5/s) is one message per 2 s.
            if self.per_second >= 1:
                out.append((1.0, int(self.per_second)))
            else:
                out.append((1.0 / self.per_second, 1))
        if self.per_minute:
            out.append((60.0 + WHOLE_SECOND, self.per_minute))
        if self.per_day:
            out.append((86400.0 + WHOLE_SECOND, self.per_day))
        if self.per_window:
            out.append((self.window_seconds + WHOLE_SECOND, self.per_window))
        return out


class RateLimiter:
    """Shared by every connection of a process; `acquire` before each message."""

    def __init__(self, limits: Limits, now: Callable[[], float] = time.monotonic) -> None:
        self._base = limits.windows()
        self._windows = [(span, cap, deque[float]()) for span, cap in self._base]
        self.share = 1
        self._now = now
        self._lock = asyncio.Lock()
        self._in_flight = 0
        self.waited = 0.0  # total seconds spent waiting, for the metrics

    @property
    def active(self) -> bool:
        return bool(self._windows)

    def set_share(self, senders: int) -> None:
        """Keep 1/senders of each limit: with every replica doing the same, the deployment as a
        whole stays under the relay's limit in any window. Not while n changes: a sender that
        joins cannot see what the others sent in the last window, nor those left what a sender
        that left did, so for one window after a change the whole can go one share over."""
        senders = max(1, senders)
        if senders == self.share:
            return
        self.share = senders
        windows = []
        for (span, cap), (_, _, log) in zip(self._base, self._windows, strict=True):
            if cap >= senders:
                windows.append((span, cap // senders, log))
            else:  # fewer messages than senders per window: stretch the window instead
                windows.append((span * senders / cap, 1, log))
        self._windows = windows

    @asynccontextmanager
    async def slot(self, wake: asyncio.Event | None = None) -> AsyncIterator[None]:
        """Hold a slot for one message: `async with limiter.slot(): await send(...)`.

        A wait ends early when `wake` is set (a stop): the caller then looks at its message
        again instead of waiting a minute, or a day, for a slot it will not use."""
        if not self._windows:
            yield
            return
        async with self._lock:  # first come, first served across connections
            while (delay := self._delay()) > 0:
                if wake is not None and wake.is_set():
                    break
                self.waited += delay
                await _sleep_or_wake(delay, wake)
            self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            stamp = self._now()
            for _, _, log in self._windows:
                log.append(stamp)

    def _delay(self) -> float:
        now = self._now()
        delay = 0.0
        for span, cap, log in self._windows:
            while log and log[0] <= now - span:
                log.popleft()
            if len(log) + self._in_flight >= cap:
                # Wait for the oldest finished message to leave the window; with none finished
                # yet, poll briefly for an in-flight one to finish.
                delay = max(delay, log[0] + span - now if log else 0.005)
        return delay


async def _sleep_or_wake(delay: float, wake: asyncio.Event | None) -> None:
    if wake is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), delay)
