"""Working hours and closures in a zone (the person's own, or the program's): when a
non-urgent message may go out."""

from __future__ import annotations

import datetime as dt
from functools import cache, lru_cache
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


def human_time(at: dt.time) -> str:
    """'11:59 p.m.', '9:00 a.m.': how an email states a time of day."""
    hour = at.hour % 12 or 12
    return f"{hour}:{at.minute:02d} {'a.m.' if at.hour < 12 else 'p.m.'}"


def local_time(at: dt.datetime | None, tz: dt.tzinfo) -> str:
    """A time a person reads (a table, a confirmation, an error message): in `tz` (the
    program's zone), with its abbreviation: '2023-09-11 10:05 EDT'; '-' for none. A naive
    datetime is UTC, as stored. JSON says times otherwise (ISO-8601 with an offset)."""
    if at is None:
        return "-"
    aware = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
    return aware.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


# A window or deadline ends at local midnight after its last day: people say "11:59 p.m.".
LAST_MINUTE = dt.time(23, 59)


@cache
def spoken_zone(tz: ZoneInfo) -> str:
    """The zone as people say it: 'Eastern Time' for America/New_York, 'Central European Time'
    for Europe/Berlin (CLDR's generic names, through Babel); 'UTC' for UTC."""
    if tz.key in ("UTC", "Etc/UTC", "Etc/UCT", "GMT", "Etc/GMT"):
        return "UTC"
    from babel.dates import get_timezone_name  # 0.4 s of locale data: only when an email needs it

    name = str(get_timezone_name(tz, "long", locale="en_US", zone_variant="generic"))
    return tz.key if name.startswith("Unknown") else name


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
