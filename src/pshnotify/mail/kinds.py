"""Each email kind is a function returning only its template context (and any attachments).

Kinds register a `KindSpec`; the dispatcher, `preview` and the start-up template check all go
through `context_for`, so a kind cannot render one way when sent and another when previewed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from pshnotify.domain.calendar import (
    LAST_MINUTE,
    human_date,
    human_time,
    place_name,
    spoken_zone,
    zone,
)
from pshnotify.domain.program import Program
from pshnotify.mail import ics


@dataclass(frozen=True)
class Recipient:
    external_id: str
    name: str
    email: str
    department: str
    timezone: str | None = None  # the roster's IANA zone; None: the program's


@dataclass(frozen=True)
class KindInput:
    """Everything a kind may use: the program, the person, their deadline, the message's data."""

    program: Program
    wave_key: str | None
    person: Recipient
    deadline: dt.date | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    now: dt.datetime | None = None  # when the message is built (the calendar's DTSTAMP)


@dataclass(frozen=True)
class Attachment:
    filename: str
    maintype: str
    subtype: str
    data: bytes
    params: str = ""  # more Content-Type parameters ("method=PUBLISH")


@dataclass(frozen=True)
class KindSpec:
    context: Callable[[KindInput], dict[str, Any]]
    sample_extra: Mapping[str, Any] = field(default_factory=dict)
    attachments: Callable[[KindInput], list[Attachment]] | None = None
    needs_wave: bool = True


KINDS: dict[str, KindSpec] = {}


def register(kind: str, spec: KindSpec) -> None:
    KINDS[kind] = spec


def context_for(kind: str, data: KindInput) -> dict[str, Any]:
    spec = KINDS.get(kind)
    if spec is None:
        raise ValueError(f"no template context for kind {kind!r}")
    return spec.context(data)


def attachments_for(kind: str, data: KindInput) -> list[Attachment]:
    spec = KINDS.get(kind)
    return spec.attachments(data) if spec and spec.attachments else []


SAMPLE = Recipient(
    external_id="sample",
    name="Sample Person",
    email="sample@example.org",
    department="Sample Department",
)


def sample_contexts(
    program: Program, kinds: list[str] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """One context per kind (all registered, or those given), for checking templates."""
    wave = program.waves[0].key
    out = []
    for kind, spec in sorted(KINDS.items()):
        if kinds is not None and kind not in kinds:
            continue
        data = KindInput(
            program, wave if spec.needs_wave else None, SAMPLE, None, spec.sample_extra
        )
        out.append((kind, spec.context(data)))
    return out


# -- the kinds ------------------------------------------------------------------------------------
# The parts of a context that depend on the program (and wave and deadline) only, made once
# and shared by every message that uses them: a drain renders thousands of messages from a
# handful of such parts. Safe to share: templates run in Jinja's immutable sandbox, which
# cannot change a dict or list, and each context's top level is a dict of its own.
_SHARED: dict[tuple[int, str | None, dt.date | None], tuple[Program, dict[str, Any]]] = {}


def _shared(
    program: Program,
    wave_key: str | None,
    deadline: dt.date | None,
    make: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    key = (id(program), wave_key, deadline)
    hit = _SHARED.get(key)
    if hit is None or hit[0] is not program:  # an id can be reused once a program is gone
        if len(_SHARED) >= 256:
            _SHARED.clear()
        hit = _SHARED[key] = (program, make())
    return hit[1]


def common_context(program: Program, person: Recipient) -> dict[str, Any]:
    return {
        "person": {"name": person.name, "email": person.email, "department": person.department},
        **_shared(program, None, None, lambda: _program_part(program)),
    }


def _program_part(program: Program) -> dict[str, Any]:
    info = program.program
    help_contact = program.contact("help")
    reporting = program.contact("reporting")
    return {
        "program": {
            "key": info.key,
            "name": info.name,
            "cycle": info.cycle,
            "courses_url": info.courses_url,
            "info_url": info.info_url,
        },
        "sender": {"name": info.sender.name},
        "help": _contact(help_contact)
        if help_contact
        else {"label": "Questions", "email": info.sender.address},
        "reporting": _contact(reporting) if reporting else None,
        "options": [
            {
                "key": o.key,
                "title": o.title,
                "duration_minutes": o.duration_minutes,
                "url": o.url or info.courses_url,
            }
            for o in program.options
        ],
        "timezone": info.timezone,  # the IANA key, for templates that want it
        "zone": spoken_zone(program.tz),  # "Eastern Time": what an email says
    }


def _contact(c: Any) -> dict[str, str]:
    return {"label": c.label, "email": str(c.email)}


def wave_context(data: KindInput) -> dict[str, Any]:
    """Launch, invitation, reminder and overdue all speak of the person's wave and deadline."""
    if data.wave_key is None:
        raise ValueError("this kind needs a wave")
    program, wave_key, deadline = data.program, data.wave_key, data.deadline
    part = _shared(program, wave_key, deadline, lambda: _wave_part(program, wave_key, deadline))
    return {
        **common_context(program, data.person),
        **part,
        "deadline_elsewhere": deadline_elsewhere(
            program, dt.date.fromisoformat(part["deadline_date"]), data.person.timezone
        ),
        # The person's own link to the requests page (mail/links.py), added when the message
        # is built; "" when the program takes no requests.
        "request_url": str(data.extra.get("request_url", "")),
    }


def deadline_elsewhere(program: Program, deadline: dt.date, timezone: str | None) -> str:
    """The deadline's instant on the person's own clock, where it reads differently from the
    program's: 'Saturday 11:59 a.m. in Singapore'; '' for someone in the program's zone (or
    one that agrees with it, Toronto for Boston)."""
    return _elsewhere(program.program.timezone, deadline, timezone or "")


@functools.lru_cache(maxsize=1024)
def _elsewhere(program_zone: str, deadline: dt.date, timezone: str) -> str:
    home = ZoneInfo(program_zone)
    theirs = zone(timezone, home)
    at = dt.datetime.combine(deadline, LAST_MINUTE, home)
    there = at.astimezone(theirs)
    if there.replace(tzinfo=None) == at.replace(tzinfo=None):
        return ""
    day = there.strftime("%A") if there.date() != deadline else "the same day"
    return f"{day} {human_time(there.time())} in {place_name(theirs)}"


def _wave_part(program: Program, wave_key: str, deadline: dt.date | None) -> dict[str, Any]:
    wave = program.wave(wave_key)
    last_day = deadline or wave.closes
    return {
        "wave": {
            "key": wave.key,
            "title": wave.title,
            "opens": human_date(wave.opens),
            "closes": human_date(wave.closes),
            "opens_date": wave.opens.isoformat(),
            "closes_date": wave.closes.isoformat(),
        },
        "deadline": human_date(last_day),
        # the window ends at local midnight after its last day
        "deadline_time": human_time(LAST_MINUTE),
        "deadline_date": last_day.isoformat(),
        "extended": deadline is not None and deadline != wave.closes,
    }


def launch_context(
    program: Program, wave_key: str, person: Recipient, deadline: dt.date | None = None
) -> dict[str, Any]:
    return wave_context(KindInput(program, wave_key, person, deadline))


def reminder_context(data: KindInput) -> dict[str, Any]:
    ctx = wave_context(data)
    ctx["step"] = str(data.extra.get("step", ""))
    return ctx


def extension_context(data: KindInput) -> dict[str, Any]:
    """An extension's confirmation: the new deadline it grants (not whatever is latest when
    it is sent: a second extension sends its own)."""
    granted = dt.date.fromisoformat(str(data.extra["deadline"]))
    return wave_context(dataclasses.replace(data, deadline=granted))


def deadline_calendar(data: KindInput) -> list[Attachment]:
    """The deadline as an .ics event; an extension's confirmation updates the same event."""
    if data.wave_key is None:
        return []
    granted = data.extra.get("deadline")
    deadline = (
        dt.date.fromisoformat(str(granted))
        if granted
        else data.deadline or data.program.wave(data.wave_key).closes
    )
    body = ics.deadline_event(
        data.program,
        data.person.external_id,
        deadline,
        sequence=int(data.extra.get("sequence", 0)),
        stamp=data.now or data.program.closes_at(deadline),
    )
    return [Attachment(ics.FILENAME, "text", "calendar", body, ics.MEDIA_PARAMS)]


def confirmation_context(data: KindInput) -> dict[str, Any]:
    program = data.program
    key = str(data.extra["option"])
    try:
        title = program.option(key).title
    except KeyError:  # an approved alternative recorded by an operator
        title = "an approved alternative" if key == "alternative" else key
    completed = dt.datetime.fromisoformat(str(data.extra["completed_at"]))
    return {
        **common_context(program, data.person),
        "option": {"key": key, "title": title},
        "completed_on": human_date(completed.astimezone(program.tz).date()),
        "wave": {"key": data.wave_key},
    }


register("launch", KindSpec(wave_context, attachments=deadline_calendar))
register("invitation", KindSpec(wave_context))
register("reminder", KindSpec(reminder_context, sample_extra={"step": "after:7"}))
register("overdue", KindSpec(wave_context))
register(
    "extension",
    KindSpec(
        extension_context,
        sample_extra={"deadline": "2023-10-20", "previous": "2023-10-06", "sequence": 1},
        attachments=deadline_calendar,
    ),
)
register(
    "confirmation",
    KindSpec(
        confirmation_context,
        sample_extra={"option": "A", "completed_at": "2023-09-12T15:00:00+00:00"},
    ),
)


def request_context(data: KindInput) -> dict[str, Any]:
    """A participant's request: its acknowledgement, and the decision on it."""
    from pshnotify.domain import requests as rules

    kind = str(data.extra.get("request_kind", ""))
    payload = data.extra.get("payload") or {}
    text = rules.KINDS.get(kind)
    return {
        **wave_context(data),
        "request": {
            "id": data.extra.get("request"),
            "kind": kind,
            "title": text.title if text else kind,
            "summary": rules.summary(kind, payload),
            "state": str(data.extra.get("state", rules.PENDING)),
            "note": str(data.extra.get("note", "")),
            "until": human_date(dt.date.fromisoformat(str(payload["until"])))
            if payload.get("until")
            else "",
            "pause_days": data.program.requests.pause_reminders_days,
        },
    }


_REQUEST_SAMPLE = {
    "request": 12,
    "request_kind": "more_time",
    "payload": {"until": "2023-10-20", "reason": "travel"},
    "state": "approved",
    "note": "Granted.",
}
register("acknowledgement", KindSpec(request_context, sample_extra=_REQUEST_SAMPLE))
register("decision", KindSpec(request_context, sample_extra=_REQUEST_SAMPLE))
