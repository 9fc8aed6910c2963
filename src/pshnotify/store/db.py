"""Engines and transactions: the durability settings for each backend live here."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError


class DatabaseUrlError(ValueError):
    """The URL cannot name a database we can open; the message says why (no password)."""


class NoDatabaseError(DatabaseUrlError):
    """The URL names a SQLite file that does not exist, and the caller only reads: creating
    it would leave an empty database behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no database at {path}")
        self.path = path


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever the URL's scheme says."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def display_url(url: str) -> str:
    """The URL with its password masked, for logs and messages."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def is_postgresql(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "postgresql"


def server_time(conn: Connection, local: dt.datetime) -> dt.datetime:
    """The database server's clock on PostgreSQL (the start of this transaction), so leases
    shared by replicas expire by one clock, never by comparing hosts' clocks; SQLite lives on
    one host, whose clock (`local`) is the database's."""
    if not is_postgresql(conn):
        return local
    at = conn.scalar(text("SELECT now()"))
    assert isinstance(at, dt.datetime)
    return at.astimezone(dt.UTC)


# How long a SQLite writer waits for another's write lock before "database is locked".
BUSY_TIMEOUT_MS = 30_000

# After a bulk change of this many rows, PostgreSQL's statistics of the tables are renewed.
STATISTICS_AFTER = 1000


def refresh_statistics(engine: Engine, changed: int, *tables: str) -> None:
    """Renew PostgreSQL's statistics of `tables` after a bulk change of `changed` rows (its docs
    advise ANALYZE after a bulk load). Call it after the changing transaction has committed.

    The planner's choices come from them, and stale ones cost far more than the ANALYZE
    (which samples at most 30,000 rows: 60 ms measured at 20,000):
    - after a launch, statistics that still say the queue is empty made every claim of 200
      gather and sort all queued rows: 23.6 ms at 16,000 queued, against 0.9 ms;
    - after a roster import into never-analysed tables, the planner expected 73 enrollments in
      the program and read the dispatcher's 200 people of a batch by scanning all 100,000 of
      them: 9.0 ms a batch, against 0.27 ms.
    Autovacuum renews them within a minute where it runs, and never where it is off. Each
    ANALYZE runs in its own transaction so that its lock waits for no writer.
    """
    if changed < STATISTICS_AFTER or not is_postgresql(engine):
        return
    for table in tables:
        with engine.begin() as conn:
            conn.execute(text(f"ANALYZE {table}"))


def make_engine(url: str, *, create: bool = True) -> Engine:
    """An engine for `url`; raises DatabaseUrlError for a URL that names no usable database,
    NoDatabaseError for a SQLite file that does not exist when not to `create` it.

    A SQLite file holds personal data: it is created 0600 (its -wal and -shm files take the
    same mode from it) in a folder created 0700. Only the file's own folder is created, and
    only inside an existing one: a mistyped path is refused, not built.
    """
    try:
        url = normalize_url(url)
        parsed = make_url(url)
        backend = parsed.get_backend_name()
    except (ArgumentError, ValueError) as exc:
        raise DatabaseUrlError(f"not a database URL ({exc})") from None
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:" and "mode=memory" not in url:
            if not create and not Path(parsed.database).exists():
                raise NoDatabaseError(Path(parsed.database))
            _private_sqlite_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"timeout": 30})
        _sqlite_durability(engine)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise DatabaseUrlError(f"cannot use {display_url(url)}: {exc}") from None


def _private_sqlite_file(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        if not folder.parent.is_dir():
            raise DatabaseUrlError(f"the folder {folder} does not exist; create it first")
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise DatabaseUrlError(f"cannot create the folder {folder}: {exc.strerror}") from None
    if path.exists():
        # Never open (and close) a database file that exists: closing any descriptor of a
        # file drops every POSIX lock this process holds on it, SQLite's included, so a
        # second engine made beside a live one let two writers in at once and corrupted the
        # file ("database disk image is malformed").
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return  # made meanwhile by another process: it is the one that chose the mode
    except OSError as exc:
        raise DatabaseUrlError(f"cannot open {path}: {exc.strerror}") from None


def _sqlite_durability(engine: Engine) -> None:
    """WAL with FULL sync, foreign keys on, and every transaction as BEGIN IMMEDIATE.

    pysqlite's own BEGIN is deferred: two writers would both start reading, then one fails to
    upgrade its lock. IMMEDIATE takes the write lock up front, so a writer waits (busy timeout)
    instead of failing half-way.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def transaction(engine: Engine, *, dry_run: bool = False) -> Iterator[Connection]:
    """One transaction; with `dry_run` it is rolled back after the work was done and counted,
    so a dry run reports exactly what the real run would change."""
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            yield conn
        except BaseException:
            trans.rollback()
            raise
        if dry_run:
            trans.rollback()
        else:
            trans.commit()
