"""Working hours in the program's zone: when a non-urgent message may go out."""

from __future__ import annotations

import datetime as dt
from functools import cache
from zoneinfo import ZoneInfo

from babel.dates import get_timezone_name

from pshnotify.domain.program import Sending

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def next_sending_instant(at: dt.datetime, sending: Sending, tz: ZoneInfo) -> dt.datetime:
    """The first instant at or after `at` inside working hours, as an aware UTC datetime.

    Computed on local wall-clock dates and re-attached to the zone, so 09:00 stays 09:00 local
    across a daylight-saving change.
    """
    hours = sending.working_hours
    local = at.astimezone(tz)
    for offset in range(15):
        day = local.date() + dt.timedelta(days=offset)
        if _DAYS[day.weekday()] not in sending.working_days:
            continue
        start = dt.datetime.combine(day, hours.start, tz)
        end = dt.datetime.combine(day, hours.end, tz)
        if offset == 0 and local >= end:
            continue
        return max(start, local).astimezone(dt.UTC) if offset == 0 else start.astimezone(dt.UTC)
    return at.astimezone(dt.UTC)  # no working day configured: send at once


def human_date(day: dt.date) -> str:
    """'Monday, September 11, 2023', without depending on the host's locale."""
    return f"{_WEEKDAYS[day.weekday()]}, {_MONTHS[day.month - 1]} {day.day}, {day.year}"


def human_time(at: dt.time) -> str:
    """'11:59 p.m.', '9:00 a.m.': how an email states a time of day."""
    hour = at.hour % 12 or 12
    return f"{hour}:{at.minute:02d} {'a.m.' if at.hour < 12 else 'p.m.'}"


# A window or deadline ends at local midnight after its last day: people say "11:59 p.m.".
LAST_MINUTE = dt.time(23, 59)


@cache
def spoken_zone(tz: ZoneInfo) -> str:
    """The zone as people say it: 'Eastern Time' for America/New_York, 'Central European Time'
    for Europe/Berlin (CLDR's generic names, through Babel); 'UTC' for UTC."""
    if tz.key in ("UTC", "Etc/UTC", "Etc/UCT", "GMT", "Etc/GMT"):
        return "UTC"
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
