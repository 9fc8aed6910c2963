"""The benchmark's SMTP sink: an aiosmtpd server in its own process that only counts.

In its own process so that the sink's CPU is not taken from the sender being measured (in the
benchmark's process it capped both the pipeline and the bare loop near 1,100 msg/s). With
`per_second`, it also behaves like a relay with a published limit: it accepts at most that
many messages in any rolling second and answers 451 to the rest, counting them.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
from collections import deque
from typing import Any

from aiosmtpd.smtp import SMTP

HOST = "127.0.0.1"


class _Counting:
    def __init__(self, accepted: Any, refused: Any, per_second: int | None) -> None:
        self.accepted, self.refused, self.per_second = accepted, refused, per_second
        self._recent: deque[float] = deque()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        if self.per_second:
            now = time.monotonic()
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.per_second:
                self.refused.value += 1
                return "451 4.7.0 rate limit exceeded, try again later"
            self._recent.append(now)
        self.accepted.value += 1
        return "250 OK"


def _serve(ready: Any, accepted: Any, refused: Any, per_second: int | None) -> None:
    loop = asyncio.new_event_loop()
    handler = _Counting(accepted, refused, per_second)
    # A fixed greeting name: otherwise every session calls socket.getfqdn().
    server = loop.run_until_complete(
        loop.create_server(lambda: SMTP(handler, hostname="sink.bench.invalid"), HOST, 0)
    )
    ready.send(server.sockets[0].getsockname()[1])
    ready.close()
    loop.run_forever()


class Sink:
    """Start with `with Sink() as sink:`; `sink.port`, `sink.count`, `sink.refused`."""

    def __init__(self, per_second: int | None = None) -> None:
        ctx = mp.get_context("spawn")
        # Shared counters without a lock: only the sink's one thread writes them.
        self._accepted: Any = ctx.RawValue("q", 0)
        self._refused: Any = ctx.RawValue("q", 0)
        self._recv, send = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_serve,
            args=(send, self._accepted, self._refused, per_second),
            daemon=True,
            name="smtp-sink",
        )
        self.port = 0

    @property
    def count(self) -> int:
        return int(self._accepted.value)

    @property
    def refused(self) -> int:
        return int(self._refused.value)

    def cpu_seconds(self) -> float:
        """CPU time the sink process has used (Linux /proc; NaN elsewhere)."""
        try:
            with open(f"/proc/{self._process.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Sink:
        self._process.start()
        if not self._recv.poll(30):
            self._process.kill()
            raise RuntimeError("the SMTP sink did not start within 30 s")
        self.port = int(self._recv.recv())
        return self

    def __exit__(self, *exc: object) -> None:
        self._process.kill()
        self._process.join(10)
