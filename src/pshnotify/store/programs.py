"""Stored programs: the TOML text of each program, and each wave's runtime state."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, select, update

from pshnotify.domain.program import Program, parse_program
from pshnotify.store.schema import programs, waves


@dataclass(frozen=True)
class StoredProgram:
    id: int
    program: Program
    paused: bool

    @property
    def key(self) -> str:
        return self.program.key


def save_program(conn: Connection, program: Program, text: str, path: str, now: dt.datetime) -> int:
    """Insert or refresh the program; returns its id. Waves get a state row each."""
    row = conn.execute(
        select(programs.c.id, programs.c.source_text).where(programs.c.key == program.key)
    ).first()
    values = {
        "name": program.program.name,
        "cycle": program.program.cycle,
        "source_path": path,
        "source_text": text,
        "loaded_at": now,
    }
    if row is None:
        result = conn.execute(programs.insert().values(key=program.key, **values))
        program_id = int(result.inserted_primary_key[0])  # type: ignore[index]
    else:
        program_id = int(row.id)
        if row.source_text != text:
            conn.execute(update(programs).where(programs.c.id == program_id).values(**values))
    known = set(conn.scalars(select(waves.c.key).where(waves.c.program_id == program_id)))
    new = [{"program_id": program_id, "key": w.key} for w in program.waves if w.key not in known]
    if new:
        conn.execute(waves.insert(), new)
    return program_id


def load_program(conn: Connection, key: str) -> StoredProgram | None:
    row = conn.execute(select(programs).where(programs.c.key == key)).first()
    if row is None:
        return None
    return StoredProgram(
        int(row.id), parse_program(row.source_text, row.source_path), bool(row.paused)
    )


def load_program_by_id(conn: Connection, program_id: int) -> StoredProgram:
    key = conn.scalar(select(programs.c.key).where(programs.c.id == program_id))
    stored = load_program(conn, str(key))
    assert stored is not None
    return stored


def program_keys(conn: Connection) -> list[str]:
    return list(conn.scalars(select(programs.c.key).order_by(programs.c.key)))


@dataclass(frozen=True)
class WaveState:
    key: str
    launched_at: dt.datetime | None
    launched_by: str | None
    paused: bool
    launch_at: dt.datetime | None = None  # scheduled, not yet begun
    launch_at_by: str | None = None


def wave_states(conn: Connection, program_id: int) -> dict[str, WaveState]:
    rows = conn.execute(select(waves).where(waves.c.program_id == program_id))
    return {
        r.key: WaveState(
            r.key, r.launched_at, r.launched_by, bool(r.paused), r.launch_at, r.launch_at_by
        )
        for r in rows
    }


def schedule_launch(
    conn: Connection, program_id: int, wave: str, at: dt.datetime | None, actor: str | None
) -> bool:
    """Set (or, with None, withdraw) a wave's scheduled launch, only while it has not begun;
    True if it changed."""
    done = conn.execute(
        update(waves)
        .where(waves.c.program_id == program_id, waves.c.key == wave, waves.c.launched_at.is_(None))
        .values(launch_at=at, launch_at_by=actor)
    )
    return bool(done.rowcount)


def mark_launched(
    conn: Connection, program_id: int, wave: str, now: dt.datetime, actor: str
) -> None:
    """Record the first launch of a wave; later launches keep the first instant."""
    conn.execute(
        update(waves)
        .where(waves.c.program_id == program_id, waves.c.key == wave, waves.c.launched_at.is_(None))
        .values(launched_at=now, launched_by=actor, launch_at=None, launch_at_by=None)
    )


def paused_scopes(conn: Connection) -> set[tuple[int, str | None]]:
    """(program id, None) for each paused program, (program id, wave key) for each paused wave."""
    found: set[tuple[int, str | None]] = {
        (r.id, None) for r in conn.execute(select(programs.c.id).where(programs.c.paused.is_(True)))
    }
    found |= {
        (r.program_id, r.key)
        for r in conn.execute(
            select(waves.c.program_id, waves.c.key).where(waves.c.paused.is_(True))
        )
    }
    return found


class ProgramCache:
    """Programs by id, read once per process (their text changes only through `init`/`run`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._programs: dict[int, StoredProgram] = {}

    def load(self, program_ids: set[int]) -> None:
        """Read the programs not yet known (call it in a thread, not on the event loop)."""
        missing = program_ids - self._programs.keys()
        if missing:
            with self.engine.connect() as conn:
                for program_id in missing:
                    self._programs[program_id] = load_program_by_id(conn, program_id)

    def get(self, program_id: int) -> StoredProgram:
        if program_id not in self._programs:
            self.load({program_id})
        return self._programs[program_id]
