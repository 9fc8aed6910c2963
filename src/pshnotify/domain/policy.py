"""What happens to a message: the one place that decides it.

Every part that queues, sends, plans or reports asks here rather than deciding for itself:
  - does a person still get a message of this kind, and if not, why (`skip_reason`, `asks`,
    `owes_training`, `first_message`, `late_launch`): the scheduler's cadence, launch, the
    dispatcher at send time, `plan` and the officers' reports;
  - which of several waiting messages are stale (`superseded`, `missed_night`);
  - when a message may go (`held_until`: working hours);
  - what state an attempt leaves a message in, and whether it is tried again (`after_attempt`,
    `released`).
The groups of kinds (stop on completion, held to working hours, end at the deadline) are
properties of `Kind`. One reminder a day (`reminded_that_day`) is here; rules added later
(undeliverable addresses, closed dates, a person's own time zone) belong here too.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from pshnotify.domain.calendar import next_sending_instant, zone
from pshnotify.domain.delivery import Kind, Outcome, State, backoff
from pshnotify.domain.program import Escalation, Program

REQUIRED, ENCOURAGED, EXEMPT = "required", "encouraged", "exempt"


@dataclass(frozen=True)
class Standing:
    """What the policy needs to know about one person in one program."""

    status: str = REQUIRED  # required | encouraged | exempt (from the membership rules)
    removed: bool = False
    exempted_reason: str | None = None  # an operator's exemption
    completed: bool = False
    wave_key: str | None = None
    extended_until: dt.date | None = None
    undeliverable: bool = False  # their address is marked (services.bounces)
    # Local dates (in the person's zone) on which another reminder of this person went out
    # or is queued to go.
    reminded_on: frozenset[dt.date] = frozenset()
    timezone: str | None = None  # the roster's IANA zone; None: the program's
    # A request of theirs waits for a decision ("request 12 pending"; domain.requests): no
    # reminder or overdue notice goes meanwhile.
    paused_for: str | None = None


# The launch email's audience (and who an officer's report counts as owing the training), as
# conditions on an enrollment: launch turns these into its SQL, the rest call `owes_training`.
OWING: dict[str, object] = {
    "status": REQUIRED,
    "removed": False,
    "exempted": False,
    "completed": False,
}


# Who is still asked anything (the launch email, an invitation, reminders): `asks`. A tuple
# is "one of". `store.standing` turns these conditions into SQL the way launch did OWING.
ASKED: dict[str, object] = {
    "status": (REQUIRED, ENCOURAGED),
    "removed": False,
    "exempted": False,
    "completed": False,
}


def facts(person: Standing) -> dict[str, object]:
    """The facts about an enrollment that OWING and ASKED are conditions on."""
    return {
        "status": person.status,
        "removed": person.removed,
        "exempted": person.exempted_reason is not None,
        "completed": person.completed,
    }


def meets(person: Standing, conditions: dict[str, object]) -> bool:
    """Does this person meet every condition (a tuple: one of its values)?"""
    known = facts(person)
    return all(
        known[name] in value if isinstance(value, tuple) else known[name] == value
        for name, value in conditions.items()
    )


def owes_training(person: Standing) -> bool:
    """Required, present, not exempted by an operator, not complete."""
    return meets(person, OWING)


def _not_asked(person: Standing) -> str | None:
    """Why nothing that asks for the training should reach this person, if anything."""
    if person.removed:
        return "removed from the roster"
    if person.exempted_reason is not None:
        return f"exempted: {person.exempted_reason}"
    if person.completed:
        return "already complete"
    if person.status == EXEMPT:
        return "not required"
    return None


def asks(person: Standing) -> bool:
    """Is this person still asked anything (launch, invitation, reminders)? `_not_asked` is
    ASKED with the reasons the outbox keeps (and asked once per person on every pass:
    tests/test_standing.py holds the two together)."""
    return _not_asked(person) is None


def first_message(program: Program, person: Standing) -> Kind | None:
    """What a launched wave sends a member first: the launch email to the required, an
    invitation to the encouraged (when the program invites them), nothing otherwise."""
    if not asks(person):
        return None
    if person.status == REQUIRED:
        return Kind.LAUNCH
    if person.status == ENCOURAGED and program.cadence.invite_encouraged:
        return Kind.INVITATION
    return None


def deadline(program: Program, person: Standing) -> dt.date | None:
    """The person's last day: their extension, else their wave's close (None: no wave)."""
    if person.extended_until is not None:
        return person.extended_until
    if person.wave_key is None:
        return None
    try:
        return program.wave(person.wave_key).closes
    except KeyError:
        return None  # a wave no longer in the program file


def deadline_passed(program: Program, person: Standing, now: dt.datetime) -> bool:
    last = deadline(program, person)
    return last is not None and now >= program.closes_at(last)


def late_launch(
    program: Program, person: Standing, now: dt.datetime, send_at: dt.datetime | None = None
) -> str | None:
    """A member who joins after their deadline gets no launch email (and so no reminders);
    nor one whose working hours (in their zone) next open after it: it would arrive late."""
    if deadline_passed(program, person, now):
        return "joined after the deadline"
    if send_at is not None and deadline_passed(program, person, send_at):
        return "no working hours left before the deadline"
    return None


def skip_reason(
    program: Program,
    kind: Kind,
    person: Standing | None,
    now: dt.datetime,
    *,
    step: str = "",
) -> str | None:
    """Does this message still go? None if so, else the reason it is skipped (kept on the row).

    `person` is None when the message's person is no longer enrolled (or it has none).
    """
    if kind is Kind.REPORT:
        return missed_night(program, step, now)
    if kind is Kind.ESCALATION:
        return missed_digest(program, step, now)
    if not kind.stops_on_completion:
        return None  # a confirmation answers a completion: it goes whatever changed since
    if person is None:
        return "person no longer enrolled"
    reason = _not_asked(person)
    if reason is None and kind is not Kind.INVITATION and person.status != REQUIRED:
        reason = "no longer required"
    if reason is None and kind.ends_at_deadline and deadline_passed(program, person, now):
        reason = "deadline passed"
    if reason is None and person.undeliverable:
        reason = UNDELIVERABLE  # a hard bounce (or soft ones on several days): a dead address
    if reason is None and kind in _PAUSED_BY_REQUESTS and person.paused_for:
        reason = person.paused_for
    if reason is None and kind is Kind.REMINDER:
        tz = person_zone(program, person.timezone)
        reason = reminded_that_day(program, now, person.reminded_on, tz)
    return reason


UNDELIVERABLE = "address undeliverable"
# What a pending request holds back: what asks again for the training, not the launch email.
_PAUSED_BY_REQUESTS = (Kind.REMINDER, Kind.OVERDUE)


def missed_digest(program: Program, day: str, now: dt.datetime) -> str | None:
    """An escalation digest of an earlier day (the daemon was down) is not sent: today's,
    read afresh, says the same about whoever is still behind."""
    try:
        when = dt.date.fromisoformat(day)
    except ValueError:
        return None
    today = now.astimezone(program.tz).date()
    return f"missed day: the digest of {today.isoformat()} replaces it" if when < today else None


def escalated(esc: Escalation, *, reminders_sent: int, days_left: int) -> bool:
    """Is a required person who has not completed behind, so that their manager hears of it?

    Behind once any configured threshold is reached: `after_reminders` reminders sent, or
    `days_before_deadline` days before the deadline (or `days_after_deadline` after it);
    digests about them stop `stop_days_after_deadline` days after the deadline.
    `days_left` counts from the digest's local date to the deadline (negative after it).
    """
    if not esc.enabled or days_left < -esc.stop_days_after_deadline:
        return False
    if esc.after_reminders is not None and reminders_sent >= esc.after_reminders:
        return True
    if esc.days_before_deadline is not None and days_left <= esc.days_before_deadline:
        return True
    return esc.days_after_deadline is not None and -days_left >= esc.days_after_deadline


ONE_A_DAY = "one reminder a day: another reminder went or goes to this person that day"


def reminded_that_day(
    program: Program,
    at: dt.datetime,
    reminded_on: frozenset[dt.date],
    tz: ZoneInfo | None = None,
) -> str | None:
    """At most one reminder per person per local day (their own zone's `tz`, default the
    program's), whatever the times of the passes: a reminder for a day on which another went
    (or is queued to go) is skipped. Asked when the scheduler queues a reminder and again
    when the dispatcher is about to send one; `reminded_on` holds dates in the same zone."""
    return ONE_A_DAY if at.astimezone(tz or program.tz).date() in reminded_on else None


def report_night(program: Program, now: dt.datetime) -> dt.date:
    """The night whose report is the latest one due: today once the local report time has
    come, else yesterday."""
    local = now.astimezone(program.tz)
    at = dt.datetime.combine(local.date(), program.sending.report_time, program.tz)
    return local.date() if now >= at else local.date() - dt.timedelta(days=1)


def missed_night(program: Program, night: str, now: dt.datetime) -> str | None:
    """An officer's report waiting since an earlier night (the relay or the daemon was down)
    is not sent: its data would be this morning's anyway, and tonight's report says it all."""
    try:
        day = dt.date.fromisoformat(night)
    except ValueError:
        return None
    latest = report_night(program, now)
    if day < latest:
        return f"missed night: the report of {latest.isoformat()} replaces it"
    return None


def superseded(waiting: Iterable[tuple[Hashable, Kind, int]]) -> set[int]:
    """Of several reminders waiting for one person at once (after a pause, say), only the
    last goes. `waiting`: (whose, kind, message id); returns the ids to skip."""
    items = [(who, mid) for who, kind, mid in waiting if kind is Kind.REMINDER]
    latest: dict[Hashable, int] = {}
    for who, mid in items:
        latest[who] = max(mid, latest.get(who, mid))
    return {mid for who, mid in items if latest[who] != mid}


SUPERSEDED = "superseded by a later reminder"


def person_zone(program: Program, timezone: str | None) -> ZoneInfo:
    """The zone a person's working hours, closures and 09:00 are counted in: their roster
    `timezone`, else the program's. Their deadline stays the program's (one instant for all)."""
    return zone(timezone, program.tz)


def held_until(
    program: Program, kind: Kind, now: dt.datetime, tz: ZoneInfo | None = None
) -> dt.datetime | None:
    """When working hours next open in the person's zone `tz` (default: the program's), if
    this kind waits for them and they are closed now (after hours, a weekend, a closure)."""
    if not kind.held_to_working_hours:
        return None
    opening = next_sending_instant(now, program.sending, tz or program.tz)
    return opening if opening > now else None


# -- after an attempt ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RetryRules:
    max_attempts: int = 8
    max_age: dt.timedelta = dt.timedelta(hours=96)  # from the first attempt
    unknown_policy: str = "resend"  # resend (same Message-ID) | hold


@dataclass(frozen=True)
class Next:
    """The state an attempt leaves its message in."""

    state: State
    due_at: dt.datetime | None = None  # for a retry
    note: str | None = None  # why it was given up, added to the reply kept


def after_attempt(
    program: Program,
    kind: Kind,
    outcome: Outcome,
    *,
    attempt: int,
    first_attempt_at: dt.datetime,
    now: dt.datetime,
    rules: RetryRules,
    rng: random.Random | None = None,
    tz: ZoneInfo | None = None,
) -> Next:
    """Sent, failed for good, kept as unknown, or tried again later (with backoff, in working
    hours for the kinds held to them) until the attempts or the age run out."""
    if outcome == Outcome.SENT:
        return Next(State.SENT)
    if outcome == Outcome.PERMANENT:
        return Next(State.FAILED)
    if outcome == Outcome.UNKNOWN and rules.unknown_policy != "resend":
        return Next(State.UNKNOWN)
    if attempt >= rules.max_attempts or now - first_attempt_at >= rules.max_age:
        hours = (now - first_attempt_at).total_seconds() / 3600
        final = State.UNKNOWN if outcome == Outcome.UNKNOWN else State.FAILED
        return Next(final, note=f"gave up after {attempt} attempts over {hours:.1f} h")
    at = now + backoff(attempt, rng=rng)
    if kind.held_to_working_hours:
        at = next_sending_instant(at, program.sending, tz or program.tz)
    return Next(State.RETRY, due_at=at)


def released(attempts: int) -> State:
    """A claimed message handed back unsent (paused, stopping, hours closed) waits as before."""
    return State.QUEUED if attempts == 0 else State.RETRY
