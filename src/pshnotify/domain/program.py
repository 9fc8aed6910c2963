"""The program: training options, waves and their windows, rules, cadence, sending hours.

Loaded from TOML and validated here; the database keeps the TOML text itself (not a JSON
dump) so that a stored program is re-read with exactly the types the operator wrote.
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from collections.abc import Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pshnotify.domain.errors import InputError
from pshnotify.domain.rules import EXTRA_TYPES, FIELD_TYPES, Rule, check_types, first_match
from pshnotify.domain.values import Reach

KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DOMAIN = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
Status = Literal["required", "encouraged", "exempt"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain line breaks or control characters")
    return value


class Sender(_Model):
    name: str
    address: EmailStr
    reply_to: EmailStr | None = None

    _clean = field_validator("name")(_no_control)


class Contact(_Model):
    role: str
    label: str
    email: EmailStr


class ProgramInfo(_Model):
    key: str = Field(pattern=KEY_PATTERN)
    name: str
    cycle: str
    timezone: str
    sender: Sender
    contacts: tuple[Contact, ...] = ()
    courses_url: str = ""
    info_url: str = ""

    _clean = field_validator("name", "cycle")(_no_control)

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (expected an IANA name such as 'America/New_York')"
            ) from None
        return value


class TrainingOption(_Model):
    key: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    title: str
    duration_minutes: int = Field(default=60, gt=0)
    url: str = ""
    activity_ids: tuple[str, ...] = ()


class Wave(_Model):
    key: str = Field(pattern=KEY_PATTERN)
    title: str
    opens: dt.date
    closes: dt.date

    _clean = field_validator("title")(_no_control)

    @model_validator(mode="after")
    def _ordered(self) -> Wave:
        if self.closes < self.opens:
            raise ValueError(f"closes ({self.closes}) is before opens ({self.opens})")
        return self


class MembershipRule(Rule):
    wave: str


class EligibilityRule(Rule):
    status: Status
    reason: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    note: str = ""


class Cadence(_Model):
    after_launch_days: tuple[int, ...] = (7, 14)
    before_deadline_days: tuple[int, ...] = (3, 1)
    quiet_days_after_launch: int = Field(default=3, ge=0)
    max_per_day: int = Field(default=1, ge=1)
    overdue_after_days: tuple[int, ...] = ()
    invite_encouraged: bool = False


class Hours(_Model):
    start: dt.time = dt.time(9)
    end: dt.time = dt.time(17)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


# A closure longer than this is a typo (a year written wrong), not an institute holiday.
_LONGEST_CLOSURE = dt.timedelta(days=366)


class Closure(_Model):
    """Days the institute is closed, inclusive: one date, or `{ from = DATE, to = DATE }`."""

    first: dt.date = Field(alias="from")
    last: dt.date = Field(alias="to")

    @model_validator(mode="before")
    @classmethod
    def _one_date(cls, value: object) -> object:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return {"from": value, "to": value}
        if isinstance(value, Mapping):
            return value
        raise ValueError(
            "expected a date (2023-11-23, unquoted) or an inclusive range "
            f"{{ from = 2023-12-25, to = 2024-01-01 }}; got {value!r}"
        )

    @model_validator(mode="after")
    def _ordered(self) -> Closure:
        if self.last < self.first:
            raise ValueError(f"'to' ({self.last}) is before 'from' ({self.first})")
        if self.last - self.first > _LONGEST_CLOSURE:
            raise ValueError(f"{self.first} to {self.last} is longer than a year; check the years")
        return self


class Sending(_Model):
    working_hours: Hours = Hours()
    working_days: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")
    report_time: dt.time = dt.time(6)
    # Institute closures: no launch, reminder, invitation, overdue or escalation email goes
    # out on them (in the recipient's own zone); a step due on one moves to the next working
    # day. Confirmations go out at once; the officers' report runs unless told otherwise.
    closed_dates: tuple[Closure, ...] = ()
    reports_on_closed_dates: bool = True

    @cached_property
    def closed(self) -> frozenset[dt.date]:
        days: set[dt.date] = set()
        for c in self.closed_dates:
            days.update(c.first + dt.timedelta(days=n) for n in range((c.last - c.first).days + 1))
        return frozenset(days)

    def is_closed(self, day: dt.date) -> bool:
        return day in self.closed

    def reports_on(self, night: dt.date) -> bool:
        """Does the officers' nightly report run on this local date?"""
        return self.reports_on_closed_dates or night not in self.closed

    def is_working_day(self, day: dt.date) -> bool:
        """A working weekday and not a closure."""
        return _WEEKDAYS[day.weekday()] in self.working_days and day not in self.closed


_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class Escalation(_Model):
    """Who hears about someone who is behind: a daily digest to their manager or officer.

    A required person who has not completed is behind once any set threshold is reached:
    `after_reminders` reminders sent, `days_before_deadline` days before their deadline, or
    `days_after_deadline` days after it. Off unless `enabled`.
    """

    enabled: bool = False
    after_reminders: int | None = Field(default=None, ge=1)
    days_before_deadline: int | None = Field(default=None, ge=0)
    days_after_deadline: int | None = Field(default=None, ge=0)
    # manager: the roster's manager_email, else the administrative officer; officer: always.
    to: Literal["manager", "officer"] = "manager"
    # Digests about a person stop this many days after their deadline.
    stop_days_after_deadline: int = Field(default=14, ge=0)
    # The domains a manager's address may be at (each with its subdomains); unset, the
    # domain of the program's sender address. A digest names colleagues: a roster's
    # manager_email elsewhere is warned about at import and never mailed (the officer is).
    manager_domains: tuple[str, ...] = ()

    @field_validator("manager_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for d in value:
            if not _DOMAIN.fullmatch(d):
                raise ValueError(f"{d!r} is not a domain such as example.edu")
        return tuple(d.lower().rstrip(".") for d in value)

    @model_validator(mode="after")
    def _some_threshold(self) -> Escalation:
        thresholds = (self.after_reminders, self.days_before_deadline, self.days_after_deadline)
        if self.enabled and all(t is None for t in thresholds):
            raise ValueError(
                "enabled, but no threshold: set after_reminders, days_before_deadline "
                "or days_after_deadline"
            )
        if self.days_before_deadline is not None and self.days_after_deadline is not None:
            raise ValueError("set days_before_deadline or days_after_deadline, not both")
        return self


RequestKind = Literal["more_time", "completed", "not_required", "alternative", "technical"]
REQUEST_KINDS: tuple[RequestKind, ...] = (
    "more_time",
    "completed",
    "not_required",
    "alternative",
    "technical",
)


class Requests(_Model):
    """What participants may ask from their email's personal link (`/r/TOKEN`), and the rules
    that decide it. Off (no kind enabled) unless the program file says so."""

    enabled: tuple[RequestKind, ...] = ()
    # "More time" asks for a date at most this many days after the person's deadline.
    max_extension_days: int = Field(default=30, ge=1, le=366)
    # More time up to this many days is granted at once, without an operator (0: never).
    auto_approve_extension_days: int = Field(default=0, ge=0, le=366)
    # While a request waits, no reminder goes to its person, for at most this many days.
    pause_reminders_days: int = Field(default=7, ge=0, le=366)
    # A link works until this many days after the person's deadline.
    link_valid_days: int = Field(default=60, ge=1, le=3660)
    # The reasons offered under "I am not required" (the program's FAQ).
    not_required_reasons: tuple[str, ...] = ()

    @field_validator("not_required_reasons")
    @classmethod
    def _reasons(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for reason in value:
            _no_control(reason)
            if not reason.strip() or len(reason) > 200:
                raise ValueError("each reason is 1 to 200 characters of text")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Requests:
        if len(set(self.enabled)) != len(self.enabled):
            raise ValueError("enabled: a kind appears twice")
        if self.auto_approve_extension_days > self.max_extension_days:
            raise ValueError(
                f"auto_approve_extension_days ({self.auto_approve_extension_days}) is more "
                f"than max_extension_days ({self.max_extension_days})"
            )
        if "not_required" in self.enabled and not self.not_required_reasons:
            raise ValueError(
                "not_required is enabled but not_required_reasons is empty: list the reasons "
                "people may give"
            )
        return self


class RosterSpec(_Model):
    """Columns the roster may carry beyond the built-in ones, with their types."""

    extra_columns: dict[str, Literal["text", "date", "integer", "boolean"]] = {}


class Program(_Model):
    program: ProgramInfo
    options: tuple[TrainingOption, ...] = Field(min_length=1)
    waves: tuple[Wave, ...] = Field(min_length=1)
    membership: tuple[MembershipRule, ...] = ()
    eligibility: tuple[EligibilityRule, ...] = Field(min_length=1)
    cadence: Cadence = Cadence()
    sending: Sending = Sending()
    roster: RosterSpec = RosterSpec()
    escalation: Escalation = Escalation()
    requests: Requests = Requests()

    @model_validator(mode="after")
    def _consistent(self) -> Program:
        _unique("options", [o.key for o in self.options])
        _unique("waves", [w.key for w in self.waves])
        _unique_activities(self.options)
        keys = {w.key for w in self.waves}
        for i, m in enumerate(self.membership):
            if m.wave not in keys:
                raise ValueError(
                    f'{_item("membership", i)}, wave = "{m.wave}": unknown wave; '
                    f"expected one of {', '.join(sorted(keys))}"
                )
        fields = self.field_types
        for section, rules in (("membership", self.membership), ("eligibility", self.eligibility)):
            for i, rule in enumerate(rules):
                for name, cond in rule.conditions():
                    if name not in fields:
                        raise ValueError(
                            f"{_item(section, i)}: unknown roster field {name!r}; "
                            f"expected one of {', '.join(sorted(fields))}"
                        )
                    problem = check_types(cond, fields[name])
                    if problem:
                        raise ValueError(f"{_item(section, i)}, {name}: {problem}")
        return self

    # -- lookups -------------------------------------------------------------------------------
    def reason_note(self, reason: str) -> str | None:
        """The note of the first eligibility rule with this reason code, if it has one."""
        return next((r.note for r in self.eligibility if r.reason == reason and r.note), None)

    @property
    def key(self) -> str:
        return self.program.key

    @cached_property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.program.timezone)

    @cached_property
    def reach(self) -> Reach:
        """The dates this program can mean (`domain.values`): every typed date is checked
        against it."""
        opens = min(w.opens for w in self.waves)
        return Reach.around(opens, max(w.closes for w in self.waves), self.tz)

    @cached_property
    def field_types(self) -> dict[str, type]:
        extra = {k: EXTRA_TYPES[v] for k, v in self.roster.extra_columns.items()}
        return {**FIELD_TYPES, **extra}

    @cached_property
    def manager_domains(self) -> tuple[str, ...]:
        sender = str(self.program.sender.address).rpartition("@")[2].lower()
        return self.escalation.manager_domains or (sender,)

    def manager_allowed(self, address: str) -> bool:
        """May an escalation digest go to this manager's address? (`manager_domains`)"""
        domain = address.rpartition("@")[2].lower().rstrip(".")
        return any(domain == d or domain.endswith("." + d) for d in self.manager_domains)

    def wave(self, key: str) -> Wave:
        for w in self.waves:
            if w.key == key:
                return w
        raise KeyError(key)

    def option(self, key: str) -> TrainingOption:
        for o in self.options:
            if o.key == key:
                return o
        raise KeyError(key)

    def contact(self, role: str) -> Contact | None:
        return next((c for c in self.program.contacts if c.role == role), None)

    # -- decisions -----------------------------------------------------------------------------
    def assign_wave(self, record: Mapping[str, object]) -> str | None:
        """The person's wave: the roster's `wave` column if set, else the first matching rule."""
        explicit = record.get("wave")
        if isinstance(explicit, str) and explicit:
            return explicit
        rule = first_match(self.membership, record)
        return rule.wave if rule else None

    def assess(self, record: Mapping[str, object]) -> EligibilityRule | None:
        return first_match(self.eligibility, record)

    def closes_at(self, day: dt.date) -> dt.datetime:
        """A window's inclusive last day ends at midnight after it, in the program's zone."""
        return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), self.tz)

    def opens_at(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(0), self.tz)


def _unique(section: str, keys: list[str]) -> None:
    seen: set[str] = set()
    for k in keys:
        if k in seen:
            raise ValueError(f"{section}: key {k!r} appears twice")
        seen.add(k)


def _unique_activities(options: tuple[TrainingOption, ...]) -> None:
    """An xAPI statement names its activity: one IRI must mean one option, or a completion
    would be credited to whichever option happened to come last."""
    seen: dict[str, str] = {}
    for i, option in enumerate(options):
        for iri in option.activity_ids:
            if iri in seen:
                raise ValueError(
                    f"options[{i}].activity_ids: {iri!r} is already an activity of option "
                    f"{seen[iri]!r}; each activity IRI may belong to one option"
                )
            seen[iri] = option.key


# A program file is a few kilobytes; its tables nest three levels deep. Beyond these it is
# not a program file (and a deeply nested one would exhaust the parser's recursion).
MAX_PROGRAM_BYTES = 1024 * 1024
MAX_NESTING = 32


@lru_cache(maxsize=32)
def parse_program(text: str, source: str) -> Program:
    """Parse and validate program TOML; `source` names the file in every error.

    Cached: a Program is immutable, and the daemon and the tests re-read the same text often.
    """
    if len(text) > MAX_PROGRAM_BYTES:
        raise InputError(
            [f"{source}: larger than {MAX_PROGRAM_BYTES // 1024} KB; not a program file"]
        )
    if _nesting(text) > MAX_NESTING:
        raise InputError([f"{source}: nested more than {MAX_NESTING} levels deep"])
    try:
        data: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError([f"{source}: not valid TOML: {exc}"]) from None
    except RecursionError:
        raise InputError([f"{source}: nested too deeply"]) from None
    try:
        return Program.model_validate(data)
    except ValidationError as exc:
        raise InputError(_problems(source, exc)) from None


_UNION_MEMBERS = {"str": "text", "int": "an integer", "bool": "true/false", "date": "a date"}


def _problems(source: str, exc: ValidationError) -> list[str]:
    """One line per key; a value that fits no member of a type union becomes one line."""
    lines: dict[str, str] = {}
    expected: dict[str, list[str]] = {}
    for e in exc.errors():
        loc = tuple(e["loc"])
        if loc and loc[-1] in _UNION_MEMBERS:
            where = _where(loc[:-1])
            expected.setdefault(where, []).append(_UNION_MEMBERS[str(loc[-1])])
            lines[where] = f"expected {' or '.join(expected[where])}; got {e.get('input')!r}"
        else:
            lines.setdefault(_where(loc), _what(e))
    # A check of the whole file names its item itself ([[membership]] #2, wave = "pilto").
    return [
        f"{source}: {what}" if where == "(top level)" else f"{source}: {where}: {what}"
        for where, what in lines.items()
    ]


def _nesting(text: str) -> int:
    """An upper bound of the depth of brackets and braces (strings not excluded: a bound is
    all it must be, and a real program file stays far below the limit either way)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return deepest


def load_program(path: Path) -> tuple[Program, str]:
    """Read a program file; returns the model and the text it came from."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PROGRAM_BYTES + 1)
    except OSError as exc:
        raise InputError([f"{path}: cannot read the program file: {exc.strerror}"]) from None
    if len(raw) > MAX_PROGRAM_BYTES:
        raise InputError(
            [f"{path}: larger than {MAX_PROGRAM_BYTES // 1024} KB; not a program file"]
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError([f"{path}: not UTF-8 text; save the program file as UTF-8"]) from None
    return parse_program(text, str(path)), text


_TABLE_ARRAYS = frozenset({"options", "waves", "membership", "eligibility", "program.contacts"})


def _item(table: str, index: int) -> str:
    """An item of an array of tables as the file shows it: `[[membership]] #2` (counted from 1,
    in the order of the file)."""
    return f"[[{table}]] #{index + 1}"


def _where(loc: tuple[Any, ...]) -> str:
    """`[[eligibility]] #2, when.program_year.ge` for ('eligibility', 1, 'when', ...)."""
    out = ""
    for part in loc:
        if isinstance(part, int):  # an item: [[waves]] #2, or closed_dates #2 in a list
            name = _item(out, part) if out in _TABLE_ARRAYS else f"{out} #{part + 1}"
            out = f"{name}, " if out else f"#{part + 1}"
        elif part in ("function-after", "function-before") or str(part).startswith("function-"):
            continue
        else:
            name = "in" if part == "in_" else "any" if part == "any_of" else str(part)
            out += f".{name}" if out and not out.endswith(" ") else name
    return out.removesuffix(", ") or "(top level)"


def _what(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "missing":
        return "missing (required key)"
    if err["type"] == "extra_forbidden":
        return "unknown key (check its spelling against README.md)"
    given = err.get("input")
    if isinstance(given, str | int | float | bool | dt.date) and err["type"] != "value_error":
        return f"{msg}; got {given!r}"
    return msg
