"""The rate limiter on a clock of its own: when each message may start, to the second, for the
relay's per-second, per-minute, per-day and own-window limits (the wall-clock rate against a
real relay is the benchmark's, bench/run.py)."""

from __future__ import annotations

import asyncio

import pytest

from pshnotify.mail import ratelimit
from pshnotify.mail.ratelimit import Limits, RateLimiter

pytestmark = pytest.mark.fast  # no server: `make test-fast`


class FakeTime:
    """Monotonic seconds that pass only when the limiter waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float, _wake: asyncio.Event | None) -> None:
        self.now += delay


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(ratelimit, "_sleep_or_wake", fake.sleep)
    return fake


def starts(limits: Limits, fake: FakeTime, count: int, senders: int = 1) -> list[float]:
    """When each of `count` messages, sent one after another, got its slot."""
    limiter = RateLimiter(limits, now=fake)
    limiter.set_share(senders)
    out: list[float] = []

    async def send_all() -> None:
        for _ in range(count):
            async with limiter.slot():
                out.append(fake.now)

    asyncio.run(send_all())
    return out


def test_per_second_the_first_seconds_allowance_goes_at_once_then_one_second_each(
    fake: FakeTime,
) -> None:
    got = starts(Limits(per_second=25), fake, 150)
    assert got == [float(k // 25) for k in range(150)]  # 25 a second, the last at 5 s


def test_per_minute_is_kept_over_61_seconds(fake: FakeTime) -> None:
    """A relay counting whole seconds holds a minute's messages for 61 of them."""
    got = starts(Limits(per_minute=100), fake, 250)
    assert got == [61.0 * (k // 100) for k in range(250)]


def test_per_day_is_kept_over_a_day_and_a_second(fake: FakeTime) -> None:
    got = starts(Limits(per_day=3), fake, 7)
    assert got == [0.0, 0.0, 0.0, 86401.0, 86401.0, 86401.0, 172802.0]


def test_the_tightest_of_several_limits_wins(fake: FakeTime) -> None:
    got = starts(Limits(per_second=10, per_minute=15), fake, 30)
    assert got[:10] == [0.0] * 10
    assert got[10:15] == [1.0] * 5  # the minute's 15 reached in the second second
    assert got[15] == 61.0


def test_a_relays_own_window_and_a_replicas_share(fake: FakeTime) -> None:
    """Postfix's 50 per 10 s unit is kept over 11 s; with two live senders each keeps 25."""
    assert starts(Limits(per_window=50, window_seconds=10), fake, 60)[50] == 11.0
    fake.now = 0.0
    assert starts(Limits(per_window=50, window_seconds=10), fake, 60, senders=2)[25] == 11.0
