"""What one write of a drain's results costs on PostgreSQL: the sender's CPU and the server's.

The k+2 rule (`services/ledger`) makes a drain commit about once per result of each
connection, so a write's fixed cost, paid per commit, is what the rule costs. This measures
it apart from everything else: a fresh schema, a launched wave of `--people`, all of it
claimed, then `--writes` writes of `--group` results each, one after the other, through the
drain's own writer (`store.outcomes.Writer`), and for comparison:
- the same rows as one JSON row appended to a table with nothing but its primary key (what
  a commit of a journal of outcomes would cost: the floor for a statement that writes);
- `SELECT 1` (a round trip, nothing written).
The server's CPU is read from /proc for the connection's backend, so the server must run on
this host (as the development machines' does).

    .venv/bin/python bench/write_cost.py [--group 6] [--writes 400] [--pg-url URL] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pshnotify.clock import FixedClock
from pshnotify.domain.delivery import State
from pshnotify.runtime.wiring import Runtime
from pshnotify.store import migrate, outbox
from pshnotify.store.outcomes import Writer, _pg_row
from run import (
    NOW,
    PG_ADMIN_URL,
    bench_settings,
    fresh_database,
    timed_import,
    timed_launch,
    write_roster,
)

ROOT = Path(__file__).resolve().parent.parent


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _timed(pid: int, n: int, step: Callable[[int], Awaitable[Any]]) -> dict[str, float]:
    cpu, server, wall = time.process_time(), _backend_cpu(pid), time.perf_counter()
    for i in range(n):
        await step(i)
    return {
        "client_us": (time.process_time() - cpu) / n * 1e6,
        "server_us": (_backend_cpu(pid) - server) / n * 1e6,
        "wall_us": (time.perf_counter() - wall) / n * 1e6,
    }


def measure(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    os.chdir(ROOT)
    group, writes = args.group, args.writes
    people = max(args.people, 2 * group * writes + group)
    with tempfile.TemporaryDirectory(prefix="pshnotify-write-cost-") as tmp:
        roster = Path(tmp) / "roster.csv"
        write_roster(roster, people)
        with fresh_database("postgres", Path(tmp), 0, args.pg_url) as url:
            rt = Runtime(bench_settings(url, 2525, 1), FixedClock(NOW))
            try:
                migrate.upgrade(rt.engine)
                stored = rt.program(None)
                timed_import(rt, stored, roster)
                timed_launch(rt, stored)
                now = rt.clock.now()
                with rt.engine.begin() as conn:
                    batch = outbox.claim(
                        conn,
                        now=now,
                        wall=now,
                        owner="bench",
                        lease=dt.timedelta(hours=1),
                        limit=people,
                    )
                    schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
                    conn.exec_driver_sql(
                        "CREATE TABLE journal (id bigserial PRIMARY KEY, at timestamp NOT NULL, "
                        "rows jsonb NOT NULL)"
                    )
                results = [
                    outbox.Result(c, State.SENT, "sent", now, now, code=250, reply="2.0.0 Ok")
                    for c in batch
                ]
                return asyncio.run(_writes(rt, results, group, writes, str(schema), now))
            finally:
                rt.close()


async def _writes(
    rt: Runtime,
    results: list[outbox.Result],
    group: int,
    writes: int,
    schema: str,
    now: dt.datetime,
) -> dict[str, dict[str, float]]:
    writer = Writer(rt.engine, "bench")
    try:
        await writer.write(results[:group], now)  # opens the connection
        conn = writer._pg  # the writer's own connection: its backend is the one measured
        assert conn is not None
        pid = (await (await conn.execute("SELECT pg_backend_pid()")).fetchall())[0][0]
        drain = results[group : group + group * writes]
        journal = results[group + group * writes :]
        naive = now.replace(tzinfo=None)

        async def drain_write(i: int) -> None:
            await writer.write(drain[i * group : (i + 1) * group], now)

        async def journal_write(i: int) -> None:
            rows = json.dumps([_pg_row(r) for r in journal[i * group : (i + 1) * group]])
            await conn.execute(
                f"INSERT INTO {schema}.journal (at, rows) VALUES (%s, %s::jsonb)", (naive, rows)
            )

        async def select_one(_i: int) -> None:
            await conn.execute("SELECT 1")

        return {
            "drain's write": await _timed(pid, writes, drain_write),
            "journal row": await _timed(pid, writes, journal_write),
            "SELECT 1": await _timed(pid, writes, select_one),
        }
    finally:
        await writer.aclose()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--group", type=int, default=6, help="results a write (default 6)")
    p.add_argument("--writes", type=int, default=400, help="writes of each kind (default 400)")
    p.add_argument("--people", type=int, default=0, help="roster size (default: what is needed)")
    p.add_argument("--pg-url", default=PG_ADMIN_URL, help=f"admin URL (default {PG_ADMIN_URL})")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    if min(args.group, args.writes) < 1:
        p.error("--group and --writes must be at least 1")
    figures = measure(args)
    if args.json:
        print(json.dumps({"group": args.group, "writes": args.writes, "figures": figures}))
        return 0
    print(f"{args.writes} writes of {args.group} results each, one after the other")
    print(f"  {'per write, us':<16} {'sender CPU':>11} {'server CPU':>11} {'wall':>8}")
    for name, f in figures.items():
        print(f"  {name:<16} {f['client_us']:11.0f} {f['server_us']:11.0f} {f['wall_us']:8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
