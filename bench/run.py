"""Throughput benchmark: roster import, wave launch and SMTP dispatch, per database backend.

For each backend (a fresh SQLite file, or a fresh PostgreSQL schema) and each repeat:

1. import a generated roster (`--people` rows) with `import_roster`        -> rows/s
2. launch every wave of the seed program with `launch_wave(force=True)`    -> queued rows/s
3. drain the outbox with the real dispatcher into a counting SMTP sink     -> messages/s
4. baseline: a bare aiosmtplib loop over one connection sending the same
   number of identical, prebuilt messages to the same kind of sink          -> messages/s

Medians over `--repeat` runs are printed as a table per backend (or as JSON with `--json`);
the ratio is the median of each run's pipeline/baseline ratio. Each run starts from an empty
database. Progress goes to stderr. PSHNOTIFY_* variables other than the ones set here (batch
size, say) still apply, as they would to `pshnotify run`.

Run it with the project's virtualenv:

    .venv/bin/python bench/run.py [--people N] [--repeat R] [--backends sqlite,postgres] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, text

from pshnotify.clock import FixedClock
from pshnotify.demo.sample_roster import write_sample_roster
from pshnotify.domain.delivery import Kind
from pshnotify.mail.compose import compose, envelope_for
from pshnotify.mail.kinds import Recipient, launch_context
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.launch import launch_wave
from pshnotify.services.roster import import_roster
from pshnotify.settings import Settings
from pshnotify.store import migrate
from pshnotify.store.programs import StoredProgram

ROOT = Path(__file__).resolve().parent.parent
PROGRAM_FILE = Path("config/program.toml")
TEMPLATES_DIR = Path("templates/email")
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# A Monday inside the seed program's working hours: launch emails are due at once.
NOW = dt.datetime(2023, 9, 11, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
ACTOR = "bench"
SINK_HOST = "127.0.0.1"
BASELINE_RECIPIENT = "baseline.person@example.edu"
BACKENDS = ("sqlite", "postgres")
METRICS = (
    "import_rows_per_s",
    "launch_rows_per_s",
    "pipeline_msg_per_s",
    "baseline_msg_per_s",
    "ratio",
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the SMTP sink --------------------------------------------------------------------------------
class _CountingHandler:
    """Accept everything, keep nothing: only count the messages."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.count += 1  # only the sink's own event-loop thread writes it
        return "250 OK"


class Sink:
    """An aiosmtpd server on a free loopback port, run in a thread by its Controller."""

    def __init__(self) -> None:
        self.handler = _CountingHandler()
        self.port = _free_port()
        # server_hostname: otherwise every session calls socket.getfqdn() for its greeting.
        self._controller = Controller(
            self.handler, hostname=SINK_HOST, port=self.port, server_hostname="sink.bench.invalid"
        )

    @property
    def count(self) -> int:
        return self.handler.count

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


# Connections for both senders (--connections); a list so parse_args can set it.
CONNECTIONS = [1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((SINK_HOST, 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def running_sink() -> Iterator[Sink]:
    sink = Sink()
    sink.start()
    try:
        yield sink
    finally:
        sink.stop()


# -- databases ------------------------------------------------------------------------------------
def postgres_problem(admin_url: str) -> str | None:
    """None when PostgreSQL answers, else the first line of the error."""
    try:
        engine = create_engine(admin_url, connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.execute(text("select 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


@contextmanager
def fresh_database(backend: str, workdir: Path, run: int, admin_url: str) -> Iterator[str]:
    """A URL to an empty database: a new SQLite file, or a new PostgreSQL schema (dropped after)."""
    if backend == "sqlite":
        path = workdir / f"bench-{run}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            sep = "&" if "?" in admin_url else "?"
            yield f"{admin_url}{sep}options=-csearch_path%3D{schema}"
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


# -- one measurement ------------------------------------------------------------------------------
@dataclass
class Sample:
    """One repeat on one backend."""

    imported: int
    queued: int
    sent: int
    message_bytes: int
    import_s: float
    launch_s: float
    pipeline_s: float
    baseline_s: float
    queued_by_wave: dict[str, int] = field(default_factory=dict)
    load_before: float = -1.0
    load_after: float = -1.0

    def rates(self) -> dict[str, float]:
        pipeline = _rate(self.sent, self.pipeline_s)
        baseline = _rate(self.sent, self.baseline_s)
        return {
            "import_rows_per_s": _rate(self.imported, self.import_s),
            "launch_rows_per_s": _rate(self.queued, self.launch_s),
            "pipeline_msg_per_s": pipeline,
            "baseline_msg_per_s": baseline,
            "ratio": pipeline / baseline if baseline else 0.0,
        }


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def bench_settings(url: str, sink: Sink) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "program_file": PROGRAM_FILE,
        "templates_dir": TEMPLATES_DIR,
        "smtp_host": SINK_HOST,
        "smtp_port": sink.port,
        "message_id_domain": "bench.invalid",
        "smtp_connections": CONNECTIONS[0],
        "_env_file": None,  # no .env: only these values (and PSHNOTIFY_* variables) count
    }
    return Settings(**values)


def _load() -> float:
    """The 1-minute load average: other work on the machine skews every figure here."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


def measure(url: str, roster: Path, sink: Sink) -> Sample:
    load_before = _load()
    log(f"  load average {load_before} on {os.cpu_count()} CPUs")
    settings = bench_settings(url, sink)
    rt = Runtime(settings, FixedClock(NOW))
    try:
        migrate.upgrade(rt.engine)
        stored = rt.program(None)

        log("  import ...")
        t0 = time.perf_counter()
        report = import_roster(rt.engine, stored, roster, rt.clock, actor=ACTOR)
        import_s = time.perf_counter() - t0
        log(
            f"  import: {report.rows:,} rows in {import_s:.2f} s "
            f"({_rate(report.rows, import_s):,.0f} rows/s)"
        )

        by_wave: dict[str, int] = {}
        t0 = time.perf_counter()
        for wave in stored.program.waves:
            t1 = time.perf_counter()
            done = launch_wave(
                rt.engine,
                stored,
                wave.key,
                rt.clock,
                actor=ACTOR,
                message_id_domain=settings.message_id_domain,
                force=True,
            )
            by_wave[wave.key] = done.queued
            log(
                f"    launch {wave.key}: {done.queued:,} queued in {time.perf_counter() - t1:.2f} s"
            )
        launch_s = time.perf_counter() - t0
        queued = sum(by_wave.values())
        log(
            f"  launch: {queued:,} rows queued in {launch_s:.2f} s "
            f"({_rate(queued, launch_s):,.0f} rows/s) {by_wave}"
        )

        sent, pipeline_s = drain(rt, sink, queued)
        message = sample_message(rt, stored)
        baseline_s = baseline(sink, str(stored.program.program.sender.address), message, sent)
        return Sample(
            imported=report.rows,
            queued=queued,
            sent=sent,
            message_bytes=len(message),
            import_s=import_s,
            launch_s=launch_s,
            pipeline_s=pipeline_s,
            baseline_s=baseline_s,
            queued_by_wave=by_wave,
            load_before=load_before,
            load_after=_load(),
        )
    finally:
        rt.engine.dispose()


def drain(rt: Runtime, sink: Sink, expected: int) -> tuple[int, float]:
    """Run the real dispatcher until nothing is due; returns (messages sent, seconds)."""
    dispatcher = rt.dispatcher()
    before = sink.count
    progress = _Progress("drain", expected)
    log(f"  drain: {expected:,} messages (batch size {rt.settings.batch_size}) ...")
    t0 = time.perf_counter()
    report = asyncio.run(dispatcher.run_once(on_progress=progress))
    elapsed = time.perf_counter() - t0
    received = sink.count - before
    sent = report.outcomes.get("sent", 0)
    first, last = progress.first_and_last(10_000)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    log(
        f"  drain: first 10,000 at {first:,.0f} msg/s, last 10,000 at {last:,.0f} msg/s "
        f"(claims stay flat if these match); peak RSS of the process {peak_mb:,.0f} MB"
    )
    log(
        f"  drain: {sent:,} sent in {elapsed:.2f} s ({_rate(sent, elapsed):,.0f} msg/s); "
        f"outcomes {dict(report.outcomes)}; sink received {received:,}"
    )
    if sent != expected or received != sent:
        log(
            f"  WARNING: expected {expected:,} sent, dispatcher says {sent:,}, "
            f"sink counted {received:,}"
        )
    return sent, elapsed


class _Progress:
    """A dispatcher progress callback that logs a line at most every `every` seconds."""

    def __init__(self, label: str, total: int, every: float = 5.0) -> None:
        self.label, self.total, self.every = label, total, every
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.marks: list[tuple[int, float]] = [(0, self.start)]

    def first_and_last(self, span: int) -> tuple[float, float]:
        """Rates over the first and the last `span` messages claimed."""
        if len(self.marks) < 2:
            return 0.0, 0.0
        head = next((m for m in self.marks if m[0] >= span), self.marks[-1])
        end = self.marks[-1]
        tail = next((m for m in reversed(self.marks) if m[0] <= end[0] - span), self.marks[0])
        return (_rate(head[0], head[1] - self.start), _rate(end[0] - tail[0], end[1] - tail[1]))

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        self.marks.append((self.done, now))
        if now - self.last >= self.every:
            self.last = now
            log(
                f"    {self.label}: {self.done:,}/{self.total:,} "
                f"({_rate(self.done, now - self.start):,.0f}/s)"
            )


def sample_message(rt: Runtime, stored: StoredProgram) -> bytes:
    """One real launch email, rendered and composed the way the dispatcher does it."""
    program = stored.program
    wave = program.waves[0].key
    person = Recipient("E000001", "Zoë Brontë", BASELINE_RECIPIENT, "Human Resources")
    content = rt.templates().render(Kind.LAUNCH.value, launch_context(program, wave, person))
    return compose(
        envelope_for(
            program,
            to_name=person.name,
            to_address=person.email,
            message_id=f"<{uuid.uuid4().hex}@bench.invalid>",
            date=rt.clock.now(),
            wave=wave,
            kind=Kind.LAUNCH.value,
        ),
        content,
    )


def baseline(sink: Sink, sender: str, message: bytes, count: int) -> float:
    """Seconds for a bare aiosmtplib loop to send `count` copies of `message` on one connection."""
    before = sink.count
    log(f"  baseline: {count:,} x {len(message):,} bytes ...")
    elapsed = asyncio.run(_bare_loops(sink.port, sender, message, count, CONNECTIONS[0]))
    received = sink.count - before
    log(
        f"  baseline: {count:,} sent in {elapsed:.2f} s ({_rate(count, elapsed):,.0f} msg/s); "
        f"sink received {received:,}"
    )
    if received != count:
        log(f"  WARNING: baseline sent {count:,}, sink counted {received:,}")
    return elapsed


async def _bare_loops(port: int, sender: str, message: bytes, count: int, n: int) -> float:
    """`n` bare loops at once, one connection each, sharing `count` messages."""
    t0 = time.perf_counter()
    shares = [count // n + (1 if i < count % n else 0) for i in range(n)]
    await asyncio.gather(*(_bare_loop(port, sender, message, k) for k in shares))
    return time.perf_counter() - t0


async def _bare_loop(port: int, sender: str, message: bytes, count: int) -> float:
    t0 = time.perf_counter()
    smtp = aiosmtplib.SMTP(hostname=SINK_HOST, port=port, timeout=60)
    await smtp.connect()
    try:
        for _ in range(count):
            await smtp.sendmail(sender, [BASELINE_RECIPIENT], message)
    finally:
        await smtp.quit()
    return time.perf_counter() - t0


# -- runs, medians, output ------------------------------------------------------------------------
@dataclass
class BackendResult:
    backend: str
    samples: list[Sample] = field(default_factory=list)
    skipped: str | None = None

    def medians(self) -> dict[str, float]:
        rates = [s.rates() for s in self.samples]
        return {m: statistics.median(r[m] for r in rates) for m in METRICS} if rates else {}

    def as_dict(self) -> dict[str, Any]:
        if self.skipped:
            return {"skipped": self.skipped}
        return {
            "median": self.medians(),
            "runs": [{**asdict(s), **s.rates()} for s in self.samples],
        }


def run_backend(
    backend: str, roster: Path, args: argparse.Namespace, workdir: Path
) -> BackendResult:
    result = BackendResult(backend)
    if backend == "postgres":
        problem = postgres_problem(args.pg_url)
        if problem:
            result.skipped = f"PostgreSQL not answering at {args.pg_url}: {problem}"
            log(f"note: skipping postgres: {result.skipped}")
            return result
    for run in range(1, args.repeat + 1):
        log(f"[{backend}] run {run}/{args.repeat}")
        with fresh_database(backend, workdir, run, args.pg_url) as url, running_sink() as sink:
            result.samples.append(measure(url, roster, sink))
    return result


def _fmt(value: float, metric: str) -> str:
    return f"{value:.3f}" if metric == "ratio" else f"{value:,.0f}"


LABELS = {
    "import_rows_per_s": "import rows/s",
    "launch_rows_per_s": "launch rows/s",
    "pipeline_msg_per_s": "pipeline msg/s",
    "baseline_msg_per_s": "baseline msg/s",
    "ratio": "ratio pipeline/baseline",
}


def print_table(result: BackendResult, people: int) -> None:
    if result.skipped:
        print(f"\n{result.backend}: skipped ({result.skipped})")
        return
    samples = result.samples
    first = samples[0]
    loads = [x for s in samples for x in (s.load_before, s.load_after) if x >= 0]
    load = f", load average {min(loads)}-{max(loads)}" if loads else ""
    print(
        f"\n{result.backend}: {people:,} people, {first.queued:,} messages queued and sent, "
        f"{first.message_bytes:,}-byte message, median of {len(samples)} run(s){load}"
    )
    width = max(len(v) for v in LABELS.values())
    runs = [s.rates() for s in samples]
    header = f"  {'':<{width}}  {'median':>10}"
    if len(runs) > 1:
        header += "   runs"
    print(header)
    for metric, value in result.medians().items():
        line = f"  {LABELS[metric]:<{width}}  {_fmt(value, metric):>10}"
        if len(runs) > 1:
            line += "   " + " / ".join(_fmt(r[metric], metric) for r in runs)
        print(line)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--people", type=int, default=100_000, help="roster size (default 100000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per backend (default 3)")
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated: sqlite,postgres (default both)",
    )
    p.add_argument(
        "--pg-url", default=PG_ADMIN_URL, help=f"PostgreSQL admin URL (default {PG_ADMIN_URL})"
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--connections",
        type=int,
        default=1,
        help="SMTP connections for the pipeline and for the bare loops (default 1)",
    )
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        p.error(
            f"--backends: unknown {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(BACKENDS)}"
        )
    if args.people < 1 or args.repeat < 1:
        p.error("--people and --repeat must be at least 1")
    args.backends = backends
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    CONNECTIONS[0] = args.connections
    os.chdir(ROOT)  # the settings' relative paths (program file, templates) are the repo's
    started = time.perf_counter()
    results: list[BackendResult] = []
    with tempfile.TemporaryDirectory(prefix="pshnotify-bench-") as tmp:
        workdir = Path(tmp)
        roster = workdir / "roster.csv"
        t0 = time.perf_counter()
        write_sample_roster(roster, count=args.people, seed=1)
        log(
            f"roster: {args.people:,} people written to {roster} in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        for backend in args.backends:
            results.append(run_backend(backend, roster, args, workdir))
    total = time.perf_counter() - started
    log(f"done in {total:.0f} s")
    if args.json:
        print(
            json.dumps(
                {
                    "people": args.people,
                    "repeat": args.repeat,
                    "now": NOW.isoformat(),
                    "python": sys.version.split()[0],
                    "total_s": round(total, 1),
                    "backends": {r.backend: r.as_dict() for r in results},
                },
                indent=2,
            )
        )
    else:
        for r in results:
            print_table(r, args.people)
    return 0


if __name__ == "__main__":
    sys.exit(main())
