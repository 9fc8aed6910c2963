"""Sign-in throttling: after repeated failures for a login (or from an address), refuse more
tries for a while, so passwords cannot be guessed at the speed of the server.

In memory, per process: a restart forgets, and each replica counts its own (an attacker
spread over n replicas gets n times the tries: still hours per thousand guesses). The
console needs only the `Throttle` protocol, so a shared implementation can replace this one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol


class Throttle(Protocol):
    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until these keys may try again; 0 if they may now."""
        ...

    def failed(self, keys: Iterable[str]) -> None: ...

    def succeeded(self, keys: Iterable[str]) -> None: ...


@dataclass
class FailureWindow:
    """At most `limit` failures per key within `window` seconds; a key with `limit` failures
    waits until the oldest of them leaves the window. A key is "kind:value"; `limits` gives a
    kind its own limit (an address may be a whole office behind one NAT: more tries)."""

    limit: int = 5
    limits: dict[str, int] = field(default_factory=lambda: {"address": 30})
    window: float = 900.0
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 100_000  # memory bound under a spray of logins; oldest keys go first
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, keys: Iterable[str]) -> float:
        now = self.clock()
        wait = 0.0
        for key in keys:
            q = self._trim(key, now)
            if q is not None and len(q) >= self._limit(key):
                wait = max(wait, q[0] + self.window - now)
        return wait

    def failed(self, keys: Iterable[str]) -> None:
        now = self.clock()
        for key in keys:
            q = self._trim(key, now)
            if q is None:
                if len(self._failures) >= self.max_keys:
                    self._failures.pop(next(iter(self._failures)))
                q = self._failures[key] = deque(maxlen=self._limit(key))
            q.append(now)

    def succeeded(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _limit(self, key: str) -> int:
        return self.limits.get(key.partition(":")[0], self.limit)

    def _trim(self, key: str, now: float) -> deque[float] | None:
        q = self._failures.get(key)
        if q is None:
            return None
        while q and q[0] + self.window <= now:
            q.popleft()
        if not q:
            del self._failures[key]
            return None
        return q
