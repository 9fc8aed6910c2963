"""Show an email exactly as it would go out, without queuing or sending anything."""

from __future__ import annotations

import uuid
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
    standing = policy.Standing(
        status=row.status,
        removed=row.removed_at is not None,
        exempted_reason=row.exempted_reason or None,
        completed=row.completed_at is not None,
        wave_key=row.wave_key,
        extended_until=row.extended_until,
    )
    if k is Kind.LAUNCH and standing.status != policy.REQUIRED:
        return f"not required ({row.status}): the launch email goes to required members only"
    if k is Kind.INVITATION and standing.status != policy.ENCOURAGED:
        return "invitations go to the encouraged only"
    return policy.skip_reason(stored.program, k, standing, clock.now())


def _person(engine: Engine, stored: StoredProgram, person_ref: str) -> Any:
    q = (
        select(
            people.c.external_id,
            people.c.name,
            people.c.email,
            people.c.department,
            people.c.timezone,
            enrollments.c.wave_key,
            enrollments.c.extended_until,
            enrollments.c.status,
            enrollments.c.removed_at,
            enrollments.c.exempted_reason,
            enrollments.c.completed_at,
        )
        .join(enrollments, enrollments.c.person_id == people.c.id)
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
