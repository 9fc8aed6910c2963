"""Working hours in the program's zone: when a non-urgent message may go out."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

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
