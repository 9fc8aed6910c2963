"""Console page times with a large roster, beside a trivial baseline in the same run.

For each backend (a fresh SQLite file, or a fresh PostgreSQL schema):

1. import the sample roster of `--people` people (every wave, every rule) with the real
   roster import, launch every wave with the real `launch_wave` (the closed ones forced),
   mark the launch emails sent (one UPDATE: the drain is bench/run.py's business), record a
   tenth of the people complete through the real completions import, add two console users;
2. serve the console with `pshnotify web --now` in a process of its own;
3. sign in over HTTP (httpx) as an operator and as a viewer, and time each page: one
   warm-up request, then `--requests` timed ones; the median and the slowest are printed
   beside GET /healthz (the baseline: the same server, no database work).

    .venv/bin/python bench/console.py [--people N] [--requests R] [--backends sqlite,postgres]
                                      [--kept DIR] [--json]

`--kept DIR` times the same pages on the databases `bench/season.py --keep DIR` saved
instead (one wave of `--people`, all launched, reminded once, half complete), restored
afresh as bench/nightly.py does, at the kept nightly instant, for its wave `pilot`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pshnotify.clock import FixedClock
from pshnotify.demo.sample_roster import write_sample_roster
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.access.users import add_user
from pshnotify.services.campaign.completions import import_completions
from pshnotify.services.campaign.launch import launch_wave
from pshnotify.services.campaign.roster import import_roster
from pshnotify.settings import Settings
from pshnotify.store import migrate
from pshnotify.store.schema import messages
from run import LINK_SECRET, fresh_database, postgres_problem

ROOT = Path(__file__).resolve().parents[1]
NOW = "2024-01-15T10:00:00-05:00"  # the schools' window is open, three closed, one ahead
DEPARTMENT = "School of Engineering"
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
OPERATOR = ("bench-operator", "bench operator password")
VIEWER = ("bench-viewer", "bench viewer password")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fill(url: str, people: int, workdir: Path) -> dict[str, float]:
    settings = Settings(
        database_url=url,
        program_file=ROOT / "config" / "program.toml",
        templates_dir=ROOT / "templates" / "email",
        _env_file=None,  # type: ignore[call-arg]
    )
    clock = FixedClock(dt.datetime.fromisoformat(NOW))
    rt = Runtime(settings, clock)
    try:
        migrate.upgrade(rt.engine)
        stored = rt.program(None)
        roster = workdir / "roster.csv"
        write_sample_roster(roster, people)
        t0 = time.perf_counter()
        import_roster(rt.engine, stored, roster, clock, actor="bench")
        seconds = {"import_s": time.perf_counter() - t0}
        t0 = time.perf_counter()
        for wave in stored.program.waves:
            launch_wave(
                rt.engine,
                stored,
                wave.key,
                clock,
                actor="bench",
                message_id_domain="bench.invalid",
                force=True,
            )
        seconds["launch_s"] = time.perf_counter() - t0
        with rt.engine.begin() as conn:
            conn.execute(
                update(messages)
                .where(messages.c.kind == "launch")
                .values(state="sent", sent_at=clock.now(), attempts=1, last_code=250)
            )
        done = workdir / "completions.csv"
        _write_completions(roster, done, clock.now())
        t0 = time.perf_counter()
        import_completions(
            rt.engine,
            stored,
            done,
            clock,
            actor="bench",
            message_id_domain="bench.invalid",
            confirm=False,
        )
        seconds["completions_s"] = time.perf_counter() - t0
    finally:
        rt.close()
    add_users(url, NOW)
    return seconds


def _write_completions(roster: Path, out: Path, now: dt.datetime) -> None:
    """A tenth of the people, on days spread over the autumn (a chart with a shape)."""
    rng = random.Random(7)
    start = dt.date(2023, 9, 12)
    with roster.open(encoding="utf-8") as f, out.open("w", newline="", encoding="utf-8") as g:
        writer = csv.writer(g)
        writer.writerow(["id", "option", "completed_at"])
        for row in csv.DictReader(f):
            if rng.random() < 0.1:
                day = start + dt.timedelta(days=int(rng.triangular(0, 120, 20)))
                writer.writerow([row["id"], rng.choice("ABC"), day.isoformat()])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def add_users(url: str, now: str) -> None:
    """The operator and the viewer the pages are read as."""
    settings = Settings(
        database_url=url,
        program_file=ROOT / "config" / "program.toml",
        templates_dir=ROOT / "templates" / "email",
        _env_file=None,  # type: ignore[call-arg]
    )
    rt = Runtime(settings, FixedClock(dt.datetime.fromisoformat(now)))
    try:
        for (login, password), role, departments in (
            (OPERATOR, "operator", []),
            (VIEWER, "viewer", [DEPARTMENT]),
        ):
            add_user(
                rt.engine,
                login,
                role=role,
                departments=departments,
                password=password,
                clock=rt.clock,
                actor="bench",
            )
    finally:
        rt.close()


def serve(url: str, workdir: Path, now: str = NOW) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PSHNOTIFY_DATABASE_URL": url,
        "PSHNOTIFY_PROGRAM_FILE": str(ROOT / "config" / "program.toml"),
        "PSHNOTIFY_TEMPLATES_DIR": str(ROOT / "templates" / "email"),
        "PSHNOTIFY_HTTP_HOST": "127.0.0.1",
        "PSHNOTIFY_HTTP_PORT": str(port),
        "PSHNOTIFY_LINK_SECRET": LINK_SECRET,  # a season's program takes requests
    }
    out = (workdir / "web.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pshnotify", "web", "--now", now],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"pshnotify web did not start: {(workdir / 'web.log').read_text()}")


def signed_in(base: str, who: tuple[str, str]) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=60)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert token, "no CSRF token on /login"
    answer = client.post(
        "/login", data={"csrf_token": token.group(1), "username": who[0], "password": who[1]}
    )
    assert answer.status_code == 303, answer.text
    return client


def timed(client: httpx.Client, path: str, requests: int) -> dict[str, Any]:
    first = client.get(path)
    assert first.status_code == 200, (path, first.status_code, first.text[:300])
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    return {
        "median_ms": round(statistics.median(times), 1),
        "max_ms": round(max(times), 1),
        "bytes": len(first.content),
    }


def pages(person: str, wave: str = "schools") -> list[tuple[str, str]]:
    d = quote(DEPARTMENT)
    return [
        ("operator", "/healthz"),
        ("operator", "/"),
        ("operator", f"/waves/{wave}"),
        ("operator", f"/waves/{wave}/progress"),
        ("operator", f"/waves/{wave}/launch"),
        ("operator", "/people"),
        ("operator", "/people?q=smith"),
        ("operator", "/people?page=1000"),
        ("operator", f"/people/{person}"),
        ("operator", "/departments"),
        ("operator", f"/departments?name={d}&show=pending&page=20"),
        ("operator", f"/departments?name={d}&show=unreachable"),
        ("operator", "/audit"),
        ("viewer", "/departments"),
        ("viewer", f"/departments?name={d}&show=complete"),
        ("viewer", "/people?q=li"),
        ("viewer", f"/departments/report.csv?name={d}"),
    ]


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pshnotify-console-bench-") as tmp:
        workdir = Path(tmp)
        if args.kept is not None:
            from nightly import drop, restore

            about = json.loads((args.kept / f"{backend}.json").read_text(encoding="utf-8"))
            log(f"{backend}: restoring the season kept in {args.kept}")
            url = restore(backend, args.kept, workdir, PG_ADMIN)
            try:
                add_users(url, about["nightly"])
                results = time_pages(backend, url, workdir, args, about["nightly"], "pilot")
            finally:
                drop(backend, args.kept, PG_ADMIN)
            people = int(about["people"])
            return {"backend": backend, "people": people, "fill": {}, "pages": results}
        with fresh_database(backend, workdir, 0, PG_ADMIN) as url:
            log(f"{backend}: filling {args.people:,} people")
            fill_seconds = fill(url, args.people, workdir)
            log(f"{backend}: filled ({fill_seconds}); serving")
            results = time_pages(backend, url, workdir, args, NOW, "schools")
    return {"backend": backend, "people": args.people, "fill": fill_seconds, "pages": results}


def time_pages(
    backend: str, url: str, workdir: Path, args: argparse.Namespace, now: str, wave: str
) -> list[dict[str, Any]]:
    proc, base = serve(url, workdir, now)
    try:
        clients = {"operator": signed_in(base, OPERATOR), "viewer": signed_in(base, VIEWER)}
        person = _a_person(clients["operator"])
        results = []
        for who, path in pages(person, wave):
            result = timed(clients[who], path, args.requests)
            log(f"{backend}: {who:8} {path:60} {result['median_ms']:8.1f} ms")
            results.append({"who": who, "path": path, **result})
    finally:
        proc.terminate()
        proc.wait(30)
    return results


def _a_person(client: httpx.Client) -> str:
    """Someone in the middle of the roster, as an operator would click them."""
    page = client.get("/people?page=1000").text
    found = re.search(r'<a href="/people/([^"]+)">', page)
    assert found, "no person on page 1000"
    return found.group(1)


def print_table(result: dict[str, Any]) -> None:
    base = next(p for p in result["pages"] if p["path"] == "/healthz")["median_ms"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{result['backend']}: {result['people']:,} people; fill {result['fill']}; load {load}")
    print(f"{'who':8} {'page':58} {'median ms':>10} {'max ms':>8} {'x healthz':>9}")
    for p in result["pages"]:
        ratio = p["median_ms"] / base if base else 0
        print(
            f"{p['who']:8} {p['path'][:58]:58} {p['median_ms']:10.1f} {p['max_ms']:8.1f} "
            f"{ratio:9.1f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--kept", type=Path, default=None, metavar="DIR")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = []
    for backend in args.backends.split(","):
        if backend == "postgres" and (problem := postgres_problem(PG_ADMIN)):
            log(f"postgres skipped: {problem}")
            continue
        results.append(run_backend(backend, args))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print_table(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
