"""The one clock. Every decision about "now" asks a Clock; nothing else reads the system time.

`now()` is the business instant (may be a rehearsal instant set with `--now`); `wall()` is the
real time, used only for leases, which measure whether a process is alive and so must advance
in real time even while a rehearsal sits at a fixed instant, and for the audit log's record of
when an action really happened (a rehearsal's instant is kept beside it).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime: ...

    def wall(self) -> dt.datetime: ...


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SystemClock:
    """Real time."""

    def now(self) -> dt.datetime:
        return _utc_now()

    def wall(self) -> dt.datetime:
        return _utc_now()


class FixedClock:
    """A fixed instant, for `--now` with `--once` and for tests; `advance` moves it."""

    def __init__(self, at: dt.datetime) -> None:
        self._at = ensure_aware(at)

    def now(self) -> dt.datetime:
        return self._at

    def wall(self) -> dt.datetime:
        return _utc_now()

    def advance(self, delta: dt.timedelta) -> None:
        self._at += delta

    def set(self, at: dt.datetime) -> None:
        self._at = ensure_aware(at)


class ShiftedClock:
    """Starts at a chosen instant and advances in real time (`run --now T`, demos)."""

    def __init__(self, start: dt.datetime) -> None:
        self._start = ensure_aware(start)
        self._t0 = time.monotonic()

    def now(self) -> dt.datetime:
        return self._start + dt.timedelta(seconds=time.monotonic() - self._t0)

    def wall(self) -> dt.datetime:
        return _utc_now()


def ensure_aware(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError(
            f"{at.isoformat()} has no UTC offset; write it like "
            "2023-09-11T09:30:00-04:00 or 2023-09-11T13:30:00Z"
        )
    return at.astimezone(dt.UTC)


def parse_instant(text: str) -> dt.datetime:
    """Parse an ISO-8601 instant with its offset (`Z` accepted)."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO-8601 instant; write it like 2023-09-11T09:30:00-04:00"
        ) from None
    return ensure_aware(value)
