"""Settings -> wired objects. The one place where engines, clocks and transports are built."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import getpass
import os
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pshnotify.mail.escalation_kind
import pshnotify.mail.report_kind  # noqa: F401 - registers the report kind
from pshnotify.clock import Clock, FixedClock, ShiftedClock, SystemClock
from pshnotify.domain.errors import InputError
from pshnotify.services.campaign.programs import all_programs, select_program
from pshnotify.store import migrate
from pshnotify.store.db import DatabaseUrlError, NoDatabaseError, display_url, make_engine

# Every command builds a Runtime: what only some of them use (the sender, the templates,
# bounces, the HTTP side) is imported where it is built, so that `status` and the other
# reading commands start fast (bench/startup.py).
if TYPE_CHECKING:
    import asyncio

    from sqlalchemy import Engine

    from pshnotify.bounces.sources import Source
    from pshnotify.bounces.verp import Verp
    from pshnotify.mail.links import RequestLinks
    from pshnotify.mail.ratelimit import RateLimiter
    from pshnotify.mail.render import Templates
    from pshnotify.mail.transport import SmtpConfig, SmtpConnection
    from pshnotify.runtime.metrics import Metrics
    from pshnotify.services.bounces.scan import ScanConfig, ScanReport
    from pshnotify.services.campaign.schedule import NightlyJob
    from pshnotify.services.delivery.dispatch import Dispatcher
    from pshnotify.settings import Settings
    from pshnotify.store.programs import StoredProgram
    from pshnotify.store.retry import Guard


def actor_name() -> str:
    """Who is acting, for the audit log: PSHNOTIFY_ACTOR, else the login name."""
    try:
        return os.environ.get("PSHNOTIFY_ACTOR") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    # False: a SQLite file that does not exist is "no database, run init", not created empty
    create_database: bool = True

    @classmethod
    def create(
        cls,
        settings: Settings,
        now: dt.datetime | None = None,
        moving: bool = False,
        *,
        create_database: bool = True,
    ) -> Runtime:
        """`now` fixes the clock (a rehearsal instant); with `moving` it starts there and runs."""
        clock: Clock = SystemClock()
        if now is not None:
            clock = ShiftedClock(now) if moving else FixedClock(now)
        return cls(settings, clock, create_database)

    @cached_property
    def engine(self) -> Engine:
        """The database, reached once before any work: a wrong or unreachable URL is bad
        input naming the variable (exit 2), not a traceback from the first query."""
        from sqlalchemy.exc import DBAPIError

        hint = "set PSHNOTIFY_DATABASE_URL to a database this machine can reach"
        try:
            engine = make_engine(self.settings.database_url, create=self.create_database)
        except NoDatabaseError as exc:
            raise InputError(
                [f"PSHNOTIFY_DATABASE_URL: no database at {exc.path}"],
                hint="run `pshnotify init` to create it",
            ) from None
        except DatabaseUrlError as exc:
            raise InputError([f"PSHNOTIFY_DATABASE_URL: {exc}"], hint=hint) from None
        try:
            with engine.connect():
                pass
        except DBAPIError as exc:
            engine.dispose()
            first = str(exc.orig or exc).strip().splitlines() or ["no reason given"]
            where = display_url(self.settings.database_url)
            raise InputError(
                [f"PSHNOTIFY_DATABASE_URL: cannot connect to {where}: {first[0]}"], hint=hint
            ) from None
        return engine

    @property
    def database_reached(self) -> bool:
        """Whether this command opened the database (`engine` was used)."""
        return "engine" in self.__dict__

    @cached_property
    def actor(self) -> str:
        return actor_name()

    @cached_property
    def worker(self) -> str:
        return self.settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()

    def require_schema(self) -> None:
        current = migrate.current_revision(self.engine)
        if current != migrate.head_revision():
            state = "is not initialised" if current is None else f"is at revision {current}"
            raise InputError(
                [f"PSHNOTIFY_DATABASE_URL: the database {state}"],
                hint="run `pshnotify init` to create or upgrade it",
            )

    def program_file(self) -> Path:
        """The program file, or bad input naming where it was looked for (and `new`)."""
        from pshnotify.skeleton import require_program_file

        return require_program_file(self.settings.program_file)

    def program(self, key: str | None) -> StoredProgram:
        program_file = self.program_file() if key is None else self.settings.program_file
        self.require_schema()
        return select_program(self.engine, program_file, key, self.clock, self.actor)

    @property
    def templates_dir(self) -> Path:
        """PSHNOTIFY_TEMPLATES_DIR; when it is not set and the folder has no templates/email,
        the templates shipped with pshnotify."""
        from pshnotify.skeleton import templates_dir

        explicit = "templates_dir" in self.settings.model_fields_set
        return templates_dir(self.settings.templates_dir, explicit)

    def templates(self) -> Templates:
        from pshnotify.mail.render import Templates

        return Templates(self.templates_dir)

    def checked_templates(self) -> Templates:
        """Templates checked against every stored program: a broken one stops the start."""
        from pshnotify.mail.kinds import sample_contexts

        templates = self.templates()
        if not self.templates_dir.is_dir():
            raise InputError([f"PSHNOTIFY_TEMPLATES_DIR: {self.templates_dir} is not a directory"])
        for stored in all_programs(self.engine):
            templates.check(sample_contexts(stored.program))
        return templates

    def smtp_config(self) -> SmtpConfig:
        from pshnotify.mail.transport import SmtpConfig

        s = self.settings
        return SmtpConfig(
            host=s.smtp_host,
            port=s.smtp_port,
            tls=s.smtp_tls,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            timeout=s.smtp_timeout,
            ca_file=s.smtp_ca_file,
            messages_per_connection=s.smtp_messages_per_connection,
        )

    def smtp_connections(self) -> list[SmtpConnection]:
        """Connections spread over the relays by share; every one may fall back."""
        from pshnotify.mail.transport import SmtpConnection

        s = self.settings
        primary = self.smtp_config()
        # Further relays differ in address and credentials; timeouts, CA file and the
        # per-connection limit are the deployment's.
        relays = [(primary, s.smtp_share, False)] + [
            (
                dataclasses.replace(
                    primary,
                    host=r.host,
                    port=r.port,
                    tls=r.tls,
                    username=r.username,
                    password=r.password.get_secret_value() if r.password else None,
                ),
                r.share,
                r.fallback,
            )
            for r in s.smtp_relays
        ]
        shared = [cfg for cfg, share, fallback in relays if not fallback for _ in range(share)]
        fallbacks = [cfg for cfg, _, fallback in relays if fallback]
        if not shared:
            raise InputError(["PSHNOTIFY_SMTP_RELAYS: every relay is a fallback or has share 0"])
        return [
            SmtpConnection(shared[i % len(shared)], fallbacks) for i in range(s.smtp_connections)
        ]

    def db_guard(self, *, daemon: bool = False) -> Guard:
        """How database calls are retried: the daemon waits as long as it takes (until a stop);
        a command gives up after PSHNOTIFY_DB_RETRY_SECONDS."""
        from pshnotify.store.retry import Guard

        return Guard(give_up_after=None if daemon else self.settings.db_retry_seconds)

    def dispatcher(self, guard: Guard | None = None) -> Dispatcher:
        from pshnotify.services.delivery.dispatch import DispatchConfig, Dispatcher
        from pshnotify.services.reporting.escalation import escalation_enricher
        from pshnotify.services.reporting.reports import report_enricher

        s = self.settings
        config = DispatchConfig(
            worker=self.worker,
            envelope_from=s.envelope_from,
            batch_size=s.batch_size,
            lease=dt.timedelta(seconds=s.lease_seconds),
            max_attempts=s.max_attempts,
            max_age=dt.timedelta(hours=s.retry_max_age_hours),
            unknown_policy=s.unknown_policy,
            bounce_sender=self.verp.sender_for if self.verp else None,
        )
        connections = self.smtp_connections()
        return Dispatcher(
            self.engine,
            self.clock,
            self.checked_templates(),
            connections,
            config,
            limiter=self._limiter,
            observe_send=self.metrics.send_seconds.observe,
            enrichers={
                "report": functools.partial(
                    report_enricher, list_limit=self.settings.report_list_limit
                ),
                "escalation": escalation_enricher,
            },
            guard=guard or self.db_guard(),
            links=self.request_links(),
        )

    def request_links(self) -> RequestLinks | None:
        """The signer of the emails' personal links; None when no stored program takes
        requests. A program that does, without PSHNOTIFY_LINK_SECRET, stops the start."""
        s = self.settings
        wanting = [p.key for p in all_programs(self.engine) if p.program.requests.enabled]
        if not wanting:
            return None
        if s.link_secret is None:
            raise InputError(
                [
                    "PSHNOTIFY_LINK_SECRET: required when the program takes requests "
                    f"([requests] enabled in {', '.join(wanting)}); at least 32 characters"
                ],
                hint="set it (openssl rand -hex 32 makes one), or empty [requests] enabled",
            )
        from pshnotify.mail.links import RequestLinks

        old = [s.link_secret_old.get_secret_value()] if s.link_secret_old else []
        return RequestLinks(s.link_secret.get_secret_value(), s.public_url, old)

    @cached_property
    def verp(self) -> Verp | None:
        from pshnotify.bounces.verp import Verp

        s = self.settings
        if not s.bounce_address or s.bounce_secret is None:
            return None
        return Verp(s.bounce_address, s.bounce_secret.get_secret_value().encode())

    def bounce_sources(self) -> list[Source]:
        """The configured bounce mailboxes, opened (an IMAP login happens here)."""
        from pshnotify.bounces.sources import ImapSource, MaildirSource, parse_imap_url

        s = self.settings
        sources: list[Source] = []
        if s.bounce_maildir is not None:
            sources.append(MaildirSource(s.bounce_maildir))
        if s.bounce_imap_url and s.bounce_imap_password is not None:
            address = parse_imap_url(s.bounce_imap_url)
            password = s.bounce_imap_password.get_secret_value()
            sources.append(ImapSource(address, password, s.bounce_imap_ca_file))
        return sources

    def scan_config(self) -> ScanConfig:
        from pshnotify.services.bounces.scan import ScanConfig

        return ScanConfig(verp=self.verp, soft_days=self.settings.bounce_soft_days)

    def scan_bounces(self) -> ScanReport | None:
        """The daemon's poll of the bounce mailboxes (None when none is configured)."""
        if not (self.settings.bounce_maildir or self.settings.bounce_imap_url):
            return None
        from pshnotify.services.bounces.scan import scan

        sources = self.bounce_sources()
        try:
            return scan(self.engine, self.clock, sources, self.scan_config())
        finally:
            for source in sources:
                source.close()

    def program_keys(self) -> list[str]:
        return [p.key for p in all_programs(self.engine)]

    def nightly_jobs(self) -> list[NightlyJob]:
        """Once-a-night work run by every pass (each job is idempotent per night)."""
        from pshnotify.services.reporting.escalation import queue_escalations
        from pshnotify.services.reporting.reports import queue_nightly_reports

        return [queue_nightly_reports, queue_escalations]

    def http_enabled(self) -> bool:
        s = self.settings
        return bool(
            s.console or s.webhook_secret or s.xapi_password or s.metrics or s.bounce_webhook_secret
        )

    def http_summary(self) -> str:
        s = self.settings
        if not self.http_enabled():
            return "off (set PSHNOTIFY_CONSOLE, _WEBHOOK_SECRET, _XAPI_PASSWORD or _METRICS)"
        parts = [
            p
            for p, on in (
                ("/ (console)", s.console),
                ("/metrics", s.metrics),
                ("/webhooks/completions", s.webhook_secret),
                ("/webhooks/bounces", s.bounce_webhook_secret or s.webhook_secret),
                ("/xapi/statements", s.xapi_password),
            )
            if on
        ]
        return f"http://{s.http_host}:{s.http_port} {' '.join(parts)}"

    @cached_property
    def metrics(self) -> Metrics:
        from pshnotify.runtime.metrics import Metrics

        return Metrics(self.engine, self.clock, lambda: self._limiter.waited)

    @cached_property
    def _limiter(self) -> RateLimiter:
        from pshnotify.mail.ratelimit import Limits, RateLimiter

        s = self.settings
        return RateLimiter(
            Limits(
                s.rate_per_second,
                s.rate_per_minute,
                s.rate_per_day,
                per_window=s.rate_per_window,
                window_seconds=s.rate_window_seconds,
            )
        )

    def http_tasks(
        self, stop: asyncio.Event, on_listening: Callable[[str, int], None] | None = None
    ) -> list[Coroutine[Any, Any, None]]:
        """The HTTP side (console, completions, metrics), served in the caller's event loop."""
        s = self.settings
        if not self.http_enabled():
            return []
        from pshnotify.web import serve
        from pshnotify.web.bounds import HttpLimits

        limits = HttpLimits(s.http_max_connections, s.http_read_timeout, s.http_keep_alive)
        return [
            serve(
                self.http_app(),
                s.http_host,
                s.http_port,
                stop,
                on_listening=on_listening,
                limits=limits,
            )
        ]

    def http_app(self) -> Any:
        from pshnotify.web import create_app
        from pshnotify.web.console import create_console

        s = self.settings
        loader = self._cached_program_loader()
        console = create_console(self.engine, self.clock, s, loader) if s.console else None
        return create_app(
            self.engine,
            self.clock,
            s,
            loader,
            metrics=self.metrics.render if s.metrics else None,
            console=console,
            links=self.request_links(),
        )

    def _cached_program_loader(self) -> Callable[[str | None], StoredProgram]:
        """Requests read the stored program at most every 30 s, not once per request."""
        cache: dict[str | None, tuple[float, StoredProgram]] = {}

        def load(key: str | None) -> StoredProgram:
            hit = cache.get(key)
            if hit is None or time.monotonic() - hit[0] > 30:
                hit = (time.monotonic(), self.program(key))
                cache[key] = hit
            return hit[1]

        return load
