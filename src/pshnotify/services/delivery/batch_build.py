"""Turn a claimed batch into jobs: skip what the policy says no longer goes, build the rest.

Built on the event loop a few messages at a time: not in a thread, where a builder and the
loop take turns holding the GIL every 5 ms, and while the builder holds it no reply is read.
Kinds that read the database to build (the officers' report) build in a thread, through the
database guard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from sqlalchemy import Engine

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind, Outcome, State
from pshnotify.domain.errors import NothingToSend
from pshnotify.domain.program import Program
from pshnotify.mail import ics
from pshnotify.mail.build import BuildSpec, PassingFault, build_fault, build_or_fault
from pshnotify.mail.kinds import Recipient
from pshnotify.mail.links import RequestLinks, with_link
from pshnotify.mail.render import Templates
from pshnotify.services.delivery.attempt import Job, outcome_result
from pshnotify.store import outbox, standing
from pshnotify.store.programs import ProgramCache, StoredProgram
from pshnotify.store.retry import Guard, is_transient

# Messages built between two turns of the event loop (about 1 ms of work).
_BUILD_SLICE = 2

# Adds data read at send time to a message's context (the nightly report's rows, say).
Enricher = Callable[[Engine, StoredProgram, outbox.Claimed], dict[str, Any]]


class Builder:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        templates: Templates,
        programs: ProgramCache,
        guard: Guard,
        enrichers: Mapping[str, Enricher],
        envelope_sender: Callable[[outbox.Claimed], str],
        rules: policy.RetryRules,
        links: RequestLinks | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.templates = templates
        self.programs = programs
        self.guard = guard
        self.enrichers = dict(enrichers)
        self.envelope_sender = envelope_sender
        self.rules = rules
        self.links = links  # the personal link to the requests page, when one is set up
        ics.load_library()  # here, once, not on the loop in the middle of a batch

    async def build(
        self,
        batch: list[outbox.Claimed],
        rows: dict[tuple[int, int], Any],
        reminded: outbox.Reminded,
        lease_ends: float,
        paused: Mapping[tuple[int, int], str] | None = None,
    ) -> AsyncIterator[Job | outbox.Result]:
        """Each claimed message's job, or its final result (skipped, or a build fault).
        `paused`: (program, person) -> why a pending request holds their reminders."""
        now = self.clock.now()
        stale = policy.superseded(((c.program_id, c.person_id), Kind(c.kind), c.id) for c in batch)
        todo: list[tuple[outbox.Claimed, BuildSpec]] = []
        for c in batch:
            if c.id in stale:
                yield _skipped(c, now, policy.SUPERSEDED)
                continue
            decided = self._decide(c, rows, now, reminded, paused or {})
            if isinstance(decided, outbox.Result):
                yield decided
            elif c.kind in self.enrichers:
                yield await self.guard.call(self._enrich_and_build, c, decided, lease_ends)
            else:
                todo.append((c, decided))
        for i, (c, spec) in enumerate(todo):
            program = self.programs.get(c.program_id).program
            built = build_or_fault(self.templates, program, spec)
            yield self._job(c, built, lease_ends, spec.person.timezone)
            if i % _BUILD_SLICE == _BUILD_SLICE - 1:
                await asyncio.sleep(0)  # let the connections read their replies

    def _decide(
        self,
        claimed: outbox.Claimed,
        rows: dict[tuple[int, int], Any],
        now: dt.datetime,
        reminded: outbox.Reminded,
        paused: Mapping[tuple[int, int], str],
    ) -> BuildSpec | outbox.Result:
        """Skip a message the policy says no longer goes; else what it is built from."""
        stored = self.programs.get(claimed.program_id)
        row = rows.get((claimed.program_id, claimed.person_id or -1))
        standing = _standing(claimed, row, _days(stored.program, claimed, reminded, row))
        if standing is not None:
            held = paused.get((claimed.program_id, claimed.person_id or -1))
            standing = dataclasses.replace(standing, paused_for=held)
        skip = policy.skip_reason(
            stored.program, Kind(claimed.kind), standing, now, step=claimed.step
        )
        if skip:
            return _skipped(claimed, now, skip)
        person = (
            Recipient(row.external_id, row.name, row.email, row.department, row.timezone)
            if row
            else Recipient("", claimed.recipient_name, claimed.recipient_email, "")
        )
        return BuildSpec(
            kind=claimed.kind,
            wave_key=claimed.wave_key,
            person=person,
            to_name=claimed.recipient_name,
            to_address=claimed.recipient_email,
            message_id=claimed.message_id,
            date=now,
            deadline=row.extended_until if row else None,
            extra=with_link(
                self.links, stored.program, claimed.kind, person.external_id, claimed.context
            ),
        )

    def _enrich_and_build(
        self, claimed: outbox.Claimed, spec: BuildSpec, lease_ends: float
    ) -> Job | outbox.Result:
        stored = self.programs.get(claimed.program_id)
        try:
            extra = {**spec.extra, **self.enrichers[claimed.kind](self.engine, stored, claimed)}
        except NothingToSend as exc:  # a digest whose people have all caught up
            return _skipped(claimed, self.clock.now(), str(exc))
        except Exception as exc:
            if is_transient(exc):
                raise  # the database went away: the guard tries again
            return self._job(claimed, build_fault(exc), lease_ends)  # a data fault: kept
        spec = dataclasses.replace(spec, extra=extra)
        built = build_or_fault(self.templates, stored.program, spec)
        return self._job(claimed, built, lease_ends, spec.person.timezone)

    def _job(
        self,
        claimed: outbox.Claimed,
        data: bytes | str,
        lease_ends: float,
        zone: str | None = None,
    ) -> Job | outbox.Result:
        if isinstance(data, PassingFault):  # out of descriptors, a full disk: try again later
            now = self.clock.now()
            program = self.programs.get(claimed.program_id).program
            return outcome_result(
                claimed, now, Outcome.TRANSIENT, None, data, program, self.clock, self.rules, zone
            )
        if isinstance(data, str):  # a template or data fault: keep it visible, never resend
            now = self.clock.now()
            return outbox.Result(
                claimed, State.FAILED, "render", now, now, reply=data, attempted=False
            )
        return Job(claimed, self.envelope_sender(claimed), data, lease_ends, zone)


def _skipped(claimed: outbox.Claimed, now: dt.datetime, reason: str) -> outbox.Result:
    return outbox.Result(
        claimed, State.SKIPPED, "skipped", now, now, reason=reason, attempted=False
    )


def _days(
    program: Program, claimed: outbox.Claimed, reminded: outbox.Reminded, row: Any
) -> frozenset[dt.date]:
    """Local dates (the person's zone) on which another reminder of this person went out, or
    an earlier-queued one is due: this one, the later, is then skipped."""
    if claimed.kind != Kind.REMINDER.value or claimed.person_id is None:
        return frozenset()
    tz = policy.person_zone(program, row.timezone if row is not None else None)
    others = reminded.get((claimed.program_id, claimed.person_id), [])
    return standing.reminder_days(others, tz, before=claimed.id)


def _standing(
    claimed: outbox.Claimed, row: Any, reminded_on: frozenset[dt.date] = frozenset()
) -> policy.Standing | None:
    """The person's standing from their enrollment row (None: no longer enrolled), asked
    about the message's own wave."""
    if row is None:
        return None
    return standing.to_standing(row, wave_key=claimed.wave_key, reminded_on=reminded_on)
