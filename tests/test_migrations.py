"""The chained migrations build exactly the schema the code declares, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from pshnotify.store import migrate
from pshnotify.store.db import make_engine
from pshnotify.store.schema import metadata


def test_migrations_match_the_declared_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert migrate.is_current(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        migrate.upgrade(engine)  # running init again is harmless
        assert migrate.is_current(engine)
    finally:
        engine.dispose()
