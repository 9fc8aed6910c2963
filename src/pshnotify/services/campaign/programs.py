"""Which program a command acts on, and keeping the stored copy of the program file fresh."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from pshnotify.clock import Clock
from pshnotify.domain.errors import NotFoundError
from pshnotify.domain.program import load_program as read_program_file
from pshnotify.store import audit
from pshnotify.store import programs as repo
from pshnotify.store.programs import StoredProgram


def register_program_file(engine: Engine, path: Path, clock: Clock, actor: str) -> StoredProgram:
    """Validate a program file and store it (new, or refreshed when its text changed)."""
    program, text = read_program_file(path)
    with engine.begin() as conn:
        before = repo.load_program(conn, program.key)
        program_id = repo.save_program(conn, program, text, str(path), clock.now())
        if before is None or before.program.model_dump() != program.model_dump():
            audit.record(
                conn,
                at=clock.now(),
                actor=actor,
                action="program.load" if before is None else "program.update",
                program_id=program_id,
                subject=str(path),
            )
        stored = repo.load_program(conn, program.key)
    assert stored is not None
    return stored


def select_program(
    engine: Engine, program_file: Path, key: str | None, clock: Clock, actor: str
) -> StoredProgram:
    """`--program KEY` if given, else the program file's program (stored on first use)."""
    if key is None:
        return register_program_file(engine, program_file, clock, actor)
    with engine.connect() as conn:
        stored = repo.load_program(conn, key)
        known = repo.program_keys(conn)
    if stored is None:
        file_program, _ = read_program_file(program_file)
        if file_program.key == key:
            return register_program_file(engine, program_file, clock, actor)
        raise NotFoundError(
            [f"--program: no program {key!r} in the database"],
            hint=f"known programs: {', '.join(known) or 'none'}; load one with "
            "`pshnotify program load FILE`",
        )
    return stored


def all_programs(engine: Engine) -> list[StoredProgram]:
    with engine.connect() as conn:
        keys = repo.program_keys(conn)
        return [p for k in keys if (p := repo.load_program(conn, k)) is not None]
