"""Shared fixtures: real databases (SQLite files, PostgreSQL schemas) and a real SMTP server.

PostgreSQL tests run against 127.0.0.1:5432 (database `test`, user `postgres`), each in a
schema of its own that is dropped afterwards. Without the server they are skipped, except in
CI (tests/ci.py), where a missing server is a failure.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from pshnotify.clock import FixedClock
from pshnotify.runtime.wiring import Runtime
from pshnotify.settings import Settings
from pshnotify.store import migrate
from pshnotify.store.db import make_engine
from tests.ci import missing
from tests.smtp_server import SmtpServer

ROOT = Path(__file__).resolve().parents[1]
PROGRAM_FILE = ROOT / "config" / "program.toml"
TEMPLATES = ROOT / "templates" / "email"
# Signs the emails' personal links (the shipped program takes requests).
LINK_SECRET = "test link secret, 32 characters or more"
PG_ADMIN_URL = os.environ.get(
    "PSHNOTIFY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
NY = dt.timezone(dt.timedelta(hours=-4))  # EDT, for readable instants in September tests


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:
        return str(exc).splitlines()[0]
    return None


_PG_PROBLEM: str | None = None
_PG_CHECKED = False


def _require_pg() -> None:
    global _PG_PROBLEM, _PG_CHECKED
    if not _PG_CHECKED:
        _PG_PROBLEM, _PG_CHECKED = _pg_available(), True
    if _PG_PROBLEM:
        missing(f"PostgreSQL not answering: {_PG_PROBLEM}")


@pytest.fixture(scope="session")
def _migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head per test process; each test gets a copy of it (a file
    copy costs well under a millisecond, the 18 migrations most of a second)."""
    path = tmp_path_factory.mktemp("template") / "pshnotify.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file (a copy of one migrated in this process), or
    a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        path = tmp_path / "pshnotify.db"
        shutil.copyfile(request.getfixturevalue("_migrated_sqlite"), path)
        yield f"sqlite:///{path}"
        return
    _require_pg()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


FAST = "fast"  # the marker of the tier `make test-fast` runs: no server of any kind


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    if request.node.get_closest_marker(FAST):
        pytest.fail("a test marked fast may not start an SMTP server: unmark it", pytrace=False)
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(db_url: str, request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The test's settings; the relay is the `smtp` fixture's server, except for a test marked
    fast, which gets a port nothing answers on (one that sends then fails, loudly)."""
    if request.node.get_closest_marker(FAST):
        host, port = "127.0.0.1", _closed_port()
    else:
        smtp: SmtpServer = request.getfixturevalue("smtp")
        host, port = smtp.host, smtp.port
    return Settings(
        database_url=db_url,
        program_file=PROGRAM_FILE,
        templates_dir=TEMPLATES,
        smtp_host=host,
        smtp_port=port,
        smtp_tls="none",
        smtp_connections=1,  # tests that want more say so
        message_id_domain="test.pshnotify.invalid",
        link_secret=LINK_SECRET,  # the shipped program takes requests
        _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(dt.datetime(2023, 9, 11, 9, 30, tzinfo=NY))


@pytest.fixture
def runtime(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    rt = Runtime(settings, clock)
    yield rt
    rt.engine.dispose()


@pytest.fixture
def engine(runtime: Runtime) -> Engine:
    return runtime.engine


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The same settings as PSHNOTIFY_* variables, for CLI tests."""
    values = {
        "PSHNOTIFY_DATABASE_URL": settings.database_url,
        "PSHNOTIFY_PROGRAM_FILE": str(settings.program_file),
        "PSHNOTIFY_TEMPLATES_DIR": str(settings.templates_dir),
        "PSHNOTIFY_SMTP_HOST": settings.smtp_host,
        "PSHNOTIFY_SMTP_PORT": str(settings.smtp_port),
        "PSHNOTIFY_SMTP_CONNECTIONS": str(settings.smtp_connections),
        "PSHNOTIFY_HTTP_PORT": "0",  # any free port: tests run side by side
        "PSHNOTIFY_MESSAGE_ID_DOMAIN": settings.message_id_domain,
        "PSHNOTIFY_ACTOR": "test-operator",
        "PSHNOTIFY_LINK_SECRET": LINK_SECRET,
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked slow first (a stable sort keeps the rest in order), so that with two
    workers none of them starts last and keeps the run waiting alone for a minute."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
