"""Participants' requests: what each kind asks, and the rules that decide it (pure).

A participant answers from their email's personal link: more time, already completed, not
required, another way to complete it, technical trouble. The page and the commands ask here:
which fields a kind takes and whether what was typed is usable (`read_request`), how far more
time may go (`extension_problem`), what the program grants without an operator
(`auto_approves`), how long reminders wait for a decision (`pause_ends`, `pausing`), and how
long a link works (`link_expires`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pshnotify.domain.errors import InputError
from pshnotify.domain.program import REQUEST_KINDS, Program
from pshnotify.domain.text import text_problem
from pshnotify.domain.values import Day, read

PENDING, APPROVED, DECLINED = "pending", "approved", "declined"
STATES = (PENDING, APPROVED, DECLINED)
MAX_NOTE = 1000  # a note or a reason typed on the page, or an operator's note
ALTERNATIVE = "alternative"  # the option a completion by another way is recorded under


@dataclass(frozen=True)
class KindText:
    button: str  # the page's button (pinned: tests and people outside read it)
    title: str  # what the console and the emails call a request of this kind
    fields: tuple[str, ...]  # the form's field names (pinned)


KINDS: dict[str, KindText] = {
    "more_time": KindText("Request more time", "More time", ("until", "reason")),
    "completed": KindText("I have completed it", "Already completed", ("option", "completed_on")),
    "not_required": KindText("I am not required", "Not required", ("reason", "note")),
    "alternative": KindText(
        "I need another way to complete it", "Another way to complete it", ("note",)
    ),
    "technical": KindText("I am having technical trouble", "Technical trouble", ("note",)),
}
assert tuple(KINDS) == REQUEST_KINDS


def paused_reason(request_id: int) -> str:
    """What `plan`, the timeline and a skipped reminder say about a reminder held back."""
    return f"request {request_id} pending"


def pause_ends(program: Program, filed_at: dt.datetime) -> dt.datetime:
    """Reminders wait for a decision until this instant; then they resume, the request stays
    open."""
    return filed_at + dt.timedelta(days=program.requests.pause_reminders_days)


def pausing(program: Program, filed_at: dt.datetime, now: dt.datetime) -> bool:
    """Does a pending request filed at `filed_at` still hold this person's reminders?"""
    return filed_at <= now < pause_ends(program, filed_at)


def extension_problem(program: Program, deadline: dt.date, until: dt.date) -> str | None:
    """Why more time until `until` cannot be asked (or granted) for a person whose deadline is
    `deadline`, or None."""
    longest = deadline + dt.timedelta(days=program.requests.max_extension_days)
    if until <= deadline:
        return f"{until} is not after your deadline ({deadline}); choose a later date"
    if until > longest:
        return (
            f"{until} is more than {program.requests.max_extension_days} days after your "
            f"deadline; choose {longest} or earlier"
        )
    return None


def auto_approves(program: Program, deadline: dt.date, until: dt.date) -> bool:
    """More time the program grants without an operator: up to auto_approve_extension_days
    (0: never), within the maximum."""
    days = program.requests.auto_approve_extension_days
    return (
        days > 0
        and extension_problem(program, deadline, until) is None
        and (until - deadline).days <= days
    )


def link_expires(program: Program, deadline: dt.date) -> dt.datetime:
    """A person's link works until `link_valid_days` after their deadline passes."""
    return program.closes_at(deadline) + dt.timedelta(days=program.requests.link_valid_days)


def _text(form: Mapping[str, str], name: str, *, required: bool) -> str | None:
    value = " ".join(str(form.get(name, "")).split()) if name != "note" else form.get(name, "")
    value = value.strip()
    if not value:
        if required:
            raise InputError([f"{name}: please fill this in"])
        return None
    if problem := text_problem(value.replace("\r\n", "\n").replace("\n", " "), MAX_NOTE):
        raise InputError([f"{name}: {problem}"])
    return value.replace("\r\n", "\n")


def read_request(
    program: Program,
    kind: str,
    form: Mapping[str, str],
    deadline: dt.date,
    today: dt.date | None = None,
) -> dict[str, Any]:
    """The request's payload from what was typed, or InputError naming the field (the page
    shows each problem beside its field and keeps what was typed). `today`: the latest date a
    completion can have happened on (the person's today, or the program's)."""
    if kind not in program.requests.enabled:
        raise InputError([f"kind: {kind!r} is not something this program takes requests for"])
    reach = program.reach

    def day(name: str) -> dt.date:
        raw = str(form.get(name, "")).strip()
        if not raw:
            raise InputError([f"{name}: please choose a date"])
        return read(name, lambda: Day.parse(raw, reach)).date

    if kind == "more_time":
        until = day("until")
        if problem := extension_problem(program, deadline, until):
            raise InputError([f"until: {problem}"])
        return {"until": until.isoformat(), "reason": _text(form, "reason", required=True)}
    if kind == "completed":
        option = str(form.get("option", "")).strip()
        keys = [o.key for o in program.options]
        if option not in keys:
            raise InputError([f"option: choose one of the courses ({', '.join(keys)})"])
        done = day("completed_on")
        if today is not None and done > today:
            raise InputError([f"completed_on: {done} is in the future; give the day you did it"])
        return {"option": option, "completed_on": done.isoformat()}
    if kind == "not_required":
        reason = str(form.get("reason", "")).strip()
        if reason not in program.requests.not_required_reasons:
            raise InputError(["reason: choose one of the reasons listed"])
        return {"reason": reason, "note": _text(form, "note", required=False)}
    return {"note": _text(form, "note", required=True)}


def summary(kind: str, payload: Mapping[str, Any]) -> str:
    """One line saying what was asked ("until 2023-10-20: a family emergency")."""
    parts = {
        "more_time": f"until {payload.get('until')}: {payload.get('reason') or ''}",
        "completed": (
            f"option {payload.get('option')} on {payload.get('completed_on')}"
            if payload.get("option")
            else ""
        ),
        "not_required": f"{payload.get('reason') or ''}"
        + (f" ({payload['note']})" if payload.get("note") else ""),
    }
    text = parts.get(kind, str(payload.get("note") or ""))
    return " ".join(text.split())
