"""The web console in a real browser: Debian's Chromium driven by Playwright, against
`pshnotify web` (and `pshnotify run --once`) as subprocesses on a real SQLite file, with the
launch emails going to a real aiosmtpd server.

Each test saves screenshots under its temp folder; with PSHNOTIFY_SHOTS_DIR set, a copy goes
there too (the lead looks at them).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from sqlalchemy import func, select

from pshnotify.clock import FixedClock
from pshnotify.domain.bounces import BounceClass
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.access.users import add_user
from pshnotify.services.bounces.marks import record_event
from pshnotify.services.campaign.schedule import run_pass
from pshnotify.settings import Settings
from pshnotify.store import migrate
from pshnotify.store.schema import audit_log, messages
from tests.conftest import LINK_SECRET, NY, PROGRAM_FILE, TEMPLATES
from tests.smtp_server import SmtpServer
from tests.test_launch_and_send import PILOT, launch, send, setup_pilot

LAUNCH_DAY = "2023-09-11T10:00:00-04:00"
OPERATOR = ("olga", "operator password 1")
VIEWER = ("hr-officer", "viewer password 1")  # Human Resources only


@dataclass
class Console:
    url: str
    env: dict[str, str]
    runtime: Runtime
    shots: Path

    def shot(self, page: Page, name: str) -> Path:
        path = self.shots / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        extra = os.environ.get("PSHNOTIFY_SHOTS_DIR")
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    def queued_launches(self) -> int:
        with self.runtime.engine.connect() as conn:
            q = select(func.count()).where(messages.c.kind == "launch")
            return int(conn.scalar(q) or 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def campaign(tmp_path: Path, smtp: SmtpServer) -> Iterator[Runtime]:
    """The pilot roster in a real SQLite file, two console users."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'pshnotify.db'}",
        program_file=PROGRAM_FILE,
        templates_dir=TEMPLATES,
        smtp_host=smtp.host,
        smtp_port=smtp.port,
        smtp_connections=1,
        message_id_domain="test.pshnotify.invalid",
        link_secret=LINK_SECRET,
        _env_file=None,  # type: ignore[call-arg]
    )
    rt = Runtime(settings, FixedClock(dt.datetime(2023, 9, 11, 10, 0, tzinfo=NY)))
    migrate.upgrade(rt.engine)
    setup_pilot(rt, tmp_path)
    add_user(
        rt.engine,
        OPERATOR[0],
        role="operator",
        departments=[],
        password=OPERATOR[1],
        clock=rt.clock,
        actor="test",
    )
    add_user(
        rt.engine,
        VIEWER[0],
        role="viewer",
        departments=["Human Resources"],
        password=VIEWER[1],
        clock=rt.clock,
        actor="test",
    )
    yield rt
    rt.engine.dispose()


def env_of(rt: Runtime, port: int) -> dict[str, str]:
    s = rt.settings
    return {
        "PSHNOTIFY_DATABASE_URL": s.database_url,
        "PSHNOTIFY_PROGRAM_FILE": str(s.program_file),
        "PSHNOTIFY_TEMPLATES_DIR": str(s.templates_dir),
        "PSHNOTIFY_SMTP_HOST": s.smtp_host,
        "PSHNOTIFY_SMTP_PORT": str(s.smtp_port),
        "PSHNOTIFY_SMTP_CONNECTIONS": "1",
        "PSHNOTIFY_HTTP_HOST": "127.0.0.1",
        "PSHNOTIFY_HTTP_PORT": str(port),
        "PSHNOTIFY_MESSAGE_ID_DOMAIN": s.message_id_domain,
        "PSHNOTIFY_ACTOR": "cli-operator",
        "PSHNOTIFY_LINK_SECRET": LINK_SECRET,
    }


@contextmanager
def web_console(rt: Runtime, tmp_path: Path, now: str) -> Iterator[Console]:
    """`pshnotify web --now NOW` as a subprocess; yields once /healthz answers."""
    port = free_port()
    env = env_of(rt, port)
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pshnotify", "web", "--now", now],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "web.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "pshnotify web did not start"
            time.sleep(0.2)
        shots = tmp_path / "shots"
        shots.mkdir()
        yield Console(url, env, rt, shots)
    finally:
        proc.terminate()
        assert proc.wait(15) == 0, (tmp_path / "web.log").read_text()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def sign_in(page: Page, console: Console, who: tuple[str, str]) -> None:
    page.goto(f"{console.url}/login")
    page.locator("input[name=username]").fill(who[0])
    page.locator("input[name=password]").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("header .who")).to_contain_text(who[0])


def bar(page: Page, title: str) -> dict[str, int]:
    """The numbers a progress bar shows (its data attributes), inside #progress."""
    node = page.locator(f"#progress [data-bar={title}]")
    return {
        k: int(node.get_attribute(f"data-{k}") or -1) for k in ("delivered", "waiting", "failed")
    }


# -- the tests ------------------------------------------------------------------------------------
def test_an_operator_launches_a_wave_and_watches_its_emails_go_out(
    campaign: Runtime, tmp_path: Path, smtp: SmtpServer, page: Page
) -> None:
    with web_console(campaign, tmp_path, LAUNCH_DAY) as console:
        sign_in(page, console, OPERATOR)
        console.shot(page, "launch-1-dashboard")
        expect(page.locator("svg.timeline")).to_contain_text("today")
        page.locator(".card.wave h2 a", has_text="HR and IS&T Pilot").click()
        expect(page).to_have_url(f"{console.url}/waves/pilot")
        dry_run = page.locator("table.dryrun")
        expect(dry_run.locator("tr.yes")).to_contain_text("3")
        expect(dry_run).to_contain_text("exempt-unpaid")
        expect(dry_run).to_contain_text("exempt-new-hire")
        console.shot(page, "launch-2-wave")

        page.get_by_role("link", name="Launch", exact=True).click()
        expect(page.locator("h1")).to_contain_text("Launch HR and IS&T Pilot?")
        expect(page.locator("table.dryrun tr.yes")).to_contain_text("3")
        console.shot(page, "launch-3-confirm")
        assert console.queued_launches() == 0, "nothing is queued before the confirmation"
        page.get_by_role("button", name="Confirm launch").click()

        expect(page.locator(".flash")).to_contain_text("Queued 3 launch emails for pilot")
        assert bar(page, "messages") == {"delivered": 0, "waiting": 3, "failed": 0}
        console.shot(page, "launch-4-queued")
        assert smtp.received == []

        # The sending process (here one pass of it) sends; the page follows without a reload.
        once = subprocess.run(
            [
                sys.executable,
                "-m",
                "pshnotify",
                "run",
                "--once",
                "--now",
                "2023-09-11T10:05:00-04:00",
            ],
            env={**os.environ, **console.env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert once.returncode == 0, once.stderr
        assert sorted(m["To"].addresses[0].addr_spec for m in smtp.messages()) == [
            "ada@example.edu",
            "grace@example.edu",
            "jose@example.edu",
        ]
        assert {m["X-Pshnotify-Kind"] for m in smtp.messages()} == {"launch"}
        delivered = page.locator("#progress [data-bar=messages]")
        expect(delivered).to_have_attribute("data-delivered", "3", timeout=15_000)
        assert bar(page, "messages") == {"delivered": 3, "waiting": 0, "failed": 0}
        console.shot(page, "launch-5-delivered")

        with console.runtime.engine.connect() as conn:
            launches = conn.execute(
                select(audit_log.c.actor).where(audit_log.c.action == "wave.launch")
            ).all()
        assert launches == [(OPERATOR[0],)], "the launch is audited under the signed-in login"


def test_a_person_page_shows_the_timeline_with_a_skipped_reminders_reason(
    campaign: Runtime, tmp_path: Path, smtp: SmtpServer, page: Page
) -> None:
    rt = campaign
    assert isinstance(rt.clock, FixedClock)
    assert launch(rt) == 3
    # Playwright's sync API runs an event loop in this thread: the dispatcher runs in another.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(send, rt).result() == {"sent": 3}
    # Back after two weeks away: the 7-day reminder is stale, the 14-day one goes instead.
    rt.clock.set(dt.datetime(2023, 9, 26, 10, 0, tzinfo=NY))
    passed = run_pass(rt.engine, rt.clock, rt.settings.message_id_domain)
    assert passed.skipped == {"reminder": 1 * 3}
    with web_console(rt, tmp_path, "2023-09-26T10:00:00-04:00") as console:
        sign_in(page, console, OPERATOR)
        page.get_by_role("link", name="People").click()
        page.get_by_placeholder("id, email or name").fill("ada")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("link", name="H1").click()
        expect(page.locator("h1")).to_contain_text("Ada Lovelace")

        rows = page.locator("table.timeline tbody tr")
        sent = rows.filter(has_text="the wave's launch email")
        expect(sent.locator(".badge")).to_have_text("delivered")
        expect(sent).to_contain_text("accepted by the relay: 250")
        expect(sent.locator("ol.attempts")).to_contain_text("attempt 1")
        skipped = rows.filter(has_text="reminder 7 days after the launch email")
        expect(skipped.locator(".badge")).to_have_text("skipped")
        expect(skipped).to_contain_text("superseded by a later reminder")
        queued = rows.filter(has_text="reminder 14 days after the launch email")
        expect(queued.locator(".badge")).to_have_text("queued")
        planned = rows.filter(has_text="reminder 3 days before the deadline 2023-10-06")
        expect(planned.locator(".badge")).to_have_text("planned")
        expect(planned).to_contain_text("2023-10-03 09:00 EDT")
        expect(planned).to_contain_text("if not complete by then")
        console.shot(page, "person-timeline")


def test_an_undeliverable_address_is_shown_and_an_operator_clears_the_mark(
    campaign: Runtime, tmp_path: Path, smtp: SmtpServer, page: Page
) -> None:
    rt = campaign
    assert launch(rt) == 3
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(send, rt).result() == {"sent": 3}
    with rt.engine.connect() as conn:
        ada = conn.scalar(
            select(messages.c.message_id).where(messages.c.recipient_email == "ada@example.edu")
        )
    bounced = record_event(
        rt.engine,
        rt.clock,
        receipt="relay-event-1",
        message_id=str(ada),
        recipient="ada@example.edu",
        cls=BounceClass.HARD,
        status="5.1.1",
        diagnostic="550 5.1.1 <ada@example.edu>: user unknown",
    )
    assert bounced is not None
    assert bounced.marked == "H1"
    with web_console(rt, tmp_path, "2023-09-11T11:00:00-04:00") as console:
        sign_in(page, console, OPERATOR)
        card = page.locator(".card.wave", has_text="HR and IS&T Pilot")
        expect(card.locator("[data-bar=people]")).to_have_attribute("data-undeliverable", "1")
        expect(card.locator("[data-bar=messages]")).to_have_attribute("data-failed", "1")
        expect(page.locator("main")).to_contain_text("address is undeliverable: 1")
        console.shot(page, "undeliverable-1-dashboard")

        page.goto(f"{console.url}/departments?name=Human%20Resources&show=unreachable")
        expect(page.locator("table.list").last).to_contain_text("Ada Lovelace")
        page.get_by_role("link", name="H1").click()
        banner = page.locator("#undeliverable")
        expect(banner).to_contain_text("Address marked undeliverable")
        expect(banner).to_contain_text("5.1.1")
        launch_row = page.locator("table.timeline tbody tr", has_text="the wave's launch email")
        expect(launch_row.locator(".badge")).to_have_text("bounced")
        console.shot(page, "undeliverable-2-person")

        page.get_by_role("button", name="The address works: clear the mark").click()
        expect(page.locator(".flash")).to_contain_text("ada@example.edu is marked as working")
        expect(page.locator("#undeliverable")).to_have_count(0)
        console.shot(page, "undeliverable-3-cleared")
    with rt.engine.connect() as conn:
        cleared = conn.execute(
            select(audit_log.c.actor, audit_log.c.subject).where(audit_log.c.action == "address.ok")
        ).all()
    assert cleared == [(OPERATOR[0], "H1")]


def test_a_viewer_sees_only_their_department_and_cannot_launch(
    campaign: Runtime, tmp_path: Path, page: Page
) -> None:
    with web_console(campaign, tmp_path, LAUNCH_DAY) as console:
        sign_in(page, console, VIEWER)
        expect(page).to_have_url(f"{console.url}/departments")
        summary = page.locator("table.numbers tbody")
        expect(summary.locator("tr")).to_have_count(1)
        expect(summary).to_contain_text("Human Resources")
        expect(summary).not_to_contain_text("Information Systems")
        console.shot(page, "viewer-departments")

        own = page.goto(f"{console.url}/people/H1")
        assert own is not None
        assert own.status == 200
        expect(page.locator("h1")).to_contain_text("Ada Lovelace")
        expect(page.locator("form[action$='/extend']")).to_have_count(0)
        other = page.goto(f"{console.url}/people/H3")  # Grace, Information Systems
        assert other is not None
        assert other.status == 404
        expect(page.locator("body")).not_to_contain_text("Grace")
        console.shot(page, "viewer-other-department-404")

        wave = page.goto(f"{console.url}/waves/pilot")
        assert wave is not None
        assert wave.status == 403
        expect(page.get_by_role("link", name="Launch", exact=True)).to_have_count(0)
        # Even with its own valid CSRF token, a viewer's POST is refused.
        token = page.locator("input[name=csrf_token]").first.get_attribute("value")
        assert token
        forged = page.request.post(f"{console.url}/waves/pilot/launch", form={"csrf_token": token})
        assert forged.status == 403
        assert console.queued_launches() == 0


def test_a_form_posted_without_its_csrf_token_is_refused(
    campaign: Runtime, tmp_path: Path, page: Page
) -> None:
    with web_console(campaign, tmp_path, LAUNCH_DAY) as console:
        sign_in(page, console, OPERATOR)
        page.goto(f"{console.url}/waves/pilot/launch")
        page.locator("form[action='/waves/pilot/launch'] input[name=csrf_token]").evaluate(
            "node => node.remove()"
        )
        with page.expect_response(re.compile(r"/waves/pilot/launch$")) as answer:
            page.get_by_role("button", name="Confirm launch").click()
        assert answer.value.status == 403
        expect(page.locator("h1")).to_contain_text("security token")
        console.shot(page, "csrf-refused")
        assert console.queued_launches() == 0

        page.goto(f"{console.url}/waves/pilot/launch")
        page.locator("form[action='/waves/pilot/launch'] input[name=csrf_token]").evaluate(
            "node => node.value = 'forged'"
        )
        with page.expect_response(re.compile(r"/waves/pilot/launch$")) as answer:
            page.get_by_role("button", name="Confirm launch").click()
        assert answer.value.status == 403
        assert console.queued_launches() == 0


assert len(PILOT) == 5  # the tests above count on the pilot roster's three required people


def test_what_a_new_operator_saw_reads_right_on_a_desk_and_on_a_phone(
    campaign: Runtime, tmp_path: Path, smtp: SmtpServer, browser: Browser
) -> None:
    """Issue 26: "Completion recorded (recorded)"; a queued confirmation said "in working
    hours" though it goes at once; the waves' chart dropped its first month's label and cut
    "Apr"; on a 375-px phone the navigation ran off the page."""
    rt = campaign
    assert launch(rt) == 3
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(send, rt).result() == {"sent": 3}
    with web_console(rt, tmp_path, "2023-09-11T10:30:00-04:00") as console:
        desk = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        sign_in(desk, console, OPERATOR)
        desk.goto(f"{console.url}/people/H1")
        desk.get_by_role("button", name="Record completion").click()
        flash = desk.locator(".flash")
        expect(flash).to_have_text(
            "Completion recorded: the training is complete; a confirmation is on its way."
        )
        confirmation = desk.locator("table.timeline tbody tr").filter(
            has_text="the confirmation of a completion"
        )
        expect(confirmation.locator(".badge")).to_have_text("queued")
        expect(confirmation).to_contain_text("goes at once, not held to working hours")
        expect(confirmation).not_to_contain_text("in working hours)")
        console.shot(desk, "completion-recorded")

        desk.goto(f"{console.url}/")
        chart = desk.locator("svg.timeline")
        labels = chart.locator("text.ticklabel")
        expect(labels.first).to_have_text("Sep 2023")  # the first month: the pilot opens in it
        expect(labels.last).to_have_text("Apr 2024")  # the last: the admin wave's week after
        box = chart.bounding_box()
        assert box is not None
        for i in range(labels.count()):
            label = labels.nth(i).bounding_box()
            assert label is not None
            assert label["x"] + label["width"] <= box["x"] + box["width"], labels.nth(
                i
            ).text_content()
        console.shot(desk, "dashboard-desk")
        desk.context.close()

        phone = browser.new_context(viewport={"width": 375, "height": 800}).new_page()
        sign_in(phone, console, OPERATOR)
        phone.goto(f"{console.url}/")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375
        for link in ("Dashboard", "People", "Departments", "Audit log"):
            nav = phone.locator("header nav").get_by_role("link", name=link).bounding_box()
            assert nav is not None
            assert nav["x"] >= 0
            assert nav["x"] + nav["width"] <= 375, link
        console.shot(phone, "dashboard-phone")
        phone.context.close()
