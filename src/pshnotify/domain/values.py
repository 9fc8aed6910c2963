"""Dates and instants from outside, checked once, in one place.

Every door (the CLI, the console's forms, the CSV files, the webhooks, xAPI) turns what was
typed into a `Day` or an `Instant`, and the commands in `services/` take those, never a bare
string or date. A value one door refuses is then refused by all of them with the same words,
and no value a door accepts can make a later pass, page or report fail: an extension to
9999-12-31, once accepted, made every pass raise OverflowError; a completion dated 0001-01-02
made the dashboard draw a column a day from year 1.

What a program can mean is its *reach*: from January 1 of the year before its first wave
opens to December 31 of the year after its last wave closes. Cycles repeat every two to three
years and a completion in an earlier cycle does not count, so a date further out is a typo;
the margin keeps a late extension or an early pilot's completion possible.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from zoneinfo import ZoneInfo

from pshnotify.domain.errors import InputError
from pshnotify.domain.text import CONTROL, CONTROL_PROBLEM, short

MAX_INSTANT = 40  # the longest ISO-8601 instant anyone writes, with room
DATE_EXAMPLE = "2023-09-12"
INSTANT_EXAMPLE = "2023-09-12T14:30:00-04:00"
LOCAL_EXAMPLE = "2023-09-11T09:00"


class BadValueError(ValueError):
    """A value a person typed cannot be used; the message says why and how to write it.

    It names no field: each door says the field its own way (`--until`, `until`,
    `FILE:LINE: completed_at`)."""


T = TypeVar("T")


def read(field: str, parse: Callable[[], T]) -> T:
    """`parse()`, its BadValueError as the InputError `field: problem` (the field's domain
    name; the CLI shows it as its option, the console as its form field)."""
    try:
        return parse()
    except BadValueError as exc:
        raise InputError([f"{field}: {exc}"]) from None


@dataclass(frozen=True)
class Reach:
    """The dates a program can mean, and the zone a date without a time is read in."""

    first: dt.date
    last: dt.date
    tz: ZoneInfo

    @classmethod
    def around(cls, opens: dt.date, closes: dt.date, tz: ZoneInfo) -> Reach:
        """The reach of a program whose first wave opens on `opens` and last closes on
        `closes` (`Program.reach`)."""
        return cls(dt.date(opens.year - 1, 1, 1), dt.date(closes.year + 1, 12, 31), tz)

    def problem(self, day: dt.date, written: str) -> str | None:
        """Why `day` (as `written`) is outside the program's reach, or None."""
        if self.first <= day <= self.last:
            return None
        return (
            f"{short(written)} is outside the dates this program can mean "
            f"({self.first} to {self.last})"
        )

    def bound(self, start: dt.date, end: dt.date) -> tuple[dt.date, dt.date]:
        """`start`..`end` cut to the reach: what a chart may draw, whatever is stored."""
        return max(start, self.first), min(end, self.last)


@dataclass(frozen=True)
class Day:
    """A calendar date within the program's reach (a deadline, a day something happened)."""

    date: dt.date
    reach: Reach

    def __post_init__(self) -> None:
        if problem := self.reach.problem(self.date, self.date.isoformat()):
            raise BadValueError(problem)

    @classmethod
    def parse(cls, text: str, reach: Reach) -> Day:
        value = text.strip()
        if CONTROL.search(value):
            raise BadValueError(CONTROL_PROBLEM)
        problem = f"expected a date like {DATE_EXAMPLE}, got {short(value)}"
        if len(value) != 10 or not value.isascii():
            raise BadValueError(problem)
        try:
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise BadValueError(problem) from None
        return cls(day, reach)

    def __str__(self) -> str:
        return self.date.isoformat()


@dataclass(frozen=True)
class Instant:
    """An instant within the program's reach, with the offset it was written with.

    `at` is aware. A time written with an offset (`09:00+14:00`) keeps it: it means that
    instant, not 09:00 in the program's zone.
    """

    at: dt.datetime
    reach: Reach

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise BadValueError(f"{self.at.isoformat()} has no UTC offset")
        # The local date, not the UTC one: 0001-01-01T00:00+14:00 would overflow in UTC.
        if problem := self.reach.problem(self.at.date(), self.at.isoformat()):
            raise BadValueError(problem)

    @classmethod
    def parse(cls, text: str, reach: Reach, *, local_when_bare: bool) -> Instant:
        """An ISO-8601 instant. A date alone is local midnight in the program's zone (what a
        spreadsheet exports). A date and time without an offset is read in the program's zone
        when `local_when_bare` (an operator scheduling a launch), refused otherwise (a
        machine's export must say its offset)."""
        value = text.strip()
        example = LOCAL_EXAMPLE if local_when_bare else INSTANT_EXAMPLE
        if CONTROL.search(value):
            raise BadValueError(CONTROL_PROBLEM)
        if len(value) > MAX_INSTANT:
            raise BadValueError(f"is longer than {MAX_INSTANT} characters; write {example}")
        if not value or not value.isascii():
            raise BadValueError(_instant_problem(value, local_when_bare))
        try:
            if len(value) == 10:
                return cls.at_midnight(Day(dt.date.fromisoformat(value), reach))
            at = dt.datetime.fromisoformat(value)
        except ValueError as exc:
            if isinstance(exc, BadValueError):
                raise
            raise BadValueError(_instant_problem(value, local_when_bare)) from None
        if at.tzinfo is None:
            if not local_when_bare:
                raise BadValueError(f"{value!r} has no UTC offset; write it like {example}")
            at = at.replace(tzinfo=reach.tz)
        return cls(at, reach)

    @classmethod
    def at_midnight(cls, day: Day) -> Instant:
        """The start of `day` in the program's zone: what a date alone means as an instant
        (it stays on that calendar day where the program is)."""
        return cls(dt.datetime.combine(day.date, dt.time(0), day.reach.tz), day.reach)

    @property
    def utc(self) -> dt.datetime:
        return self.at.astimezone(dt.UTC)


def _instant_problem(value: str, local_when_bare: bool) -> str:
    if local_when_bare:
        return (
            f"expected a date and time like {LOCAL_EXAMPLE} (the program's zone; or with an "
            f"offset, {LOCAL_EXAMPLE}+02:00), got {short(value)}"
        )
    return (
        f"expected an ISO-8601 instant with offset ({INSTANT_EXAMPLE}) "
        f"or a date ({DATE_EXAMPLE}), got {short(value)}"
    )
