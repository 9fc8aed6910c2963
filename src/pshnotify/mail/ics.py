"""The deadline as an iCalendar event (RFC 5545), attached to the launch email and to an
extension's confirmation so the deadline sits in the person's own calendar.

One event per person and program: its UID is derived from both and never changes, so the
event an extension sends replaces the launch email's in the calendar (a higher SEQUENCE wins,
RFC 5545 3.8.7.4). METHOD:PUBLISH (RFC 5546): clients show and import it as it is, with no
invitation to accept and no reply sent back.

The event is timed in UTC: the deadline is one instant for everyone (the end of the closing
date in the program's zone), and each client shows it in its own zone (Saturday 11:59 AM in
Singapore for a Friday 11:59 PM deadline in Boston). An all-day event would float to the
wrong day abroad.

The event carries a reminder (VALARM, DISPLAY): REMINDER_DAYS before the deadline's day, at
the start of the program's working hours (Tuesday 9:00 for a Friday deadline), so a deadline
in the calendar is not first seen when it has passed. The alarm is relative to the deadline
(RFC 5545 3.8.6.3), the form every client honours. Like the event, it holds nothing of the
person but the UID's digest.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib

from pshnotify.domain.calendar import LAST_MINUTE
from pshnotify.domain.program import Program

FILENAME = "deadline.ics"
MEDIA_PARAMS = "method=PUBLISH"  # RFC 6047 2.4: the Content-Type repeats the METHOD
REMINDER_DAYS = 3


def event_uid(program_key: str, person_id: str) -> str:
    """Stable per person and program, and revealing neither (a digest, not the roster id)."""
    digest = hashlib.sha256(f"{program_key}\0{person_id}".encode()).hexdigest()[:32]
    return f"deadline-{digest}@pshnotify"


def deadline_event(
    program: Program,
    person_id: str,
    deadline: dt.date,
    *,
    sequence: int,
    stamp: dt.datetime,
) -> bytes:
    """The calendar file: one VEVENT from 11:59 PM to midnight of the deadline, program time,
    with a reminder REMINDER_DAYS before.

    The icalendar library builds it once per program, deadline and sequence (about 550 us,
    more than the rest of a message's build); each person's copy then only gets its own UID
    and DTSTAMP, two unfolded lines of fixed form, put in place of the template's.
    """
    info = program.program
    reminder = dt.datetime.combine(
        deadline - dt.timedelta(days=REMINDER_DAYS),
        program.sending.working_hours.start,
        program.tz,
    )
    shared = _event_template(
        info.key,
        info.name,
        info.cycle,
        info.courses_url,
        info.info_url,
        program.closes_at(deadline),
        dt.datetime.combine(deadline, LAST_MINUTE, program.tz),
        sequence,
        reminder,
    )
    own_stamp = stamp.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ").encode("ascii")
    return shared.replace(_UID_LINE, b"UID:" + event_uid(info.key, person_id).encode()).replace(
        _STAMP_LINE, b"DTSTAMP:" + own_stamp
    )


_PLACEHOLDER_UID = "deadline-" + "0" * 32 + "@pshnotify"
_PLACEHOLDER_STAMP = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_UID_LINE = f"UID:{_PLACEHOLDER_UID}".encode()
_STAMP_LINE = b"DTSTAMP:19000101T000000Z"


def load_library() -> None:
    """Import the icalendar library now (about 40-80 ms), so that a drain does not: in the
    middle of its first batch, every connection waited for it."""
    import icalendar  # noqa: F401


@functools.lru_cache(maxsize=256)
def _event_template(
    key: str,
    name: str,
    cycle: str,
    courses_url: str,
    info_url: str,
    ends: dt.datetime,
    starts: dt.datetime,
    sequence: int,
    reminder: dt.datetime,
) -> bytes:
    # Imported here: the library costs about 80 ms to import, which every command (pause,
    # status, ...) would pay at start; only a build of a message with a calendar needs it.
    from icalendar import Alarm, Calendar, Event

    cal = Calendar()
    cal.add("prodid", f"-//pshnotify//{key}//EN")
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("method", "PUBLISH")
    event = Event()
    event.add("uid", _PLACEHOLDER_UID)
    event.add("sequence", sequence)
    event.add("dtstamp", _PLACEHOLDER_STAMP)
    event.add("dtstart", starts.astimezone(dt.UTC))
    event.add("dtend", ends.astimezone(dt.UTC))
    event.add("summary", f"Deadline: {name} ({cycle})")
    lines = [f"Complete one of the {name} courses by this time."]
    if courses_url:
        lines.append(f"Courses: {courses_url}")
        event.add("url", courses_url)
    if info_url:
        lines.append(f"About the training: {info_url}")
    event.add("description", "\n".join(lines))
    event.add("transp", "TRANSPARENT")  # a deadline, not a meeting: it blocks no time
    event.add("status", "CONFIRMED")
    alarm = Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("trigger", reminder - starts)  # negative: before the deadline
    alarm.add("description", f"Deadline in {REMINDER_DAYS} days: {name} ({cycle})")
    event.add_component(alarm)
    cal.add_component(event)
    data: bytes = cal.to_ical()
    if data.count(_UID_LINE) != 1 or data.count(_STAMP_LINE) != 1:
        raise ValueError("the calendar template lost its UID or DTSTAMP line")
    return data
