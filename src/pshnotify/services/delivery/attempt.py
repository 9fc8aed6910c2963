"""One attempt: hand a built message to a connection and turn what happened into a result.

The relay's answer is classified by the exception the transport raises (a 5xx, a 4xx or a
fault before the data, a reply lost after the data, a refused login); what state that leaves
the message in, and whether and when it is tried again, is the policy's (`domain.policy`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind, Outcome
from pshnotify.domain.errors import (
    OutcomeUnknownError,
    PermanentDeliveryError,
    RelayLoginError,
    TransientDeliveryError,
)
from pshnotify.domain.program import Program
from pshnotify.mail.transport import SmtpConnection
from pshnotify.store import outbox


@dataclass
class Job:
    """A claimed message, built and ready to go."""

    claimed: outbox.Claimed
    sender: str  # the envelope sender
    data: bytes
    lease_ends: float  # time.monotonic() by which this process's lease runs out
    zone: str | None = None  # the person's own (working hours, retries); None: the program's


class LoginRefusedError(Exception):
    """Every relay refused our login: nothing more can be sent until a setting is fixed."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        super().__init__(reply)


async def attempt(
    connection: SmtpConnection,
    job: Job,
    program: Program,
    clock: Clock,
    rules: policy.RetryRules,
) -> outbox.Result:
    """Send one message and return its result; raises LoginRefusedError for a refused login."""
    c = job.claimed
    started = clock.now()
    try:
        reply = await connection.send(job.sender, c.recipient_email, job.data)
    except PermanentDeliveryError as exc:
        return outcome_result(
            c, started, Outcome.PERMANENT, exc.code, exc.reply, program, clock, rules, job.zone
        )
    except RelayLoginError as exc:
        raise LoginRefusedError(exc.reply) from exc
    except TransientDeliveryError as exc:
        return outcome_result(
            c, started, Outcome.TRANSIENT, exc.code, exc.reply, program, clock, rules, job.zone
        )
    except OutcomeUnknownError as exc:
        return outcome_result(
            c, started, Outcome.UNKNOWN, None, exc.reply, program, clock, rules, job.zone
        )
    return outcome_result(
        c, started, Outcome.SENT, reply.code, reply.text, program, clock, rules, job.zone
    )


def outcome_result(
    c: outbox.Claimed,
    started: dt.datetime,
    outcome: Outcome,
    code: int | None,
    reply: str,
    program: Program,
    clock: Clock,
    rules: policy.RetryRules,
    zone: str | None = None,
) -> outbox.Result:
    """The result of one attempt, in the state the policy gives its outcome (a retry waits
    for working hours in the person's zone)."""
    now = clock.now()
    attempt_no = c.attempts + 1
    step = policy.after_attempt(
        program,
        Kind(c.kind),
        outcome,
        attempt=attempt_no,
        first_attempt_at=c.first_attempt_at or started,
        now=now,
        rules=rules,
        tz=policy.person_zone(program, zone),
    )
    if step.note:
        reply = f"{reply} ({step.note})"
    return outbox.Result(
        c, step.state, outcome, started, now, code=code, reply=reply, due_at=step.due_at
    )
