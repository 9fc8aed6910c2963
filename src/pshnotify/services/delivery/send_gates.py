"""The last look before a claimed message leaves: its lease, a pause, working hours, a stop.

A message waits in the pipeline (and maybe for a rate-limit slot) after it was claimed, so
what was true at the claim is checked again here. The pause is read from a cache at most a
second old (a pause stops a drain within a second, not at the end of a batch), and working
hours are worked out once a minute per program, not per message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass

from sqlalchemy import Engine

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind
from pshnotify.store import outbox
from pshnotify.store import programs as program_repo
from pshnotify.store.programs import ProgramCache
from pshnotify.store.retry import Guard


@dataclass(frozen=True)
class Hold:
    """Why a message does not go now. `result`: what to record (None: leave it claimed)."""

    result: outbox.Result | None


class Gates:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        programs: ProgramCache,
        guard: Guard,
        lease: dt.timedelta,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.programs = programs
        self.guard = guard
        self.lease = lease
        self._paused: set[tuple[int, str | None]] = set()
        self._paused_at = float("-inf")
        self._reading = asyncio.Lock()  # one read for all the connections that find it old
        self._openings: dict[tuple[int, str | None, dt.datetime], dt.datetime] = {}

    async def check(
        self, claimed: outbox.Claimed, lease_ends: float, stop: bool, zone: str | None = None
    ) -> Hold | None:
        """None if the message may go now; else why not (and what to record)."""
        if time.monotonic() >= lease_ends - self.lease.total_seconds() / 10:
            # Near its lease's end (a tenth is kept for the send itself) another worker may
            # take it: sending it too would duplicate it. Left claimed; the lease runs out.
            return Hold(None)
        if stop or await self._is_paused(claimed):
            return Hold(released(claimed, self.clock.now()))
        opening = self._closed_until(claimed, zone)
        if opening is not None:  # claimed just before the end of working hours
            return Hold(released(claimed, self.clock.now(), due_at=opening))
        return None

    async def _is_paused(self, claimed: outbox.Claimed) -> bool:
        if time.monotonic() - self._paused_at > 1.0:
            async with self._reading:
                if time.monotonic() - self._paused_at > 1.0:  # nobody read it meanwhile
                    self._paused = await self.guard.call(self._read_paused)
                    self._paused_at = time.monotonic()
        paused = self._paused
        return (claimed.program_id, None) in paused or (
            claimed.program_id,
            claimed.wave_key,
        ) in paused

    def _read_paused(self) -> set[tuple[int, str | None]]:
        with self.engine.connect() as conn:
            return program_repo.paused_scopes(conn)

    def _closed_until(self, claimed: outbox.Claimed, zone: str | None) -> dt.datetime | None:
        """When working hours reopen in the person's zone, if they have closed since this
        message was claimed (a long drain that started at 16:55); None while they are open."""
        kind = Kind(claimed.kind)
        if not kind.held_to_working_hours:
            return None
        now = self.clock.now()
        minute = now.replace(second=0, microsecond=0)
        key = (claimed.program_id, zone, minute)
        if key not in self._openings:
            if len(self._openings) > 64:
                self._openings.clear()  # the minutes gone by
            program = self.programs.get(claimed.program_id).program
            tz = policy.person_zone(program, zone)
            self._openings[key] = policy.held_until(program, kind, minute, tz) or minute
        opening = self._openings[key]
        return opening if opening > now else None


def released(
    claimed: outbox.Claimed, now: dt.datetime, due_at: dt.datetime | None = None
) -> outbox.Result:
    """A claimed message handed back unsent: it waits as it did before the claim."""
    state = policy.released(claimed.attempts)
    return outbox.Result(claimed, state, "released", now, now, due_at=due_at, attempted=False)
