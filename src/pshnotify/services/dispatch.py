"""Send what is due: claim a batch, render and compose it, send it, record every outcome."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Integer, and_, select

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind, Outcome, State
from pshnotify.domain.errors import (
    ConflictError,
    NothingToSend,
    OutcomeUnknownError,
    PermanentDeliveryError,
    RelayLoginError,
    TransientDeliveryError,
)
from pshnotify.mail.build import BuildSpec, PassingFault, build_fault, build_or_fault
from pshnotify.mail.kinds import Recipient
from pshnotify.mail.ratelimit import Limits, RateLimiter
from pshnotify.mail.render import Templates
from pshnotify.mail.transport import SmtpConnection
from pshnotify.store import locks, outbox
from pshnotify.store import people as people_repo
from pshnotify.store.db import is_postgresql, is_sqlite
from pshnotify.store.programs import StoredProgram, load_program_by_id
from pshnotify.store.schema import enrollments, messages, people, programs, undeliverable, waves
from pshnotify.store.sql import among

# How long a sender counts as alive for sharing the rate limits after its last claim.
SENDER_HEARTBEAT = dt.timedelta(seconds=15)

# A wait for a rate-limit slot longer than this (seconds) checks the message again.
_SLOT_WAIT_RECHECK = 0.1

# Messages built between two turns of the event loop (about 1 ms of work).
_BUILD_SLICE = 2

# Adds data read at send time to a message's context (the nightly report's rows, say).
Enricher = Callable[[Engine, StoredProgram, outbox.Claimed], dict[str, Any]]


@dataclass(frozen=True)
class DispatchConfig:
    worker: str
    envelope_from: str | None = None
    batch_size: int = 200
    lease: dt.timedelta = dt.timedelta(minutes=5)
    max_attempts: int = 8
    max_age: dt.timedelta = dt.timedelta(hours=96)  # from the first attempt
    unknown_policy: str = "resend"  # resend (same Message-ID) | hold
    # A per-message envelope sender (VERP, services.bounces) from the message's row id.
    bounce_sender: Callable[[int], str] | None = None

    @property
    def retry_rules(self) -> policy.RetryRules:
        return policy.RetryRules(self.max_attempts, self.max_age, self.unknown_policy)


@dataclass
class DispatchReport:
    claimed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problem: str | None = None  # why the drain stopped early: a setting to fix
    # Why messages were deferred or failed: the relay's replies (or the connection's fault),
    # grouped, with the setting to check where the cause is the configuration.
    replies: Counter[tuple[str, str]] = field(default_factory=Counter)

    def note(self, result: outbox.Result) -> None:
        self.outcomes[result.state.value] += 1
        if result.state in (State.RETRY, State.FAILED, State.UNKNOWN) and result.reply:
            reply = f"{result.code or ''} {result.reply}".strip()[:200]
            self.replies[(result.state.value, reply)] += 1

    def why(self) -> list[dict[str, Any]]:
        return [
            {"state": state, "reply": reply, "messages": n, "check": setting_to_check(reply)}
            for (state, reply), n in self.replies.most_common()
        ]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "claimed": self.claimed,
            "outcomes": dict(sorted(self.outcomes.items())),
        }
        if self.replies:
            out["why"] = self.why()
        if self.problem:
            out["problem"] = self.problem
        return out


# Replies whose cause is this side's configuration, and the setting to check.
_SETTINGS = (
    (
        "STARTTLS",
        "PSHNOTIFY_SMTP_TLS: starttls was asked for and the relay does not offer it "
        "(none for a relay without TLS, tls for implicit TLS on port 465)",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "PSHNOTIFY_SMTP_CA_FILE: the relay's certificate is not trusted (give its CA bundle)",
    ),
    (
        "WRONG_VERSION_NUMBER",
        "PSHNOTIFY_SMTP_TLS: tls (implicit) against a port that speaks "
        "plain SMTP (use starttls, or port 465)",
    ),
    ("Connection refused", "PSHNOTIFY_SMTP_HOST and PSHNOTIFY_SMTP_PORT: nothing listens there"),
    ("Name or service not known", "PSHNOTIFY_SMTP_HOST: the name does not resolve"),
)


def setting_to_check(reply: str) -> str | None:
    """The setting to check when a reply shows the cause is our configuration, not the
    message."""
    return next((setting for mark, setting in _SETTINGS if mark.lower() in reply.lower()), None)


@dataclass
class _Job:
    claimed: outbox.Claimed
    sender: str
    data: bytes
    zone: str | None = None  # the person's own (working hours, retries); None: the program's


class Dispatcher:
    """Drains due messages over a set of SMTP connections until nothing is due."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        templates: Templates,
        connections: list[SmtpConnection],
        config: DispatchConfig,
        enrichers: Mapping[str, Enricher] | None = None,
        limiter: RateLimiter | None = None,
        observe_send: Callable[[float], None] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.templates = templates
        self.connections = connections
        self.config = config
        self.enrichers = dict(enrichers or {})
        self.limiter = limiter or RateLimiter(Limits())
        self.observe_send = observe_send
        self._paused: set[tuple[int, str | None]] = set()
        self._paused_at = float("-inf")
        self._programs: dict[int, StoredProgram] = {}
        self._openings: dict[tuple[int, str | None, dt.datetime], dt.datetime] = {}
        self.stopping = asyncio.Event()
        self.problem: str | None = None  # set when every relay refused our login

    async def run_once(self, on_progress: Callable[[int], None] | None = None) -> DispatchReport:
        """Drain everything due, as a pipeline: while the connections send one batch, the next
        is claimed and built, and finished results are recorded every ~100 ms."""
        report = DispatchReport()
        self.problem = None
        await asyncio.to_thread(self._single_dispatcher)
        jobs: asyncio.Queue[_Job | None] = asyncio.Queue(maxsize=2 * self.config.batch_size)
        results: list[outbox.Result] = []
        senders_done = asyncio.Event()
        recorder = asyncio.create_task(self._recorder(results, senders_done, report))
        try:
            senders = [
                asyncio.create_task(self._sender(c, jobs, results)) for c in self.connections
            ]
            await self._producer(jobs, results, report, on_progress)
            await asyncio.gather(*senders)
        finally:
            senders_done.set()
            await recorder
            await asyncio.gather(*(c.close() for c in self.connections))
            if self.limiter.active:
                await asyncio.to_thread(self._leave)
        report.problem = self.problem
        return report

    async def _producer(
        self,
        jobs: asyncio.Queue[_Job | None],
        results: list[outbox.Result],
        report: DispatchReport,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        try:
            while not self.stopping.is_set() and self.problem is None:
                if self.limiter.active:
                    self.limiter.set_share(await asyncio.to_thread(self._senders_alive))
                batch, rows, reminded = await asyncio.to_thread(self._claim)
                if not batch:
                    break
                report.claimed += len(batch)
                async for item in self._build(batch, rows, reminded):
                    if isinstance(item, outbox.Result):
                        results.append(item)
                    else:
                        await jobs.put(item)
                if on_progress:
                    on_progress(len(batch))
        finally:
            for _ in self.connections:
                await jobs.put(None)  # one "no more" per sender

    async def _recorder(
        self, results: list[outbox.Result], senders_done: asyncio.Event, report: DispatchReport
    ) -> None:
        while True:
            finished = senders_done.is_set()
            if results:
                taken = results[:]
                del results[: len(taken)]
                await asyncio.to_thread(self._record, taken)
                for r in taken:
                    report.note(r)
            if finished:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(senders_done.wait(), 0.1)

    # -- database side (run in a thread: the event loop keeps sending meanwhile) --------------
    async def release(self) -> None:
        """Let another process send from this SQLite database (at exit)."""
        if is_sqlite(self.engine):
            await asyncio.to_thread(self._release_lock)

    def _release_lock(self) -> None:
        with self.engine.begin() as conn:
            locks.release(conn, "dispatch", self.config.worker)

    async def claim_sending(self) -> None:
        """At start: refuse clearly if another process is sending from this SQLite file."""
        await asyncio.to_thread(self._single_dispatcher)

    def _single_dispatcher(self) -> None:
        """SQLite has one writer: one dispatching process per database, and it says so."""
        if not is_sqlite(self.engine):
            return  # PostgreSQL: replicas share the work through SKIP LOCKED claims
        wall = self.clock.wall()
        with self.engine.begin() as conn:
            if locks.acquire(conn, "dispatch", self.config.worker, wall, self.config.lease):
                return
            held = locks.holder(conn, "dispatch")
            if held and not _alive(held[0]):
                locks.release(conn, "dispatch", held[0])
                if locks.acquire(conn, "dispatch", self.config.worker, wall, self.config.lease):
                    return
        owner, until = held if held else ("?", wall)
        raise ConflictError(
            f"another pshnotify process ({owner}) is sending from this SQLite database "
            f"(lease until {until:%H:%M:%S} UTC); SQLite supports one sending process",
            hint="stop the other process, or use PostgreSQL (PSHNOTIFY_DATABASE_URL) to run "
            "several",
        )

    def _senders_alive(self) -> int:
        """Announce this sender (a short lease) and count the live ones sharing the relay."""
        wall = self.clock.wall()
        with self.engine.begin() as conn:
            locks.acquire(
                conn, f"sender:{self.config.worker}", self.config.worker, wall, SENDER_HEARTBEAT
            )
            return locks.live(conn, "sender:", wall)

    def _leave(self) -> None:
        with self.engine.begin() as conn:
            locks.release(conn, f"sender:{self.config.worker}", self.config.worker)

    def _claim(self) -> tuple[list[outbox.Claimed], dict[tuple[int, int], Any], _Reminded]:
        """A batch under a new lease, and its people's rows, read in the same transaction."""
        with self.engine.begin() as conn:
            batch = outbox.claim(
                conn,
                now=self.clock.now(),
                wall=self.clock.wall(),
                owner=self.config.worker,
                lease=self.config.lease,
                limit=self.config.batch_size,
            )
            rows = self._people(conn, batch) if batch else {}
            reminded = _other_reminders(conn, batch)
        for program_id in {c.program_id for c in batch}:
            self._program(program_id)  # loaded here, in a thread, not on the loop
        return batch, rows, reminded

    def _record(self, results: list[outbox.Result]) -> None:
        with self.engine.begin() as conn:
            written = outbox.record(conn, results, worker=self.config.worker, now=self.clock.now())
            launched = [
                (r.message.program_id, r.message.person_id, r.finished_at)
                for r in written
                if r.state == State.SENT
                and r.message.kind == Kind.LAUNCH.value
                and r.message.person_id
            ]
            # The cadence counts from each person's own launch email: start it now.
            people_repo.mark_launch_sent(conn, launched)

    def _program(self, program_id: int) -> StoredProgram:
        if program_id not in self._programs:
            with self.engine.connect() as conn:
                self._programs[program_id] = load_program_by_id(conn, program_id)
        return self._programs[program_id]

    def _people(self, conn: Connection, batch: list[outbox.Claimed]) -> dict[tuple[int, int], Any]:
        """What decides whether each message still matters, and whom it greets."""
        params = {
            "p_programs": sorted({c.program_id for c in batch}),
            "p_people": sorted({c.person_id for c in batch if c.person_id is not None}),
        }
        q = _people_query(on_postgresql=is_postgresql(conn))
        return {(r.program_id, r.id): r for r in conn.execute(q, params)}

    # -- building and sending ------------------------------------------------------------------
    async def _build(
        self,
        batch: list[outbox.Claimed],
        rows: dict[tuple[int, int], Any],
        reminded: _Reminded,
    ) -> AsyncIterator[_Job | outbox.Result]:
        """Decide and build a claimed batch, yielding each message's job or final result.

        Built on the event loop a few messages at a time: not in a thread, where a builder and
        the loop take turns holding the GIL every 5 ms, and while the builder holds it no reply
        is read. Kinds that read the database to build (the officers' report) build in a
        thread.
        """
        superseded = self._superseded(batch)
        for r in superseded:
            yield r
        skipped = {r.message.id for r in superseded}
        now = self.clock.now()
        todo: list[tuple[outbox.Claimed, BuildSpec]] = []
        for c in batch:
            if c.id in skipped:
                continue
            decided = self._decide(c, rows, now, reminded)
            if isinstance(decided, outbox.Result):
                yield decided
            elif c.kind in self.enrichers:
                yield await asyncio.to_thread(self._enrich_and_build, c, decided)
            else:
                todo.append((c, decided))
        for i, (c, spec) in enumerate(todo):
            program = self._program(c.program_id).program
            yield self._job(c, build_or_fault(self.templates, program, spec), spec.person.timezone)
            if i % _BUILD_SLICE == _BUILD_SLICE - 1:
                await asyncio.sleep(0)  # let the connections read their replies

    def _superseded(self, batch: list[outbox.Claimed]) -> list[outbox.Result]:
        """Stale messages in this batch, as the policy sees them (several reminders for one
        person after a pause, say)."""
        stale = policy.superseded(((c.program_id, c.person_id), Kind(c.kind), c.id) for c in batch)
        now = self.clock.now()
        return [
            outbox.Result(
                c, State.SKIPPED, "skipped", now, now, reason=policy.SUPERSEDED, attempted=False
            )
            for c in batch
            if c.id in stale
        ]

    def _decide(
        self,
        claimed: outbox.Claimed,
        rows: dict[tuple[int, int], Any],
        now: dt.datetime,
        reminded: _Reminded,
    ) -> BuildSpec | outbox.Result:
        """Skip a message that can no longer matter; else what it is built from."""
        stored = self._program(claimed.program_id)
        row = rows.get((claimed.program_id, claimed.person_id or -1))
        skip = policy.skip_reason(
            stored.program,
            Kind(claimed.kind),
            _standing(claimed, row, _days(stored.program, claimed, reminded, row)),
            now,
            step=claimed.step,
        )
        if skip:
            return outbox.Result(
                claimed, State.SKIPPED, "skipped", now, now, reason=skip, attempted=False
            )
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
            extra=claimed.context,
        )

    def _enrich_and_build(self, claimed: outbox.Claimed, spec: BuildSpec) -> _Job | outbox.Result:
        stored = self._program(claimed.program_id)
        try:
            extra = {**spec.extra, **self.enrichers[claimed.kind](self.engine, stored, claimed)}
        except NothingToSend as exc:  # a digest whose people have all caught up
            now = self.clock.now()
            return outbox.Result(
                claimed, State.SKIPPED, "skipped", now, now, reason=str(exc), attempted=False
            )
        except Exception as exc:  # a data fault: keep it visible, never resend
            return self._job(claimed, build_fault(exc))
        spec = dataclasses.replace(spec, extra=extra)
        return self._job(
            claimed,
            build_or_fault(self.templates, stored.program, spec),
            spec.person.timezone,
        )

    def _job(
        self, claimed: outbox.Claimed, data: bytes | str, zone: str | None = None
    ) -> _Job | outbox.Result:
        if isinstance(data, PassingFault):  # out of descriptors, a full disk: try again later
            return self._after(claimed, self.clock.now(), Outcome.TRANSIENT, None, data, zone)
        if isinstance(data, str):  # a template or data fault: keep it visible, never resend
            now = self.clock.now()
            return outbox.Result(
                claimed, State.FAILED, "render", now, now, reply=data, attempted=False
            )
        sender = self.config.envelope_from or str(
            self._program(claimed.program_id).program.program.sender.address
        )
        if self.config.bounce_sender is not None:
            sender = self.config.bounce_sender(claimed.id)
        return _Job(claimed, sender, data, zone)

    async def _sender(
        self,
        connection: SmtpConnection,
        jobs: asyncio.Queue[_Job | None],
        results: list[outbox.Result],
    ) -> None:
        while (job := await jobs.get()) is not None:
            if await self._held_back(job, results):
                continue
            if not self.limiter.active:  # no limits configured: no slot to wait for
                await self._send_timed(connection, job, results)
                continue
            asked = time.monotonic()
            async with self.limiter.slot():
                # Waiting for a slot can take a minute or more (a per-minute or per-day limit):
                # after a wait, look again, so a pause, the end of working hours or an expiring
                # lease that came meanwhile still holds the message back.
                waited = time.monotonic() - asked > _SLOT_WAIT_RECHECK
                if waited and await self._held_back(job, results):
                    continue
                await self._send_timed(connection, job, results)

    async def _send_timed(
        self, connection: SmtpConnection, job: _Job, results: list[outbox.Result]
    ) -> None:
        started = time.perf_counter()
        results.append(await self._send_one(connection, job))
        if self.observe_send is not None:
            self.observe_send(time.perf_counter() - started)

    async def _held_back(self, job: _Job, results: list[outbox.Result]) -> bool:
        """Should this claimed message not be sent now? Records why, when there is a why."""
        claimed = job.claimed
        if self._lease_running_out(claimed):
            return True  # another worker may take it now; sending it too would duplicate it
        if self.stopping.is_set() or self.problem or await self._is_paused(claimed):
            results.append(self._released(claimed))
            return True
        opening = self._closed_until(claimed, job.zone)
        if opening is not None:  # claimed just before the end of working hours
            results.append(self._released(claimed, due_at=opening))
            return True
        return False

    def _lease_running_out(self, claimed: outbox.Claimed) -> bool:
        """A claimed message waits in the pipeline; never start sending it near its lease's end
        (a tenth of the lease is kept for the send itself)."""
        if claimed.lease_until is None:
            return False
        return self.clock.wall() >= claimed.lease_until - self.config.lease / 10

    async def _is_paused(self, claimed: outbox.Claimed) -> bool:
        """Checked before each message (from a cache at most a second old): a pause stops a
        drain within a second, not at the end of the batch."""
        if time.monotonic() - self._paused_at > 1.0:
            self._paused_at = time.monotonic()
            self._paused = await asyncio.to_thread(self._read_paused)
        return (claimed.program_id, None) in self._paused or (
            claimed.program_id,
            claimed.wave_key,
        ) in self._paused

    def _read_paused(self) -> set[tuple[int, str | None]]:
        with self.engine.connect() as conn:
            found: set[tuple[int, str | None]] = {
                (r.id, None)
                for r in conn.execute(select(programs.c.id).where(programs.c.paused.is_(True)))
            }
            found |= {
                (r.program_id, r.key)
                for r in conn.execute(
                    select(waves.c.program_id, waves.c.key).where(waves.c.paused.is_(True))
                )
            }
        return found

    def _released(
        self, claimed: outbox.Claimed, due_at: dt.datetime | None = None
    ) -> outbox.Result:
        now = self.clock.now()
        state = policy.released(claimed.attempts)
        return outbox.Result(claimed, state, "released", now, now, due_at=due_at, attempted=False)

    def _closed_until(self, claimed: outbox.Claimed, zone: str | None) -> dt.datetime | None:
        """When working hours reopen in the person's zone, if they have closed since this
        message was claimed (a long drain that started at 16:55); None while they are open.
        Worked out once a minute per program and zone, not per message."""
        if not Kind(claimed.kind).held_to_working_hours:
            return None
        now = self.clock.now()
        minute = now.replace(second=0, microsecond=0)
        key = (claimed.program_id, zone, minute)
        if key not in self._openings:
            if len(self._openings) > 64:
                self._openings.clear()  # the minutes gone by
            program = self._program(claimed.program_id).program
            tz = policy.person_zone(program, zone)
            self._openings[key] = (
                policy.held_until(program, Kind(claimed.kind), minute, tz) or minute
            )
        opening = self._openings[key]
        return opening if opening > now else None

    async def _send_one(self, connection: SmtpConnection, job: _Job) -> outbox.Result:
        c = job.claimed
        started = self.clock.now()
        code: int | None = None
        try:
            reply = await connection.send(job.sender, c.recipient_email, job.data)
        except PermanentDeliveryError as exc:
            return self._after(c, started, Outcome.PERMANENT, exc.code, exc.reply, job.zone)
        except RelayLoginError as exc:
            # Not this message's fault: stop, and keep it (and the rest) for the next pass.
            self.problem = (
                f"the relay refused our login ({exc.reply}); check PSHNOTIFY_SMTP_USERNAME and "
                "PSHNOTIFY_SMTP_PASSWORD: nothing more is sent until it accepts them"
            )
            return self._released(c)
        except TransientDeliveryError as exc:
            return self._after(c, started, Outcome.TRANSIENT, exc.code, exc.reply, job.zone)
        except OutcomeUnknownError as exc:
            return self._after(c, started, Outcome.UNKNOWN, code, exc.reply, job.zone)
        return self._after(c, started, Outcome.SENT, reply.code, reply.text, job.zone)

    def _after(
        self,
        c: outbox.Claimed,
        started: dt.datetime,
        outcome: Outcome,
        code: int | None,
        reply: str,
        zone: str | None = None,
    ) -> outbox.Result:
        """The result of one attempt, in the state the policy gives its outcome (a retry
        waits for working hours in the person's zone)."""
        now = self.clock.now()
        attempt = c.attempts + 1
        program = self._program(c.program_id).program
        step = policy.after_attempt(
            program,
            Kind(c.kind),
            outcome,
            attempt=attempt,
            first_attempt_at=c.first_attempt_at or started,
            now=now,
            rules=self.config.retry_rules,
            tz=policy.person_zone(program, zone),
        )
        if step.note:
            reply = f"{reply} ({step.note})"
        return outbox.Result(
            c, step.state, outcome, started, now, code=code, reply=reply, due_at=step.due_at
        )


@functools.cache
def _people_query(*, on_postgresql: bool) -> Any:
    """Read through enrollments' (program_id, person_id) key: without the program in the WHERE,
    PostgreSQL read all 100,000 enrollments for every batch of 200 (45 ms). With it, the plan
    still needs the tables analysed (`refresh_statistics` after a roster import): never
    analysed, they scanned all of the program's enrollments (9.0 ms). Built once, like the
    claim's statements."""
    return (
        select(
            people.c.id,
            people.c.external_id,
            people.c.name,
            people.c.email,
            people.c.department,
            people.c.timezone,
            enrollments.c.program_id,
            enrollments.c.status,
            enrollments.c.extended_until,
            enrollments.c.completed_at,
            enrollments.c.exempted_reason,
            enrollments.c.removed_at,
            undeliverable.c.person_id.label("undeliverable"),  # the policy skips them
        )
        .join(enrollments, enrollments.c.person_id == people.c.id)
        .outerjoin(
            undeliverable,
            and_(undeliverable.c.person_id == people.c.id, undeliverable.c.cleared_at.is_(None)),
        )
        .where(
            among(enrollments.c.program_id, "p_programs", Integer(), on_postgresql=on_postgresql),
            among(enrollments.c.person_id, "p_people", Integer(), on_postgresql=on_postgresql),
        )
    )


def _alive(owner: str) -> bool:
    """Is the process named host:pid still running? Unknown hosts count as alive."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Other reminders of the batch's people, by (program, person): (id, state, due_at, sent_at).
_Reminded = dict[tuple[int, int], list[tuple[int, str, dt.datetime, dt.datetime | None]]]


def _other_reminders(conn: Connection, batch: list[outbox.Claimed]) -> _Reminded:
    """The reminders, other than this batch's, of the people this batch reminds: what the
    policy's one reminder a day is checked against at send time."""
    mine = {c.id for c in batch if c.kind == Kind.REMINDER.value and c.person_id is not None}
    whom = sorted({c.person_id for c in batch if c.id in mine and c.person_id is not None})
    if not whom:
        return {}
    q = select(
        messages.c.program_id,
        messages.c.person_id,
        messages.c.id,
        messages.c.state,
        messages.c.due_at,
        messages.c.sent_at,
    ).where(
        messages.c.program_id.in_(sorted({c.program_id for c in batch if c.id in mine})),
        messages.c.person_id.in_(whom),
        messages.c.kind == Kind.REMINDER.value,
        messages.c.state.in_(
            [State.QUEUED.value, State.CLAIMED.value, State.RETRY.value, State.SENT.value]
        ),
    )
    out: _Reminded = {}
    for program_id, person_id, mid, state, due_at, sent_at in conn.execute(q):
        if mid not in mine:
            out.setdefault((program_id, person_id), []).append((mid, state, due_at, sent_at))
    return out


def _days(
    program: Any, claimed: outbox.Claimed, reminded: _Reminded, row: Any
) -> frozenset[dt.date]:
    """Local dates (the person's zone) on which another reminder of this person went out, or
    an earlier-queued one is due: this one, the later, is then skipped."""
    if claimed.kind != Kind.REMINDER.value or claimed.person_id is None:
        return frozenset()
    tz = policy.person_zone(program, row.timezone if row is not None else None)
    days = set()
    for mid, state, due_at, sent_at in reminded.get((claimed.program_id, claimed.person_id), []):
        if state == State.SENT.value and sent_at is not None:
            days.add(sent_at.astimezone(tz).date())
        elif state != State.SENT.value and mid < claimed.id:
            days.add(due_at.astimezone(tz).date())
    return frozenset(days)


def _standing(
    claimed: outbox.Claimed, row: Any, reminded_on: frozenset[dt.date] = frozenset()
) -> policy.Standing | None:
    """The person's standing from their enrollment row (None: no longer enrolled)."""
    if row is None:
        return None
    return policy.Standing(
        status=row.status,
        removed=row.removed_at is not None,
        exempted_reason=row.exempted_reason or None,
        completed=row.completed_at is not None,
        wave_key=claimed.wave_key,
        extended_until=row.extended_until,
        undeliverable=row.undeliverable is not None,
        reminded_on=reminded_on,
        timezone=row.timezone,
    )
