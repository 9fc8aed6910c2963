"""Throttling of failed authentication, per client address.

Without it a guesser could try thousands of xAPI passwords or webhook signatures a second, and
the right one worked at once. After `limit` failures within `window` seconds an address is
answered 429 with `Retry-After` (even with the right credentials) until its oldest failure in
the window has aged out. Failures are logged in aggregate (a line per minute, `Tally`).

`FailureThrottle` is the rule, usable by any endpoint (the console's sign-in, say);
`ThrottleMiddleware` applies it to every path of an ASGI app but the `exempt` ones (a
monitor's `/healthz`): a request answered 401 counts as a failure.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Any

from pshnotify.web.bounds import Tally

Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]


class FailureThrottle:
    """Failures per key (a client address) in a sliding window; bounded memory."""

    def __init__(
        self,
        limit: int = 10,
        window: float = 60.0,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        tally: Tally | None = None,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self.tally = tally or Tally("authentication failures")
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, key: str) -> int | None:
        """Seconds until `key` may try again, or None when it may try now."""
        times = self._recent(key)
        if times is None or len(times) < self.limit:
            return None
        wait = times[-self.limit] + self.window - self.clock()
        return max(1, math.ceil(wait))

    def failed(self, key: str, what: str | None) -> None:
        """A failure of `key`; `what` is tallied for the log (None: the caller logs it)."""
        now = self.clock()
        times = self._recent(key)
        if times is None:
            times = self._failures[key] = deque(maxlen=self.limit)
            while len(self._failures) > self.max_keys:  # forget the longest-quiet address
                self._failures.popitem(last=False)
        times.append(now)
        self._failures.move_to_end(key)
        if what is not None:
            self.tally.add(f"{what} from {key}")

    def refused(self, key: str, what: str | None) -> None:
        if what is not None:
            self.tally.add(f"{what} from {key} answered 429")

    def _recent(self, key: str) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times


class ThrottleMiddleware:
    """Answers 429 to an address over the limit; counts the 401 answers. The `logged` paths'
    401s count alike but are not logged here: the app logs them itself (the console's sign-in,
    one line a failure)."""

    def __init__(
        self,
        app: ASGIApp,
        throttle: FailureThrottle,
        exempt: Iterable[str] = (),
        logged: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.throttle = throttle
        self.exempt = frozenset(exempt)
        self.logged = frozenset(logged)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        key = str(client[0]) if client else "unknown"
        path = scope["path"]
        wait = self.throttle.retry_after(key)
        if wait is not None:
            self.throttle.refused(key, path)
            await _too_many(send, wait)
            return

        async def watching(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.throttle.failed(key, None if path in self.logged else f"401 on {path}")
            await send(message)

        await self.app(scope, receive, watching)


async def _too_many(send: Send, wait: int) -> None:
    body = json.dumps(
        {"error": f"too many failed attempts from this address; retry after {wait} s"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(wait).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
