"""Read and validate the learning system's completions export, refused whole like the roster.

Columns: `id` and/or `email` (who; the id wins when both are filled), `option` (a program
option key), `completed_at` (an ISO-8601 instant with its offset, or a plain date meaning
local midnight in the program's zone), and an optional free-text `note`. Errors read
`FILE:LINE: field: problem`, LINE being the physical line where the record starts.

The value parsers live here too (not in the service) because every way in (this file, the
webhook, xAPI) must read a completion's instant and person the same way.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from pshnotify.domain.text import CONTROL, short, text_problem
from pshnotify.domain.values import MAX_INSTANT, BadValueError, Instant
from pshnotify.ingest.csvfile import CsvRecords, open_text

if TYPE_CHECKING:
    from pshnotify.domain.program import Program

# email_validator (40 ms to import) is imported where an address is checked: an export names
# people by id, mostly, and the commands that only read this module's parsers start faster.
WHO = ("id", "email")
REQUIRED = ("option", "completed_at")
OPTIONAL = ("note",)
COLUMNS = (*WHO, *REQUIRED, *OPTIONAL)
MAX_REF = 320  # the longest email address; ids are shorter
MAX_NOTE = 1000
MAX_OPTION = 32  # completions.option
# Each column's limit, checked before anything else so one huge cell is one short error.
LIMITS = {"id": MAX_REF, "email": MAX_REF, "option": MAX_OPTION, "completed_at": MAX_INSTANT}


class CompletionRow(NamedTuple):
    """One validated line: who (as written), which option, when (aware UTC)."""

    line: int
    person_ref: str
    option: str
    completed_at: dt.datetime
    note: str | None = None


# -- shared value parsers --------------------------------------------------------------------------
def person_ref_key(ref: str) -> str:
    """The normalised form of a person reference: emails compare without regard to case."""
    value = ref.strip()
    return value.lower() if "@" in value else value


def ref_problem(ref: str) -> str | None:
    """Why a person reference cannot be used, or None."""
    if not ref.strip():
        return "is empty; an id or email is required"
    return text_problem(ref, MAX_REF)


def person_problem(ref: str) -> str | None:
    """`ref_problem`, and a reference that is an email (it has an `@`) must be a valid one."""
    return ref_problem(ref) or (address_problem(ref.strip()) if "@" in ref else None)


def address_problem(address: str) -> str | None:
    """Why `address` is not an email address a roster could hold, or None."""
    problem = ref_problem(address)
    if problem:
        return problem
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"invalid address {short(address)}: {exc}"
    return None


def note_problem(note: str | None) -> str | None:
    """Why a completion's free-text note cannot be stored, or None."""
    return None if note is None else text_problem(note, MAX_NOTE)


def option_problem(program: Program, option: str, *, allow_alternative: bool = False) -> str | None:
    """Why `option` is not a key of this program's options, or None."""
    keys = [o.key for o in program.options]
    if option in keys or (allow_alternative and option == "alternative"):
        return None
    expected = ", ".join(keys) + (", alternative" if allow_alternative else "")
    return f"unknown option {short(option)} (expected one of {expected})"


# -- the file --------------------------------------------------------------------------------------
def read_completions(path: Path, program: Program) -> list[CompletionRow]:
    """Parse the whole file; raise InputError listing every problem if any row is bad."""
    with open_text(path) as stream:
        return _CompletionsReader(str(path), program).read(stream)


class _CompletionsReader:
    def __init__(self, name: str, program: Program) -> None:
        self.name = name
        self.program = program
        self.options = frozenset(o.key for o in program.options)
        self.reach = program.reach
        self.errors: list[str] = []

    def error(self, line: int, fld: str, problem: str) -> None:
        self.errors.append(f"{self.name}:{line}: {fld}: {problem}")

    def read(self, source: str | IO[str]) -> list[CompletionRow]:
        records = CsvRecords(self.name, source)
        self.errors = records.errors
        self._check_header(records.header)
        records.raise_if_errors("fix the header and import again")
        self._columns(records.header)
        rows = [
            row for line, cells in records.rows() if (row := self._row(line, cells)) is not None
        ]
        records.raise_if_errors()
        return rows

    def _check_header(self, header: list[str]) -> None:
        if not header:
            return
        for col in header:
            if col not in COLUMNS:
                self.error(1, col or "(empty)", f"unknown column (expected {', '.join(COLUMNS)})")
        if not any(col in header for col in WHO):
            self.error(1, "id", "the file needs an id or an email column (or both)")
        for col in REQUIRED:
            if col not in header:
                self.error(1, col, "required column is missing")

    def _columns(self, header: list[str]) -> None:
        """Where each column is in a record (the header was checked: known columns, once each)."""
        self.header = header
        self.limits = [LIMITS.get(col, MAX_NOTE) for col in header]
        self.shortest = min(self.limits)
        self.id_at, self.email_at, self.note_at = (
            header.index(c) if c in header else None for c in ("id", "email", "note")
        )
        self.option_at, self.instant_at = header.index("option"), header.index("completed_at")
        self.who = "/".join(c for c in WHO if c in header)

    def _row(self, line: int, cells: list[str]) -> CompletionRow | None:
        before = len(self.errors)
        clean = [value.strip() for value in cells]
        # Each cell's `text_problem`, looked for in the whole record at once first: a record of
        # the nightly export is read a hundred thousand times, a bad one once in a while.
        if CONTROL.search(" ".join(clean)) or max(map(len, clean)) > self.shortest:
            for col, value, limit in zip(self.header, clean, self.limits, strict=True):
                if problem := text_problem(value, limit):
                    self.error(line, col, problem)
            if len(self.errors) > before:
                return None
        ref = self._person(line, clean)
        option = clean[self.option_at]
        if option in self.options:
            pass
        elif not option:
            self.error(line, "option", "is empty; a value is required")
        elif problem := option_problem(self.program, option):
            self.error(line, "option", problem)
        completed = self._instant(line, clean[self.instant_at])
        if len(self.errors) > before or ref is None or completed is None:
            return None
        note = None if self.note_at is None else clean[self.note_at] or None
        return CompletionRow(line, ref, option, completed, note)

    def _person(self, line: int, clean: list[str]) -> str | None:
        """The id when filled, else the email (checked as an address)."""
        ident = "" if self.id_at is None else clean[self.id_at]
        if ident:  # the cell passed `text_problem` at MAX_REF: it is `ref_problem`'s, filled
            return ident
        address = "" if self.email_at is None else clean[self.email_at]
        if not address:
            self.error(line, self.who, "is empty; fill id or email")
            return None
        from email_validator import EmailNotValidError, validate_email

        try:
            return validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            self.error(line, "email", f"invalid address {short(address)}: {exc}")
            return None

    def _instant(self, line: int, value: str) -> dt.datetime | None:
        if not value:
            self.error(line, "completed_at", "is empty; a value is required")
            return None
        # The nightly export's instants, fast: a date and time with its offset, within the
        # program's reach, is what `Instant.parse` accepts too (the record has no control
        # character, `_row` looked). Anything else is parsed by it, for its words.
        if 10 < len(value) <= MAX_INSTANT and value.isascii():
            try:
                at = dt.datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                if at.utcoffset() is not None and self.reach.problem(at.date(), value) is None:
                    return at.astimezone(dt.UTC)
        try:
            return Instant.parse(value, self.reach, local_when_bare=False).utc
        except BadValueError as exc:
            self.error(line, "completed_at", str(exc))
            return None
