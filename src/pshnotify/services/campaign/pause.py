"""Pause and resume a wave or a whole program: nothing of it leaves while paused.

Messages already handed to a connection finish; nothing more is claimed. The scheduler also
stops queueing for a paused wave, so on resume the catch-up rules apply (the latest reminder
due, never a burst of stale ones).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from pshnotify.clock import Clock
from pshnotify.domain.errors import NotFoundError
from pshnotify.store import audit
from pshnotify.store import programs as program_repo
from pshnotify.store.programs import StoredProgram
from pshnotify.store.schema import programs, waves


@dataclass(frozen=True)
class PauseChange:
    what: str  # "wave pilot", "program psh-2023-2024"
    changed: bool


def set_paused(
    engine: Engine,
    stored: StoredProgram,
    wave: str | None,
    paused: bool,
    clock: Clock,
    *,
    actor: str,
) -> PauseChange:
    """What was paused or resumed, and whether anything changed, for the operator."""
    if wave is not None and wave not in {w.key for w in stored.program.waves}:
        raise NotFoundError(
            [f"WAVE: unknown wave {wave!r}"],
            hint=f"waves: {', '.join(w.key for w in stored.program.waves)}",
        )
    now = clock.now()
    what = f"wave {wave}" if wave else f"program {stored.key}"
    with engine.begin() as conn:
        if wave is None:
            was = conn.scalar(select(programs.c.paused).where(programs.c.id == stored.id))
        else:
            was = conn.scalar(
                select(waves.c.paused).where(waves.c.program_id == stored.id, waves.c.key == wave)
            )
        if bool(was) == paused:  # pausing a paused wave, resuming a running one
            return PauseChange(what, changed=False)
        if wave is None:
            conn.execute(update(programs).where(programs.c.id == stored.id).values(paused=paused))
        else:
            conn.execute(
                update(waves)
                .where(waves.c.program_id == stored.id, waves.c.key == wave)
                .values(paused=paused)
            )
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="pause" if paused else "resume",
            program_id=stored.id,
            subject=wave or "(program)",
        )
    return PauseChange(what, changed=True)


def paused_waves(engine: Engine, stored: StoredProgram) -> list[str]:
    """The program's waves that are paused, in the program file's order."""
    with engine.connect() as conn:
        states = program_repo.wave_states(conn, stored.id)
    return [w.key for w in stored.program.waves if w.key in states and states[w.key].paused]
