"""`run --once` starts its sender only when the outbox holds something to send (issue 29): the
question it asks says yes for a message due, waiting to be retried, or claimed (a stopped
sender's, to take back), and no once all of it went or waits for a later instant; a pass
with something due still sends it."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from sqlalchemy import update

from pshnotify.clock import FixedClock
from pshnotify.runtime.daemon import once
from pshnotify.runtime.wiring import Runtime
from pshnotify.store import outbox
from pshnotify.store.schema import messages
from tests.smtp_server import SmtpServer
from tests.test_launch_and_send import launch, setup_pilot


def test_a_pass_starts_its_sender_only_for_something_to_send(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path, clock: FixedClock
) -> None:
    setup_pilot(runtime, tmp_path)
    engine, now = runtime.engine, clock.now()
    assert not outbox.anything_to_send(engine, now)
    assert launch(runtime) == 3
    assert outbox.anything_to_send(engine, now)  # due now
    assert not outbox.anything_to_send(engine, now - dt.timedelta(days=1))  # not yet

    _, sent = asyncio.run(once(runtime))
    assert sent.outcomes == {"sent": 3}
    assert len(smtp.messages()) == 3
    assert not outbox.anything_to_send(engine, now)
    _, sent = asyncio.run(once(runtime))  # nothing to send: no sender, the same answer
    assert (sent.claimed, dict(sent.outcomes)) == (0, {})

    for state in ("retry", "claimed"):
        with engine.begin() as conn:
            first = conn.scalar(messages.select().with_only_columns(messages.c.id).limit(1))
            conn.execute(update(messages).where(messages.c.id == first).values(state=state))
        assert outbox.anything_to_send(engine, now), state
        with engine.begin() as conn:
            conn.execute(update(messages).where(messages.c.id == first).values(state="sent"))
