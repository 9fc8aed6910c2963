"""The participant's page behind the emails' personal link: `/r/TOKEN`.

No sign-in: the signed link names the person (mail/links.py). It works without JavaScript
(none is served), on a phone, and shows nothing a forwarded email does not (a first name and
the deadline). A GET or HEAD changes nothing, since mail gateways fetch every link in a
message; only a POST from the page's own form files a request, carrying a form token tied to
the link, and a request is only a request: an operator, or the program's stated rule, decides it
(services/campaign/requests.py). Submissions are limited per link and per client address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from pshnotify.clock import Clock
from pshnotify.domain import requests as rules
from pshnotify.domain.calendar import LAST_MINUTE, human_date, human_time, spoken_zone, zone
from pshnotify.domain.errors import ConflictError, InputError, NotFoundError
from pshnotify.mail.links import BadLinkError, RequestLinks
from pshnotify.services.campaign.requests import Person, file_request, link_person
from pshnotify.settings import Settings
from pshnotify.store.programs import StoredProgram
from pshnotify.web.bounds import Tally
from pshnotify.web.throttle import FailureThrottle

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
MAX_FORM = 8 * 1024
FORM_TOKEN = "form_token"
# Submissions per link and per client address, in an hour: a person files a handful at
# most; an office behind one address, more.
PER_LINK, PER_ADDRESS, WINDOW = 6, 30, 3600.0
_HEADERS = {
    # No script at all; the style is the page's own.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The token is in the address: it must not travel to the course site in a Referer.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}


class _RefusedError(Exception):
    def __init__(self, status: int, template: str, **context: Any) -> None:
        self.status, self.template, self.context = status, template, context
        super().__init__(template)


class ParticipantPages:
    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        settings: Settings,
        load_program: Any,
        links: RequestLinks,
        *,
        per_link: FailureThrottle | None = None,
        per_address: FailureThrottle | None = None,
    ) -> None:
        self.engine, self.clock, self.settings = engine, clock, settings
        self.load_program = load_program
        self.links = links
        self.proxies = [ipaddress.ip_network(p, strict=False) for p in settings.web_trusted_proxies]
        tally = Tally("request submissions")
        self.per_link = per_link or FailureThrottle(PER_LINK, WINDOW, tally=tally)
        self.per_address = per_address or FailureThrottle(PER_ADDRESS, WINDOW, tally=tally)
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/r/{token}", self.page, methods=["GET"]),  # HEAD too: Starlette adds it
            Route("/r/{token}", self.submit, methods=["POST"]),
        ]

    # -- the pages -----------------------------------------------------------------------------
    async def page(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            stored, person = await self._resolve(token)
        except _RefusedError as exc:
            return self._render(exc.template, exc.status, **exc.context)
        return self._form_page(token, stored, person)

    async def submit(self, request: Request) -> Response:
        token = request.path_params["token"]
        try:
            stored, person = await self._resolve(token)
            form = await self._form(request)
            if not self.links.form_ok(token, form.get(FORM_TOKEN)):
                raise _RefusedError(
                    403,
                    "problem.html",
                    title="This form is out of date",
                    lines=["Nothing was sent. Open the link in your email again and resubmit."],
                    help=_help(stored),
                )
            self._count(request, token, stored)
            kind = form.get("kind", "")
            typed = {k: v for k, v in form.items() if k not in (FORM_TOKEN, "kind")}
            try:
                filed = await run_in_threadpool(
                    file_request,
                    self.engine,
                    stored,
                    person.external_id,
                    kind,
                    typed,
                    self.clock,
                    message_id_domain=self.settings.message_id_domain,
                )
            except NotFoundError:
                raise self._not_found() from None
            except InputError as exc:
                problems = dict(_split(line) for line in exc.problems)
                return self._form_page(token, stored, person, 400, kind, typed, problems)
            except ConflictError as exc:
                return self._render(
                    "problem.html",
                    409,
                    title="Already received",
                    lines=[str(exc)],
                    help=_help(stored),
                    back=f"/r/{token}",
                )
        except _RefusedError as exc:
            return self._render(exc.template, exc.status, **exc.context)
        return self._render(
            "received.html",
            200,
            first_name=person.first_name,
            kind=rules.KINDS[filed.kind],
            filed=filed,
            pause_days=stored.program.requests.pause_reminders_days,
            help=_help(stored),
            program=stored.program.program.name,
            back=f"/r/{token}",
        )

    # -- plumbing ------------------------------------------------------------------------------
    async def _resolve(self, token: str) -> tuple[StoredProgram, Person]:
        """The program and person the link names; 404 for an altered or foreign link or a
        person no longer on the roster, 410 for an expired one."""
        try:
            named = self.links.read(token)
        except BadLinkError:
            raise self._not_found() from None
        try:
            stored = await run_in_threadpool(self.load_program, named.program)
            person = await run_in_threadpool(link_person, self.engine, stored, named.person)
        except InputError:  # NotFoundError included: an unknown program or person
            raise self._not_found() from None
        if not stored.program.requests.enabled:
            raise self._not_found()
        expires = rules.link_expires(stored.program, person.deadline)
        if self.clock.now() >= expires:
            raise _RefusedError(
                410,
                "problem.html",
                title="This link has expired",
                lines=[
                    f"The link in your email worked until {human_date(expires.date())}.",
                    f"Please write to {_help(stored)['email']} with your question; "
                    "the training office will answer.",
                ],
                help=_help(stored),
            )
        return stored, person

    def _not_found(self) -> _RefusedError:
        return _RefusedError(
            404,
            "problem.html",
            title="We cannot find this link",
            lines=[
                "The address may have been cut short or changed when it was copied, or it "
                "is no longer in use.",
                "Open the link from the email again, or write to the address at the end of "
                "the email you received.",
            ],
            help=None,
        )

    async def _form(self, request: Request) -> dict[str, str]:
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > MAX_FORM:
            raise _RefusedError(
                413, "problem.html", title="Too much text", lines=["Please shorten it."], help=None
            )
        body = await request.body()
        if len(body) > MAX_FORM:
            raise _RefusedError(
                413, "problem.html", title="Too much text", lines=["Please shorten it."], help=None
            )
        form = await request.form(max_files=0, max_fields=16)
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def _address(self, request: Request) -> str:
        """The client's address; behind a proxy named in PSHNOTIFY_WEB_TRUSTED_PROXIES, the
        address it says it forwarded for (X-Forwarded-For's last entry), since every
        participant would otherwise share the proxy's one limit."""
        direct = request.client.host if request.client else "unknown"
        try:
            client = ipaddress.ip_address(direct)
        except ValueError:
            return direct
        if not any(client in net for net in self.proxies):
            return direct
        forwarded = request.headers.get("x-forwarded-for", "").split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(forwarded))
        except ValueError:
            return direct

    def _count(self, request: Request, token: str, stored: StoredProgram) -> None:
        address = self._address(request)
        link = self.links.form_token(token)  # a short, stable key for the link
        for throttle, key in ((self.per_link, link), (self.per_address, address)):
            wait = throttle.retry_after(key)
            if wait is not None:
                throttle.refused(key, "request submission")
                minutes = max(1, round(wait / 60))
                raise _RefusedError(
                    429,
                    "problem.html",
                    title="Too many requests",
                    lines=[
                        "Nothing was sent. Please try again in about "
                        f"{minutes} minute{'s' if minutes != 1 else ''}, or write to "
                        f"{_help(stored)['email']}."
                    ],
                    help=_help(stored),
                    retry_after=wait,
                )
        self.per_link.failed(link, "request submission")
        self.per_address.failed(address, "request submission")

    def _form_page(
        self,
        token: str,
        stored: StoredProgram,
        person: Person,
        status: int = 200,
        kind: str = "",
        typed: dict[str, str] | None = None,
        problems: dict[str, str] | None = None,
    ) -> Response:
        program = stored.program
        deadline = person.deadline
        home = program.tz
        theirs = zone(person.timezone, home)
        ends = dt.datetime.combine(deadline, LAST_MINUTE, home).astimezone(theirs)
        longest = deadline + dt.timedelta(days=program.requests.max_extension_days)
        return self._render(
            "request.html",
            status,
            token=token,
            form_token=self.links.form_token(token),
            form_token_field=FORM_TOKEN,
            first_name=person.first_name,
            program=program.program.name,
            cycle=program.program.cycle,
            deadline=f"{human_date(ends.date())}, {human_time(ends.time())} {spoken_zone(theirs)}",
            kinds=[(k, rules.KINDS[k]) for k in program.requests.enabled],
            waiting=person.open_kinds,
            settled=person.settled,
            options=[(o.key, o.title) for o in program.options],
            reasons=program.requests.not_required_reasons,
            until_min=(deadline + dt.timedelta(days=1)).isoformat(),
            until_max=longest.isoformat(),
            max_days=program.requests.max_extension_days,
            today=self.clock.now().astimezone(theirs).date().isoformat(),
            active=kind,
            typed=typed or {},
            problems=problems or {},
            help=_help(stored),
        )

    def _render(self, template: str, status: int, **context: Any) -> Response:
        retry_after = context.pop("retry_after", None)
        context.setdefault("back", None)
        html = self.env.get_template(template).render(context)
        response = HTMLResponse(html, status_code=status, headers=_HEADERS)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response


def _help(stored: StoredProgram) -> dict[str, str]:
    info = stored.program.program
    contact = stored.program.contact("help")
    if contact is not None:
        return {"label": contact.label, "email": str(contact.email)}
    return {"label": "Questions", "email": str(info.sender.address)}


def _split(line: str) -> tuple[str, str]:
    name, sep, rest = line.partition(": ")
    return (name, rest) if sep else ("", line)
