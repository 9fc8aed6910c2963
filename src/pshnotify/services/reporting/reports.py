"""Completion reports for administrative officers: nightly by email, and on demand.

An officer's report covers the enrolled, not removed people whose roster `admin_officer` is
that address. The nightly message is queued with an idempotency key made of the officer and
the night's local date, so however many replicas queue it, the UNIQUE key lets one through.
Its rows are read when it is sent, so the officer sees the status of that morning.
"""

from __future__ import annotations

import datetime as dt
import difflib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, Row, and_, func, select

from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind, State, idempotency_key
from pshnotify.domain.errors import NotFoundError
from pshnotify.domain.program import Program
from pshnotify.domain.vocabulary import PersonWord, person_word
from pshnotify.mail.report_kind import OFFICER_NAME, SUMMARY_KEYS, report_csv
from pshnotify.services.reporting.officer_report import action_sections, of_officer
from pshnotify.store import outbox, standing
from pshnotify.store import programs as program_repo
from pshnotify.store.outbox import Claimed
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, messages, people, waves
from pshnotify.store.sql import chunks

# A row's status is a PersonWord key (domain/vocabulary.py): the CSV and JSON say these.
COMPLETE, EMAILED, NOT_LAUNCHED = PersonWord.COMPLETE, PersonWord.EMAILED, PersonWord.NOT_LAUNCHED
EXEMPT, NOT_REQUIRED = PersonWord.EXEMPT, PersonWord.NOT_REQUIRED
_CHUNK = 500  # person ids per IN list, well under every backend's parameter limit


@dataclass(frozen=True)
class ReportRow:
    """One person: only what an officer needs to follow up, no other personal data."""

    id: str
    name: str
    email: str
    department: str
    wave: str
    status: str
    option: str | None = None
    option_title: str | None = None
    completed_on: dt.date | None = None
    deadline: dt.date | None = None
    deadline_passed: bool | None = None
    launch_email_sent: bool | None = None
    exemption_reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: the shape stored in the message context and written to the CSV."""
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "department": self.department,
            "wave": self.wave,
            "status": self.status,
            "option": self.option,
            "option_title": self.option_title,
            "completed_on": _iso(self.completed_on),
            "deadline": _iso(self.deadline),
            "deadline_passed": self.deadline_passed,
            "launch_email_sent": self.launch_email_sent,
            "exemption_reason": self.exemption_reason,
        }


@dataclass(frozen=True)
class Report:
    title: str
    generated_at: dt.datetime
    rows: list[ReportRow]
    summary: dict[str, int] = field(default_factory=dict)

    def row_dicts(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in self.rows]

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "generated_at": self.generated_at.isoformat(),
            "summary": dict(self.summary),
            "rows": self.row_dicts(),
        }

    def csv(self) -> bytes:
        """The same bytes as the nightly email's attachment."""
        return report_csv(self.row_dicts())


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


# -- reading ------------------------------------------------------------------------------------
def _select_people(program_id: int, department: str | None, officer: str | None) -> Any:
    q = (
        select(
            people.c.id,
            people.c.external_id,
            people.c.name,
            people.c.email,
            people.c.department,
            people.c.admin_officer_name,
            *standing.COLUMNS,
            enrollments.c.reason,
            enrollments.c.completion_option,
            enrollments.c.launch_sent_at,
        )
        .select_from(standing.joined())
        .where(enrollments.c.program_id == program_id, standing.present())
    )
    if department is not None:
        q = q.where(func.lower(people.c.department) == department.strip().lower())
    if officer is not None:
        q = q.where(of_officer(officer))
    return q


def _launch_sent_by_message(conn: Connection, program_id: int, person_ids: set[int]) -> set[int]:
    """People with a sent launch message but no `launch_sent_at` (sent before it was kept).

    Looked up by person id only, so every backend uses the person index: matching on the
    program, kind and state in SQL lets SQLite scan every launch message once per person.
    """
    found: set[int] = set()
    for part in chunks(sorted(person_ids), _CHUNK):
        q = select(
            messages.c.person_id, messages.c.program_id, messages.c.kind, messages.c.state
        ).where(messages.c.person_id.in_(part))
        found.update(
            pid
            for pid, prog, kind, state in conn.execute(q)
            if (prog, kind, state) == (program_id, Kind.LAUNCH.value, State.SENT.value)
        )
    return found


def _owes(r: Row[Any]) -> bool:
    return policy.owes_training(standing.to_standing(r))


def _row(
    program: Program,
    r: Row[Any],
    last_passed: dt.date,
    launch_sent: bool,
    launched: bool,
    titles: dict[str, str] | None = None,
) -> ReportRow:
    """Complete first (whatever the rules say), then exempt, then what is still owed.
    `last_passed`: `store.standing.last_day_passed` now (a deadline on or before it passed).
    `launched`: the person's wave has been launched.
    `titles`: option titles already looked up, by key (a report's rows share a few)."""
    person = standing.to_standing(r)
    word = person_word(person, launched)  # the one order of the words (domain/vocabulary)
    who = (r.external_id, r.name, r.email, r.department, r.wave_key)
    if word is COMPLETE:
        key = r.completion_option or ""
        if titles is None:
            titles = {}
        title = titles.get(key)
        if title is None:
            title = titles[key] = _option_title(program, key)
        return ReportRow(
            *who,
            COMPLETE,
            option=key,
            option_title=title,
            completed_on=r.completed_at.astimezone(program.tz).date(),
        )
    if word in (EXEMPT, NOT_REQUIRED):
        # The program file's note for the rule's reason ("Unpaid appointees ..."), not its code.
        why = r.exempted_reason or program.reason_note(r.reason) or r.reason
        return ReportRow(
            *who,
            word,
            exemption_reason=why,
        )
    deadline = policy.deadline(program, person)
    return ReportRow(
        *who,
        word,
        deadline=deadline,
        deadline_passed=deadline is not None and deadline <= last_passed,
        launch_email_sent=launch_sent,
    )


def _option_title(program: Program, key: str) -> str:
    try:
        return program.option(key).title
    except KeyError:
        return key  # an approved alternative recorded by an operator


def _closes(program: Program, wave_key: str) -> dt.date | None:
    try:
        return program.wave(wave_key).closes
    except KeyError:
        return None  # a wave no longer in the program file


def _opens(program: Program, wave_key: str) -> dt.date | None:
    try:
        return program.wave(wave_key).opens
    except KeyError:
        return None


def _sort_key(row: ReportRow) -> tuple[str, str, str]:
    return (row.department.casefold(), row.name.casefold(), row.id)


def summarise(rows: Iterable[ReportRow]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for r in rows:
        counts["people"] += 1
        counts[r.status] += 1
        counts["overdue"] += r.status == EMAILED and bool(r.deadline_passed)
    return {k: counts[k] for k in SUMMARY_KEYS}


def build_report(
    conn: Connection,
    stored: StoredProgram,
    *,
    department: str | None = None,
    officer: str | None = None,
    now: dt.datetime,
    title: str = "",
) -> Report:
    """The rows for these filters, possibly none (the nightly path must never fail on it)."""
    return _read_report(conn, stored, department, officer, now, title)[0]


def _read_report(
    conn: Connection,
    stored: StoredProgram,
    department: str | None,
    officer: str | None,
    now: dt.datetime,
    title: str,
) -> tuple[Report, Sequence[Row[Any]]]:
    """The report, and the rows it was made of (`_select_people`'s), for the nightly extras."""
    program = stored.program
    found = conn.execute(_select_people(stored.id, department, officer)).all()
    launched = {
        key: state.launched_at is not None
        for key, state in program_repo.wave_states(conn, stored.id).items()
    }
    last_passed = standing.last_day_passed(program, now)
    unknown = {r.id for r in found if r.launch_sent_at is None and _owes(r)}
    by_message = _launch_sent_by_message(conn, stored.id, unknown) if unknown else set()
    titles: dict[str, str] = {}
    rows = [
        _row(
            program,
            r,
            last_passed,
            r.launch_sent_at is not None or r.id in by_message,
            launched.get(r.wave_key, False),
            titles,
        )
        for r in found
    ]
    rows.sort(key=_sort_key)  # here, not in SQL: collations differ between backends
    name = title or _title(program, rows, department, officer)
    return Report(name, now, rows, summarise(rows)), found


def _title(
    program: Program, rows: list[ReportRow], department: str | None, officer: str | None
) -> str:
    scope = []
    if department is not None:
        scope.append(rows[0].department if rows else department)
    if officer is not None:
        scope.append(f"administrative officer {officer}")
    whole = f"{program.program.name} {program.program.cycle}"
    return f"{whole}: {', '.join(scope)}" if scope else whole


def department_report(
    conn: Connection,
    stored: StoredProgram,
    *,
    department: str | None = None,
    officer: str | None = None,
    now: dt.datetime,
) -> Report:
    """The on-demand report; a department or officer nobody belongs to is an input error."""
    report = build_report(conn, stored, department=department, officer=officer, now=now)
    if report.rows or (department is None and officer is None):
        return report
    if department is not None and not _exists(conn, stored.id, people.c.department, department):
        raise _unknown(conn, stored, "--department", "department", people.c.department, department)
    if officer is not None and not _exists(conn, stored.id, people.c.admin_officer, officer):
        raise _unknown(
            conn, stored, "--officer", "administrative officer", people.c.admin_officer, officer
        )
    return report  # both exist, but share nobody: an empty report says so


def _enrolled(program_id: int, column: Any) -> Any:
    return (
        select(column)
        .join(enrollments, enrollments.c.person_id == people.c.id)
        .where(enrollments.c.program_id == program_id, standing.present())
    )


def _exists(conn: Connection, program_id: int, column: Any, value: str) -> bool:
    q = _enrolled(program_id, column).where(func.lower(column) == value.strip().lower()).limit(1)
    return conn.execute(q).first() is not None


def _unknown(
    conn: Connection, stored: StoredProgram, option: str, what: str, column: Any, value: str
) -> NotFoundError:
    spellings = {
        v.casefold(): v for v in conn.scalars(_enrolled(stored.id, column).distinct()) if v
    }
    known = sorted(spellings.values())
    close = difflib.get_close_matches(value, known, n=5, cutoff=0.5)
    more = f" (and {len(known) - 10} more)" if len(known) > 10 else ""
    if close:
        hint = f"did you mean: {'; '.join(close)}"
    elif known:
        hint = f"known: {'; '.join(known[:10])}{more}"
    else:
        hint = "import the roster first"
    return NotFoundError(
        [f"{option}: nobody enrolled in {stored.key} has the {what} {value!r}"], hint=hint
    )


def department_csv(
    engine: Engine, stored: StoredProgram, department: str, now: dt.datetime
) -> bytes:
    """The department's report as the CSV the nightly email attaches (the console's download)."""
    with engine.connect() as conn:
        return department_report(conn, stored, department=department, now=now).csv()


# -- nightly ------------------------------------------------------------------------------------
@dataclass
class OfficerWindow:
    """When one officer's reports run: after the first launch, until the last deadline."""

    spellings: Counter[str] = field(default_factory=Counter)
    first_launch: dt.datetime | None = None
    last_deadline: dt.date | None = None
    first_opens: dt.date | None = None  # for the plan: when an unlaunched window would start

    @property
    def address(self) -> str:
        """The spelling most of the roster uses (ties: the first in order), on every replica."""
        return min(self.spellings, key=lambda a: (-self.spellings[a], a))

    def covers(self, night: dt.date, program: Program) -> bool:
        if self.first_launch is None or self.last_deadline is None:
            return False
        launched_on = self.first_launch.astimezone(program.tz).date()
        return launched_on < night <= self.last_deadline + dt.timedelta(days=1)


def report_night(program: Program, now: dt.datetime) -> dt.date | None:
    """Today's local date once the local report time has come; None before it.

    Only today's night is ever returned (and not a closure when
    `reports_on_closed_dates = false`): a pass after downtime sends this night's report, and
    never back-fills the nights it missed (they would be stale on arrival).
    """
    local = now.astimezone(program.tz)
    at = dt.datetime.combine(local.date(), program.sending.report_time, program.tz)
    if not program.sending.reports_on(local.date()):
        return None  # a closure, and the program says no report then
    return local.date() if now >= at else None


def officer_windows(conn: Connection, stored: StoredProgram) -> list[OfficerWindow]:
    """Each officer (addresses compared without case) with their people's launch and deadlines."""
    program = stored.program
    q = (
        select(
            people.c.admin_officer,
            enrollments.c.wave_key,
            func.min(waves.c.launched_at),
            func.max(enrollments.c.extended_until),
            func.count(),
        )
        .join(enrollments, enrollments.c.person_id == people.c.id)
        .outerjoin(
            waves,
            and_(waves.c.program_id == stored.id, waves.c.key == enrollments.c.wave_key),
        )
        .where(
            enrollments.c.program_id == stored.id,
            standing.present(),
            people.c.admin_officer.is_not(None),
            people.c.admin_officer != "",
        )
        .group_by(people.c.admin_officer, enrollments.c.wave_key)
    )
    found: dict[str, OfficerWindow] = {}
    for address, wave_key, launched_at, extended, n in conn.execute(q):
        w = found.setdefault(address.lower(), OfficerWindow())
        w.spellings[address] += n
        if launched_at is not None and (w.first_launch is None or launched_at < w.first_launch):
            w.first_launch = launched_at
        ends = [d for d in (_closes(program, wave_key), extended, w.last_deadline) if d]
        w.last_deadline = max(ends) if ends else None
        opens = _opens(program, wave_key)
        if opens is not None and (w.first_opens is None or opens < w.first_opens):
            w.first_opens = opens
    return [found[k] for k in sorted(found)]


def queue_nightly_reports(
    conn: Connection, stored: StoredProgram, now: dt.datetime, message_id_domain: str
) -> int:
    """Queue tonight's report for every officer whose window covers it; returns how many are new.

    Safe to call on every pass of every replica: the idempotency key (officer, local date)
    is UNIQUE, so a second call, here or elsewhere, inserts nothing.
    """
    program = stored.program
    night = report_night(program, now)
    if night is None:
        return 0
    rows = [
        _report_message(stored, w.address, night, now, message_id_domain)
        for w in officer_windows(conn, stored)
        if w.covers(night, program)
    ]
    return outbox.queue(conn, rows, now)


def _report_message(
    stored: StoredProgram, officer: str, night: dt.date, now: dt.datetime, domain: str
) -> dict[str, Any]:
    day = night.isoformat()
    return {
        "program_id": stored.id,
        "person_id": None,
        "kind": Kind.REPORT.value,
        "wave_key": None,
        "step": day,
        "idempotency_key": idempotency_key(
            stored.key, None, officer.lower(), Kind.REPORT.value, day
        ),
        "message_id": outbox.new_message_id(domain),
        "recipient_email": officer,
        "recipient_name": OFFICER_NAME,
        "context": {"officer": officer, "date": day},
        "due_at": now,
    }


def report_enricher(
    engine: Engine, stored: StoredProgram, claimed: Claimed, *, list_limit: int = 30
) -> dict[str, Any]:
    """The dispatcher's hook for "report": the officer's rows, read now rather than at queue time,
    and what needs their action (services.officer_report).

    Statuses are judged as of the night's report time (deadline passed or not), so a retry
    later in the day describes the same night.
    """
    program = stored.program
    officer = str(claimed.context["officer"])
    night = dt.date.fromisoformat(str(claimed.context["date"]))
    as_of = dt.datetime.combine(night, program.sending.report_time, program.tz)
    with engine.connect() as conn:
        report, found = _read_report(conn, stored, None, officer, as_of, _nightly_title(program))
        rows = report.row_dicts()
        action = action_sections(
            conn,
            stored,
            officer=officer,
            night=night,
            as_of=as_of,
            rows=rows,
            list_limit=list_limit,
            people_rows=found,
        )
    return {"title": report.title, "summary": report.summary, "rows": rows, **action}


def _nightly_title(program: Program) -> str:
    return f"{program.program.name} {program.program.cycle}"
