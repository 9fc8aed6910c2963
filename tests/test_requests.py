"""Participants' requests (issue 27): the personal link in the emails, its page, the decision
rules, and what operators do with a request. Real SQLite and PostgreSQL, a real SMTP server
on loopback, the page through the app's own HTTP stack."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from pshnotify.clock import FixedClock
from pshnotify.domain import requests as rules
from pshnotify.domain.errors import ConflictError, InputError
from pshnotify.domain.program import Program, parse_program
from pshnotify.domain.values import Day
from pshnotify.mail.links import RequestLinks
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign import requests as svc
from pshnotify.services.campaign.schedule import run_pass
from pshnotify.services.reporting.plan import build_plan
from pshnotify.store.schema import audit_log, enrollments, messages, requests
from tests.conftest import LINK_SECRET, NY, PROGRAM_FILE
from tests.smtp_server import SmtpServer
from tests.test_launch_and_send import PILOT, launch, send, setup_pilot
from tests.test_web import running

LINK = re.compile(r"Tell us here: (\S+/r/(\S+))")


def program(**requests: Any) -> Program:
    text = PROGRAM_FILE.read_text(encoding="utf-8")
    head, _, _ = text.partition("\n[requests]")
    extra = "\n[requests]\n" + "".join(
        f"{k} = {v!r}\n".replace("'", '"') for k, v in requests.items()
    )
    return parse_program(head + extra, "program.toml")


# -- the decision rules, pure -------------------------------------------------------------------
def test_the_pause_lasts_pause_reminders_days_from_filing() -> None:
    p = program(enabled=["more_time"], pause_reminders_days=7)
    filed = dt.datetime(2023, 9, 20, 15, 0, tzinfo=NY)
    assert rules.pause_ends(p, filed) == filed + dt.timedelta(days=7)
    assert rules.pausing(p, filed, filed)
    assert rules.pausing(p, filed, filed + dt.timedelta(days=6, hours=23))
    assert not rules.pausing(p, filed, filed + dt.timedelta(days=7))
    assert not rules.pausing(p, filed, filed - dt.timedelta(seconds=1))
    assert not rules.pausing(program(enabled=["technical"], pause_reminders_days=0), filed, filed)


def test_more_time_is_bounded_by_the_maximum_and_must_move_the_deadline_later() -> None:
    p = program(enabled=["more_time"], max_extension_days=14)
    deadline = dt.date(2023, 10, 6)
    assert rules.extension_problem(p, deadline, dt.date(2023, 10, 20)) is None
    assert "more than 14 days" in str(rules.extension_problem(p, deadline, dt.date(2023, 10, 21)))
    assert "not after your deadline" in str(rules.extension_problem(p, deadline, deadline))
    with pytest.raises(InputError) as caught:
        rules.read_request(p, "more_time", {"until": "2023-10-21", "reason": "x"}, deadline)
    assert caught.value.problems[0].startswith("until: ")
    with pytest.raises(InputError, match=r"until: .*outside the dates"):
        rules.read_request(p, "more_time", {"until": "9999-12-31", "reason": "x"}, deadline)


def test_auto_approval_grants_only_up_to_its_days_and_never_when_zero() -> None:
    deadline = dt.date(2023, 10, 6)
    p = program(enabled=["more_time"], max_extension_days=30, auto_approve_extension_days=7)
    assert rules.auto_approves(p, deadline, dt.date(2023, 10, 13))
    assert not rules.auto_approves(p, deadline, dt.date(2023, 10, 14))
    assert not rules.auto_approves(p, deadline, deadline)
    never = program(enabled=["more_time"], auto_approve_extension_days=0)
    assert not rules.auto_approves(never, deadline, dt.date(2023, 10, 7))


def test_the_program_file_refuses_inconsistent_request_settings() -> None:
    with pytest.raises(InputError, match="auto_approve_extension_days"):
        program(enabled=["more_time"], max_extension_days=5, auto_approve_extension_days=6)
    with pytest.raises(InputError, match="not_required_reasons"):
        program(enabled=["not_required"])
    with pytest.raises(InputError, match="enabled"):
        program(enabled=["more_time", "coffee"])


def test_a_link_names_program_and_person_and_survives_a_rotation() -> None:
    old = RequestLinks("o" * 32, "https://t.example.edu")
    token = old.token("psh-2023-2024", "H1")
    rotated = RequestLinks("n" * 32, "https://t.example.edu/", ["o" * 32])
    named = rotated.read(token)
    assert (named.program, named.person) == ("psh-2023-2024", "H1")
    assert rotated.url("p", "H1").startswith("https://t.example.edu/r/")
    assert rotated.token("p", "H1") != old.token("p", "H1")  # signs with the new secret
    from pshnotify.mail.links import BadLinkError

    with pytest.raises(BadLinkError):
        RequestLinks("n" * 32, "https://t.example.edu").read(token)  # old secret forgotten
    # The form's token is tied to its link, and a link's token is no form token.
    assert rotated.form_ok(token, rotated.form_token(token))
    assert not rotated.form_ok(token, rotated.form_token(rotated.token("p", "H2")))
    assert not rotated.form_ok(token, token)


# -- through the emails and the page ---------------------------------------------------------------
def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def mail_to(smtp: SmtpServer, address: str, kind: str | None = None) -> list[EmailMessage]:
    return [
        m
        for m in smtp.messages()
        if m["To"].addresses[0].addr_spec == address and kind in (None, m["X-Pshnotify-Kind"])
    ]


def link_in(msg: EmailMessage) -> str:
    found = LINK.search(text_of(msg))
    assert found, text_of(msg)
    return found.group(1)


@pytest.fixture
def launched(runtime: Runtime, smtp: SmtpServer, tmp_path: Path) -> Runtime:
    """The pilot launched on 2023-09-11 and its launch emails delivered."""
    setup_pilot(runtime, tmp_path)
    launch(runtime)
    assert send(runtime) == {"sent": 3}
    return runtime


@pytest.fixture
def site(launched: Runtime) -> Iterator[httpx.Client]:
    with running(launched.http_app()) as client:
        yield client


def path_of(url: str) -> str:
    return "/r/" + url.rsplit("/r/", 1)[1]


def counts(rt: Runtime) -> tuple[int, int, int]:
    """(requests, messages, audit rows): what any action would change."""
    with rt.engine.connect() as conn:
        return (
            int(conn.scalar(select(func.count()).select_from(requests)) or 0),
            int(conn.scalar(select(func.count()).select_from(messages)) or 0),
            int(conn.scalar(select(func.count()).select_from(audit_log)) or 0),
        )


def form_of(page: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', page)
    assert found
    return found.group(1)


def test_the_launch_email_carries_the_personal_link_and_its_page_greets_the_person(
    launched: Runtime, smtp: SmtpServer, site: httpx.Client
) -> None:
    ada = mail_to(smtp, "ada@example.edu", "launch")[0]
    url = link_in(ada)
    # Its own paragraph, after the text before it (and the window's line keeps its end).
    assert (
        f"hours.\n\nNeed more time, already completed, or not required? Tell us here: {url}\n"
        in (text_of(ada).replace("\r\n", "\n"))
    )
    assert "Eastern Time\nThe attached calendar file" in text_of(ada).replace("\r\n", "\n")
    assert url.startswith(f"{launched.settings.public_url}/r/")
    assert url in html_of(ada)
    assert "Need more time, already completed, or not required?" in html_of(ada)
    # Each person's link is their own.
    assert url != link_in(mail_to(smtp, "grace@example.edu", "launch")[0])
    page = site.get(path_of(url))
    assert page.status_code == 200
    assert "Hello Ada," in page.text
    assert "Lovelace" not in page.text  # no more than a forwarded email shows
    assert "Friday, October 6, 2023, 11:59 p.m. Eastern Time" in page.text
    for button in ("Request more time", "I have completed it", "I am not required"):
        assert f">{button}</button>" in page.text
    for field in ("until", "reason", "option", "completed_on", "note"):
        assert f'name="{field}"' in page.text
    assert "<script" not in page.text
    assert page.headers["referrer-policy"] == "no-referrer"


def test_each_kind_is_filed_acknowledged_and_a_second_one_is_refused(
    launched: Runtime, smtp: SmtpServer, site: httpx.Client
) -> None:
    path = path_of(link_in(mail_to(smtp, "grace@example.edu", "launch")[0]))
    token = form_of(site.get(path).text)
    forms = {
        "more_time": {"until": "2023-10-27", "reason": "On leave until October 20"},
        "completed": {"option": "B", "completed_on": "2023-09-10"},
        "not_required": {"reason": "I hold an unpaid appointment (FAQ 16)", "note": ""},
        "alternative": {"note": "The videos do not work with my screen reader"},
        "technical": {"note": "The course site says access denied"},
    }
    for kind, fields in forms.items():
        answer = site.post(path, data={"form_token": token, "kind": kind, **fields})
        assert answer.status_code == 200, answer.text
        assert "we received your request" in answer.text
        assert "What happens next" in answer.text
    listed = svc.list_requests(launched.engine, launched.program(None))
    assert [(r["kind"], r["state"], r["person"]) for r in listed] == [
        (k, "pending", "H3") for k in reversed(list(forms))
    ]
    # The same POST again (a replay, a refresh): said so, nothing filed twice.
    before = counts(launched)
    again = site.post(path, data={"form_token": token, "kind": "technical", **forms["technical"]})
    assert again.status_code == 409
    assert "already have a request of this kind waiting" in again.text
    assert counts(launched) == before
    # The page now says each request waits, and offers no form for them.
    page = site.get(path).text
    assert page.count("Your request is waiting for an answer") == 5
    send(launched)
    acks = mail_to(smtp, "grace@example.edu", "acknowledgement")
    assert len(acks) == 5
    assert all("We received your request" in text_of(m) for m in acks)


def test_a_bad_field_is_refused_beside_it_keeping_what_was_typed(
    launched: Runtime, smtp: SmtpServer, site: httpx.Client
) -> None:
    path = path_of(link_in(mail_to(smtp, "ada@example.edu", "launch")[0]))
    token = form_of(site.get(path).text)
    before = counts(launched)
    answer = site.post(
        path,
        data={"form_token": token, "kind": "more_time", "until": "2024-03-01", "reason": "Away"},
    )
    assert answer.status_code == 400
    assert "more than 30 days after your deadline; choose 2023-11-05 or earlier" in answer.text
    assert 'value="2024-03-01"' in answer.text
    assert ">Away</textarea>" in answer.text
    assert counts(launched) == before


def test_altered_foreign_removed_and_expired_links(
    launched: Runtime, smtp: SmtpServer, site: httpx.Client, tmp_path: Path
) -> None:
    path = path_of(link_in(mail_to(smtp, "ada@example.edu", "launch")[0]))
    before = counts(launched)
    altered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    assert site.get(altered).status_code == 404
    assert "We cannot find this link" in site.get(altered).text
    links = RequestLinks(LINK_SECRET, launched.settings.public_url)
    assert site.get(path_of(links.url("another-program", "H1"))).status_code == 404
    # A second program in the same database, in which Ada is not enrolled: her link for it
    # (signed with the right secret) names nobody there.
    from pshnotify.services.campaign.programs import register_program_file

    second = tmp_path / "next-cycle.toml"
    second.write_text(
        PROGRAM_FILE.read_text(encoding="utf-8").replace(
            'key = "psh-2023-2024"', 'key = "psh-2025-2026"'
        ),
        encoding="utf-8",
    )
    register_program_file(launched.engine, second, launched.clock, "op")
    assert site.get(path_of(links.url("psh-2025-2026", "H1"))).status_code == 404
    assert site.get(path_of(links.url("psh-2023-2024", "nobody"))).status_code == 404
    forged = RequestLinks("x" * 32, launched.settings.public_url).url("psh-2023-2024", "H1")
    assert site.get(path_of(forged)).status_code == 404
    # A POST with an altered link files nothing.
    token = form_of(site.get(path).text)
    refused = site.post(altered, data={"form_token": token, "kind": "technical", "note": "x"})
    assert refused.status_code == 404
    # Ada leaves the roster: her link is not found any more.
    setup_pilot(launched, tmp_path, PILOT[1:])
    assert site.get(path).status_code == 404
    # Grace's link expires link_valid_days (60) after her deadline (2023-10-06).
    grace = path_of(link_in(mail_to(smtp, "grace@example.edu", "launch")[0]))
    assert isinstance(launched.clock, FixedClock)
    boston = ZoneInfo("America/New_York")  # EST by then
    launched.clock.set(dt.datetime(2023, 12, 5, 23, 59, tzinfo=boston))
    assert site.get(grace).status_code == 200
    launched.clock.set(dt.datetime(2023, 12, 6, 0, 0, tzinfo=boston))
    expired = site.get(grace)
    assert expired.status_code == 410
    assert "This link has expired" in expired.text
    assert "pshtraining@example.edu" in expired.text
    assert counts(launched)[0] == before[0]


def test_a_form_token_of_another_link_or_none_is_refused(
    launched: Runtime, smtp: SmtpServer, site: httpx.Client
) -> None:
    ada = path_of(link_in(mail_to(smtp, "ada@example.edu", "launch")[0]))
    grace = path_of(link_in(mail_to(smtp, "grace@example.edu", "launch")[0]))
    before = counts(launched)
    for token in ("", form_of(site.get(grace).text)):
        answer = site.post(ada, data={"form_token": token, "kind": "technical", "note": "x"})
        assert answer.status_code == 403
        assert "Nothing was sent" in answer.text
    assert counts(launched) == before


def test_submissions_are_limited_per_link(
    launched: Runtime, smtp: SmtpServer, site: httpx.Client
) -> None:
    from pshnotify.web.participant import PER_LINK

    path = path_of(link_in(mail_to(smtp, "ada@example.edu", "launch")[0]))
    token = form_of(site.get(path).text)
    bad = {"form_token": token, "kind": "more_time", "until": "not a date", "reason": "x"}
    codes = [site.post(path, data=bad).status_code for _ in range(PER_LINK)]
    assert codes == [400] * PER_LINK
    limited = site.post(path, data=bad)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0
    assert "Too many requests" in limited.text
    # Another person's link, from the same address, still works.
    grace = path_of(link_in(mail_to(smtp, "grace@example.edu", "launch")[0]))
    ok = site.post(
        grace,
        data={"form_token": form_of(site.get(grace).text), "kind": "technical", "note": "x"},
    )
    assert ok.status_code == 200


def test_the_per_address_limit_covers_every_link_from_one_address(
    launched: Runtime, smtp: SmtpServer
) -> None:
    from pshnotify.web.participant import ParticipantPages
    from pshnotify.web.throttle import FailureThrottle

    stored = launched.program(None)
    links = launched.request_links()
    assert links is not None
    pages = ParticipantPages(
        launched.engine,
        launched.clock,
        launched.settings,
        launched.program,
        links,
        per_address=FailureThrottle(2, 3600),
    )
    from starlette.applications import Starlette

    with running(Starlette(routes=pages.routes())) as client:
        codes = []
        for person in ("H1", "H2", "H3"):
            path = path_of(links.url(stored.key, person))
            token = form_of(client.get(path).text)
            codes.append(
                client.post(
                    path, data={"form_token": token, "kind": "technical", "note": "x"}
                ).status_code
            )
    assert codes == [200, 200, 429]


# -- a season on a rehearsed clock -------------------------------------------------------------
def at(rt: Runtime, when: dt.datetime) -> None:
    assert isinstance(rt.clock, FixedClock)
    rt.clock.set(when)


def reminders_to(smtp: SmtpServer, address: str) -> list[str]:
    """The dates (the Date header's) of the reminders this address received."""
    return [m["Date"].datetime.date().isoformat() for m in mail_to(smtp, address, "reminder")]


def skipped_because(rt: Runtime) -> dict[tuple[int, str], str]:
    with rt.engine.connect() as conn:
        rows = conn.execute(
            select(messages.c.person_id, messages.c.step, messages.c.reason).where(
                messages.c.kind == "reminder", messages.c.state == "skipped"
            )
        ).all()
    return {(pid, step): reason for pid, step, reason in rows}


def test_reminders_wait_for_a_pending_request_and_follow_its_decision(
    launched: Runtime, smtp: SmtpServer
) -> None:
    rt, stored = launched, launched.program(None)
    boston = stored.program.tz

    def file(person: str, kind: str, **form: str) -> svc.Filed:
        return svc.file_request(
            rt.engine,
            stored,
            person,
            kind,
            form,
            rt.clock,
            message_id_domain=rt.settings.message_id_domain,
        )

    # Friday 2023-09-15: Ada asks for two more weeks (beyond the 7 granted at once), Grace
    # has technical trouble.
    at(rt, dt.datetime(2023, 9, 15, 10, 0, tzinfo=boston))
    ada = file("H1", "more_time", until="2023-10-20", reason="On leave")
    grace = file("H3", "technical", note="The course will not load")
    assert (ada.state, grace.state) == ("pending", "pending")
    plan = build_plan(rt.engine, stored, rt.clock)
    assert {(h["person"], h["reason"]) for h in plan["paused"]} == {
        ("H1", f"request {ada.id} pending"),
        ("H3", f"request {grace.id} pending"),
    }
    send(rt)
    acks = {
        m["To"].addresses[0].addr_spec
        for m in smtp.messages()
        if m["X-Pshnotify-Kind"] == "acknowledgement"
    }
    assert acks == {"ada@example.edu", "grace@example.edu"}
    # Monday 09:05: the 7-day reminder goes to José only, and is kept as paused for the others.
    at(rt, dt.datetime(2023, 9, 18, 9, 5, tzinfo=boston))
    run_pass(rt.engine, rt.clock, rt.settings.message_id_domain)
    # José files a request after his reminder was queued and before it goes: held at send.
    at(rt, dt.datetime(2023, 9, 18, 9, 10, tzinfo=boston))
    jose = file("H2", "alternative", note="I would rather attend in person")
    send(rt)
    assert reminders_to(smtp, "jose@example.edu") == []
    reasons = set(skipped_because(rt).values())
    assert reasons == {f"request {r.id} pending" for r in (ada, grace, jose)}
    # Tuesday: the operator declines Grace's request; her reminders resume at once.
    at(rt, dt.datetime(2023, 9, 19, 11, 0, tzinfo=boston))
    svc.decline(
        rt.engine,
        stored,
        grace.id,
        rt.clock,
        actor="olga",
        note="The course works in Firefox; please try again there.",
        message_id_domain=rt.settings.message_id_domain,
    )
    send(rt)
    decision = mail_to(smtp, "grace@example.edu", "decision")
    assert len(decision) == 1
    assert "was declined" in text_of(decision[0])
    assert "please try again there" in text_of(decision[0])
    assert "reminders resume" in text_of(decision[0])
    # Monday 09-25 09:05: the 14-day reminder. Grace (declined) and José (pending since the
    # 18th, within the pause) differ; Ada's request, filed 10 days ago, no longer holds hers.
    at(rt, dt.datetime(2023, 9, 25, 9, 5, tzinfo=boston))
    run_pass(rt.engine, rt.clock, rt.settings.message_id_domain)
    send(rt)
    assert reminders_to(smtp, "grace@example.edu") == ["2023-09-25"]
    assert reminders_to(smtp, "ada@example.edu") == ["2023-09-25"]
    assert reminders_to(smtp, "jose@example.edu") == []
    # The operator approves Ada's request: the same command as `extend`, under their login.
    at(rt, dt.datetime(2023, 9, 26, 14, 0, tzinfo=boston))
    done = svc.approve(
        rt.engine,
        stored,
        ada.id,
        rt.clock,
        actor="olga",
        note="Granted; enjoy your leave.",
        message_id_domain=rt.settings.message_id_domain,
    )
    assert done["extended_until"] == "2023-10-20"
    with rt.engine.connect() as conn:
        audited = conn.execute(
            select(audit_log.c.actor, audit_log.c.action, audit_log.c.details)
            .where(audit_log.c.subject == "H1")
            .order_by(audit_log.c.id)
        ).all()
    assert [(a, b) for a, b, _ in audited][-3:] == [
        ("participant (email link)", "request.file"),
        ("olga", "person.extend"),
        ("olga", "request.approve"),
    ]
    assert audited[-2][2]["note"] == f"request {ada.id}: Granted; enjoy your leave."
    assert audited[-1][2]["request"] == ada.id
    send(rt)
    kinds = [m["X-Pshnotify-Kind"] for m in mail_to(smtp, "ada@example.edu")]
    assert kinds[-2:] == ["extension", "decision"] or kinds[-2:] == ["decision", "extension"]
    approved = mail_to(smtp, "ada@example.edu", "decision")[0]
    assert "was approved" in text_of(approved)
    assert "Friday, October 20, 2023" in text_of(approved)
    # Her reminders now count to the new deadline: none on 10-03 (3 days before the old one),
    # one on 10-17 (3 days before the new). Grace's still count to 10-06.
    for day in (
        dt.datetime(2023, 10, 3, 9, 5, tzinfo=boston),
        dt.datetime(2023, 10, 17, 9, 5, tzinfo=boston),
    ):
        at(rt, day)
        run_pass(rt.engine, rt.clock, rt.settings.message_id_domain)
        send(rt)
    assert reminders_to(smtp, "ada@example.edu") == ["2023-09-25", "2023-10-17"]
    assert reminders_to(smtp, "grace@example.edu") == ["2023-09-25", "2023-10-03"]
    # A decided request is decided: a second decision is refused, and nothing is sent.
    with pytest.raises(ConflictError, match="already approved by olga"):
        svc.decline(rt.engine, stored, ada.id, rt.clock, actor="olga", note="no")


def test_more_time_within_the_program_s_rule_is_granted_at_once(
    launched: Runtime, smtp: SmtpServer
) -> None:
    rt, stored = launched, launched.program(None)
    filed = svc.file_request(
        rt.engine,
        stored,
        "H1",
        "more_time",
        {"until": "2023-10-13", "reason": "Travel"},
        rt.clock,
        message_id_domain=rt.settings.message_id_domain,
    )
    assert (filed.state, filed.auto) == ("approved", True)
    with rt.engine.connect() as conn:
        until = conn.scalar(
            select(enrollments.c.extended_until).where(enrollments.c.person_id == 1)
        )
        actors = conn.execute(select(audit_log.c.actor, audit_log.c.action)).all()
    assert until == dt.date(2023, 10, 13)
    assert ("auto-approval rule", "person.extend") in actors
    send(rt)
    kinds = sorted(m["X-Pshnotify-Kind"] for m in mail_to(smtp, "ada@example.edu"))
    assert kinds == ["acknowledgement", "decision", "extension", "launch"]
    ack = mail_to(smtp, "ada@example.edu", "acknowledgement")[0]
    assert "granted at once" in text_of(ack)


def test_approving_completed_and_not_required_uses_the_operators_commands(
    launched: Runtime, smtp: SmtpServer
) -> None:
    rt, stored = launched, launched.program(None)
    kw = {"message_id_domain": rt.settings.message_id_domain}
    done = svc.file_request(
        rt.engine,
        stored,
        "H1",
        "completed",
        {"option": "C", "completed_on": "2023-09-10"},
        rt.clock,
        **kw,
    )
    off = svc.file_request(
        rt.engine,
        stored,
        "H3",
        "not_required",
        {"reason": "I am Lincoln Laboratory staff (FAQ 4)"},
        rt.clock,
        **kw,
    )
    svc.approve(rt.engine, stored, done.id, rt.clock, actor="olga", **kw)
    svc.approve(rt.engine, stored, off.id, rt.clock, actor="olga", note="Confirmed with HR", **kw)
    with rt.engine.connect() as conn:
        rows = {
            r.person_id: r
            for r in conn.execute(select(enrollments).where(enrollments.c.person_id.in_([1, 3])))
        }
    assert rows[1].completion_option == "C"
    assert rows[3].exempted_reason == "I am Lincoln Laboratory staff (FAQ 4)"
    # approving with a date for something that is not more time is refused
    other = svc.file_request(rt.engine, stored, "H2", "technical", {"note": "x"}, rt.clock, **kw)
    with pytest.raises(InputError, match="until: "):
        svc.approve(
            rt.engine,
            stored,
            other.id,
            rt.clock,
            actor="olga",
            until=Day(dt.date(2023, 10, 20), stored.program.reach),
        )
    send(rt)
    assert "confirmation" in [m["X-Pshnotify-Kind"] for m in mail_to(smtp, "ada@example.edu")]
    decided = mail_to(smtp, "grace@example.edu", "decision")[0]
    assert "Confirmed with HR" in text_of(decided)
    assert "not required" in text_of(decided)


def test_the_scanner_fetches_every_link_of_every_email_and_nothing_changes(
    launched: Runtime, smtp: SmtpServer, site: httpx.Client
) -> None:
    """Mail gateways (Safe Links, Mimecast) GET every link in a message: a launch email,
    an acknowledgement and a decision, fetched link by link with GET and HEAD."""
    rt, stored = launched, launched.program(None)
    svc.file_request(
        rt.engine,
        stored,
        "H2",
        "technical",
        {"note": "x"},
        rt.clock,
        message_id_domain=rt.settings.message_id_domain,
    )
    send(rt)
    before = counts(rt)
    urls: set[str] = set()
    for m in smtp.messages():
        for body in (text_of(m), html_of(m)):
            urls.update(re.findall(r"https?://[^\s\"<>]+", body))
    ours = sorted(u for u in urls if u.startswith(rt.settings.public_url))
    assert len(ours) == 3  # one personal link per launch email
    for url in ours:
        for method in ("GET", "HEAD"):
            answer = site.request(method, path_of(url))
            assert answer.status_code == 200
    assert counts(rt) == before
    with rt.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(requests)) == 1


# -- the command line --------------------------------------------------------------------------
def test_requests_on_the_command_line(
    env: dict[str, str], launched: Runtime, smtp: SmtpServer
) -> None:
    import json

    from tests.test_cli import cli

    rt, stored = launched, launched.program(None)
    kw = {"message_id_domain": rt.settings.message_id_domain}
    more = svc.file_request(
        rt.engine,
        stored,
        "H1",
        "more_time",
        {"until": "2023-10-27", "reason": "Leave"},
        rt.clock,
        **kw,
    )
    trouble = svc.file_request(rt.engine, stored, "H3", "technical", {"note": "x"}, rt.clock, **kw)
    now = "2023-09-12T10:00:00-04:00"
    listed = cli(env, "requests", "list", "--state", "pending", "--json", "--now", now)
    assert listed.returncode == 0, listed.stderr
    assert [(r["id"], r["person"], r["kind"], r["state"]) for r in json.loads(listed.stdout)] == [
        (trouble.id, "H3", "technical", "pending"),
        (more.id, "H1", "more_time", "pending"),
    ]
    table = cli(env, "requests", "list", "--now", now)
    assert table.returncode == 0
    assert max(map(len, table.stdout.splitlines())) <= 80
    assert "until 2023-10-27: Leave" in table.stdout
    bad = cli(env, "requests", "approve", str(more.id), "--until", "9999-12-31", "--now", now)
    assert bad.returncode == 2
    assert "--until: '9999-12-31' is outside the dates" in bad.stderr
    # A date the operator's command refuses: exit 2, and the request still waits.
    early = cli(env, "requests", "approve", str(more.id), "--until", "2023-10-01", "--now", now)
    assert early.returncode == 2
    assert "--until: 2023-10-01 is before the wave's close (2023-10-06)" in early.stderr
    waiting = json.loads(cli(env, "requests", "list", "--state", "pending", "--json").stdout)
    assert more.id in [r["id"] for r in waiting]
    ok = cli(
        env,
        "requests",
        "approve",
        str(more.id),
        "--until",
        "2023-10-20",
        "--note",
        "Two weeks",
        "--now",
        now,
    )
    assert ok.returncode == 0, ok.stderr
    assert "deadline now 2023-10-20" in ok.stdout
    no_note = cli(env, "requests", "decline", str(trouble.id), "--note", " ", "--now", now)
    assert no_note.returncode == 2
    assert "--note: say why" in no_note.stderr
    declined = cli(env, "requests", "decline", str(trouble.id), "--note", "Fixed", "--now", now)
    assert declined.returncode == 0, declined.stderr
    again = cli(env, "requests", "decline", str(trouble.id), "--note", "Fixed", "--now", now)
    assert again.returncode == 1
    assert "already declined" in again.stderr
    states = json.loads(cli(env, "requests", "list", "--json").stdout)
    assert {r["id"]: r["state"] for r in states} == {more.id: "approved", trouble.id: "declined"}
    with rt.engine.connect() as conn:
        audited = conn.execute(
            select(audit_log.c.actor, audit_log.c.action).where(
                audit_log.c.action.like("request.%")
            )
        ).all()
    assert ("test-operator", "request.approve") in audited
    assert ("test-operator", "request.decline") in audited


def test_a_pending_request_holds_reminders_and_overdue_notices_only() -> None:
    from pshnotify.domain import policy
    from pshnotify.domain.delivery import Kind

    p = program(enabled=["technical"])
    now = dt.datetime(2023, 9, 18, 9, 5, tzinfo=NY)
    held = policy.Standing(wave_key="pilot", paused_for="request 12 pending")
    assert policy.skip_reason(p, Kind.REMINDER, held, now) == "request 12 pending"
    assert policy.skip_reason(p, Kind.OVERDUE, held, now) == "request 12 pending"
    for kind in (Kind.LAUNCH, Kind.CONFIRMATION, Kind.EXTENSION, Kind.DECISION):
        assert policy.skip_reason(p, kind, held, now) is None
    # A stronger reason still says itself.
    done = policy.Standing(wave_key="pilot", completed=True, paused_for="request 12 pending")
    assert policy.skip_reason(p, Kind.REMINDER, done, now) == "already complete"


def test_a_program_taking_requests_needs_the_link_secret_at_start(
    env: dict[str, str], launched: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_cli import cli

    monkeypatch.delenv("PSHNOTIFY_LINK_SECRET")
    without = {k: v for k, v in env.items() if k != "PSHNOTIFY_LINK_SECRET"}
    for command in (["run", "--once"], ["web"]):
        refused = cli(without, *command, "--now", "2023-09-12T10:00:00-04:00")
        assert refused.returncode == 2, refused.stderr
        assert "PSHNOTIFY_LINK_SECRET: required when the program takes requests" in refused.stderr
    short = cli({**without, "PSHNOTIFY_LINK_SECRET": "too short"}, "run", "--once")
    assert short.returncode == 2
    assert "PSHNOTIFY_LINK_SECRET: at least 32 characters" in short.stderr


# -- the console over HTTP -------------------------------------------------------------------------
def test_the_console_refuses_a_bad_decision_keeping_it_and_a_viewer_reads_only(
    launched: Runtime, smtp: SmtpServer
) -> None:
    from pshnotify.services.access.users import add_user
    from tests.test_console import OPERATOR, VIEWER
    from tests.test_console_http import console, csrf, sign_in

    rt, stored = launched, launched.program(None)
    for login, role, departments in (
        (OPERATOR, "operator", []),
        (VIEWER, "viewer", ["information systems and technology"]),
    ):
        add_user(
            rt.engine,
            login[0],
            role=role,
            departments=departments,
            password=login[1],
            clock=rt.clock,
            actor="test",
        )
    kw = {"message_id_domain": rt.settings.message_id_domain}
    ada = svc.file_request(
        rt.engine,
        stored,
        "H1",
        "more_time",
        {"until": "2023-10-27", "reason": "Leave"},
        rt.clock,
        **kw,
    )
    grace = svc.file_request(rt.engine, stored, "H3", "technical", {"note": "x"}, rt.clock, **kw)
    with console(rt) as client:
        assert sign_in(client, OPERATOR).status_code == 303
        token = csrf(client, "/requests")
        refused = client.post(
            f"/requests/{ada.id}/approve",
            data={"csrf_token": token, "until": "2099-01-01", "note": "Two weeks"},
        )
        assert refused.status_code == 400
        assert "until: " in refused.text
        assert "outside the dates" in refused.text
        assert "note=Two+weeks" in refused.text  # the link back fills the form in again
        no_note = client.post(f"/requests/{grace.id}/decline", data={"csrf_token": token})
        assert no_note.status_code == 400
        assert "note: say why" in no_note.text
        missing = client.post("/requests/999/decline", data={"csrf_token": token, "note": "x"})
        assert missing.status_code == 404
        assert [r["state"] for r in svc.list_requests(rt.engine, stored)] == ["pending"] * 2
        client.post("/logout", data={"csrf_token": csrf(client, "/requests")})
        assert sign_in(client, VIEWER).status_code == 303
        page = client.get("/requests")
        assert page.status_code == 200
        assert "Grace Hopper" in page.text
        assert "Ada Lovelace" not in page.text
        assert "Approve" not in page.text
        forbidden = client.post(
            f"/requests/{grace.id}/decline",
            data={"csrf_token": csrf(client, "/requests"), "note": "x"},
        )
        assert forbidden.status_code == 403
    with rt.engine.connect() as conn:
        refusals = conn.execute(
            select(audit_log.c.action, audit_log.c.subject).where(
                audit_log.c.action.like("request.%"), audit_log.c.actor == OPERATOR[0]
            )
        ).all()
    assert ("request.approve", str(ada.id)) in refusals
    assert ("request.decline", str(grace.id)) in refusals


def test_preview_shows_the_personal_link_as_it_goes_out(
    env: dict[str, str], launched: Runtime
) -> None:
    from tests.test_cli import cli

    shown = cli(env, "preview", "reminder", "--person", "H1")
    assert shown.returncode == 0, shown.stderr
    found = LINK.search(shown.stdout)
    assert found
    links = launched.request_links()
    assert links is not None
    assert links.read(found.group(2)).person == "H1"
    confirmation = cli(env, "preview", "confirmation", "--person", "H1")
    assert "Tell us here" not in confirmation.stdout


def test_two_submissions_at_once_file_one_request(
    launched: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check for a waiting request and the insert are not one step: the database's
    partial unique index decides when two arrive together (the check is skipped here, as it
    would be for the second of two racing requests)."""
    from pshnotify.store import requests as repo

    rt, stored = launched, launched.program(None)
    kw = {"message_id_domain": rt.settings.message_id_domain}
    svc.file_request(rt.engine, stored, "H1", "technical", {"note": "first"}, rt.clock, **kw)
    monkeypatch.setattr(repo, "open_request", lambda *a, **k: None)
    before = counts(rt)
    with pytest.raises(ConflictError, match="already have a request of this kind waiting"):
        svc.file_request(rt.engine, stored, "H1", "technical", {"note": "again"}, rt.clock, **kw)
    assert counts(rt) == before


def test_a_person_who_completed_is_told_so_and_asked_nothing(
    launched: Runtime, smtp: SmtpServer, site: httpx.Client
) -> None:
    from pshnotify.services.campaign.completions import complete_by_operator

    rt, stored = launched, launched.program(None)
    complete_by_operator(
        rt.engine,
        stored,
        rt.clock,
        person_ref="H1",
        option="A",
        actor="op",
        message_id_domain=rt.settings.message_id_domain,
    )
    path = path_of(link_in(mail_to(smtp, "ada@example.edu", "launch")[0]))
    page = site.get(path)
    assert page.status_code == 200
    assert "you have completed this training" in page.text
    assert "<form" not in page.text
    with pytest.raises(ConflictError, match="completed this training"):
        svc.file_request(
            rt.engine, stored, "H1", "more_time", {"until": "2023-10-20", "reason": "x"}, rt.clock
        )


def test_the_officer_report_plan_and_timeline_show_the_waiting_request(
    env: dict[str, str], launched: Runtime, smtp: SmtpServer
) -> None:
    from pshnotify.services.reporting.lookup import person_view
    from tests.test_cli import cli

    rt, stored = launched, launched.program(None)
    boston = stored.program.tz
    at(rt, dt.datetime(2023, 9, 15, 10, 0, tzinfo=boston))
    filed = svc.file_request(
        rt.engine,
        stored,
        "H1",
        "alternative",
        {"note": "In person"},
        rt.clock,
        message_id_domain=rt.settings.message_id_domain,
    )
    waiting = f"request {filed.id} pending"
    # The person's timeline: the 7-day reminder (Monday) is planned as paused, saying why.
    view = person_view(rt.engine, stored, "H1", rt.clock.now())
    planned = {e.step: (e.state, e.why) for e in view.entries if e.kind == "reminder"}
    assert planned["after:7"] == ("paused", f"{waiting}: not sent while it waits")
    assert planned["after:14"][0] == "planned"  # after the pause's 7 days
    # plan, as an operator reads it.
    shown = cli(env, "plan", "--now", "2023-09-15T10:00:00-04:00")
    assert shown.returncode == 0, shown.stderr
    assert f"H1: 1 reminder paused, {waiting}" in shown.stdout
    # The officer's nightly report (ao-hr@example.edu is Ada's officer).
    at(rt, dt.datetime(2023, 9, 16, 6, 5, tzinfo=boston))
    run_pass(rt.engine, rt.clock, rt.settings.message_id_domain, rt.nightly_jobs())
    send(rt)
    report = mail_to(smtp, "ao-hr@example.edu", "report")
    assert len(report) == 1
    body = text_of(report[0])
    assert "Requests waiting for the training office" in body
    assert f"Ada Lovelace (H1): {waiting}, Another way to complete it" in body
    assert waiting in html_of(report[0])


def test_a_completion_cannot_be_dated_after_today() -> None:
    p = program(enabled=["completed"])
    deadline, today = dt.date(2023, 10, 6), dt.date(2023, 9, 15)
    form = {"option": "A", "completed_on": "2023-09-16"}
    with pytest.raises(InputError, match="completed_on: 2023-09-16 is in the future"):
        rules.read_request(p, "completed", form, deadline, today)
    ok = rules.read_request(p, "completed", {**form, "completed_on": "2023-09-15"}, deadline, today)
    assert ok == {"option": "A", "completed_on": "2023-09-15"}
    with pytest.raises(InputError, match="option: choose one of the courses"):
        rules.read_request(p, "completed", {**form, "option": "Z"}, deadline, today)


def test_behind_a_trusted_proxy_the_limit_is_per_forwarded_address(launched: Runtime) -> None:
    """The address a submission counts against: X-Forwarded-For only from a proxy named in
    PSHNOTIFY_WEB_TRUSTED_PROXIES (uvicorn itself honours it from 127.0.0.1 by default, so
    this is asked of the page directly, with a remote proxy's address)."""
    from starlette.requests import Request

    from pshnotify.web.participant import ParticipantPages

    links = launched.request_links()
    assert links is not None

    def seen(trusted: list[str], forwarded: str) -> str:
        settings = launched.settings.model_copy(update={"web_trusted_proxies": trusted})
        pages = ParticipantPages(launched.engine, launched.clock, settings, launched.program, links)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/r/x",
            "headers": [(b"x-forwarded-for", forwarded.encode())],
            "client": ("10.0.0.5", 40000),
        }
        return pages._address(Request(scope))

    assert seen([], "198.51.100.7") == "10.0.0.5"  # anyone can write the header
    assert seen(["10.0.0.0/24"], "203.0.113.1, 198.51.100.7") == "198.51.100.7"
    assert seen(["10.0.0.0/24"], "not an address") == "10.0.0.5"
    assert seen(["10.0.1.0/24"], "198.51.100.7") == "10.0.0.5"
