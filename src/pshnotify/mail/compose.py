"""Build the MIME message: multipart/alternative, text then HTML, traceable headers."""

from __future__ import annotations

import datetime as dt
import email.policy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from pshnotify.domain.program import Program
from pshnotify.mail.kinds import Attachment
from pshnotify.mail.render import Rendered

_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
POLICY = email.policy.SMTP  # CRLF line endings, RFC 5322 length limits


class HeaderInjectionError(ValueError):
    """A value bound for a header holds a line break or control character."""


@dataclass(frozen=True)
class Envelope:
    from_name: str
    from_address: str
    reply_to: str | None
    to_name: str
    to_address: str
    message_id: str
    date: dt.datetime
    program: str
    wave: str | None
    kind: str


def _safe(value: str, what: str) -> str:
    # Second line of defence: rosters and templates are checked on the way in.
    if _UNSAFE.search(value):
        raise HeaderInjectionError(f"{what} contains a line break or control character")
    return value


def _address(name: str, addr: str, what: str) -> Address:
    local, _, domain = _safe(addr, what).rpartition("@")
    return Address(display_name=_safe(name, what), username=local, domain=domain)


def compose(env: Envelope, content: Rendered, attachments: Sequence[Attachment] = ()) -> bytes:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = _address(env.from_name, env.from_address, "From")
    msg["To"] = _address(env.to_name, env.to_address, "To")
    if env.reply_to:
        msg["Reply-To"] = _address("", env.reply_to, "Reply-To")
    msg["Subject"] = _safe(content.subject, "Subject")
    msg["Date"] = format_datetime(env.date)
    msg["Message-ID"] = _safe(env.message_id, "Message-ID")
    msg["X-Pshnotify-Program"] = _safe(env.program, "program key")
    if env.wave:
        msg["X-Pshnotify-Wave"] = _safe(env.wave, "wave key")
    msg["X-Pshnotify-Kind"] = env.kind
    msg.set_content(content.text)
    msg.add_alternative(content.html, subtype="html")
    for a in attachments:
        msg.add_attachment(
            a.data,
            maintype=a.maintype,
            subtype=a.subtype,
            filename=_safe(a.filename, "attachment name"),
        )
    return msg.as_bytes()


def envelope_for(
    program: Program,
    *,
    to_name: str,
    to_address: str,
    message_id: str,
    date: dt.datetime,
    wave: str | None,
    kind: str,
) -> Envelope:
    """The envelope of one message of this program: sender identity from the program file."""
    sender = program.program.sender
    return Envelope(
        from_name=sender.name,
        from_address=str(sender.address),
        reply_to=str(sender.reply_to) if sender.reply_to else None,
        to_name=to_name,
        to_address=to_address,
        message_id=message_id,
        date=date.astimezone(program.tz),
        program=program.key,
        wave=wave,
        kind=kind,
    )
