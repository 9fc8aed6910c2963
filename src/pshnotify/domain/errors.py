"""Exceptions named by how callers react to them."""

from __future__ import annotations

from collections.abc import Sequence


class InputError(Exception):
    """Bad input from a person (file, option, argument): report every problem, change nothing.

    The CLI turns it into exit status 2; each problem is one line, `FILE:LINE: field: problem`
    where a file and line are known.
    """

    def __init__(self, problems: Sequence[str], hint: str = "") -> None:
        self.problems = list(problems)
        self.hint = hint
        super().__init__("\n".join(self.problems))


class NotFoundError(InputError):
    """A person, wave or program named on the command line does not exist."""


class ConflictError(Exception):
    """The action would contradict the current state (for example, a closed wave).

    `hint` is the next step in the CLI's words. `advice` names the same step for any other
    door (`force`: do it anyway; `schedule`: schedule it for `when`; `launch_now`), which
    words it its own way: the console never shows a CLI flag."""

    def __init__(self, message: str, hint: str = "", *, advice: str = "", when: str = "") -> None:
        self.hint = hint
        self.advice = advice
        self.when = when
        super().__init__(message)


class TransientDeliveryError(Exception):
    """The relay did not take the message this time; try again later."""

    def __init__(self, code: int | None, reply: str) -> None:
        self.code = code
        self.reply = reply
        super().__init__(f"{code} {reply}" if code else reply)


class RelayLoginError(TransientDeliveryError):
    """Every relay refused our login (AUTH 535 and the like): a setting to fix, not a fault of
    any message. The dispatcher stops and leaves its messages queued, their attempts unspent."""


class PermanentDeliveryError(Exception):
    """The relay refused the message for good (5xx), or it cannot be sent through this relay
    at all (code None: an address that needs SMTPUTF8 the relay does not offer); never resend
    it."""

    def __init__(self, code: int | None, reply: str) -> None:
        self.code = code
        self.reply = reply
        super().__init__(f"{code} {reply}" if code else reply)


class OutcomeUnknownError(Exception):
    """The message's data was handed over, but no reply came: the relay may have it."""

    def __init__(self, reply: str) -> None:
        self.reply = reply
        super().__init__(reply)


class NothingToSend(Exception):  # noqa: N818 - a reason to skip, not a fault
    """Raised by a kind's send-time data (an enricher): the message has nothing left to say
    (an escalation digest whose people have all caught up). The message is skipped with this
    reason, never failed."""
