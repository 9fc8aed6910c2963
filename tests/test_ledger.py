"""The ledger's pace: a write gathers what the connections bring while they send, and no
connection sends the message after next before its result is written.

Real asyncio timing with a writer that only records (the ledger is given a function to write
with; the database's own writes are tested against SQLite and PostgreSQL elsewhere).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import statistics

import pytest

from pshnotify.domain.delivery import State
from pshnotify.services.delivery.ledger import Ledger
from pshnotify.store.outbox import Claimed, Result

pytestmark = pytest.mark.fast  # no server: `make test-fast`

NOW = dt.datetime(2023, 9, 11, 14, 0, tzinfo=dt.UTC)


def result(message_id: int) -> Result:
    claimed = Claimed(
        id=message_id,
        program_id=1,
        person_id=message_id,
        kind="launch",
        wave_key="pilot",
        step="",
        message_id=f"<{message_id}@test.invalid>",
        recipient_email=f"p{message_id}@example.edu",
        recipient_name=f"Person {message_id}",
        context={},
        attempts=0,
        first_attempt_at=None,
        lease_token="token",
    )
    return Result(claimed, State.SENT, "sent", NOW, NOW, code=250, reply="OK")


def test_a_write_carries_the_results_of_several_connections_and_the_rule_holds() -> None:
    connections, each, send_s, write_s = 4, 12, 0.03, 0.003
    groups: list[list[int]] = []
    written: set[int] = set()
    broken: list[str] = []

    async def write(results: list[Result]) -> None:
        await asyncio.sleep(write_s)
        groups.append([r.message.id for r in results])
        written.update(r.message.id for r in results)

    async def sender(ledger: Ledger, index: int) -> None:
        await asyncio.sleep(index * send_s / connections)  # the connections out of step
        for k in range(each):
            await ledger.ready(index)
            if k >= 2 and (index, k - 2) not in {(i // 100, i % 100) for i in written}:
                broken.append(f"connection {index} sent {k} before {k - 2} was written")
            await asyncio.sleep(send_s)
            ledger.add(result(index * 100 + k), index)

    async def drain() -> None:
        ledger = Ledger(write, connections)
        recorder = asyncio.create_task(ledger.run())
        await asyncio.gather(*(sender(ledger, i) for i in range(connections)))
        ledger.close()
        await recorder

    asyncio.run(drain())
    assert not broken
    assert sorted(i for g in groups for i in g) == sorted(
        i * 100 + k for i in range(connections) for k in range(each)
    )  # every result written, once
    # A fixed 2 ms gather wrote each result alone here (the sends end 7.5 ms apart); the pace
    # waits for most of a send, so a write carries the results of several connections.
    assert statistics.mean(len(g) for g in groups) >= 2.5, groups
