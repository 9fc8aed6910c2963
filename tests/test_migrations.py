"""The chained migrations build exactly the schema the code declares, on both backends."""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, create_engine, select, text

from pshnotify.store import migrate
from pshnotify.store.db import make_engine
from pshnotify.store.schema import UTCDateTime, metadata

pytestmark = pytest.mark.fast  # no server: `make test-fast`


def test_migrations_match_the_declared_schema(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert migrate.is_current(engine)
        # The commands' quick view of the newest revision (no alembic) is alembic's own.
        assert migrate.head_revision() == migrate.alembic_head(engine) is not None
        assert migrate.current_revision(engine) == migrate.head_revision()
        with engine.connect() as conn, warnings.catch_warnings():
            # SQLite's reflection skips an index on an expression, saying so: those are
            # looked for in sqlite_master below instead.
            warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
            warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expr")
            context = MigrationContext.configure(
                conn, opts={"include_object": _declared_for(conn.dialect.name)}
            )
            diff = compare_metadata(context, metadata)
            if conn.dialect.name == "sqlite":
                made = set(conn.scalars(text("SELECT name FROM sqlite_master WHERE type='index'")))
                assert made >= _EXPRESSION_INDEXES
        assert diff == []
        migrate.upgrade(engine)  # running init again is harmless
        assert migrate.is_current(engine)
    finally:
        engine.dispose()


# Declared indexes on an expression, which SQLite's reflection cannot show alembic.
_EXPRESSION_INDEXES = {
    str(i.name)
    for t in metadata.tables.values()
    for i in t.indexes
    if any(not isinstance(e, Column) for e in i.expressions)
}


def _declared_for(dialect: str) -> Any:
    """Alembic compares every declared object; one made for another dialect only (`ddl_if`,
    kept by SQLAlchemy as `_ddl_if`) is not part of this database's schema."""

    def include(obj: Any, _name: Any, _type: Any, _reflected: bool, _compare_to: Any) -> bool:
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect in (None, dialect)

    return include


def test_sqlite_times_are_stored_as_sqlalchemy_stores_them(tmp_path: Path) -> None:
    """Times are text on SQLite and SQL compares them as text: the fast path that writes them
    must write exactly what SQLAlchemy's DateTime wrote into databases made before it."""
    engine = create_engine(f"sqlite:///{tmp_path / 't.db'}")
    table = Table(
        "t", MetaData(), Column("id", Integer, primary_key=True), Column("at", UTCDateTime)
    )
    old = DateTime().dialect_impl(engine.dialect).bind_processor(engine.dialect)
    assert old is not None
    toronto = ZoneInfo("America/Toronto")
    times = [
        dt.datetime(2023, 11, 5, 1, 30, tzinfo=toronto),  # the hour that happens twice
        dt.datetime(2023, 11, 5, 1, 30, fold=1, tzinfo=toronto),
        dt.datetime(2023, 9, 11, 14, 0, 0, 7, tzinfo=dt.UTC),
        dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.timezone(dt.timedelta(hours=-9))),
    ]
    try:
        with engine.begin() as conn:
            table.create(conn)
            conn.execute(table.insert(), [{"id": i, "at": t} for i, t in enumerate(times)])
            stored = [r.at for r in conn.execute(text("SELECT at FROM t ORDER BY id"))]
            back = [r.at for r in conn.execute(select(table.c.at).order_by(table.c.id))]
            later = conn.scalars(
                select(table.c.id).where(table.c.at > times[0]).order_by(table.c.id)
            ).all()
        assert stored == [old(t.astimezone(dt.UTC).replace(tzinfo=None)) for t in times]
        assert back == [t.astimezone(dt.UTC) for t in times]
        assert all(b.tzinfo for b in back)
        # (in UTC: Python compares two times of one zone by their wall clocks, fold ignored)
        first = times[0].astimezone(dt.UTC)
        assert later == [i for i, t in enumerate(times) if t.astimezone(dt.UTC) > first]
    finally:
        engine.dispose()
