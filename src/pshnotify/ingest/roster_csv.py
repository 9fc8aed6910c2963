"""Read and validate a roster CSV. Every problem is collected; nothing is partially accepted.

Errors read `FILE:LINE: field: problem`, LINE being the physical line where the record starts
(a quoted field may span lines, and spreadsheet users count lines, not records).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from email_validator import EmailNotValidError, validate_email

from pshnotify.domain.program import Program
from pshnotify.domain.text import short, text_problem
from pshnotify.ingest.csvfile import CsvRecords, ProgressFn, open_text

REQUIRED = ("id", "email", "name", "department", "role")
OPTIONAL = (
    "paid",
    "start_date",
    "program_year",
    "affiliation",
    "admin_officer",
    "wave",
    "timezone",
    "admin_officer_name",  # the officer's name, for their report's greeting
    "manager_email",  # where escalations go ([escalation] to = "manager")
)
# Each column's longest value: the database's where it has one (id), else what a person's
# name or an office plausibly needs; a 100 KB name would pass here and fail at the relay.
LIMITS = {
    "id": 128,
    "email": 320,
    "admin_officer": 320,
    "name": 2000,  # long names are folded in headers (a 1,214-character one is tested)
    "department": 200,
    "role": 64,
    "affiliation": 200,
    "wave": 64,
    "timezone": 64,
}
MAX_TEXT = 500  # the typed columns (checked as their type) and those under extra_columns
INTEGER_RANGE = (-(2**31), 2**31 - 1)  # the database's INTEGER
YEAR_RANGE = (0, 99)
_INTEGER = re.compile(r"[+-]?[0-9]+")
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@dataclass(slots=True)
class RosterRow:
    line: int
    external_id: str
    email: str
    name: str
    department: str
    role: str
    paid: bool = True
    start_date: dt.date | None = None
    program_year: int | None = None
    affiliation: str | None = None
    admin_officer: str | None = None
    wave: str | None = None
    timezone: str | None = None  # IANA name; None: the program's zone
    admin_officer_name: str | None = None
    manager_email: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def email_key(self) -> str:
        return self.email.lower()

    def record(self) -> dict[str, object]:
        """The fields rules match against, under the names the program file uses."""
        return {
            "id": self.external_id,
            "email": self.email,
            "name": self.name,
            "department": self.department,
            "role": self.role,
            "paid": self.paid,
            "start_date": self.start_date,
            "program_year": self.program_year,
            "affiliation": self.affiliation,
            "admin_officer": self.admin_officer,
            "wave": self.wave,
            **self.extra,
        }


def read_roster(
    path: Path, program: Program, progress: ProgressFn | None = None
) -> list[RosterRow]:
    """Parse the whole file; raise InputError listing every problem if any row is bad."""
    return [row for part in roster_chunks(path, program, progress) for row in part]


def roster_chunks(
    path: Path,
    program: Program,
    progress: ProgressFn | None = None,
    size: int = 5000,
    seen_ids: dict[str, int] | None = None,
) -> Iterator[list[RosterRow]]:
    """The file's good rows, `size` at a time, as they are read: a 500,000-row roster is never
    held whole. Once the file is read, InputError lists every problem if any row was bad
    (a duplicate id or email is only known then): a caller acts on the rows after that.
    `seen_ids` is filled with each id in the file and the line it is first on."""
    with open_text(path) as stream:
        reader = _RosterReader(str(path), program)
        yield from reader.chunks(stream, progress, size, seen_ids)


class _RosterReader:
    def __init__(self, name: str, program: Program) -> None:
        self.name = name
        self.program = program
        self.extra_types = program.roster.extra_columns
        self.wave_keys = {w.key for w in program.waves}
        self.errors: list[str] = []
        self._officers: dict[str, str | None] = {}
        self._domains: dict[str, str | None] = {}

    def error(self, line: int, fld: str, problem: str) -> None:
        self.errors.append(f"{self.name}:{line}: {fld}: {problem}")

    def read(self, source: str | IO[str], progress: ProgressFn | None) -> list[RosterRow]:
        return [row for part in self.chunks(source, progress, 5000) for row in part]

    def chunks(
        self,
        source: str | IO[str],
        progress: ProgressFn | None,
        size: int,
        seen_ids: dict[str, int] | None = None,
    ) -> Iterator[list[RosterRow]]:
        records = CsvRecords(self.name, source)
        self.errors = records.errors  # one list: the reader's problems and ours, in file order
        self._check_header(records.header)
        records.raise_if_errors("fix the header and import again; nothing was changed")
        rows: list[RosterRow] = []
        seen_ids = {} if seen_ids is None else seen_ids
        seen_emails: dict[str, int] = {}
        for line, cells in records.records(progress):
            row = self._row(line, cells)
            if row is None:
                continue
            self._unique(seen_ids, row.external_id, line, "id")
            self._unique(seen_emails, row.email_key, line, "email")
            rows.append(row)
            if len(rows) >= size:
                yield rows
                rows = []
        if rows:
            yield rows
        records.raise_if_errors()

    def _check_header(self, header: list[str]) -> None:
        if not header:
            return
        known = set(REQUIRED) | set(OPTIONAL) | set(self.extra_types)
        for col in header:
            if col not in known:
                self.error(
                    1,
                    col or "(empty)",
                    "unknown column (declare it under [roster] "
                    "extra_columns in the program file, or remove it)",
                )
        for col in REQUIRED:
            if col not in header:
                self.error(1, col, "required column is missing")

    def _unique(self, seen: dict[str, int], key: str, line: int, fld: str) -> None:
        if key in seen:
            self.error(line, fld, f"duplicate {fld} (first on line {seen[key]})")
        else:
            seen[key] = line

    def _row(self, line: int, cells: dict[str, str]) -> RosterRow | None:
        before = len(self.errors)
        clean: dict[str, str] = {}
        refused: set[str] = set()
        for col, value in cells.items():
            value = value.strip()
            if problem := text_problem(value, LIMITS.get(col, MAX_TEXT)):
                self.error(line, col, problem)
                refused.add(col)
                value = ""  # one problem a cell: not also an invalid address or a bad number
            clean[col] = value
        for col in REQUIRED:
            if col not in refused and not clean.get(col):
                self.error(line, col, "is empty; a value is required")
        email = self._email(line, "email", clean.get("email", ""))
        officer = self._officer(line, clean.get("admin_officer", ""))
        paid = self._bool(line, "paid", clean.get("paid", ""), default=True)
        start = self._date(line, "start_date", clean.get("start_date", ""))
        year = self._int(line, "program_year", clean.get("program_year", ""), YEAR_RANGE)
        wave = clean.get("wave") or None
        if wave and wave not in self.wave_keys:
            self.error(
                line,
                "wave",
                f"unknown wave {wave!r} (expected one of {', '.join(sorted(self.wave_keys))})",
            )
        timezone = self._zone(line, clean.get("timezone", ""))
        manager = self._officer(line, clean.get("manager_email", ""), "manager_email")
        extra = {c: self._typed(line, c, clean.get(c, ""), t) for c, t in self.extra_types.items()}
        if len(self.errors) > before:
            return None
        return RosterRow(
            line=line,
            external_id=clean["id"],
            email=email or "",
            name=clean["name"],
            department=clean["department"],
            role=clean["role"],
            paid=bool(paid),
            start_date=start,
            program_year=year,
            affiliation=clean.get("affiliation") or None,
            admin_officer=officer,
            wave=wave,
            timezone=timezone,
            admin_officer_name=clean.get("admin_officer_name") or None,
            manager_email=manager,
            extra=extra,
        )

    def _plain_address(self, value: str) -> str | None:
        """The common case, fast: a dot-atom local part at a domain already validated once.

        email-validator costs ~27 us an address, mostly checking the domain, and a roster has a
        handful of domains; anything unusual still goes through the full validation.
        """
        local, at, domain = value.rpartition("@")
        if not at or len(local) > 64 or not _DOT_ATOM.fullmatch(local) or not domain.isascii():
            return None
        if domain not in self._domains:
            try:
                checked = validate_email(f"a@{domain}", check_deliverability=False).domain
            except EmailNotValidError:
                checked = None
            self._domains[domain] = checked
        checked = self._domains[domain]
        return f"{local}@{checked}" if checked else None

    def _officer(self, line: int, value: str, fld: str = "admin_officer") -> str | None:
        # A few officers (and managers) serve many people: validate each address once.
        if value not in self._officers:
            before = len(self.errors)
            self._officers[value] = self._email(line, fld, value)
            if len(self.errors) > before:
                del self._officers[value]  # report it on every line that has it
        return self._officers.get(value)

    def _email(self, line: int, fld: str, value: str) -> str | None:
        if not value:
            return None
        fast = self._plain_address(value)
        if fast is not None:
            return fast
        try:
            # Deliverability (DNS) is the relay's business; syntax is ours.
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            self.error(line, fld, f"invalid address {value!r}: {exc}")
            return None

    def _zone(self, line: int, value: str) -> str | None:
        if not value:
            return None
        if value in _zone_names():
            return value
        near = _zone_names_folded().get(value.casefold())
        hint = f"did you mean {near!r}?" if near else "expected an IANA name like 'Europe/Berlin'"
        self.error(line, "timezone", f"unknown time zone {value!r} ({hint})")
        return None

    def _bool(self, line: int, fld: str, value: str, default: bool) -> bool | None:
        low = value.lower()
        if not low:
            return default
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        self.error(line, fld, f"expected true/false/yes/no/1/0, got {value!r}")
        return None

    def _date(self, line: int, fld: str, value: str) -> dt.date | None:
        if not value:
            return None
        try:
            return dt.date.fromisoformat(value) if len(value) == 10 else _bad_date()
        except ValueError:
            self.error(line, fld, f"expected a date as YYYY-MM-DD, got {value!r}")
            return None

    def _int(
        self, line: int, fld: str, value: str, bounds: tuple[int, int] = INTEGER_RANGE
    ) -> int | None:
        """ASCII digits with an optional sign, within `bounds`: Python's int() would also read
        `١٢` as 12 and `1_0` as 10, and a number past the column's range fails at the
        database, after the check said the file was good."""
        if not value:
            return None
        if not _INTEGER.fullmatch(value):
            self.error(line, fld, f"expected a whole number, got {short(value)}")
            return None
        number = int(value[:16])  # more digits than that are out of any range anyway
        low, high = bounds
        if len(value) > 16 or not low <= number <= high:
            self.error(line, fld, f"expected a number from {low} to {high}, got {short(value)}")
            return None
        return number

    def _typed(self, line: int, fld: str, value: str, kind: str) -> object:
        if kind == "date":
            return self._date(line, fld, value)
        if kind == "integer":
            return self._int(line, fld, value)
        if kind == "boolean":
            return self._bool(line, fld, value, default=False) if value else None
        return value or None


@functools.cache
def _zone_names() -> frozenset[str]:
    """The IANA names this machine's zone database lists (read once, about 20 ms). Anything
    else is refused, so a path or a made-up name never reaches `ZoneInfo`; Debian's list also
    holds the host's own "localtime", which names no place."""
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules", "Factory"}


@functools.cache
def _zone_names_folded() -> dict[str, str]:
    return {name.casefold(): name for name in _zone_names()}


def _bad_date() -> dt.date:
    raise ValueError
