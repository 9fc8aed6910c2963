"""The HTTP side of completions: a Standard Webhooks endpoint and an xAPI statements endpoint.

Both end in `services.completions.record_completion`, in one transaction with the receipt
that makes a replayed delivery a conflict, so a delivery is applied once or not at all.
Database work runs in worker threads; the event loop (shared with the daemon) never blocks.

Routes:
    POST /webhooks/completions   Standard Webhooks signed JSON {person, option, completed_at}
    POST /xapi/statements        HTTP Basic; one xAPI statement or a list ("completed" only)
    POST /webhooks/bounces       Standard Webhooks signed bounce events (web/bounces.py)
    GET  /healthz                liveness for a load balancer or monitor
    GET  /r/TOKEN, POST          a participant's requests (web/participant), when enabled
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp

from pshnotify.clock import Clock
from pshnotify.domain.errors import InputError, NotFoundError
from pshnotify.domain.text import text_problem
from pshnotify.domain.values import MAX_INSTANT, BadValueError, Instant
from pshnotify.ingest import completions_csv
from pshnotify.ingest import webhook_signing as signing
from pshnotify.mail.links import RequestLinks
from pshnotify.services.campaign.completions import (
    CompletionOutcome,
    CompletionResult,
    UnmatchedFullError,
    completion_key,
    completion_problems,
    record_completion,
)
from pshnotify.settings import Settings
from pshnotify.store.programs import StoredProgram
from pshnotify.store.receipts import claim_receipt
from pshnotify.web import xapi
from pshnotify.web.bounces import bounce_routes
from pshnotify.web.bounds import HttpLimits, bounded_protocol, uvicorn_options
from pshnotify.web.proxy import ForwardedMiddleware
from pshnotify.web.throttle import FailureThrottle, ThrottleMiddleware
from pshnotify.web.webhook_io import (
    HttpError,
    delivery_headers,
    http_error,
    parse_json,
    read_body,
)

log = logging.getLogger(__name__)

# Given `--program KEY` semantics: None means the program file's program. Called per request
# in a worker thread; raises NotFoundError for an unknown key (Runtime.program fits).
ProgramLoader = Callable[[str | None], StoredProgram]
_REALM = 'Basic realm="pshnotify xAPI", charset="UTF-8"'
_XAPI_FIELDS = {"person": "actor.mbox", "option": "object.id", "completed_at": "timestamp"}
# The same limits as the completions file's columns (a program key is 64 at most).
_WEBHOOK_LIMITS = {
    "person": completions_csv.MAX_REF,
    "option": completions_csv.MAX_OPTION,
    "completed_at": MAX_INSTANT,
    "program": 64,
    "note": completions_csv.MAX_NOTE,
}


async def _unmatched_full(_request: Request, exc: Exception) -> Response:
    log.error("completions refused: %s", exc)
    return JSONResponse({"error": f"{exc}; try again later"}, status_code=503)


def create_app(
    engine: Engine,
    clock: Clock,
    settings: Settings,
    load_program: ProgramLoader,
    metrics: Callable[[], bytes] | None = None,
    console: ASGIApp | None = None,
    links: RequestLinks | None = None,
) -> Starlette:
    """The completions app. A malformed webhook secret stops the start (InputError) rather
    than failing every delivery later; a missing one only turns its endpoint off (503).
    `console` (the web console) answers every other path."""
    endpoints = _Endpoints(engine, clock, settings, load_program, _webhook_key(settings))
    routes: list[BaseRoute] = [
        Route("/webhooks/completions", endpoints.webhook, methods=["POST"]),
        Route("/xapi/statements", endpoints.xapi_statements, methods=["POST"]),
        Route("/healthz", endpoints.health, methods=["GET"]),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", _metrics_endpoint(metrics), methods=["GET"]))
    routes += bounce_routes(engine, clock, settings)
    if links is not None:  # the participants' page behind the emails' personal link
        from pshnotify.web.participant import ParticipantPages

        routes += ParticipantPages(engine, clock, settings, load_program, links).routes()
    if console is not None:  # last: it answers every other path
        routes.append(Mount("/", app=console))
    throttle = FailureThrottle(limit=settings.http_auth_failures, window=60.0)
    return Starlette(
        routes=routes,
        exception_handlers={HttpError: http_error, UnmatchedFullError: _unmatched_full},
        middleware=[
            # First: the throttle and everything after it see the client the proxy names.
            Middleware(ForwardedMiddleware, trusted=settings.web_trusted_proxies),
            Middleware(
                ThrottleMiddleware, throttle=throttle, exempt=["/healthz"], logged=["/login"]
            ),
        ],
    )


def _webhook_key(settings: Settings) -> bytes | None:
    if settings.webhook_secret is None:
        return None
    try:
        return signing.parse_secret(settings.webhook_secret.get_secret_value())
    except signing.SecretError as exc:
        raise InputError(
            [f"PSHNOTIFY_WEBHOOK_SECRET: {exc}"],
            hint="use the whsec_... secret your webhook sender issued",
        ) from None


@dataclass(frozen=True)
class _WebhookCompletion:
    person: str
    option: str
    completed_at: str
    program: str | None
    note: str | None


@dataclass
class _Endpoints:
    engine: Engine
    clock: Clock
    settings: Settings
    load_program: ProgramLoader
    webhook_key: bytes | None

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    # -- Standard Webhooks ---------------------------------------------------------------------
    async def webhook(self, request: Request) -> Response:
        if self.webhook_key is None:
            raise HttpError(503, "webhooks are not configured: set PSHNOTIFY_WEBHOOK_SECRET")
        body = await read_body(request)
        delivery = delivery_headers(request)
        try:
            signing.verify(self.webhook_key, delivery, body, self.clock.wall())
        except signing.VerificationError as exc:
            raise HttpError(exc.status, str(exc)) from None
        payload = _webhook_payload(parse_json(body))
        result = await run_in_threadpool(self._record_webhook, delivery.msg_id, payload)
        log.info("webhook %s: %s", delivery.msg_id, result.outcome.value)
        status = 202 if result.outcome == CompletionOutcome.UNMATCHED else 200
        return JSONResponse(result.as_dict(), status_code=status)

    def _record_webhook(self, msg_id: str, req: _WebhookCompletion) -> CompletionResult:
        stored = self._program(req.program)
        now = self.clock.now()
        try:
            reach = stored.program.reach
            completed_at = Instant.parse(req.completed_at, reach, local_when_bare=False).utc
        except BadValueError as exc:
            raise HttpError(400, "bad completion", [f"completed_at: {exc}"]) from None
        problems = completion_problems(
            stored,
            person_ref=req.person,
            option=req.option,
            completed_at=completed_at,
            source="webhook",
            now=now,
            note=req.note,
        )
        if problems:
            raise HttpError(400, "bad completion", [f"{f}: {p}" for f, p in problems])
        with self.engine.begin() as conn:
            if not claim_receipt(conn, "webhook", msg_id, self.clock.wall()):
                raise HttpError(409, f"webhook-id {msg_id!r} was received before; ignored")
            return record_completion(
                conn,
                stored,
                person_ref=req.person,
                option=req.option,
                completed_at=completed_at,
                source="webhook",
                dedupe_key=completion_key(req.person, req.option, completed_at),
                note=req.note,
                now=now,
                message_id_domain=self.settings.message_id_domain,
            )

    # -- xAPI ----------------------------------------------------------------------------------
    async def xapi_statements(self, request: Request) -> Response:
        expected = self._xapi_credentials()
        if expected is None:
            raise HttpError(
                503,
                "xAPI is not configured: set PSHNOTIFY_XAPI_USERNAME and PSHNOTIFY_XAPI_PASSWORD",
            )
        if not _basic_auth_matches(request.headers.get("authorization"), expected):
            raise HttpError(401, "bad credentials", headers={"WWW-Authenticate": _REALM})
        try:
            statements = xapi.statements_of(parse_json(await read_body(request)))
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        program = request.query_params.get("program")
        ids = await run_in_threadpool(self._record_statements, statements, program)
        log.info("xapi: %d statements recorded", len(ids))
        return JSONResponse(ids, headers={"X-Experience-API-Version": xapi.VERSION})

    def _xapi_credentials(self) -> tuple[str, str] | None:
        s = self.settings
        if not s.xapi_username or s.xapi_password is None:
            return None
        return s.xapi_username, s.xapi_password.get_secret_value()

    def _record_statements(self, statements: list[Any], program_key: str | None) -> list[str]:
        """All or nothing: one bad or replayed statement refuses the whole batch."""
        stored = self._program(program_key)
        now = self.clock.now()
        mapped, problems = xapi.map_statements(statements, stored.program, now)
        problems += _rule_problems(stored, mapped, now)
        if problems:
            raise HttpError(400, "statements refused; none was recorded", problems)
        with self.engine.begin() as conn:
            for m in mapped:
                if m.receipt and not claim_receipt(conn, "xapi", m.statement_id, self.clock.wall()):
                    raise HttpError(
                        409,
                        f"statement[{m.index}].id: {m.statement_id} was received before; "
                        "none of this batch was recorded",
                    )
            for m in mapped:
                record_completion(
                    conn,
                    stored,
                    person_ref=m.person_ref,
                    option=m.option,
                    completed_at=m.completed_at,
                    source="xapi",
                    dedupe_key=completion_key(m.person_ref, m.option, m.completed_at),
                    note=None,
                    now=now,
                    message_id_domain=self.settings.message_id_domain,
                )
        return [m.statement_id for m in mapped]

    # -- shared --------------------------------------------------------------------------------
    def _program(self, key: str | None) -> StoredProgram:
        try:
            return self.load_program(key)
        except NotFoundError as exc:
            raise HttpError(400, "unknown program", exc.problems) from None
        except InputError as exc:  # the database or the program file, not the request
            log.error("completions endpoint not ready: %s", "; ".join(exc.problems))
            raise HttpError(503, "not ready; the server's log says why") from None


def _rule_problems(
    stored: StoredProgram, mapped: list[xapi.MappedStatement], now: dt.datetime
) -> list[str]:
    """What the completion rule itself would refuse (a future timestamp, say), per statement."""
    out = []
    for m in mapped:
        for fld, problem in completion_problems(
            stored,
            person_ref=m.person_ref,
            option=m.option,
            completed_at=m.completed_at,
            source="xapi",
            now=now,
        ):
            out.append(f"statement[{m.index}].{_XAPI_FIELDS.get(fld, fld)}: {problem}")
    return out


def _webhook_payload(data: Any) -> _WebhookCompletion:
    if not isinstance(data, dict):
        raise HttpError(400, "bad completion", ["(body): expected a JSON object"])
    problems: list[str] = []

    def text(name: str, required: bool) -> str | None:
        value = data.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            problems.append(f"{name}: expected a non-empty string")
            return None
        if problem := text_problem(value, _WEBHOOK_LIMITS[name]):
            problems.append(f"{name}: {problem}")
            return None
        return value.strip()

    person, option = text("person", True), text("option", True)
    completed_at = text("completed_at", True)
    program, note = text("program", False), text("note", False)
    if problems or person is None or option is None or completed_at is None:
        raise HttpError(400, "bad completion", problems)
    return _WebhookCompletion(person, option, completed_at, program, note)


def _basic_auth_matches(header: str | None, expected: tuple[str, str]) -> bool:
    """Compare digests in constant time; both parts always compared, so timing says nothing."""
    user, password = _basic_credentials(header or "")
    user_ok = hmac.compare_digest(_digest(user), _digest(expected[0]))
    password_ok = hmac.compare_digest(_digest(password), _digest(expected[1]))
    return user_ok & password_ok


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return "", ""
    user, _, password = decoded.partition(":")
    return user, password


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


# -- serving --------------------------------------------------------------------------------------
def _metrics_endpoint(render: Callable[[], bytes]) -> Callable[[Request], Any]:
    async def endpoint(_request: Request) -> Response:
        body = await run_in_threadpool(render)  # the collector reads the database
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    return endpoint


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its signal handlers: the process that embeds it owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(
    app: Starlette,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    on_listening: Callable[[str, int], None] | None = None,
    limits: HttpLimits | None = None,
) -> None:
    """Serve `app` in the running event loop until `stop` is set, then shut down gracefully.

    The socket is bound here, before uvicorn starts, so a taken port raises OSError to the
    caller (uvicorn would call sys.exit) and port 0 works: `on_listening` gets the real one.
    `limits` bound connections and slow clients (web/bounds.py).
    """
    limits = limits or HttpLimits()
    sock = _bind(host, port)
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        log.info("completions endpoints listening on http://%s:%d", bound_host, bound_port)
        if on_listening is not None:
            on_listening(bound_host, bound_port)
        config = uvicorn.Config(
            app,
            log_config=None,  # keep the embedding process's logging as it is
            lifespan="off",
            ws="none",
            http=bounded_protocol(limits),
            server_header=False,
            # Forwarded headers are the app's business (web/proxy.py), from trusted proxies
            # only; uvicorn would believe them from 127.0.0.1.
            proxy_headers=False,
            timeout_graceful_shutdown=5,
            **uvicorn_options(limits),
        )
        await _run_until(_EmbeddedServer(config), sock, stop)
    finally:
        sock.close()


async def _run_until(server: uvicorn.Server, sock: socket.socket, stop: asyncio.Event) -> None:
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopped.cancel()
        await serving


def _bind(host: str, port: int) -> socket.socket:
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family)
    # socket.create_server leaves `proto` 0, so asyncio does not set TCP_NODELAY on the
    # connections it accepts; with Nagle on, every response after a connection's first waited
    # for the client's delayed ACK: 40 ms per keep-alive request (measured, bench/console.py).
    # Linux passes the option on from the listening socket to the accepted ones.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
