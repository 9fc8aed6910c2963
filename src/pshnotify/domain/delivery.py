"""Delivery states and what an SMTP reply means for a message.

queued -> claimed (lease) -> sent | retry (at) | failed (reply kept) | unknown
sent -> bounced (a delivery report came back: class, status and diagnostic in `bounces`)
queued/retry -> cancelled (reason) | skipped (reason)
"""

from __future__ import annotations

import datetime as dt
import random
from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    SENT = "sent"
    BOUNCED = "bounced"
    RETRY = "retry"
    FAILED = "failed"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


PENDING = (State.QUEUED, State.RETRY)
FINAL = (State.SENT, State.BOUNCED, State.FAILED, State.UNKNOWN, State.CANCELLED, State.SKIPPED)


class Outcome(StrEnum):
    """What one attempt ended as; stored per attempt."""

    SENT = "sent"
    TRANSIENT = "transient"  # 4xx or a fault before the data: not delivered, try again
    PERMANENT = "permanent"  # 5xx: not delivered, never again
    UNKNOWN = "unknown"  # data handed over, reply lost: the relay may have it


class Kind(StrEnum):
    """An email kind, and the groups it belongs to (asked here, never listed elsewhere)."""

    LAUNCH = "launch"
    REMINDER = "reminder"
    OVERDUE = "overdue"
    INVITATION = "invitation"
    CONFIRMATION = "confirmation"
    REPORT = "report"
    EXTENSION = "extension"  # an extension's confirmation, with the deadline's calendar event
    ESCALATION = "escalation"  # a manager's (or officer's) daily digest of people behind
    ACKNOWLEDGEMENT = "acknowledgement"  # a participant's request was received
    DECISION = "decision"  # a participant's request was approved or declined

    @property
    def stops_on_completion(self) -> bool:
        """Asks the person to take the training: pointless once they have (or are exempt,
        removed or no longer required). The scheduler's cadence queues exactly these."""
        return self in _ASKING

    @property
    def held_to_working_hours(self) -> bool:
        """Sent only in working hours (a confirmation, an extension's confirmation or an
        officer's report answers something that just happened, so it goes at once; an
        escalation digest waits for them)."""
        return self not in (
            Kind.CONFIRMATION,
            Kind.REPORT,
            Kind.EXTENSION,
            Kind.ACKNOWLEDGEMENT,
            Kind.DECISION,
        )

    @property
    def ends_at_deadline(self) -> bool:
        """Pointless once the person's deadline has passed (a reminder of it)."""
        return self is Kind.REMINDER

    @property
    def per_person(self) -> bool:
        """Written to one enrolled person (a report or an escalation: to an officer, a manager)."""
        return self not in (Kind.REPORT, Kind.ESCALATION)

    @classmethod
    def asking(cls) -> list[str]:
        """The values of the kinds that stop on completion (for SQL filters)."""
        return [k.value for k in cls if k.stops_on_completion]


# An extension's confirmation too: a new deadline means nothing to someone complete or exempt.
_ASKING = frozenset({Kind.LAUNCH, Kind.INVITATION, Kind.REMINDER, Kind.OVERDUE, Kind.EXTENSION})


def classify(code: int | None) -> Outcome:
    """A reply code's meaning (RFC 5321 4.2.1)."""
    if code is None:
        return Outcome.TRANSIENT
    if 200 <= code < 300:
        return Outcome.SENT
    if 500 <= code < 600:
        return Outcome.PERMANENT
    return Outcome.TRANSIENT


def backoff(
    attempt: int, base: float = 60.0, cap: float = 3600.0, rng: random.Random | None = None
) -> dt.timedelta:
    """Exponential backoff with +-20% jitter so a relay's recovery is not met by a stampede."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    jitter = (rng or random).uniform(0.8, 1.2)
    return dt.timedelta(seconds=delay * jitter)


def idempotency_key(program: str, wave: str | None, person: str, kind: str, step: str = "0") -> str:
    """Stable ids only, never a formatted date: the same message always gets the same key."""
    return f"{program}:{wave or '-'}:{person}:{kind}:{step}"
