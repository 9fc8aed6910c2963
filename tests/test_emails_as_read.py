"""Emails as their recipients read them (issue 13, defect 8): the zone as people say it, the
deadline with its time of day, "required" in the launch email, the FAQ link in every email,
the program's name and cycle in every reminder's subject."""

from __future__ import annotations

import re

import pytest

import pshnotify.mail.report_kind  # noqa: F401 - registers the officers' report kind
from pshnotify.mail.kinds import (
    KindInput,
    Recipient,
    launch_context,
    reminder_context,
    sample_contexts,
)
from pshnotify.mail.render import Templates
from tests.conftest import TEMPLATES
from tests.test_program import SEED

pytestmark = pytest.mark.fast  # no server: `make test-fast`

PERSON = Recipient("E1", "Ann Lee", "ann@example.org", "Human Resources")


def test_every_email_speaks_of_eastern_time_and_carries_the_faq_link() -> None:
    templates = Templates(TEMPLATES)
    info_url = SEED.program.info_url
    assert info_url
    for kind, context in sample_contexts(SEED):
        rendered = templates.render(kind, context)
        for part in (rendered.text, rendered.html):
            assert "America/New_York" not in part, kind
            assert info_url in part, kind
        if kind in ("launch", "reminder", "invitation", "overdue"):
            assert "11:59 p.m. Eastern Time" in rendered.text, kind


def test_the_launch_email_says_required_with_the_deadlines_time_of_day() -> None:
    rendered = Templates(TEMPLATES).render("launch", launch_context(SEED, "pilot", PERSON))
    text = " ".join(rendered.text.split())
    assert "This training is required for you" in text
    assert "Friday, October 6, 2023, 11:59 p.m. Eastern Time" in text
    assert "required for you" in rendered.html


def test_the_reminders_subject_keeps_the_programs_name_and_cycle() -> None:
    context = reminder_context(KindInput(SEED, "pilot", PERSON, None, {"step": "after:7"}))
    subject = Templates(TEMPLATES).render("reminder", context).subject
    assert subject.startswith(f"Reminder: {SEED.program.name} {SEED.program.cycle}")
    assert "Friday, October 6, 2023" in subject


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines()]


def test_the_launch_emails_calendar_sentence_starts_its_own_line() -> None:
    """Issue 26: "...11:59 p.m. Eastern TimeThe attached calendar file..." - the window line
    and the calendar sentence were one, for people in the program's zone and elsewhere."""
    templates = Templates(TEMPLATES)
    abroad = Recipient("E2", "Bo Tan", "bo@example.org", "Human Resources", "Asia/Singapore")
    for person in (PERSON, abroad):
        text = templates.render("launch", launch_context(SEED, "pilot", person)).text
        lines = _lines(text)
        window = next(line for line in lines if line.startswith("Your window:"))
        assert window.endswith(("Eastern Time", ")")), window
        assert (
            "The attached calendar file (deadline.ics) puts the deadline"
            in lines[lines.index(window) + 1]
        )


def test_no_email_runs_two_sentences_together() -> None:
    """A word ending right against the next one's capital ("TimeThe") is a line break a
    template swallowed; no kind's plain text, nor its HTML, has one."""
    templates = Templates(TEMPLATES)
    glued = re.compile(r"[a-z.)][A-Z][a-z]")
    for kind, context in sample_contexts(SEED):
        rendered = templates.render(kind, context)
        for part in (rendered.text, rendered.html):
            assert not glued.findall(part), (kind, glued.findall(part))
