"""Participants' requests in a real browser (Debian's Chromium through Playwright): the link
from a real launch email caught by aiosmtpd, the page on a 375-pixel phone, each kind filed,
an operator approving and declining in the console, and the emails that follow on a
rehearsed clock: acknowledgements, decisions, an extension, a confirmation, no reminder
while a request waits, and the reminders of the new deadline.

Screenshots go under the test's temp folder, and to PSHNOTIFY_SHOTS_DIR when it is set (the
lead's /work/notes/screens).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from pshnotify.clock import FixedClock
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.schedule import run_pass
from pshnotify.store.schema import audit_log, requests
from tests.smtp_server import SmtpServer
from tests.test_console import (  # noqa: F401 - fixtures
    OPERATOR,
    Console,
    browser,
    campaign,
    page,
    sign_in,
    web_console,
)
from tests.test_launch_and_send import launch, send
from tests.test_requests import link_in, mail_to, text_of

pytestmark = pytest.mark.slow


@pytest.fixture
def phone(browser: Browser) -> Iterator[Page]:  # noqa: F811
    context = browser.new_context(
        viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True
    )
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()


def at(rt: Runtime, when: str) -> None:
    assert isinstance(rt.clock, FixedClock)
    rt.clock.set(dt.datetime.fromisoformat(when))


def sent(rt: Runtime) -> dict[str, int]:
    """One drain, in a thread of its own (Playwright's loop runs in this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(send, rt).result()


def tick(rt: Runtime, when: str) -> None:
    """The daemon's pass at `when`: queue what is due, send it."""
    at(rt, when)
    run_pass(rt.engine, rt.clock, rt.settings.message_id_domain)
    sent(rt)


def kinds_to(smtp: SmtpServer, address: str) -> list[str]:
    return [str(m["X-Pshnotify-Kind"]) for m in mail_to(smtp, address)]


def reminder_days(smtp: SmtpServer, address: str) -> list[str]:
    return [m["Date"].datetime.date().isoformat() for m in mail_to(smtp, address, "reminder")]


def no_horizontal_scroll(p: Page) -> None:
    width = p.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page is {width} px wide on a 375 px phone"


def file(p: Page, console: Console, shots: str, button: str, fill: dict[str, str]) -> None:
    """Fill one request's form by its labels and submit it with its button."""
    section = p.locator("section", has=p.get_by_role("button", name=button))
    for label, value in fill.items():
        field = section.get_by_label(label)
        if field.evaluate("e => e.tagName") == "SELECT":
            field.select_option(label=value)
        else:
            field.fill(value)
    section.get_by_role("button", name=button).click()
    expect(p.locator("h1")).to_contain_text("we received your request")
    expect(p.locator("main")).to_contain_text("What happens next")
    no_horizontal_scroll(p)
    console.shot(p, shots)
    p.get_by_role("link", name="Back to your page").click()


def test_participants_answer_from_the_email_and_operators_decide_in_the_console(
    campaign: Runtime,  # noqa: F811
    tmp_path: Path,
    smtp: SmtpServer,
    page: Page,  # noqa: F811
    phone: Page,
) -> None:
    rt = campaign
    for session in ("friday", "tuesday"):
        (tmp_path / session).mkdir()
    public = rt.settings.public_url
    # Monday 2023-09-11: the pilot is launched and its emails delivered.
    launch(rt)
    assert sent(rt) == {"sent": 3}
    links = {
        who: link_in(mail_to(smtp, f"{who}@example.edu", "launch")[0])
        for who in ("ada", "grace", "jose")
    }
    assert all(url.startswith(f"{public}/r/") for url in links.values())

    # Friday 09-15: three people answer from their phones.
    with web_console(rt, tmp_path / "friday", "2023-09-15T10:00:00-04:00") as console:

        def open_link(who: str) -> None:
            phone.goto(console.url + links[who].removeprefix(public))

        open_link("ada")
        expect(phone.locator("h1")).to_have_text("Hello Ada,")
        expect(phone.locator(".deadline")).to_contain_text(
            "Friday, October 6, 2023, 11:59 p.m. Eastern Time"
        )
        for name in ("Request more time", "I have completed it", "I am not required"):
            expect(phone.get_by_role("button", name=name)).to_be_visible()
        no_horizontal_scroll(phone)
        console.shot(phone, "requests-1-page-phone")
        # A date beyond the program's maximum is refused beside its field, keeping the text.
        section = phone.locator("section#more_time")
        section.get_by_label("New deadline").fill("2023-12-29")
        section.get_by_label("Why do you need more time?").fill("On leave until October 16")
        # The browser's own check (max) would stop this; the server must refuse it too.
        section.locator("form").evaluate("f => f.noValidate = true")
        section.get_by_role("button", name="Request more time").click()
        expect(phone.locator("section#more_time .error")).to_contain_text(
            "more than 30 days after your deadline"
        )
        expect(phone.locator("section#more_time textarea")).to_have_value(
            "On leave until October 16"
        )
        console.shot(phone, "requests-2-refused-field")
        file(
            phone,
            console,
            "requests-3-received",
            "Request more time",
            {"New deadline": "2023-10-20", "Why do you need more time?": "On leave"},
        )
        expect(phone.locator("section#more_time")).to_contain_text("waiting for an answer")
        file(
            phone,
            console,
            "requests-3b-received",
            "I need another way to complete it",
            {"What would work for you?": "A session in person"},
        )

        open_link("grace")
        expect(phone.locator("h1")).to_have_text("Hello Grace,")
        file(
            phone,
            console,
            "requests-4-received",
            "I have completed it",
            {
                "Which course did you complete?": "Option B: Responding to Disclosures at MIT",
                "When did you complete it?": "2023-09-14",
            },
        )
        file(
            phone,
            console,
            "requests-4b-received",
            "I am not required",
            {"Why is the training not required of you?": "I am Lincoln Laboratory staff (FAQ 4)"},
        )

        open_link("jose")
        file(
            phone,
            console,
            "requests-5-received",
            "I am having technical trouble",
            {
                "What went wrong? Which course, which device or browser, and where you are if "
                "abroad.": "The course page stays blank in Safari"
            },
        )

    with rt.engine.connect() as conn:
        filed = {(r.person_id, r.kind): r.id for r in conn.execute(select(requests))}
    assert len(filed) == 5
    tick(rt, "2023-09-15T10:05:00-04:00")
    assert kinds_to(smtp, "ada@example.edu").count("acknowledgement") == 2
    assert kinds_to(smtp, "grace@example.edu").count("acknowledgement") == 2
    assert kinds_to(smtp, "jose@example.edu").count("acknowledgement") == 1
    ack = mail_to(smtp, "jose@example.edu", "acknowledgement")[0]
    assert "we send you no reminders" in text_of(ack)

    # Monday 09-18, the 7-day reminder: nobody gets one, every one of them waits.
    tick(rt, "2023-09-18T09:05:00-04:00")
    for who in ("ada", "grace", "jose"):
        assert reminder_days(smtp, f"{who}@example.edu") == []

    # Tuesday 09-19: the operator decides in the console.
    with web_console(rt, tmp_path / "tuesday", "2023-09-19T11:00:00-04:00") as console:
        sign_in(page, console, OPERATOR)
        page.get_by_role("link", name="Requests").click()
        rows = page.locator("table.requests tbody tr")
        expect(rows).to_have_count(5)
        expect(rows.first).to_contain_text("Technical trouble")  # newest first
        console.shot(page, "requests-6-console")
        page.select_option("select[name=state]", "pending")
        page.select_option("select[name=kind]", "more_time")
        page.get_by_role("button", name="Show").click()
        expect(rows).to_have_count(1)
        more = rows.first
        expect(more).to_contain_text("until 2023-10-20: On leave")
        more.get_by_label("Note to the person").fill("Granted: enjoy your leave.")
        more.get_by_role("button", name="Approve").click()
        expect(page.locator(".flash")).to_contain_text("approved; the person is told by email")

        page.goto(f"{console.url}/requests?state=pending")
        jose = page.locator("table.requests tbody tr", has_text="Technical trouble")
        jose.get_by_label("Why (told to the person)").fill(
            "Use Firefox or Chrome; Safari is not supported."
        )
        jose.get_by_role("button", name="Decline").click()
        expect(page.locator(".flash")).to_contain_text("declined")
        page.goto(f"{console.url}/requests?state=pending")
        grace = page.locator("table.requests tbody tr", has_text="Already completed")
        grace.get_by_role("button", name="Approve").click()
        page.goto(f"{console.url}/requests?state=pending")
        other = page.locator("table.requests tbody tr", has_text="Another way")
        other.get_by_label("Why (told to the person)").fill("Please take the course online.")
        other.get_by_role("button", name="Decline").click()
        page.goto(f"{console.url}/requests")
        console.shot(page, "requests-7-decided")
        # The person's page: their requests and the timeline one click away.
        page.locator("table.requests a", has_text="Ada Lovelace").first.click()
        expect(page.locator("#requests")).to_contain_text("approved")
        expect(page.locator("dd", has_text="2023-10-20")).to_be_visible()
        console.shot(page, "requests-8-person")

    with rt.engine.connect() as conn:
        audited = conn.execute(
            select(audit_log.c.actor, audit_log.c.action).where(audit_log.c.actor == OPERATOR[0])
        ).all()
    assert ("olga", "person.extend") in audited
    assert ("olga", "completion.record") in audited or any(
        a == "olga" and "complet" in b for a, b in audited
    )
    assert audited.count(("olga", "request.approve")) == 2
    assert audited.count(("olga", "request.decline")) == 2

    tick(rt, "2023-09-19T11:05:00-04:00")
    decisions = {
        m["To"].addresses[0].addr_spec: text_of(m)
        for m in smtp.messages()
        if m["X-Pshnotify-Kind"] == "decision"
    }
    assert len([m for m in smtp.messages() if m["X-Pshnotify-Kind"] == "decision"]) == 4
    assert "Safari is not supported" in decisions["jose@example.edu"]
    assert "extension" in kinds_to(smtp, "ada@example.edu")
    assert "confirmation" in kinds_to(smtp, "grace@example.edu")

    # The reminders that follow: José's resume; Ada's count to her new deadline; Grace is done.
    tick(rt, "2023-09-25T09:05:00-04:00")
    tick(rt, "2023-10-03T09:05:00-04:00")
    tick(rt, "2023-10-17T09:05:00-04:00")
    assert reminder_days(smtp, "jose@example.edu") == ["2023-09-25", "2023-10-03"]
    assert reminder_days(smtp, "ada@example.edu") == ["2023-09-25", "2023-10-17"]
    assert reminder_days(smtp, "grace@example.edu") == []
    # Every reminder carries the link again.
    assert re.search(
        r"Tell us here: \S+/r/", text_of(mail_to(smtp, "ada@example.edu", "reminder")[-1])
    )
