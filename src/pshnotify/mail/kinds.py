"""Each email kind is a function returning only its template context."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pshnotify.domain.calendar import human_date
from pshnotify.domain.program import Program


@dataclass(frozen=True)
class Recipient:
    external_id: str
    name: str
    email: str
    department: str


def _common(program: Program, person: Recipient) -> dict[str, Any]:
    info = program.program
    help_contact = program.contact("help")
    reporting = program.contact("reporting")
    return {
        "person": {"name": person.name, "email": person.email, "department": person.department},
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
    }


def _contact(c: Any) -> dict[str, str]:
    return {"label": c.label, "email": str(c.email)}


def launch_context(
    program: Program, wave_key: str, person: Recipient, deadline: dt.date | None = None
) -> dict[str, Any]:
    wave = program.wave(wave_key)
    last_day = deadline or wave.closes
    return {
        **_common(program, person),
        "wave": {
            "key": wave.key,
            "title": wave.title,
            "opens": human_date(wave.opens),
            "closes": human_date(wave.closes),
            "opens_date": wave.opens.isoformat(),
            "closes_date": wave.closes.isoformat(),
        },
        "deadline": human_date(last_day),
        "deadline_date": last_day.isoformat(),
        "timezone": program.program.timezone,
    }


SAMPLE = Recipient(
    external_id="sample",
    name="Sample Person",
    email="sample@example.org",
    department="Sample Department",
)


def sample_contexts(program: Program) -> list[tuple[str, dict[str, Any]]]:
    """One context per kind, for checking templates before anything is sent."""
    return [("launch", launch_context(program, program.waves[0].key, SAMPLE))]


def context_for(
    kind: str,
    program: Program,
    wave_key: str | None,
    person: Recipient,
    deadline: dt.date | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    if kind == "launch" and wave_key:
        return launch_context(program, wave_key, person, deadline)
    raise ValueError(f"no template context for kind {kind!r}")
