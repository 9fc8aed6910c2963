"""bench/write_cost.py: it reports each kind of write on the shared PostgreSQL, leaves no schema
behind, and refuses bad input with status 2 before it touches the database.

The figures themselves are the benchmark's business (README), not a test's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL as ADMIN
from tests.conftest import ROOT, _require_pg

pytestmark = pytest.mark.postgres
SCRIPT = ROOT / "bench" / "write_cost.py"


@pytest.fixture(autouse=True)
def _postgres() -> None:
    _require_pg()


def _bench_schemas() -> set[str]:
    engine = create_engine(ADMIN)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_%'")
            )
            return {r[0] for r in rows}
    finally:
        engine.dispose()


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--pg-url", ADMIN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_reports_the_three_writes_and_cleans_up() -> None:
    before = _bench_schemas()
    done = _run("--group", "3", "--writes", "5", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["group"], report["writes"]) == (3, 5)
    assert set(report["figures"]) == {"drain's write", "journal row", "SELECT 1"}
    for figures in report["figures"].values():
        assert figures["wall_us"] > 0
        assert figures["client_us"] >= 0
        assert figures["server_us"] >= 0
    assert _bench_schemas() <= before


@pytest.mark.parametrize("args", [("--group", "0"), ("--writes", "-1"), ("--group", "x")])
def test_bad_input_is_refused_with_status_2(args: tuple[str, ...]) -> None:
    before = _bench_schemas()
    done = _run(*args)
    assert done.returncode == 2
    assert "usage:" in done.stderr
    assert "Traceback" not in done.stderr
    assert _bench_schemas() == before
