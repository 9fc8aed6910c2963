"""The console's HTTP side: sign-in, the pages, the actions, each through the services.

Every page needs a signed-in user; every POST needs the session's CSRF token (403 without
it) and, except signing in and out, an operator (403 for a viewer). A viewer reads only the
people of their departments: anyone else is a 404, as if they did not exist. Every action
goes to the same service as the CLI's command, under the signed-in login as the actor.
Database work runs in worker threads; the event loop (shared with the daemon) never blocks.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from pshnotify.clock import Clock
from pshnotify.domain import requests as request_rules
from pshnotify.domain.calendar import local_time
from pshnotify.domain.errors import ConflictError, InputError, NotFoundError
from pshnotify.domain.values import Day, Instant, read
from pshnotify.domain.vocabulary import PersonWord
from pshnotify.mail.report_kind import report_csv
from pshnotify.services.access.users import User, authenticate, end_sessions, get_user, note_sign_in
from pshnotify.services.bounces.marks import address_ok
from pshnotify.services.campaign import requests
from pshnotify.services.campaign.adjust import exempt, extend
from pshnotify.services.campaign.completions import (
    ALTERNATIVE,
    CompletionOutcome,
    CompletionResult,
    complete_by_operator,
)
from pshnotify.services.campaign.launch import (
    cancel_launch,
    launch_wave,
    preview_launch,
    schedule_launch,
)
from pshnotify.services.reporting import lookup, progress
from pshnotify.services.reporting.audit_trail import audit_page, record_refusal
from pshnotify.services.reporting.reports import department_csv
from pshnotify.services.reporting.status import program_status
from pshnotify.settings import Settings
from pshnotify.store.programs import StoredProgram
from pshnotify.web.console import charts
from pshnotify.web.console.session import CSRF_FIELD, Session, SessionCodec
from pshnotify.web.console.throttle import SignInThrottle
from pshnotify.web.proxy import peer

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MAX_FORM = 16 * 1024  # the largest console form is a note of a few lines
ProgramLoader = Callable[[str | None], StoredProgram]
_SECURITY_HEADERS = {
    # No inline script or style anywhere: a value that slipped past escaping still cannot run.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class PageError(Exception):
    """Answer with an error page: `status`, a title and what to do; for a refused form, the
    page it came from (`back`) and what was typed (`kept`), which the link back fills in
    again."""

    def __init__(
        self,
        status: int,
        title: str,
        problems: Sequence[str] = (),
        *,
        back: str = "/",
        kept: Mapping[str, str] | None = None,
    ) -> None:
        self.status, self.title, self.problems = status, title, list(problems)
        self.back, self.kept = back, dict(kept or {})
        super().__init__(title)


class SignInNeededError(Exception):
    pass


@dataclass
class _Call:
    request: Request
    session: Session
    user: User
    stored: StoredProgram


Handler = Callable[[_Call], Awaitable[Response]]
FormHandler = Callable[[_Call, FormData], Awaitable[Response]]


class Console:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        settings: Settings,
        load_program: ProgramLoader,
        secret: bytes,
        throttle: SignInThrottle | None = None,
    ) -> None:
        self.engine, self.clock, self.settings = engine, clock, settings
        self.load_program = load_program
        self.codec = SessionCodec(
            secret, int(settings.web_session_hours * 3600), always_secure=settings.public_https
        )
        self.throttle = throttle or SignInThrottle()
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.web_trusted_proxies]
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
        )
        self.env.filters["num"] = lambda n: f"{int(n):,}"
        self.env.filters["q"] = lambda s: quote(str(s), safe="")

    # -- the app -------------------------------------------------------------------------------
    def app(self) -> Starlette:
        p, a = self._page, self._action
        routes = [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login_submit, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", p(self.dashboard)),
            Route("/waves/{key}", p(self.wave, operator=True)),
            Route("/waves/{key}/progress", p(self.wave_progress, operator=True)),
            Route("/waves/{key}/launch", p(self.launch_confirm, operator=True), methods=["GET"]),
            Route("/waves/{key}/launch", a(self.launch, "wave.launch"), methods=["POST"]),
            Route(
                "/waves/{key}/schedule", a(self.schedule, "wave.schedule_launch"), methods=["POST"]
            ),
            Route(
                "/waves/{key}/unschedule",
                a(self.unschedule, "wave.cancel_launch"),
                methods=["POST"],
            ),
            Route("/people", p(self.people)),
            Route("/people/{id:path}/extend", a(self.extend, "person.extend"), methods=["POST"]),
            Route("/people/{id:path}/exempt", a(self.exempt, "person.exempt"), methods=["POST"]),
            Route(
                "/people/{id:path}/complete",
                a(self.complete, "completion.record"),
                methods=["POST"],
            ),
            Route(
                "/people/{id:path}/address-ok", a(self.address_ok, "address.ok"), methods=["POST"]
            ),
            Route("/people/{id:path}", p(self.person), methods=["GET"]),
            Route("/departments", p(self.departments)),
            Route("/departments/report.csv", p(self.report_csv)),
            Route("/audit", p(self.audit, operator=True)),
            Route("/requests", p(self.requests)),
            Route(
                "/requests/{id:int}/approve",
                a(self.approve_request, "request.approve"),
                methods=["POST"],
            ),
            Route(
                "/requests/{id:int}/decline",
                a(self.decline_request, "request.decline"),
                methods=["POST"],
            ),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        return Starlette(routes=routes)

    # -- plumbing ------------------------------------------------------------------------------
    def _page(self, handler: Handler, *, operator: bool = False) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            session = self.codec.load(request)
            user: User | None = None
            try:
                user = await self._user(request, session)
                if operator and not user.is_operator:
                    raise PageError(403, "Operators only", ["This page is for operators."])
                stored = await self._program()
                response = await handler(_Call(request, session, user, stored))
            except SignInNeededError:
                response = RedirectResponse(f"/login?next={quote(_local_path(request))}", 303)
            except PageError as exc:
                response = self._problem(request, session, user, exc)
            return self._finish(request, session, response)

        return endpoint

    def _action(self, handler: FormHandler, action: str) -> Callable[[Request], Any]:
        """A form that acts: `action` is its name in the audit log, where a refusal (bad
        input, or a state it contradicts) is written too."""

        async def endpoint(request: Request) -> Response:
            session = self.codec.load(request)
            user: User | None = None
            try:
                user = await self._user(request, session)
                form = await self._form(request, session)
                if not user.is_operator:
                    raise PageError(403, "Read-only", ["Your account can read, not act."])
                stored = await self._program()
                response = await handler(_Call(request, session, user, stored), form)
            except SignInNeededError:
                response = RedirectResponse("/login", 303)
            except PageError as exc:
                if exc.status in (400, 409) and user is not None:
                    await run_in_threadpool(
                        partial(
                            record_refusal,
                            self.engine,
                            self.clock,
                            actor=user.login,
                            action=action,
                            subject=request.path_params.get("id") or request.path_params.get("key"),
                            problems=exc.problems,
                        )
                    )
                response = self._problem(request, session, user, exc)
            return self._finish(request, session, response)

        return endpoint

    async def _form(self, request: Request, session: Session) -> FormData:
        """The form, bounded in size, with its CSRF token checked (403 if missing or wrong)."""
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > MAX_FORM:
            raise PageError(413, "Form too large", [f"At most {MAX_FORM} bytes."])
        body = await request.body()
        if len(body) > MAX_FORM:
            raise PageError(413, "Form too large", [f"At most {MAX_FORM} bytes."])
        form = await request.form(max_files=0, max_fields=32)
        if not session.csrf_ok(form.get(CSRF_FIELD)):
            raise PageError(
                403,
                "The form's security token is missing or out of date",
                ["Nothing was changed. Reload the page and try again."],
            )
        return form

    async def _user(self, request: Request, session: Session) -> User:
        trusted = self._trusted_login(request)
        login = trusted or session.login
        if not login:
            raise SignInNeededError
        user = await run_in_threadpool(get_user, self.engine, login)
        if user is None:
            if session.login:  # removed since: the session ends
                session.sign_out()
                raise SignInNeededError
            raise PageError(403, "No console user", [f"No console user {login!r}."])
        if not trusted and not session.stamp_ok(user.stamp):
            # Signed out elsewhere, a new password or role, or removed and added again.
            session.sign_out()
            raise SignInNeededError
        return user

    def _trusted_login(self, request: Request) -> str | None:
        """The single-sign-on login, only from a listed proxy (headers from anyone else are
        ignored: a client could write them)."""
        header = self.settings.web_trusted_header
        address = peer(request.scope)  # the proxy itself, never an address it forwarded
        if not header or not self.proxies or address is None:
            return None
        try:
            client = ipaddress.ip_address(address)
        except ValueError:
            return None
        if not any(client in net for net in self.proxies):
            return None
        value = request.headers.get(header, "").strip()
        return value or None

    async def _program(self) -> StoredProgram:
        try:
            return await run_in_threadpool(self.load_program, None)
        except InputError as exc:
            log.error("console not ready: %s", "; ".join(exc.problems))
            raise PageError(503, "Not ready", ["The server's log says why."]) from None

    def _finish(self, request: Request, session: Session, response: Response) -> Response:
        self.codec.save(request, response, session)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def render(
        self,
        call: _Call | None,
        template: str,
        code: int = 200,
        *,
        request: Request | None = None,
        session: Session | None = None,
        user: User | None = None,
        **context: Any,
    ) -> HTMLResponse:
        if call is not None:
            request, session, user = call.request, call.session, call.user
            context.setdefault("program", call.stored.program)
        assert request is not None
        assert session is not None
        tz = context["program"].tz if context.get("program") is not None else dt.UTC
        now = self.clock.now()
        base = {
            "user": user,
            "csrf": session.csrf,
            "csrf_field": CSRF_FIELD,
            "flash": session.pop_flash(),
            "now": now.astimezone(tz),
            "local": lambda at: local_time(at, tz),
            "path": request.url.path,
            "program": None,
            # What a refused form had (the problem page's link back carries it): forms show
            # it again instead of starting empty.
            "typed": request.query_params,
        }
        html = self.env.get_template(template).render({**base, **context})
        return HTMLResponse(html, status_code=code)

    def _problem(
        self, request: Request, session: Session, user: User | None, exc: PageError
    ) -> Response:
        return self.render(
            None,
            "problem.html",
            exc.status,
            request=request,
            session=session,
            user=user,
            title=exc.title,
            problems=exc.problems,
            kept=exc.kept,
            back=f"{exc.back}?{urlencode(exc.kept)}" if exc.kept else exc.back,
        )

    def _done(self, call: _Call, message: str, to: str) -> Response:
        call.session.say(message)
        return RedirectResponse(to, 303)

    # -- sign-in -------------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        session = self.codec.load(request)
        if session.login:
            return self._finish(request, session, RedirectResponse("/", 303))
        response = self.render(
            None,
            "login.html",
            request=request,
            session=session,
            next=_safe_next(request.query_params.get("next")),
            error=None,
            username="",
        )
        return self._finish(request, session, response)

    async def login_submit(self, request: Request) -> Response:
        session = self.codec.load(request)
        try:
            form = await self._form(request, session)
        except PageError as exc:
            return self._finish(request, session, self._problem(request, session, None, exc))
        username = str(form.get("username", "")).strip().lower()[:64]
        password = str(form.get("password", ""))
        next_path = _safe_next(str(form.get("next", "")))
        client = request.client.host if request.client else "?"

        def again(error: str, status: int) -> Response:
            return self.render(
                None,
                "login.html",
                status,
                request=request,
                session=session,
                next=next_path,
                error=error,
                username=username,
            )

        wait = self.throttle.retry_after(username, client)
        if wait is not None:
            self.throttle.refused(username, client)
            minutes = max(1, round(wait / 60))
            response = again(
                f"Too many failed sign-ins. Try again in {minutes} minute"
                f"{'s' if minutes > 1 else ''}.",
                429,
            )
            response.headers["Retry-After"] = str(wait)
            return self._finish(request, session, response)
        user = await run_in_threadpool(authenticate, self.engine, username, password)
        if user is None:
            self.throttle.failed(username, client)  # logged there, one line
            return self._finish(request, session, again("Wrong login or password.", 401))
        session.sign_in(user.login, user.stamp)
        await run_in_threadpool(note_sign_in, self.engine, user.login, client, self.clock)
        return self._finish(request, session, RedirectResponse(next_path, 303))

    async def logout(self, request: Request) -> Response:
        session = self.codec.load(request)
        try:
            await self._form(request, session)
        except PageError as exc:
            return self._finish(request, session, self._problem(request, session, None, exc))
        if session.login:  # every session of the login ends, copies of this cookie included
            user = await run_in_threadpool(get_user, self.engine, session.login)
            if user is not None and session.stamp_ok(user.stamp):  # (not a stale cookie's)
                await run_in_threadpool(end_sessions, self.engine, session.login)
        session.sign_out()
        session.say("Signed out.")
        return self._finish(request, session, RedirectResponse("/login", 303))

    # -- pages ---------------------------------------------------------------------------------
    async def dashboard(self, call: _Call) -> Response:
        if not call.user.is_operator:
            return RedirectResponse("/departments", 303)
        stored, now = call.stored, self.clock.now()
        status, per_day, marked = await run_in_threadpool(self._dashboard_data, stored, now)
        program = stored.program
        today = now.astimezone(program.tz).date()
        waves = [
            (w.key, w.title, w.opens, w.closes, bool(status["waves"][w.key]["launched_at"]))
            for w in program.waves
        ]
        opens = min(w.opens for w in program.waves)
        closes = max(w.closes for w in program.waves)
        return self.render(
            call,
            "dashboard.html",
            status=status,
            cards=[_wave_card(key, status["waves"][key], marked.get(key, 0)) for key, *_ in waves],
            undeliverable=sum(marked.values()),
            timeline=charts.timeline(waves, today),
            daily=charts.daily(
                per_day, opens, closes, today, (program.reach.first, program.reach.last)
            ),
            completed_total=sum(per_day.values()),
        )

    def _dashboard_data(
        self, stored: StoredProgram, now: dt.datetime
    ) -> tuple[dict[str, Any], dict[dt.date, int], dict[str, int]]:
        # The relay's figures of `status` (every message and attempt counted) are not shown
        # here but the oldest wait: that one is read alone (bench/console.py, 100,000 people).
        status = program_status(self.engine, stored, now, delivery=False)
        status["delivery"] = {
            "oldest_due_seconds": progress.oldest_waiting_seconds(self.engine, now)
        }
        return (
            status,
            progress.completions_per_day(self.engine, stored),
            progress.owing_marked_by_wave(self.engine, stored),
        )

    def _wave_of(self, call: _Call) -> str:
        key = call.request.path_params["key"]
        if key not in {w.key for w in call.stored.program.waves}:
            raise PageError(404, "No such wave", [f"The program has no wave {key!r}."])
        return str(key)

    async def wave(self, call: _Call) -> Response:
        key = self._wave_of(call)
        q = _search(call.request)
        page = _page_number(call.request)
        stored, now = call.stored, self.clock.now()

        def read() -> tuple[Any, Any, Any, int]:
            return (
                program_status(self.engine, stored, now, delivery=False)["waves"][key],
                preview_launch(self.engine, stored, key, self.clock),
                lookup.find_people(self.engine, stored, now, query=q, wave=key, page=page),
                progress.owing_marked_by_wave(self.engine, stored).get(key, 0),
            )

        status, dry_run, members, marked = await run_in_threadpool(read)
        return self.render(
            call,
            "wave.html",
            wave=stored.program.wave(key),
            card=_wave_card(key, status, marked),
            dry_run=dry_run,
            can_launch=dry_run.to_queue > 0,
            members=members,
            q=q,
        )

    async def wave_progress(self, call: _Call) -> Response:
        key = self._wave_of(call)

        def read() -> WaveCard:
            status = program_status(self.engine, call.stored, self.clock.now(), delivery=False)
            marked = progress.owing_marked_by_wave(self.engine, call.stored).get(key, 0)
            return _wave_card(key, status["waves"][key], marked)

        return self.render(call, "_progress.html", card=await run_in_threadpool(read))

    async def launch_confirm(self, call: _Call) -> Response:
        key = self._wave_of(call)
        dry_run = await run_in_threadpool(preview_launch, self.engine, call.stored, key, self.clock)
        return self.render(call, "launch.html", wave=call.stored.program.wave(key), dry_run=dry_run)

    async def launch(self, call: _Call, form: FormData) -> Response:
        key = self._wave_of(call)
        force = form.get("force") == "yes"
        try:
            done = await run_in_threadpool(
                lambda: launch_wave(
                    self.engine,
                    call.stored,
                    key,
                    self.clock,
                    actor=call.user.login,
                    message_id_domain=self.settings.message_id_domain,
                    force=force,
                )
            )
        except ConflictError as exc:
            raise PageError(
                409, "Not launched", [str(exc), _advice(exc)], back=f"/waves/{quote(key)}/launch"
            ) from None
        when = local_time(done.due_at, call.stored.program.tz)
        message = f"Queued {done.queued:,} launch emails for {key}, to go out from {when}."
        return self._done(call, message, f"/waves/{quote(key)}")

    async def schedule(self, call: _Call, form: FormData) -> Response:
        key = self._wave_of(call)
        raw = str(form.get("at", "")).strip()
        tz = call.stored.program.tz
        try:
            # A time without an offset is the program's (what the form's field sends); an
            # offset typed or sent with it is kept.
            at = read(
                "at", lambda: Instant.parse(raw, call.stored.program.reach, local_when_bare=True)
            )
        except InputError as exc:
            back = f"/waves/{quote(key)}/launch"
            raise PageError(
                400, "Not scheduled", exc.problems, back=back, kept={"at": raw}
            ) from None
        force = form.get("force") == "yes"
        try:
            done = await run_in_threadpool(
                lambda: schedule_launch(
                    self.engine,
                    call.stored,
                    key,
                    at,
                    self.clock,
                    actor=call.user.login,
                    force=force,
                )
            )
        except ConflictError as exc:
            back = f"/waves/{quote(key)}/launch"
            raise PageError(
                409, "Not scheduled", [str(exc), _advice(exc)], back=back, kept={"at": raw}
            ) from None
        message = f"The launch of {key} is scheduled for {local_time(done.at, tz)}."
        return self._done(call, message, f"/waves/{quote(key)}")

    async def unschedule(self, call: _Call, _form: FormData) -> Response:
        key = self._wave_of(call)
        try:
            done = await run_in_threadpool(
                lambda: cancel_launch(
                    self.engine, call.stored, key, self.clock, actor=call.user.login
                )
            )
        except ConflictError as exc:
            raise PageError(409, "Nothing withdrawn", [str(exc)]) from None
        message = "The scheduled launch is withdrawn." if done.changed else "Nothing was scheduled."
        return self._done(call, message, f"/waves/{quote(key)}")

    async def people(self, call: _Call) -> Response:
        q = call.request.query_params.get("q", "")
        if problem := lookup.query_problem(q):
            _log_long_search(q)
            empty = lookup.Page([], 1, lookup.PER_PAGE, 0)
            short = q[: lookup.MAX_QUERY]  # what was typed, as much of it as a search holds
            return self.render(call, "people.html", 400, found=empty, q=short, error=problem)
        page = _page_number(call.request)
        found = await run_in_threadpool(
            lambda: lookup.find_people(
                self.engine,
                call.stored,
                self.clock.now(),
                query=q,
                departments=_scope(call.user),
                page=page,
            )
        )
        return self.render(call, "people.html", found=found, q=q, error=None)

    async def person(self, call: _Call) -> Response:
        person_id = call.request.path_params["id"]
        try:
            view = await run_in_threadpool(
                lookup.person_view,
                self.engine,
                call.stored,
                person_id,
                self.clock.now(),
                _scope(call.user),
            )
        except NotFoundError:
            raise PageError(404, "Not found", [f"Nobody with id {person_id!r}."]) from None
        options = [(o.key, o.title) for o in call.stored.program.options]
        options.append((ALTERNATIVE, "An approved alternative"))
        asked = await run_in_threadpool(
            partial(requests.list_requests, self.engine, call.stored, person_ref=view.id)
        )
        return self.render(call, "person.html", p=view, options=options, **_request_rows(asked))

    # -- participants' requests ----------------------------------------------------------------
    async def requests(self, call: _Call) -> Response:
        params = call.request.query_params
        kind = params.get("kind") or None
        state = params.get("state") or None
        try:
            rows = await run_in_threadpool(
                partial(
                    requests.list_requests,
                    self.engine,
                    call.stored,
                    state=state,
                    kind=kind,
                    departments=_scope(call.user),
                )
            )
        except InputError as exc:
            raise PageError(400, "Unknown filter", exc.problems, back="/requests") from None
        return self.render(
            call,
            "requests.html",
            kind=kind,
            state=state,
            kinds=list(request_rules.KINDS.items()),
            states=request_rules.STATES,
            pause_days=call.stored.program.requests.pause_reminders_days,
            **_request_rows(rows),
        )

    async def _request_action(
        self, call: _Call, form: FormData, work: Callable[[int], dict[str, Any]]
    ) -> Response:
        request_id = int(call.request.path_params["id"])
        back = f"/requests#request-{request_id}"
        kept = {k: str(v) for k, v in form.items() if k != CSRF_FIELD}
        try:
            done = await run_in_threadpool(work, request_id)
        except NotFoundError:
            raise PageError(404, "Not found", [f"No request {request_id}."]) from None
        except InputError as exc:
            raise PageError(
                400, "Nothing was changed", exc.problems, back="/requests", kept=kept
            ) from None
        except ConflictError as exc:
            raise PageError(409, "Nothing was changed", [str(exc)], back="/requests") from None
        said = {
            "approved": "approved; the person is told by email",
            "declined": "declined; the person is told by email and their reminders resume",
        }[done["state"]]
        return self._done(call, f"Request {request_id} ({done['person']}) {said}.", back)

    async def approve_request(self, call: _Call, form: FormData) -> Response:
        raw = str(form.get("until", "")).strip()
        note = str(form.get("note", ""))

        def work(request_id: int) -> dict[str, Any]:
            reach = call.stored.program.reach
            until = read("until", lambda: Day.parse(raw, reach)) if raw else None
            return requests.approve(
                self.engine,
                call.stored,
                request_id,
                self.clock,
                actor=call.user.login,
                until=until,
                note=note,
                message_id_domain=self.settings.message_id_domain,
            )

        return await self._request_action(call, form, work)

    async def decline_request(self, call: _Call, form: FormData) -> Response:
        note = str(form.get("note", ""))

        def work(request_id: int) -> dict[str, Any]:
            return requests.decline(
                self.engine,
                call.stored,
                request_id,
                self.clock,
                actor=call.user.login,
                note=note,
                message_id_domain=self.settings.message_id_domain,
            )

        return await self._request_action(call, form, work)

    async def departments(self, call: _Call) -> Response:
        params = call.request.query_params
        name = params.get("name")
        show = params.get("show", "overdue")
        show = progress.SHOW_ALIASES.get(show, show)
        if show not in progress.SHOWS:
            lists = ", ".join(progress.SHOW_WORDS.values())
            raise PageError(400, "Unknown list", [f"No list {show!r}: the lists are {lists}."])
        scope = _scope(call.user)
        if name is not None and scope is not None and name.casefold() not in _folded(scope):
            raise PageError(404, "Not found", [f"No department {name!r} among yours."])
        page = _page_number(call.request)
        now = self.clock.now()

        def read() -> tuple[Any, Any]:
            summary = progress.department_summary(self.engine, call.stored, now, scope)
            listed = None
            if name is not None:
                listed = progress.department_people(
                    self.engine, call.stored, now, departments=[name], show=show, page=page
                )
            return summary, listed

        summary, listed = await run_in_threadpool(read)
        return self.render(
            call,
            "departments.html",
            summary=summary,
            name=name,
            show=show,
            shows=progress.SHOW_WORDS,
            listed=listed,
        )

    async def report_csv(self, call: _Call) -> Response:
        name = call.request.query_params.get("name", "")
        scope = _scope(call.user)
        if not name or (scope is not None and name.casefold() not in _folded(scope)):
            raise PageError(404, "Not found", [f"No department {name!r} among yours."])
        try:
            data = await run_in_threadpool(
                department_csv, self.engine, call.stored, name, self.clock.now()
            )
        except NotFoundError:  # nobody enrolled is in it
            if scope is None:  # an operator's mistyping (the hint would name a CLI option)
                raise PageError(
                    404, "Not found", [f"Nobody enrolled is in the department {name!r}."]
                ) from None
            data = report_csv([])  # a viewer's own department, empty for now: the header only
        filename = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "department"
        return Response(
            data,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{filename}.csv"'},
        )

    async def audit(self, call: _Call) -> Response:
        found = await run_in_threadpool(
            audit_page, self.engine, call.stored.program.tz, _page_number(call.request)
        )
        return self.render(call, "audit.html", found=found)

    # -- actions on a person -------------------------------------------------------------------
    async def _person_action(
        self, call: _Call, work: Callable[[str], str], form: FormData | None = None
    ) -> Response:
        person_id = call.request.path_params["id"]
        page = f"/people/{quote(person_id, safe='')}"
        kept = {k: str(v) for k, v in form.items() if k != CSRF_FIELD} if form else {}
        try:
            message = await run_in_threadpool(work, person_id)
        except NotFoundError:
            raise PageError(404, "Not found", [f"Nobody with id {person_id!r}."]) from None
        except InputError as exc:
            raise PageError(
                400, "Nothing was changed", exc.problems, back=page, kept=kept
            ) from None
        except ConflictError as exc:
            raise PageError(409, "Nothing was changed", [str(exc)], back=page, kept=kept) from None
        return self._done(call, message, page)

    async def extend(self, call: _Call, form: FormData) -> Response:
        raw = str(form.get("until", "")).strip()

        def work(person_id: str) -> str:
            until = read("until", lambda: Day.parse(raw, call.stored.program.reach))
            note = str(form.get("note", "")).strip() or None
            done = extend(
                self.engine,
                call.stored,
                person_id,
                until,
                self.clock,
                actor=call.user.login,
                note=note,
            )
            return (
                f"Deadline of {done.person}: {done.detail['previous']} -> {done.detail['until']}."
            )

        return await self._person_action(call, work, form)

    async def exempt(self, call: _Call, form: FormData) -> Response:
        reason = str(form.get("reason", ""))

        def work(person_id: str) -> str:
            done = exempt(
                self.engine, call.stored, person_id, reason, self.clock, actor=call.user.login
            )
            cancelled = done.detail["cancelled_messages"]
            return f"{done.person} is exempt; {cancelled} unsent messages cancelled."

        return await self._person_action(call, work, form)

    async def complete(self, call: _Call, form: FormData) -> Response:
        option = str(form.get("option", ""))
        note = str(form.get("note", "")).strip() or None
        raw = str(form.get("completed_on", "")).strip()
        reach = call.stored.program.reach

        def work(person_id: str) -> str:
            # A date: midnight in the program's zone, as the CSV and the CLI read one.
            when = read("completed_on", lambda: Day.parse(raw, reach)) if raw else None
            result = complete_by_operator(
                self.engine,
                call.stored,
                self.clock,
                person_ref=person_id,
                option=option,
                actor=call.user.login,
                message_id_domain=self.settings.message_id_domain,
                completed_at=None if when is None else Instant.at_midnight(when),
                note=note,
            )
            return _completion_said(result)

        return await self._person_action(call, work, form)

    async def address_ok(self, call: _Call, _form: FormData) -> Response:
        def work(person_id: str) -> str:
            done = address_ok(
                self.engine,
                call.stored,
                person_id,
                self.clock,
                actor=call.user.login,
                message_id_domain=self.settings.message_id_domain,
            )
            if not done.was_marked:
                return f"{done.email} was not marked undeliverable; nothing changed."
            again = "; the launch email goes out again" if done.launch_requeued else ""
            return f"{done.email} is marked as working again{again}."

        return await self._person_action(call, work)


# -- helpers --------------------------------------------------------------------------------------
def _completion_said(result: CompletionResult) -> str:
    """What an operator's completion did, in words (not the outcome's code name)."""
    if result.outcome is CompletionOutcome.DUPLICATE:
        return "This completion was recorded before; nothing changed."
    if result.outcome is CompletionOutcome.EXTRA:
        return "Completion recorded as an extra: the training was already complete."
    n = result.cancelled_messages
    said = "Completion recorded: the training is complete"
    if n:
        said += f"; {n} unsent email{'s' if n != 1 else ''} cancelled"
    if result.confirmation_queued:
        said += "; a confirmation is on its way"
    return said + "."


def _request_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests as the pages show them (times as datetimes, kinds in words)."""
    shown = [
        {
            **r,
            "filed": dt.datetime.fromisoformat(r["filed_at"]),
            "decided": dt.datetime.fromisoformat(r["decided_at"]) if r["decided_at"] else None,
        }
        for r in rows
    ]
    titles = {k: t.title for k, t in request_rules.KINDS.items()}
    return {"requests": shown, "rows": shown, "titles": titles}


def _scope(user: User) -> Sequence[str] | None:
    return None if user.is_operator else user.departments


def _folded(names: Sequence[str]) -> set[str]:
    return {n.casefold() for n in names}


def _local_path(request: Request) -> str:
    path = request.url.path
    return f"{path}?{request.url.query}" if request.url.query else path


def _safe_next(value: str | None) -> str:
    """Only a path on this site: never `//host` or a scheme (an open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def _search(request: Request) -> str:
    q = request.query_params.get("q", "")
    if problem := lookup.query_problem(q):
        _log_long_search(q)
        raise PageError(400, "Search too long", [problem.capitalize() + "."])
    return q


def _log_long_search(q: str) -> None:
    """A summary, never the whole parameter (it may be megabytes)."""
    log.info("people search refused: %d characters, starting %r", len(q), q[:40])


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 else 1


def _advice(exc: ConflictError) -> str:
    """The next step of a refused launch, in the console's words (never a CLI flag)."""
    return {
        "force": "To launch it all the same, tick “Launch anyway” on the launch page.",
        "schedule": f"Schedule the launch for {exc.when.replace('T', ' ')} on the launch page "
        "(it is filled in there), or tick “Launch anyway” to launch it now.",
        "launch_now": "Launch it now from the launch page instead.",
    }.get(exc.advice, "")


@dataclass(frozen=True)
class WaveCard:
    key: str
    title: str
    opens: str
    closes: str
    launched_at: dt.datetime | None
    launch_at: dt.datetime | None  # a scheduled launch, not yet begun
    paused: bool
    people: charts.Bar
    messages: charts.Bar
    not_required: dict[str, int]


_OWING = (PersonWord.EMAILED, PersonWord.NOT_LAUNCHED)


def _wave_card(key: str, w: dict[str, Any], undeliverable: int = 0) -> WaveCard:
    """One wave's progress bars from `status`'s numbers (the CLI's `status`, drawn); the
    undeliverable are those who still owe the training and cannot be reached."""
    ppl, msg = w["people"], w["messages"]
    said = ppl["states"]  # by PersonWord: the words `status` and the officers' report use
    owing = said[PersonWord.EMAILED] + said[PersonWord.NOT_LAUNCHED] - undeliverable
    people = charts.stacked(
        "people",
        [
            (w_.value, w_.words, owing if w_ in _OWING else said[w_])
            for w_ in (
                PersonWord.COMPLETE,
                PersonWord.EMAILED if w.get("launched_at") else PersonWord.NOT_LAUNCHED,
                PersonWord.EXEMPT,
                PersonWord.NOT_REQUIRED,
            )
        ]
        + [(PersonWord.UNDELIVERABLE.value, PersonWord.UNDELIVERABLE.words, undeliverable)],
    )
    waiting = msg["queued"] + msg["sending"] + msg["deferred"]
    messages = charts.stacked(
        "messages",
        [
            ("delivered", "delivered", msg["delivered"]),
            ("waiting", "queued, sending or deferred", waiting),
            ("failed", "failed or bounced", msg["failed"] + msg["unknown"] + msg.get("bounced", 0)),
        ],
    )
    return WaveCard(
        key,
        w.get("title", key),
        w.get("opens", ""),
        w.get("closes", ""),
        dt.datetime.fromisoformat(w["launched_at"]) if w.get("launched_at") else None,
        dt.datetime.fromisoformat(w["launch_at"]) if w.get("launch_at") else None,
        bool(w.get("paused")),
        people,
        messages,
        dict(ppl["not_required"]),
    )
