"""Alembic, driven from code: `pshnotify init` and the tests call `upgrade`.

Every command checks that the database is at the newest revision before it does anything.
That check reads the version table with one query and the newest revision from the
migration files' own `revision` / `down_revision` lines, without alembic: importing alembic
(and, for its own view of the head, every migration) took 130-200 ms of each command's
start. A test checks that both views of the head agree.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "alembic_version"  # alembic's default, which env.py keeps

# `revision = "0015"` or, in alembic's newer template, `revision: str = "0015"`.
_REVISION = re.compile(r'^revision(?:: *str)? *= *"([^"]+)"', re.M)
_DOWN_REVISION = re.compile(r'^down_revision(?:: *[^=]+)? *= *(?:"([^"]+)"|None)', re.M)


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None: not initialised)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        found = conn.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}"))
        return str(found) if found is not None else None


@functools.cache
def head_revision() -> str | None:
    """The newest revision: the one no other migration names as its down_revision."""
    revisions: set[str] = set()
    downs: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        source = path.read_text(encoding="utf-8")
        revision = _REVISION.search(source)
        if revision is None:
            continue
        revisions.add(revision.group(1))
        down = _DOWN_REVISION.search(source)
        if down is not None and down.group(1):
            downs.add(down.group(1))
    heads = revisions - downs
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have more than one head: {sorted(heads)}")
    return next(iter(heads), None)


def alembic_head(engine: Engine) -> str | None:
    """The newest revision as alembic sees it (for the test that `head_revision` agrees)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(engine)).get_current_head()


def is_current(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
