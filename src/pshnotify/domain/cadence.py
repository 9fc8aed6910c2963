"""What is due for one person at an instant: the one decision `run`, `plan` and catch-up share.

A person's messages after launch form a timeline computed from the program's cadence, their
own launch email's instant and their deadline (the wave's close or their extension):
  - reminders N days after the launch email and N days before the deadline, at the start of
    working hours on that local date (moved to the next working day, never past the deadline);
  - none within the quiet days after the launch email, none at or after the deadline;
  - at most `max_per_day` per local date (the step nearest the deadline wins);
  - optional overdue notices N days after the deadline.
Steps are identified by stable names ("after:7", "before:3:2023-10-06", "overdue:1:...") that
become part of the idempotency key, so a step is queued at most once; an extension changes
the deadline, hence the names of the steps before it, and those run again for the new date.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from pshnotify.domain import policy
from pshnotify.domain.calendar import next_sending_instant
from pshnotify.domain.delivery import Kind
from pshnotify.domain.program import Program


@dataclass(frozen=True, order=True)
class Planned:
    due_at: dt.datetime
    kind: str
    step: str


@dataclass(frozen=True)
class PersonState:
    """What the decision needs to know about one enrollment."""

    wave_key: str
    status: str  # required | encouraged | exempt
    exempted: bool = False
    removed: bool = False
    completed: bool = False
    extended_until: dt.date | None = None
    launch_queued: bool = False
    launch_sent_at: dt.datetime | None = None
    steps_queued: frozenset[str] = frozenset()  # reminder/overdue/invitation steps in the outbox
    timezone: str | None = None  # the roster's IANA zone; None: the program's
    undeliverable: bool = False  # their address is marked: due steps are skipped, saying so
    # local dates (the person's zone) of reminders queued or sent
    reminder_days: frozenset[dt.date] = frozenset()
    paused_for: str | None = None  # a pending request holds reminders ("request 12 pending")

    @property
    def standing(self) -> policy.Standing:
        """What `domain.policy` judges this person by."""
        return policy.Standing(
            status=self.status,
            removed=self.removed,
            exempted_reason="exempted by an operator" if self.exempted else None,
            completed=self.completed,
            wave_key=self.wave_key,
            extended_until=self.extended_until,
            timezone=self.timezone,
            undeliverable=self.undeliverable,
            paused_for=self.paused_for,
        )


@dataclass
class Decision:
    queue: list[Planned] = field(default_factory=list)
    skip: list[tuple[Planned, str]] = field(default_factory=list)
    next_action_at: dt.datetime | None = None


def deadline_date(program: Program, person: PersonState) -> dt.date:
    return person.extended_until or program.wave(person.wave_key).closes


def timeline(program: Program, person: PersonState, launch_at: dt.datetime) -> list[Planned]:
    """Every reminder and overdue step for a person launched at `launch_at`, in time order.

    Days are the person's own: N days after their launch email's local date, at the start of
    working hours in their zone; N days before their deadline's date (the program's), also at
    09:00 in their zone, and never at or after the deadline's instant.
    """
    cadence, tz = program.cadence, policy.person_zone(program, person.timezone)
    deadline = deadline_date(program, person)
    closes = program.closes_at(deadline)
    quiet_until = launch_at + dt.timedelta(days=cadence.quiet_days_after_launch)
    launch_day = launch_at.astimezone(tz).date()
    steps: list[tuple[dt.date, str]] = [
        (launch_day + dt.timedelta(days=n), f"after:{n}") for n in cadence.after_launch_days
    ]
    steps += [
        (deadline - dt.timedelta(days=n), f"before:{n}:{deadline.isoformat()}")
        for n in cadence.before_deadline_days
    ]
    reminders: dict[dt.date, list[Planned]] = {}
    for day, step in steps:
        due = _at_start_of_hours(program, day, tz)
        if due < quiet_until or due >= closes or due <= launch_at:
            continue
        reminders.setdefault(due.astimezone(tz).date(), []).append(
            Planned(due, Kind.REMINDER.value, step)
        )
    out = [
        p for day in sorted(reminders) for p in _keep_per_day(reminders[day], cadence.max_per_day)
    ]
    for n in cadence.overdue_after_days:
        day = deadline + dt.timedelta(days=n)
        out.append(
            Planned(
                _at_start_of_hours(program, day, tz),
                Kind.OVERDUE.value,
                f"overdue:{n}:{deadline.isoformat()}",
            )
        )
    return sorted(out)


def _at_start_of_hours(program: Program, day: dt.date, tz: ZoneInfo) -> dt.datetime:
    # Built from the local date and wall-clock time, then placed in the zone: 09:00 stays
    # 09:00 local whatever the UTC offset of that day, whichever day that zone changes on.
    start = dt.datetime.combine(day, program.sending.working_hours.start, tz)
    return next_sending_instant(start, program.sending, tz)


def _keep_per_day(candidates: list[Planned], limit: int) -> list[Planned]:
    """Several steps on one day: the later-named steps (nearer the deadline) win."""
    ranked = sorted(candidates, key=lambda p: (p.step.startswith("before:"), p.step), reverse=True)
    return sorted(ranked[:limit])


def decide(
    program: Program, wave_launched_at: dt.datetime | None, person: PersonState, now: dt.datetime
) -> Decision:
    """What to queue now, what to skip (with why), and when to look at this person again."""
    standing = person.standing
    first = policy.first_message(program, standing)
    if first is None:
        return Decision()  # not asked anything (complete, exempt, removed, not invited)
    if wave_launched_at is None:
        return Decision()  # the operator launches a wave; nothing goes out before that
    send_now = next_sending_instant(
        now, program.sending, policy.person_zone(program, person.timezone)
    )
    if first is Kind.INVITATION:
        return _invitation(person, send_now)
    if not person.launch_queued:
        launch = Planned(send_now, Kind.LAUNCH.value, "0")
        too_late = policy.late_launch(program, standing, now, send_now)
        return Decision(skip=[(launch, too_late)]) if too_late else Decision(queue=[launch])
    if person.launch_sent_at is None:
        return Decision()  # reminders count from the launch email: wait until it is sent
    pending = [
        p
        for p in timeline(program, person, person.launch_sent_at)
        if p.step not in person.steps_queued
    ]
    # A step that falls due before the next send (a pass at 08:30, sending opens at 09:00)
    # is due now: a catch-up then sends one reminder, the latest, not one now and one at 09:00.
    due = [p for p in pending if p.due_at <= max(now, send_now)]
    later = [p for p in pending if p.due_at > max(now, send_now)]
    decision = Decision(next_action_at=min((p.due_at for p in later), default=None))
    for kind in (Kind.REMINDER, Kind.OVERDUE):
        skip = policy.skip_reason(program, kind, standing, now)
        _catch_up(decision, [p for p in due if p.kind == kind.value], skip, send_now)
    for planned in [p for p in decision.queue if p.kind == Kind.REMINDER.value]:
        tz = policy.person_zone(program, person.timezone)
        if reason := policy.reminded_that_day(program, planned.due_at, person.reminder_days, tz):
            decision.queue.remove(planned)
            decision.skip.append((planned, reason))
    return decision


def _catch_up(
    decision: Decision, due: list[Planned], skip: str | None, send_now: dt.datetime
) -> None:
    """Of several steps that came due meanwhile, send only the latest (unless the policy
    skips it: a reminder past the deadline)."""
    if not due:
        return
    *stale, latest = sorted(due)
    decision.skip += [(p, policy.SUPERSEDED) for p in stale]
    if skip is not None:
        decision.skip.append((latest, skip))
    else:
        decision.queue.append(Planned(max(latest.due_at, send_now), latest.kind, latest.step))


def _invitation(person: PersonState, send_now: dt.datetime) -> Decision:
    if "invitation" in person.steps_queued:
        return Decision()
    return Decision(queue=[Planned(send_now, Kind.INVITATION.value, "invitation")])
