"""The daemon: APScheduler is only the alarm clock; the database says what is due.

Every `interval` seconds one pass runs: the scheduler's pass (queue what came due, nightly
reports) then the dispatcher (send what is due). Nothing per message lives in the scheduler,
so nothing grows with the roster and nothing is lost on restart: a pass after downtime sees
everything that came due meanwhile and applies the catch-up rules.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from collections.abc import Sequence
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.schedule import NightlyJob, PassReport, run_pass
from pshnotify.services.delivery.dispatch import Dispatcher, DispatchReport
from pshnotify.store import outbox
from pshnotify.store.receipts import prune_receipts
from pshnotify.store.retry import DatabaseUnavailableError, Guard


async def one_pass(
    rt: Runtime, dispatcher: Dispatcher, nightly: Sequence[NightlyJob] = ()
) -> tuple[PassReport, DispatchReport]:
    """Exactly what the daemon does at one instant."""
    queued = await _schedule(rt, dispatcher.guard, nightly)
    sent = await dispatcher.run_once()
    await asyncio.to_thread(prune_receipts, rt.engine, rt.clock.wall())
    return queued, sent


async def once(
    rt: Runtime, nightly: Sequence[NightlyJob] = ()
) -> tuple[PassReport, DispatchReport]:
    """`run --once`: the daemon's pass, its sender started only when the outbox holds
    something to send (`outbox.anything_to_send`: due, or claimed). Starting it checks every
    template and takes the sending lock; a pass with nothing to send (the daemon's pass a
    minute after the nightly reports, say) needs neither, and costs its queries alone."""
    guard = rt.db_guard()
    queued = await _schedule(rt, guard, nightly)
    if await guard.call(outbox.anything_to_send, rt.engine, rt.clock.now()):
        dispatcher = rt.dispatcher(guard)
        try:
            sent = await dispatcher.run_once()
        finally:
            await dispatcher.release()
    else:
        sent = DispatchReport()
    await asyncio.to_thread(prune_receipts, rt.engine, rt.clock.wall())
    return queued, sent


async def _schedule(rt: Runtime, guard: Guard, nightly: Sequence[NightlyJob]) -> PassReport:
    """Read the bounces, then queue what came due."""
    try:  # first: a bounce read now stops what is due to a dead address
        await asyncio.to_thread(rt.scan_bounces)
    except Exception:  # a mailbox that is down must not stop the sending
        logging.getLogger(__name__).exception("bounce scan failed; the next pass tries again")
    return await guard.call(run_pass, rt.engine, rt.clock, rt.settings.message_id_domain, nightly)


class Daemon:
    def __init__(
        self, rt: Runtime, interval: float, log: logging.Logger, nightly: Sequence[NightlyJob] = ()
    ) -> None:
        self.rt = rt
        self.interval = interval
        self.log = log
        self.nightly = nightly
        self.stop = asyncio.Event()
        self._current: asyncio.Task[Any] | None = None
        # Since when every attempt has failed, and when that was last said at ERROR: on the
        # runtime's clock, as the retries' backoff is, so a rehearsal's hours are the same hours.
        self._refused_since: dt.datetime | None = None
        self._refusal_told: dt.datetime | None = None

    # The relay refusing everything this long is an alarm (logged at ERROR, then hourly).
    RELAY_ALARM_AFTER = dt.timedelta(hours=1)

    async def serve(self, extra_tasks: Sequence[Any] = ()) -> None:
        # Checks settings, programs and templates first. The daemon waits for a database that
        # went away as long as it takes (until a stop), logging when it goes and returns.
        dispatcher = self.rt.dispatcher(self.rt.db_guard(daemon=True))
        await dispatcher.claim_sending()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        scheduler = AsyncIOScheduler(event_loop=loop, timezone="UTC")
        scheduler.add_job(
            self._tick,
            "interval",
            args=[dispatcher],
            seconds=self.interval,
            next_run_time=self.rt.clock.wall(),
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            id="pass",
        )
        scheduler.start()
        tasks = [asyncio.ensure_future(t) for t in extra_tasks]
        try:
            await self.stop.wait()
        finally:
            scheduler.shutdown(wait=False)
            dispatcher.stopping.set()
            if self._current is not None:
                await asyncio.gather(self._current, return_exceptions=True)
            for t in tasks:
                await asyncio.gather(t, return_exceptions=True)
            await dispatcher.release()
            self.log.info("stopped", extra={"reason": "signal"})

    def _on_signal(self, sig: signal.Signals) -> None:
        self.log.info("stopping: finishing what is in flight", extra={"signal": sig.name})
        self.stop.set()

    async def _tick(self, dispatcher: Dispatcher) -> None:
        # A coroutine, so APScheduler runs it on our loop; the pass itself is a task we can
        # wait for on shutdown, and a pass still running makes this alarm a no-op.
        if self.stop.is_set() or (self._current is not None and not self._current.done()):
            return
        self._current = asyncio.get_running_loop().create_task(self._pass(dispatcher))

    async def _pass(self, dispatcher: Dispatcher) -> None:
        try:
            queued, sent = await one_pass(self.rt, dispatcher, self.nightly)
        except DatabaseUnavailableError as exc:
            # The daemon waits for its database as long as it takes: this comes of a stop while
            # it was away, which the log has said already. One line, not the pipeline's tasks.
            self.log.warning("pass ended by the stop: %s", exc)
            return
        except Exception:
            self.log.exception("pass failed; the next pass retries")
            return
        if sent.problem:
            self.log.error(sent.problem)
        self._watch_relay(sent)
        if queued.queued or queued.skipped or sent.claimed:
            self.log.info(
                "pass",
                extra={"at": self.rt.clock.now().isoformat(), **queued.as_dict(), **sent.as_dict()},
            )

    def _watch_relay(self, sent: DispatchReport) -> None:
        """Say so at ERROR when the relay has accepted nothing for an hour (every attempt of
        every pass since failed), and again each hour it lasts."""
        if sent.attempts.get("sent"):
            if self._refused_since is not None:
                self.log.warning("the relay accepts messages again")
            self._refused_since = self._refusal_told = None
            return
        if not sent.all_failed:
            return
        now = self.rt.clock.now()
        if self._refused_since is None:
            self._refused_since = now
        refused_for = now - self._refused_since
        told = self._refusal_told
        if refused_for >= self.RELAY_ALARM_AFTER and (
            told is None or now - told >= self.RELAY_ALARM_AFTER
        ):
            self._refusal_told = now
            self.log.error(
                "the relay has refused every message for %.0f minutes; check the relay and "
                "`pshnotify messages --state deferred` for its replies",
                refused_for.total_seconds() / 60,
            )
