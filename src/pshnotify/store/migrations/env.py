"""Alembic environment: the engine is handed in by `pshnotify.store.migrate`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from pshnotify.store.schema import metadata

engine = context.config.attributes.get("engine")
if not isinstance(engine, Engine):  # pragma: no cover - only when alembic is run by hand
    from pshnotify.settings import load_settings
    from pshnotify.store.db import make_engine

    engine = make_engine(load_settings().database_url)

with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
