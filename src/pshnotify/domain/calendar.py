"""Working hours and closures in a zone (the person's own, or the program's): when a
non-urgent message may go out."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from pshnotify.domain.program import Sending

# How far ahead to look for a working day: a winter break plus weekends is a fortnight; a year
# of closures is refused by the program's validation.
_HORIZON_DAYS = 400


def next_sending_instant(at: dt.datetime, sending: Sending, tz: ZoneInfo) -> dt.datetime:
    """The first instant at or after `at` inside working hours on a working day that is not a
    closure, in the zone `tz` (the recipient's), as an aware UTC datetime.

    Computed on local wall-clock dates and re-attached to the zone, so 09:00 stays 09:00 local
    across a daylight-saving change, whichever date that zone changes on.
    """
    hours = sending.working_hours
    local = at.astimezone(tz)
    for offset in range(_HORIZON_DAYS):
        day = local.date() + dt.timedelta(days=offset)
        if not sending.is_working_day(day):
            continue
        start = dt.datetime.combine(day, hours.start, tz)
        end = dt.datetime.combine(day, hours.end, tz)
        if offset == 0 and local >= end:
            continue
        return max(start, local).astimezone(dt.UTC) if offset == 0 else start.astimezone(dt.UTC)
    return at.astimezone(dt.UTC)  # no working day configured: send at once


@lru_cache(maxsize=256)
def zone(name: str | None, default: ZoneInfo) -> ZoneInfo:
    """A person's zone: their roster `timezone`, or the program's when they have none (or a
    name this machine's zone database no longer knows: the roster import checked it)."""
    if not name:
        return default
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return default


def place_name(tz: ZoneInfo) -> str:
    """How people name a zone's place: 'Asia/Singapore' -> 'Singapore',
    'America/Argentina/Buenos_Aires' -> 'Buenos Aires'."""
    return str(tz.key).rsplit("/", 1)[-1].replace("_", " ")


def human_date(day: dt.date) -> str:
    """'Monday, September 11, 2023', without depending on the host's locale."""
    return f"{_WEEKDAYS[day.weekday()]}, {_MONTHS[day.month - 1]} {day.day}, {day.year}"


_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
