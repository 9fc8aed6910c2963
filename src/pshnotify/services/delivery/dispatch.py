"""Send what is due: the pipeline that claims, builds, sends and records, as one unit.

Three kinds of task run together in an `asyncio.TaskGroup`:
  - the producer claims a batch (with its people) and builds it (`batch_build`) while the
    connections send the previous one;
  - one sender per SMTP connection takes the next job, looks at it once more (`send_gates`:
    lease, pause, working hours, stop), waits for a rate-limit slot, and sends it
    (`attempt`);
  - the recorder writes every result (`ledger`): a connection sends message k+1 while k is
    written, never k+2, so a crash costs at most two copies per connection.
One task's error stops the others; results collected before it are still written. Every
database call goes through the guard (`store.retry`), which retries what can pass: while the
database is away, the claims, the pause check and the writes wait, so nothing is sent whose
outcome cannot be recorded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.delivery import State
from pshnotify.mail.links import RequestLinks
from pshnotify.mail.ratelimit import Limits, RateLimiter
from pshnotify.mail.render import Templates
from pshnotify.mail.transport import SmtpConnection
from pshnotify.services.delivery.attempt import Job, LoginRefusedError, attempt
from pshnotify.services.delivery.batch_build import Builder, Enricher
from pshnotify.services.delivery.ledger import Ledger, RecorderFailedError
from pshnotify.services.delivery.send_gates import Gates, released
from pshnotify.services.delivery.sender_lock import SenderLock
from pshnotify.store import outbox, outcomes
from pshnotify.store import people as people_repo
from pshnotify.store import requests as requests_repo
from pshnotify.store.db import server_time
from pshnotify.store.programs import ProgramCache
from pshnotify.store.retry import DatabaseUnavailableError, Guard

__all__ = ["DispatchConfig", "DispatchReport", "Dispatcher", "Enricher"]

# A wait for a rate-limit slot longer than this (seconds) checks the message again.
_SLOT_WAIT_RECHECK = 0.1

log = logging.getLogger("pshnotify.dispatch")


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
    attempts: Counter[str] = field(default_factory=Counter)  # per attempt outcome
    problem: str | None = None  # why the drain stopped early: a setting to fix
    # Why messages were deferred or failed: the relay's replies (or the connection's fault),
    # grouped, with the setting to check where the cause is the configuration.
    replies: Counter[tuple[str, str]] = field(default_factory=Counter)

    def note(self, result: outbox.Result) -> None:
        self.outcomes[result.state.value] += 1
        if result.attempted:
            self.attempts[result.outcome] += 1
        if result.state in (State.RETRY, State.FAILED, State.UNKNOWN) and result.reply:
            reply = f"{result.code or ''} {result.reply}".strip()[:200]
            self.replies[(result.state.value, reply)] += 1

    def why(self) -> list[dict[str, Any]]:
        return [
            {"state": state, "reply": reply, "messages": n, "check": setting_to_check(reply)}
            for (state, reply), n in self.replies.most_common()
        ]

    @property
    def all_failed(self) -> bool:
        """Something was tried and nothing of it was accepted (the relay refused it all)."""
        return sum(self.attempts.values()) > 0 and not self.attempts.get("sent")

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


_HELD_KINDS = frozenset({"reminder", "overdue"})


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
        guard: Guard | None = None,
        links: RequestLinks | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.templates = templates
        self.connections = connections
        self.config = config
        self.enrichers = dict(enrichers or {})
        self.limiter = limiter or RateLimiter(Limits())
        self.observe_send = observe_send
        self.stopping = asyncio.Event()
        self.guard = guard or Guard(give_up_after=60.0)
        if self.guard.stopping is None:
            self.guard.stopping = self.stopping
        self.programs = ProgramCache(engine)
        self.lock = SenderLock(engine, clock, config.worker, config.lease)
        self.gates = Gates(engine, clock, self.programs, self.guard, config.lease)
        self.builder = Builder(
            engine,
            clock,
            templates,
            self.programs,
            self.guard,
            self.enrichers,
            self._envelope,
            config.retry_rules,
            links,
        )
        self.problem: str | None = None  # set when every relay refused our login

    # -- the pipeline ---------------------------------------------------------------------------
    async def run_once(self, on_progress: Callable[[int], None] | None = None) -> DispatchReport:
        """Drain everything due: claim and build the next batch while this one is sent, and
        record each result while the next message goes out."""
        report = DispatchReport()
        self.problem = None
        await self.guard.call(self.lock.hold)
        jobs: asyncio.Queue[Job | None] = asyncio.Queue(maxsize=2 * self.config.batch_size)
        writer = outcomes.Writer(self.engine, self.config.worker)
        ledger = Ledger(lambda rs: self._write(writer, rs, report), len(self.connections))
        recorder = asyncio.create_task(ledger.run())
        failed = False
        try:
            async with asyncio.TaskGroup() as group:
                drain = [
                    group.create_task(self._sender(index, connection, jobs, ledger))
                    for index, connection in enumerate(self.connections)
                ]
                drain.append(group.create_task(self._producer(jobs, ledger, report, on_progress)))
                group.create_task(_watch(recorder, drain))  # its failure stops the others
        except BaseExceptionGroup as group_error:
            failed = True
            raise _root(group_error) from group_error
        finally:
            ledger.close()  # what was collected is still written, whatever stopped the drain
            try:
                await recorder
            except Exception:
                if not failed:
                    raise
            finally:
                await writer.aclose()
            await asyncio.gather(*(c.close() for c in self.connections))
            if self.limiter.active:
                await _quietly(self.guard.call(self.lock.leave))
        report.problem = self.problem
        if report.all_failed:
            log.warning(
                "every attempt of this pass failed (%s); nothing was accepted by the relay",
                ", ".join(f"{n} {o}" for o, n in sorted(report.attempts.items())),
            )
        return report

    async def _producer(
        self,
        jobs: asyncio.Queue[Job | None],
        ledger: Ledger,
        report: DispatchReport,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        # On an error or a cancel the task group stops the senders: no "no more" is owed then
        # (and a put into a full queue nobody reads would wait forever).
        while not self.stopping.is_set() and self.problem is None:
            if self.limiter.active:
                self.limiter.set_share(await self.guard.call(self.lock.senders_alive))
            lease_ends = time.monotonic() + self.config.lease.total_seconds()
            batch, rows, reminded, paused = await self.guard.call(self._claim)
            if not batch:
                break
            report.claimed += len(batch)
            async for item in self.builder.build(batch, rows, reminded, lease_ends, paused):
                if isinstance(item, outbox.Result):
                    ledger.add(item)
                else:
                    await jobs.put(item)
            if on_progress:
                on_progress(len(batch))
        for _ in self.connections:
            await jobs.put(None)  # one "no more" per sender

    async def _sender(
        self,
        index: int,
        connection: SmtpConnection,
        jobs: asyncio.Queue[Job | None],
        ledger: Ledger,
    ) -> None:
        while (job := await jobs.get()) is not None:
            await ledger.ready(index)  # at most one of this connection's results unwritten
            if await self._held(job, ledger):
                continue
            if not self.limiter.active:  # no limits configured: no slot to wait for
                await self._send(index, connection, job, ledger)
                continue
            asked = time.monotonic()
            async with self.limiter.slot(wake=self.stopping):
                # Waiting for a slot can take a minute or more (a per-minute or per-day limit):
                # after a wait, look again, so a pause, the end of working hours, a stop or an
                # expiring lease that came meanwhile still holds the message back.
                waited = time.monotonic() - asked > _SLOT_WAIT_RECHECK
                if waited and await self._held(job, ledger):
                    continue
                await self._send(index, connection, job, ledger)

    async def _held(self, job: Job, ledger: Ledger) -> bool:
        stop = self.stopping.is_set() or self.problem is not None
        hold = await self.gates.check(job.claimed, job.lease_ends, stop, job.zone)
        if hold is None:
            return False
        if hold.result is not None:
            ledger.add(hold.result)
        return True

    async def _send(self, index: int, connection: SmtpConnection, job: Job, ledger: Ledger) -> None:
        started = time.perf_counter()
        program = self.programs.get(job.claimed.program_id).program
        try:
            result = await attempt(connection, job, program, self.clock, self.config.retry_rules)
        except LoginRefusedError as exc:
            # Not this message's fault: stop, and keep it (and the rest) for the next pass.
            self.problem = (
                f"the relay refused our login ({exc.reply}); check PSHNOTIFY_SMTP_USERNAME and "
                "PSHNOTIFY_SMTP_PASSWORD: nothing more is sent until it accepts them"
            )
            ledger.add(released(job.claimed, self.clock.now()))
            return
        ledger.add(result, index)
        if self.observe_send is not None:
            self.observe_send(time.perf_counter() - started)

    # -- database side (through the guard; in a thread, but the writes wait on the loop) ---
    def _claim(
        self,
    ) -> tuple[
        list[outbox.Claimed],
        dict[tuple[int, int], Any],
        outbox.Reminded,
        dict[tuple[int, int], str],
    ]:
        """A batch under a new lease, and its people's rows, read in the same transaction."""
        with self.engine.begin() as conn:
            batch = outbox.claim(
                conn,
                now=self.clock.now(),
                wall=server_time(conn, self.clock.wall()),
                owner=self.config.worker,
                lease=self.config.lease,
                limit=self.config.batch_size,
            )
            people = sorted({c.person_id for c in batch if c.person_id is not None})
            programs = sorted({c.program_id for c in batch})
            rows = people_repo.batch_people(conn, programs, people) if batch else {}
            reminded = outbox.other_reminders(conn, batch)
        self.programs.load(set(programs))  # here, in a thread, not on the loop
        return batch, rows, reminded, self._paused(batch)

    def _paused(self, batch: list[outbox.Claimed]) -> dict[tuple[int, int], str]:
        """Whose reminders in this batch a pending request holds (store.requests)."""
        asking: dict[int, set[int]] = {}
        for c in batch:
            if c.person_id is not None and c.kind in _HELD_KINDS:
                asking.setdefault(c.program_id, set()).add(c.person_id)
        if not asking:
            return {}
        now = self.clock.now()
        with self.engine.connect() as conn:
            return {
                (pid, person): why
                for pid, people in asking.items()
                for person, why in requests_repo.paused_for(
                    conn, self.programs.get(pid).program, pid, now, people
                ).items()
            }

    async def _write(
        self, writer: outcomes.Writer, results: list[outbox.Result], report: DispatchReport
    ) -> None:
        await self.guard.call_async(self._record, writer, results)
        for r in results:
            report.note(r)

    async def _record(self, writer: outcomes.Writer, results: list[outbox.Result]) -> None:
        await writer.write(results, self.clock.now())

    def _envelope(self, claimed: outbox.Claimed) -> str:
        if self.config.bounce_sender is not None:
            return self.config.bounce_sender(claimed.id)
        return self.config.envelope_from or str(
            self.programs.get(claimed.program_id).program.program.sender.address
        )

    # -- around the passes ----------------------------------------------------------------------
    async def claim_sending(self) -> None:
        """At start: refuse clearly if another process is sending from this SQLite file, and
        take back at once what dead processes of this host left claimed."""
        await self.guard.call(self.lock.hold)

    async def release(self) -> None:
        """Let another process send from this SQLite database (at exit)."""
        await _quietly(self.guard.call(self.lock.release))

    def _senders_alive(self) -> int:
        return self.lock.senders_alive()


async def _watch(recorder: asyncio.Task[None], drain: list[asyncio.Task[None]]) -> None:
    """Inside the task group: end when the drain does, or raise the recorder's error (it
    ends before the drain only when it failed), so that the group stops every task."""
    drained = asyncio.ensure_future(asyncio.wait(drain))
    try:
        await asyncio.wait({recorder, drained}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        drained.cancel()
    if recorder.done() and not recorder.cancelled() and recorder.exception() is not None:
        raise RecorderFailedError(str(recorder.exception())) from recorder.exception()


def _root(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stopped the pipeline, out of the task group's bundle: the database's
    absence if that was it (the recorder's failure seen by every task), else the first."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for inner in e.exceptions:
                walk(inner)
        else:
            leaves.append(e.__cause__ if isinstance(e, RecorderFailedError) and e.__cause__ else e)

    walk(group)
    for leaf in leaves:
        if isinstance(leaf, DatabaseUnavailableError):
            return leaf
    return leaves[0]


async def _quietly(call: Any) -> None:
    try:
        await call
    except Exception as exc:  # at exit: a lock left behind expires by itself
        log.warning("could not release the sender's lock: %s", exc)
