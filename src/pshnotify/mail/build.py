"""One message from its parts: the kind's context, the templates, the MIME composition.

`BuildSpec` holds everything a message needs besides the program and the templates, as plain
values: the dispatcher decides what to send and makes one, and this module builds from it.
"""

from __future__ import annotations

import datetime as dt
import errno
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pshnotify.domain.program import Program
from pshnotify.mail.compose import compose, envelope_for
from pshnotify.mail.kinds import KindInput, Recipient, attachments_for, context_for
from pshnotify.mail.render import Templates


@dataclass(frozen=True)
class BuildSpec:
    kind: str
    wave_key: str | None
    person: Recipient  # for the templates
    to_name: str  # for the headers: the name and address the message was queued for
    to_address: str
    message_id: str
    date: dt.datetime
    deadline: dt.date | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def build(templates: Templates, program: Program, spec: BuildSpec) -> bytes:
    """The message's bytes, ready for DATA; raises on a template or data fault."""
    data = KindInput(program, spec.wave_key, spec.person, spec.deadline, spec.extra, spec.date)
    content = templates.render(spec.kind, context_for(spec.kind, data))
    return compose(
        envelope_for(
            program,
            to_name=spec.to_name,
            to_address=spec.to_address,
            message_id=spec.message_id,
            date=spec.date,
            wave=spec.wave_key,
            kind=spec.kind,
        ),
        content,
        attachments_for(spec.kind, data),
    )


class PassingFault(str):
    """Why a message could not be built this time, when the cause may pass: the process was
    out of descriptors (EMFILE) or memory, the disk was full. Retried, not failed for good."""


# errno values of a fault in the machine, not in the template or the data.
_PASSING_ERRNOS = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM, errno.EAGAIN, errno.EIO}
    | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
)


def build_or_fault(templates: Templates, program: Program, spec: BuildSpec) -> bytes | str:
    """The bytes, or why they could not be built: a plain str for a template or data fault
    (kept on the message, never resent), a PassingFault for one that may pass."""
    try:
        return build(templates, program, spec)
    except Exception as exc:  # a template or data fault, or the machine's
        return build_fault(exc)


def build_fault(exc: BaseException) -> str:
    text = f"could not build the message: {exc}"
    passing = isinstance(exc, MemoryError) or (
        isinstance(exc, OSError) and exc.errno in _PASSING_ERRNOS
    )
    return PassingFault(text) if passing else text
