"""The learning system's nightly export against the roster import, in the same run.

    .venv/bin/python bench/completions.py [--people N] [--repeat R] [--backends sqlite,postgres]

Each repeat, per backend, in a fresh database (an SQLite file or a new PostgreSQL schema):

1. imports a generated roster of `--people` rows, everyone required in one wave (the baseline:
   the roster import's rows/s);
2. imports a completions export naming every one of them by id, with confirmations, as
   `pshnotify completions import` does: rows/s, and the ratio to the roster.

The target (issue 13): 20,000 rows/s or more for 100,000 rows, on both backends, at the
roster's pace. Prints a table, or `--json`. The machine's load average is printed beside it:
on a shared machine read the ratio, which the load touches less than either figure.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pshnotify.clock import FixedClock
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.completions import import_completions
from pshnotify.services.campaign.roster import import_roster
from pshnotify.settings import Settings
from pshnotify.store import migrate
from run import (
    ACTOR,
    BACKENDS,
    NOW,
    PG_ADMIN_URL,
    PROGRAM_FILE,
    ROOT,
    TEMPLATES_DIR,
    fresh_database,
    log,
    postgres_problem,
    write_roster,
)

TARGET = 20_000.0


def write_completions(path: Path, count: int, before: dt.datetime = NOW) -> None:
    """The first `count` of the generated roster (E000001, ...), option A, on the day before
    `before` (by default NOW)."""
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "email", "option", "completed_at"])
        base = before - dt.timedelta(days=1)
        for i in range(1, count + 1):
            at = (base + dt.timedelta(seconds=i % 36_000)).isoformat()
            w.writerow([f"E{i:06d}", "", "A", at])


def one_run(backend: str, run: int, roster: Path, export: Path, workdir: Path) -> dict[str, float]:
    with fresh_database(backend, workdir, run, PG_ADMIN_URL) as url:
        settings = Settings(
            database_url=url,
            program_file=PROGRAM_FILE,
            templates_dir=TEMPLATES_DIR,
            message_id_domain="bench.invalid",
            _env_file=None,  # type: ignore[call-arg]
        )
        rt = Runtime(settings, FixedClock(NOW))
        try:
            migrate.upgrade(rt.engine)
            stored = rt.program(None)
            t0 = time.perf_counter()
            roster_report = import_roster(rt.engine, stored, roster, rt.clock, actor=ACTOR)
            roster_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = import_completions(
                rt.engine,
                stored,
                export,
                rt.clock,
                actor=ACTOR,
                message_id_domain=settings.message_id_domain,
            )
            completions_s = time.perf_counter() - t0
        finally:
            rt.engine.dispose()
    assert report.counts["recorded"] == report.rows, report.as_dict()
    assert report.confirmations == report.rows, report.as_dict()
    sample = {
        "roster_rows_per_s": roster_report.rows / roster_s,
        "completions_rows_per_s": report.rows / completions_s,
        "roster_s": roster_s,
        "completions_s": completions_s,
    }
    sample["ratio"] = sample["completions_rows_per_s"] / sample["roster_rows_per_s"]
    sample["load_1min"] = os.getloadavg()[0]
    log(
        f"  {backend} run {run}: roster {roster_s:.2f} s "
        f"({sample['roster_rows_per_s']:,.0f}/s), completions {completions_s:.2f} s "
        f"({sample['completions_rows_per_s']:,.0f}/s), ratio {sample['ratio']:.2f}, "
        f"load average {sample['load_1min']:.2f}"
    )
    return sample


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--people", type=int, default=100_000, help="rows (default 100000)")
    p.add_argument("--repeat", type=int, default=1, help="runs per backend (default 1)")
    p.add_argument(
        "--backends",
        nargs="+",
        default=list(BACKENDS),
        help="sqlite,postgres (commas or spaces; default both)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    args.backends = [b for arg in args.backends for b in arg.split(",") if b]
    if unknown := [b for b in args.backends if b not in BACKENDS]:
        p.error(f"--backends: unknown {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    os.chdir(ROOT)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pshnotify-bench-") as tmp:
        workdir = Path(tmp)
        roster, export = workdir / "roster.csv", workdir / "completions.csv"
        write_roster(roster, args.people)
        write_completions(export, args.people)
        for backend in args.backends:
            if backend == "postgres" and (problem := postgres_problem(PG_ADMIN_URL)):
                log(f"skipping PostgreSQL: {problem}")
                continue
            samples = [one_run(backend, r, roster, export, workdir) for r in range(args.repeat)]
            results[backend] = {
                key: statistics.median(s[key] for s in samples) for key in samples[0]
            } | {"runs": samples}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if args.json:
        summary = {"people": args.people, "target": TARGET, "load_average": load, **results}
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{args.people:,} rows, median of {args.repeat} run(s); target {TARGET:,.0f} rows/s; "
        f"load average {load}"
    )
    print(f"{'':28}" + "".join(f"{b:>14}" for b in results))
    for key, label in (
        ("roster_rows_per_s", "roster import, rows/s"),
        ("completions_rows_per_s", "completions import, rows/s"),
        ("ratio", "completions / roster"),
    ):
        cells = "".join(
            f"{results[b][key]:>14,.2f}" if key == "ratio" else f"{results[b][key]:>14,.0f}"
            for b in results
        )
        print(f"{label:28}{cells}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
