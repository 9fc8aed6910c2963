"""Looking people up: a paginated search, and one person's whole story in a program.

The story is what the outbox recorded (every message sent, skipped or cancelled, with its
reason, every attempt with the relay's reply) followed by what `plan` says will come, each
with why. Reading only: the decisions themselves are made by the cadence and its callers.
A viewer's departments scope every read; someone outside them does not exist for the viewer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select

from pshnotify.domain import policy
from pshnotify.domain import requests as request_rules
from pshnotify.domain.cadence import Planned
from pshnotify.domain.delivery import Kind, State
from pshnotify.domain.errors import InputError, NotFoundError
from pshnotify.domain.program import Program
from pshnotify.domain.vocabulary import MessageWord, PersonWord, person_word
from pshnotify.services.bounces.marks import Mark, marks
from pshnotify.services.reporting.plan import person_plan
from pshnotify.store import programs as program_repo
from pshnotify.store import requests as requests_repo
from pshnotify.store import standing
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import (
    attempts,
    completions,
    enrollments,
    messages,
    people,
    waves,
)
from pshnotify.store.scope import in_departments

# The wave's launch, beside a person's row: `standing_line` says "emailed" or "not launched".
LAUNCHED = waves.c.launched_at


def with_wave(from_: Any) -> Any:
    """`from_` (enrollments joined) joined to the enrollment's wave, for `LAUNCHED`."""
    return from_.outerjoin(
        waves,
        and_(waves.c.program_id == enrollments.c.program_id, waves.c.key == enrollments.c.wave_key),
    )


PER_PAGE = 50
# A search matches an id, an address or a name, none of them longer: a longer one is refused
# before it reaches SQL (SQLite refuses a LIKE pattern over 50,000 bytes).
MAX_QUERY = 320


def query_problem(query: str) -> str | None:
    """Why a people search cannot be run, or None."""
    if len(query) > MAX_QUERY:
        return f"a search is at most {MAX_QUERY} characters; this one has {len(query):,}"
    return None


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


_PERSON_COLUMNS = (
    people.c.external_id,
    people.c.name,
    people.c.email,
    people.c.department,
    enrollments.c.reason,
    LAUNCHED,
    *standing.COLUMNS,
)


def paged_people(
    engine: Engine,
    conds: Sequence[Any],
    *,
    order_by: Sequence[Any],
    page: int,
    per_page: int,
    extra: Sequence[Any] = (),
    count_enrollments_only: bool = False,
) -> tuple[int, int, list[Any]]:
    """One page of enrolled people matching `conds`, with what `standing` needs (and `extra`
    columns): the total counted in SQL, the page number clamped to the pages there are."""
    joined = people.join(enrollments, enrollments.c.person_id == people.c.id)
    counted = enrollments if count_enrollments_only else joined
    with engine.connect() as conn:
        total = int(conn.scalar(select(func.count()).select_from(counted).where(*conds)) or 0)
        page = max(1, min(page, max(1, -(-total // per_page))))
        rows = conn.execute(
            select(*_PERSON_COLUMNS, *extra)
            .select_from(with_wave(standing.with_mark(joined)))
            .where(*conds)
            .order_by(*order_by)
            .limit(per_page)
            .offset((page - 1) * per_page)
        ).all()
    return total, page, list(rows)


def find_people(
    engine: Engine,
    stored: StoredProgram,
    now: dt.datetime,
    *,
    query: str = "",
    wave: str | None = None,
    departments: Sequence[str] | None = None,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> Page:
    """People enrolled in the program (removed ones too, marked), matching `query` in id,
    email or name; counted and paged in SQL."""
    if problem := query_problem(query):
        raise InputError([problem])
    conds = [enrollments.c.program_id == stored.id]
    if wave is not None:
        conds.append(enrollments.c.wave_key == wave)
    scope = in_departments(engine, departments)
    if scope is not None:
        conds.append(scope)
    q = " ".join(query.split()).lower()
    if q:
        like = f"%{_escape_like(q)}%"
        conds.append(
            or_(
                people.c.external_id == query.strip(),
                people.c.email_key.like(f"{_escape_like(q)}%", escape="\\"),
                func.lower(people.c.name).like(like, escape="\\"),
            )
        )
    # Without a search or a scope every condition is on enrollments: counted from its index
    # alone, not joined to 100,000 people.
    total, page, rows = paged_people(
        engine,
        conds,
        order_by=(people.c.external_id,),
        page=page,
        per_page=per_page,
        count_enrollments_only=not (q or scope is not None),
    )
    return Page([_summary(stored.program, r, now) for r in rows], page, per_page, total)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _summary(program: Program, r: Any, now: dt.datetime) -> dict[str, Any]:
    return {
        "id": r.external_id,
        "name": r.name,
        "email": r.email,
        "department": r.department,
        "wave": r.wave_key,
        "standing": standing_line(program, r, now),
    }


def standing_line(program: Program, r: Any, now: dt.datetime) -> str:
    """One line: where the person stands, in the vocabulary's words (`person_word`), and why
    they are not asked when the one policy that decides it says so (the same reasons the
    outbox records on skipped messages). `r` has `store.standing.COLUMNS`, the rule's
    `reason` and the wave's `launched_at` (`LAUNCHED`)."""
    person = standing.to_standing(r)
    word = person_word(person, launched=r.launched_at is not None)
    if person.removed:
        return "removed from the roster"
    if word is PersonWord.COMPLETE:
        return f"{word.words} on {r.completed_at.astimezone(program.tz).date().isoformat()}"
    if word is PersonWord.EXEMPT:
        return f"{word.words}: {r.exempted_reason}"
    if word is PersonWord.NOT_REQUIRED:
        return f"{word.words} ({r.status}): {r.reason}"
    why = policy.skip_reason(program, Kind.REMINDER, person, now)
    return word.words if why is None else f"{word.words}: {why}"


# -- one person ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Attempt:
    number: int
    at: dt.datetime
    outcome: str
    code: int | None
    reply: str | None
    worker: str


@dataclass(frozen=True)
class Entry:
    """One message of the person's timeline: recorded (state from the outbox) or planned."""

    at: dt.datetime
    kind: str
    step: str
    state: str  # a delivery state, or "planned"
    what: str  # which message: "7 days after the launch email"
    why: str  # the reason for its state
    message_id: str | None = None
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class PersonView:
    id: str
    name: str
    email: str
    department: str
    role: str
    admin_officer: str | None
    wave: str
    wave_title: str
    status: str
    reason: str
    standing: str
    deadline: dt.date
    extended: bool
    removed: bool
    completed: bool
    exempted: bool
    launched_at: dt.datetime | None
    entries: list[Entry]
    completions: list[dict[str, Any]]
    undeliverable: Mark | None = None  # the address bounced: nothing reaches them until fixed


def describe_step(kind: str, step: str) -> str:
    """A message's place in the cadence, from its stable step name (see domain.cadence)."""
    parts = step.split(":")
    if kind == "launch" and step.startswith("resend"):
        return "the wave's launch email, again (its address was fixed)"
    if kind == "launch":
        return "the wave's launch email"
    if kind == "invitation":
        return "an invitation (encouraged, not required)"
    if kind == "confirmation":
        return "the confirmation of a completion"
    if kind in ("acknowledgement", "decision") and parts[0] == "request" and len(parts) == 2:
        word = "receipt" if kind == "acknowledgement" else "decision"
        return f"the {word} of request {parts[1]}"
    if parts[0] == "after" and len(parts) == 2:
        return f"reminder {_days(parts[1])} after the launch email"
    if parts[0] == "before" and len(parts) == 3:
        return f"reminder {_days(parts[1])} before the deadline {parts[2]}"
    if parts[0] == "overdue" and len(parts) == 3:
        return f"overdue notice {_days(parts[1])} after the deadline {parts[2]}"
    return f"{kind} ({step})"


def _days(n: str) -> str:
    return f"{n} day" if n == "1" else f"{n} days"


def _why_recorded(state: str, reason: str | None, reply: str | None, kind: str) -> str:
    """Why a recorded message is where it is; its time is shown beside it."""
    if state == State.SENT:
        return f"accepted by the relay: {reply}" if reply else "accepted by the relay"
    if state in (State.SKIPPED, State.CANCELLED, State.BOUNCED):
        return reason or state
    if state == State.FAILED:
        return f"refused by the relay: {reply}" if reply else "refused by the relay"
    if state == State.RETRY:
        return f"deferred by the relay ({reply or 'no reply'}); tried again then"
    if state == State.UNKNOWN:
        return "no reply after the data: the relay may have it"
    if state == State.CLAIMED:
        return "being sent now"
    try:
        held = Kind(kind).held_to_working_hours
    except ValueError:  # a kind of the templates only
        held = True
    if held:
        return "waiting for the sender (due then, in working hours)"
    return "waiting for the sender (goes at once, not held to working hours)"


def person_view(
    engine: Engine,
    stored: StoredProgram,
    person_id: str,
    now: dt.datetime,
    departments: Sequence[str] | None = None,
) -> PersonView:
    """NotFoundError when nobody has that id in the program, or they are outside the scope."""
    program = stored.program
    with engine.connect() as conn:
        conds = [people.c.external_id == person_id, enrollments.c.program_id == stored.id]
        scope = in_departments(engine, departments)
        if scope is not None:
            conds.append(scope)
        r = conn.execute(
            select(
                people.c.id,
                people.c.external_id,
                people.c.name,
                people.c.email,
                people.c.department,
                people.c.role,
                people.c.admin_officer,
                enrollments.c.reason,
                LAUNCHED,
                *standing.COLUMNS,
            )
            .select_from(with_wave(standing.joined()))
            .where(*conds)
        ).first()
        if r is None:
            raise NotFoundError([f"nobody with id {person_id!r} in program {stored.key}"])
        entries = _recorded(conn, stored.id, r.id)
        mark = next(iter(marks(conn, [r.id])), None)
        planned = person_plan(conn, stored, r.id, now)
        held = requests_repo.pausing_requests(conn, program, stored.id, now, [r.id]).get(r.id)
        wave_state = program_repo.wave_states(conn, stored.id).get(r.wave_key)
        done = conn.execute(
            select(completions.c.option, completions.c.completed_at, completions.c.source)
            .where(completions.c.program_id == stored.id, completions.c.person_id == r.id)
            .order_by(completions.c.completed_at)
        ).all()
    launched = wave_state.launched_at if wave_state else None
    for p in planned:
        what = describe_step(p.kind, p.step)
        state, why = "planned", _why_planned(p, launched, mark)
        if held and p.kind in ("reminder", "overdue"):
            ends = request_rules.pause_ends(program, held[1])
            if p.due_at < ends:  # a pending request holds it
                state = "paused"
                why = f"{request_rules.paused_reason(held[0])}: not sent while it waits"
        entries.append(Entry(p.due_at, p.kind, p.step, state, what, why))
    try:
        title = program.wave(r.wave_key).title
    except KeyError:
        title = r.wave_key
    person = standing.to_standing(r)
    return PersonView(
        id=r.external_id,
        name=r.name,
        email=r.email,
        department=r.department,
        role=r.role,
        admin_officer=r.admin_officer,
        wave=r.wave_key,
        wave_title=title,
        status=r.status,
        reason=r.reason,
        standing=standing_line(program, r, now),
        deadline=policy.deadline(program, person) or now.date(),
        extended=person.extended_until is not None,
        removed=person.removed,
        completed=person.completed,
        exempted=person.exempted_reason is not None,
        launched_at=launched,
        entries=entries,
        completions=[{"option": c.option, "at": c.completed_at, "source": c.source} for c in done],
        undeliverable=mark,
    )


def _why_planned(p: Planned, launched: dt.datetime | None, mark: Mark | None) -> str:
    kind = p.kind
    if mark is not None:
        return "will not reach them while the address is marked undeliverable"
    if kind == "launch" and launched is None:
        return "when the wave is launched (assumed at the start of its window)"
    if kind in ("reminder", "overdue"):
        return "if not complete by then"
    return "the next pass of the scheduler queues it"


def _recorded(conn: Connection, program_id: int, person_pk: int) -> list[Entry]:
    rows = conn.execute(
        select(messages)
        .where(messages.c.program_id == program_id, messages.c.person_id == person_pk)
        .order_by(messages.c.due_at, messages.c.id)
    ).all()
    by_message: dict[int, list[Attempt]] = {}
    if rows:
        for a in conn.execute(
            select(attempts)
            .where(attempts.c.message_id.in_([m.id for m in rows]))
            .order_by(attempts.c.message_id, attempts.c.number)
        ):
            by_message.setdefault(a.message_id, []).append(
                Attempt(a.number, a.started_at, a.outcome, a.code, a.reply, a.worker)
            )
    out = []
    for m in rows:
        at = m.sent_at or (m.updated_at if m.state in ("skipped", "cancelled") else m.due_at)
        reply = f"{m.last_code} {m.last_reply}" if m.last_code else m.last_reply
        out.append(
            Entry(
                at,
                m.kind,
                m.step,
                MessageWord.of(m.state).value,  # the vocabulary's word, not the stored name
                describe_step(m.kind, m.step),
                _why_recorded(m.state, m.reason, reply, m.kind),
                m.message_id,
                by_message.get(m.id, []),
            )
        )
    return out
