"""Show an email exactly as it would go out, without queuing or sending anything."""

from __future__ import annotations

import email.policy
import textwrap
import uuid
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from sqlalchemy import Engine, select

from pshnotify.clock import Clock
from pshnotify.domain import policy
from pshnotify.domain.delivery import Kind
from pshnotify.domain.errors import NotFoundError
from pshnotify.mail.compose import compose, envelope_for
from pshnotify.mail.kinds import KINDS, KindInput, Recipient, attachments_for, context_for
from pshnotify.mail.links import RequestLinks, with_link
from pshnotify.mail.render import Templates
from pshnotify.store import standing
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import enrollments, people


def would_not_get(
    engine: Engine, stored: StoredProgram, clock: Clock, *, kind: str, person_ref: str
) -> str | None:
    """Why this person would never get this kind of email as things stand (the policy's
    reason: not required, exempted, complete, removed, deadline passed), or None."""
    row = _person(engine, stored, person_ref)
    try:
        k = Kind(kind)
    except ValueError:
        return None  # a kind of the templates only: nothing to say
    person = standing.to_standing(row)
    if k is Kind.LAUNCH and person.status != policy.REQUIRED:
        return f"not required ({row.status}): the launch email goes to required members only"
    if k is Kind.INVITATION and person.status != policy.ENCOURAGED:
        return "invitations go to the encouraged only"
    return policy.skip_reason(stored.program, k, person, clock.now())


def _person(engine: Engine, stored: StoredProgram, person_ref: str) -> Any:
    q = (
        select(
            people.c.external_id,
            people.c.name,
            people.c.email,
            people.c.department,
            *standing.COLUMNS,
        )
        .select_from(standing.joined())
        .where(enrollments.c.program_id == stored.id)
        .where((people.c.external_id == person_ref) | (people.c.email_key == person_ref.lower()))
    )
    with engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        raise NotFoundError(
            [f"--person: nobody with id or email {person_ref!r} in program {stored.key}"],
            hint="import the roster first, or check the id",
        )
    return row


def preview(
    engine: Engine,
    stored: StoredProgram,
    templates: Templates,
    clock: Clock,
    *,
    kind: str,
    person_ref: str,
    message_id_domain: str,
    links: RequestLinks | None = None,
) -> bytes:
    """The full message bytes for `kind` to the person with this id or email."""
    program = stored.program
    row = _person(engine, stored, person_ref)
    if kind not in templates.kinds():
        raise NotFoundError(
            [f"KIND: no templates for {kind!r} in {templates.directory}"],
            hint=f"kinds: {', '.join(templates.kinds())}",
        )
    person = Recipient(row.external_id, row.name, row.email, row.department, row.timezone)
    extra = dict(KINDS[kind].sample_extra) if kind in KINDS else {}
    if kind == "extension" and row.extended_until:
        extra["deadline"] = row.extended_until.isoformat()  # the person's own, not a sample
    extra = dict(with_link(links, program, kind, row.external_id, extra))
    data = KindInput(program, row.wave_key, person, row.extended_until, extra, clock.now())
    content = templates.render(kind, context_for(kind, data))
    envelope = envelope_for(
        program,
        to_name=row.name,
        to_address=row.email,
        message_id=f"<preview-{uuid.uuid4().hex}@{message_id_domain}>",
        date=clock.now(),
        wave=row.wave_key,
        kind=kind,
    )
    return compose(envelope, content, attachments_for(kind, data))


_SHOWN_HEADERS = ("From", "Reply-To", "To", "Subject", "Date")


def readable(data: bytes) -> str:
    """The message as its recipient reads it: who it is from and to, the subject and date,
    the plain text decoded, then each attachment by name, type and size (the HTML version is
    named too; `--raw` shows the bytes that go out)."""
    message = BytesParser(policy=email.policy.default).parsebytes(data)
    width = max(len(name) for name in _SHOWN_HEADERS) + 1
    lines = [
        textwrap.fill(
            str(message[name]),
            80,
            initial_indent=f"{name + ':':<{width}} ",
            subsequent_indent=" " * (width + 1),
            break_long_words=False,
            break_on_hyphens=False,
        )
        for name in _SHOWN_HEADERS
        if message[name]
    ]
    body = message.get_body(preferencelist=("plain",))
    text = body.get_content() if isinstance(body, EmailMessage) else ""
    lines += ["", text.rstrip("\n"), ""]
    attached = [
        (part.get_filename() or "(no name)", part.get_content_type(), _size(part))
        for part in message.iter_attachments()
        if isinstance(part, EmailMessage)
    ]
    if attached:
        name_width = max(len(name) for name, _type, _n in attached)
        type_width = max(len(kind) for _name, kind, _n in attached)
        lines += ["Attachments:"]
        lines += [
            f"  {name:<{name_width}}  {kind:<{type_width}}  {_human(n)}"
            for name, kind, n in attached
        ]
    html = message.get_body(preferencelist=("html",))
    if isinstance(html, EmailMessage):
        lines.append(f"Also sent: this text as HTML ({_human(_size(html))}).")
    lines.append("--raw prints the message as it goes out.")
    return "\n".join(lines) + "\n"


def _size(part: EmailMessage) -> int:
    payload = part.get_payload(decode=True)
    return len(payload) if isinstance(payload, bytes) else 0


def _human(n: int) -> str:
    return f"{n} bytes" if n < 1024 else f"{n / 1024:.1f} KB"
