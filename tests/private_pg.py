"""A PostgreSQL server of a test's own (initdb + pg_ctl on a free port in a temp folder), which
the test may restart, stop or cut off: the shared server on 5432 is never disturbed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.ci import missing


def _server_bin_dirs() -> list[Path]:
    """Where PostgreSQL's server programs may be, most specific first: the folder the
    environment names, `pg_config --bindir`, Debian's /usr/lib/postgresql/N/bin (newest
    first), then the PATH."""
    found: list[Path] = []
    if named := os.environ.get("PSHNOTIFY_TEST_PG_BIN"):
        found.append(Path(named))
    try:
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        found.append(Path(bindir))
    except (OSError, subprocess.SubprocessError):
        pass
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    found += sorted(debian, key=lambda p: _version(p.parent.name), reverse=True)
    if on_path := shutil.which("initdb"):
        found.append(Path(on_path).parent)
    return found


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def find_server_bin() -> Path | None:
    """The first folder holding both initdb and pg_ctl, or None."""
    for folder in _server_bin_dirs():
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


BIN = find_server_bin() or Path("/nonexistent")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a server binary as the postgres user (it refuses to run as root)."""
    cmd = list(args)
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)


@dataclass
class PrivatePostgres:
    folder: Path
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        _as_postgres(
            str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8"
        )
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\nfsync = off\n"
                "max_connections = 60\nshared_buffers = 32MB\n"
            )

    def start(self) -> None:
        _as_postgres(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "log"),
            "-w",
            "start",
        )

    def stop(self) -> None:
        _as_postgres(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        _as_postgres(
            str(BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "log"),
            "-m",
            "fast",
            "-w",
            "restart",
        )

    def terminate_backends(self) -> int:
        """Kill every other session's backend (what `pg_terminate_backend` does to one)."""
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                return len(
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                        )
                    ).all()
                )
        finally:
            engine.dispose()


def private_postgres() -> PrivatePostgres:
    if not (BIN / "initdb").is_file():
        missing(
            "no PostgreSQL server programs (initdb, pg_ctl) in PSHNOTIFY_TEST_PG_BIN, "
            "pg_config --bindir, /usr/lib/postgresql/*/bin or the PATH"
        )
    folder = Path(tempfile.mkdtemp(prefix="pshnotify-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PrivatePostgres(folder, _free_port())
    server.init()
    server.start()
    return server


def remove(server: PrivatePostgres) -> None:
    _as_postgres(
        str(BIN / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "stop", check=False
    )
    shutil.rmtree(server.folder, ignore_errors=True)
