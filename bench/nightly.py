"""Replay the season's nightly reports on a database kept by `bench/season.py --keep DIR`.

    .venv/bin/python bench/nightly.py DIR [--backends sqlite,postgres] [--repeat 3]
                                          [--profile FILE] [--json]

Each repeat restores the kept database afresh (a copy of `sqlite.db`; `postgres.dump`
restored into its schema, then ANALYZE, as a server that had time to analyze would have),
brings it to this checkout's schema (`store.migrate.upgrade`, not timed), and times
`pshnotify run --once` at the kept nightly instant as a whole command, into a counting sink
(smtp_sink.py): one report per officer, half their people complete. It prints the median,
the spread and the load average. `--profile FILE` runs the command once under cProfile
instead (FILE.BACKEND.prof, to read with pstats).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from pshnotify.store import migrate
from run import PG_ADMIN_URL, _load, log
from season import command_env
from smtp_sink import Sink


def restore(backend: str, keep: Path, workdir: Path, pg_url: str) -> str:
    """A URL to a fresh copy of the kept database, at this checkout's schema."""
    about = json.loads((keep / f"{backend}.json").read_text(encoding="utf-8"))
    if backend == "sqlite":
        copy = workdir / "nightly.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
        shutil.copyfile(about["file"], copy)
        url = f"sqlite:///{copy}"
    else:
        schema = about["schema"]
        admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            admin.dispose()
        plain = pg_url.split("?")[0].replace("postgresql+psycopg://", "postgresql://")
        subprocess.run(["pg_restore", "-d", plain, about["file"]], check=True)
        url = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    engine = create_engine(url)
    try:
        migrate.upgrade(engine)
        if backend == "postgres":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()
    return url


def drop(backend: str, keep: Path, pg_url: str) -> None:
    if backend != "postgres":
        return
    schema = json.loads((keep / "postgres.json").read_text(encoding="utf-8"))["schema"]
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    finally:
        admin.dispose()


def once(
    backend: str, keep: Path, workdir: Path, pg_url: str, profile: Path | None
) -> dict[str, Any]:
    about = json.loads((keep / f"{backend}.json").read_text(encoding="utf-8"))
    url = restore(backend, keep, workdir, pg_url)
    with Sink() as sink:
        env = command_env(url, sink.port, 8)
        run = ["run", "--once", "--now", about["nightly"], "--json"]
        cmd = [sys.executable, "-m", "pshnotify", *run]
        if profile is not None:  # every thread's profile: the reports are built in one
            out = f"{profile}.{backend}.prof"
            cmd = [sys.executable, str(Path(__file__).with_name("profile_threads.py")), out, *run]
        load = _load()
        t0 = time.perf_counter()
        done = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"bench/nightly.py: the command failed:\n{done.stderr[-2000:]}")
        sent = sink.count
    return {"seconds": round(seconds, 3), "sent": sent, "load_1min": load}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("keep", type=Path, help="the folder season.py --keep wrote")
    p.add_argument("--backends", default="sqlite,postgres")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--pg-url", default=PG_ADMIN_URL)
    p.add_argument("--profile", type=Path, default=None, metavar="FILE")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pshnotify-nightly-") as tmp:
        for backend in args.backends.split(","):
            if not (args.keep / f"{backend}.json").exists():
                log(f"{backend}: nothing kept in {args.keep}, skipped")
                continue
            runs = []
            try:
                for _ in range(1 if args.profile else args.repeat):
                    r = once(backend, args.keep, Path(tmp), args.pg_url, args.profile)
                    said = f"{r['sent']} reports in {r['seconds']:.2f} s, load {r['load_1min']}"
                    log(f"{backend}: {said}")
                    runs.append(r)
            finally:
                drop(backend, args.keep, args.pg_url)
            times = [r["seconds"] for r in runs]
            results[backend] = {
                "median_s": round(statistics.median(times), 3),
                "min_s": min(times),
                "max_s": max(times),
                "sent": [r["sent"] for r in runs],
                "load_1min": [r["load_1min"] for r in runs],
            }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for backend, r in results.items():
            print(
                f"{backend}: nightly reports, median {r['median_s']:.2f} s "
                f"({r['min_s']:.2f}-{r['max_s']:.2f}) of {len(r['sent'])}, "
                f"sent {r['sent']}, load {r['load_1min']}"
            )
    return 0


if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parents[1])
    sys.exit(main())
