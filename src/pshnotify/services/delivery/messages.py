"""Look at messages and their replies; requeue chosen ones (audited)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, update

from pshnotify.clock import Clock
from pshnotify.domain.delivery import Kind, State
from pshnotify.domain.errors import InputError
from pshnotify.domain.vocabulary import MessageWord
from pshnotify.store import audit
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import messages

RETRYABLE = (State.FAILED, State.UNKNOWN, State.CANCELLED, State.SKIPPED, State.RETRY)
COLUMNS = (
    "id",
    "kind",
    "wave_key",
    "step",
    "recipient_email",
    "state",
    "attempts",
    "due_at",
    "sent_at",
    "last_code",
    "last_reply",
    "reason",
    "message_id",
)


def _stored_state(state: str | None) -> str | None:
    """The stored state a word means (domain/vocabulary.py); the stored names are aliases."""
    if state is None:
        return None
    word = MessageWord.read(state)
    if word is None:
        raise InputError(
            [f"--state: unknown state {state!r}"],
            hint=f"states: {', '.join(w.value for w in MessageWord)}",
        )
    return word.stored.value


def _filtered(stored: StoredProgram, state: str | None, wave: str | None, kind: str | None) -> Any:
    state = _stored_state(state)
    waves = [w.key for w in stored.program.waves]
    if wave is not None and wave not in waves:  # bad input, as everywhere else
        raise InputError([f"--wave: unknown wave {wave!r}"], hint=f"waves: {', '.join(waves)}")
    kinds = [k.value for k in Kind]
    if kind is not None and kind not in kinds:
        raise InputError([f"--kind: unknown kind {kind!r}"], hint=f"kinds: {', '.join(kinds)}")
    q = select(*(messages.c[c] for c in COLUMNS)).where(messages.c.program_id == stored.id)
    if state:
        q = q.where(messages.c.state == state)
    if wave:
        q = q.where(messages.c.wave_key == wave)
    if kind:
        q = q.where(messages.c.kind == kind)
    return q


def list_messages(
    engine: Engine,
    stored: StoredProgram,
    *,
    state: str | None = None,
    wave: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    q = _filtered(stored, state, wave, kind).order_by(messages.c.id).limit(limit)
    with engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    for row in rows:  # said in the vocabulary's words, as `status` says them
        row["state"] = MessageWord.of(row["state"]).value
    return rows


def retry_messages(
    engine: Engine,
    stored: StoredProgram,
    clock: Clock,
    *,
    actor: str,
    ids: list[int] | None = None,
    state: str | None = None,
    wave: str | None = None,
) -> int:
    """Queue chosen messages again, due now, with their Message-ID unchanged."""
    if not ids and not state:
        raise InputError(["messages retry: name messages with --id or --state"])
    state = _stored_state(state)
    if state and state not in {s.value for s in RETRYABLE}:
        can = ", ".join(MessageWord.of(s).value for s in RETRYABLE)
        raise InputError([f"--state: only {can} can be retried"])
    now = clock.now()
    stmt = (
        update(messages)
        .where(
            messages.c.program_id == stored.id, messages.c.state.in_([s.value for s in RETRYABLE])
        )
        .values(
            state=State.QUEUED.value,
            due_at=now,
            reason=None,
            updated_at=now,
            attempts=0,  # an operator's retry starts the count and the age afresh
            first_attempt_at=None,
        )
    )
    if ids:
        stmt = stmt.where(messages.c.id.in_(ids))
    if state:
        stmt = stmt.where(messages.c.state == state)
    if wave:
        stmt = stmt.where(messages.c.wave_key == wave)
    with engine.begin() as conn:
        if ids:
            known = set(
                conn.scalars(
                    select(messages.c.id).where(
                        messages.c.program_id == stored.id, messages.c.id.in_(ids)
                    )
                )
            )
            if unknown := [i for i in ids if i not in known]:
                raise InputError(
                    [f"--id: no message {i} in program {stored.key}" for i in unknown],
                    hint="pshnotify messages lists them with their ids",
                )
        count = conn.execute(stmt).rowcount
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="messages.retry",
            program_id=stored.id,
            details={"ids": ids, "state": state, "wave": wave, "requeued": count},
        )
    return int(count)
