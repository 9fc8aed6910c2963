"""Throughput benchmark: import, launch, drain and rate limit, per database backend.

For each backend (a fresh SQLite file, or a fresh PostgreSQL schema) and each repeat, in a
fresh process of its own (so its peak memory is its own):

1. import a generated roster of `--people` rows, everyone required in one wave  -> rows/s
2. launch that wave with `launch_wave`                                          -> rows/s
3. drain the outbox with the real dispatcher over `--connections` connections
   into a sink that only counts (aiosmtpd, in a process of its own)             -> msg/s,
   the drain rate over the first and the last 10,000 claimed, peak RSS
4. baseline, same run: a bare aiosmtplib loop per connection sending the same
   number of copies of one prebuilt message to the same sink, half of them just
   before the drain and half just after (the machine's speed drifts)            -> msg/s, ratio
5. rate: a fresh database of `--rate` x `--rate-seconds` people, drained with
   PSHNOTIFY_RATE_PER_SECOND=`--rate` into a sink that answers 451 above that
   rate in any rolling second                                                   -> msg/s, 451s

Medians over `--repeat` runs are printed per backend beside the issue's targets (or as JSON
with `--json`); a ratio's median is the median of each run's ratio. Progress goes to stderr.
PSHNOTIFY_* variables other than the ones set here (batch size, say) still apply, as they
would to `pshnotify run`.

    .venv/bin/python bench/run.py [--people N] [--repeat R] [--backends sqlite,postgres]
                                  [--connections C] [--rate R] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import create_engine, text

import cli_checks
from pshnotify.clock import FixedClock
from pshnotify.demo.sample_roster import COLUMNS, sample_people
from pshnotify.domain.delivery import Kind
from pshnotify.mail.build import BuildSpec, build
from pshnotify.mail.kinds import Recipient
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.campaign.launch import launch_wave
from pshnotify.services.campaign.roster import import_roster
from pshnotify.settings import Settings
from pshnotify.store import migrate
from pshnotify.store.programs import StoredProgram
from smtp_sink import HOST as SINK_HOST
from smtp_sink import Sink

ROOT = Path(__file__).resolve().parent.parent
PROGRAM_FILE = Path("config/program.toml")
TEMPLATES_DIR = Path("templates/email")
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
# A Monday inside the seed program's working hours and the pilot wave's window.
NOW = dt.datetime(2023, 9, 11, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
WAVE = "pilot"
ACTOR = "bench"
MESSAGE_ID_DOMAIN = "bench.invalid"
BASELINE_RECIPIENT = "baseline.person@example.edu"
BACKENDS = ("sqlite", "postgres")
SPAN = 10_000  # the claim-flatness window: first and last this many messages


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def write_roster(path: Path, count: int, officers: int | None = None) -> None:
    """The sample roster's names and departments, everyone required in the one wave.

    The sample names one administrative officer per department (11); with `officers`, people
    are dealt in turn to that many (ao-001@example.edu, ...), as the nightly reports' benchmark
    needs."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for i, row in enumerate(sample_people(count, seed=1)):
            row.update(
                role="staff",
                paid="yes",
                start_date="2010-01-04",
                program_year="",
                affiliation="",
                wave=WAVE,
            )
            if officers:
                row["admin_officer"] = f"ao-{i % officers + 1:03d}@example.edu"
            writer.writerow(row)


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
def fresh_database(
    backend: str, workdir: Path, run: int, admin_url: str, keep: bool = False
) -> Iterator[str]:
    """A URL to an empty database: a new SQLite file, or a new PostgreSQL schema (dropped after,
    unless `keep`)."""
    if backend == "sqlite":
        path = workdir / f"bench-{run}.db"
        try:
            yield f"sqlite:///{path}"
        finally:
            for suffix in ("", "-wal", "-shm", "-journal") if not keep else ():
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
            if not keep:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


# -- one run --------------------------------------------------------------------------------------
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
    baseline_sent: int  # the bare loops: half before the drain, half after
    first_span_msg_per_s: float
    last_span_msg_per_s: float
    # CPU milliseconds per message: where the time goes, in this process and in the sink's.
    pipeline_cpu_ms: float
    pipeline_sink_cpu_ms: float
    pipeline_server_cpu_ms: float  # PostgreSQL's processes on this host; 0 for SQLite
    baseline_cpu_ms: float
    baseline_sink_cpu_ms: float
    peak_rss_mb: float  # the whole run: import, launch and drain
    drain_peak_rss_mb: float  # the drain alone (NaN where the peak cannot be reset)
    rate_limit: int
    rate_sent: int
    rate_s: float  # from the 10% to the 90% mark: a rolling limit lets the first window burst
    rate_refused: int
    load_before: float = -1.0
    load_after: float = -1.0

    def rates(self) -> dict[str, float]:
        pipeline = _rate(self.sent, self.pipeline_s)
        steady = 0.8 * self.rate_sent  # rate_s spans the 10% to the 90% mark
        baseline = _rate(self.baseline_sent, self.baseline_s)
        first, last = self.first_span_msg_per_s, self.last_span_msg_per_s
        achieved = _rate(steady, self.rate_s)
        return {
            "import_rows_per_s": _rate(self.imported, self.import_s),
            "launch_rows_per_s": _rate(self.queued, self.launch_s),
            "launch_s": self.launch_s,
            "pipeline_msg_per_s": pipeline,
            "baseline_msg_per_s": baseline,
            "ratio": pipeline / baseline if baseline else 0.0,
            "last_vs_first_span": last / first if first else 0.0,
            "pipeline_cpu_ms": self.pipeline_cpu_ms,
            "baseline_cpu_ms": self.baseline_cpu_ms,
            "pipeline_sink_cpu_ms": self.pipeline_sink_cpu_ms,
            "pipeline_server_cpu_ms": self.pipeline_server_cpu_ms,
            "baseline_sink_cpu_ms": self.baseline_sink_cpu_ms,
            "drain_peak_rss_mb": self.drain_peak_rss_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "rate_msg_per_s": achieved,
            "rate_vs_limit": achieved / self.rate_limit if self.rate_limit else 0.0,
            "rate_4xx": float(self.rate_refused),
        }


LABELS = {
    "import_rows_per_s": ("roster import rows/s", None),
    "launch_rows_per_s": ("launch rows/s", ">= 50,000"),
    "launch_s": ("launch seconds", "<= 2"),
    "pipeline_msg_per_s": ("drain msg/s (pipeline)", None),
    "baseline_msg_per_s": ("bare aiosmtplib loop msg/s", None),
    "ratio": ("ratio drain / bare loop", ">= 0.75"),
    "last_vs_first_span": ("last 10k / first 10k rate", ">= 0.80"),
    "pipeline_cpu_ms": ("drain CPU ms/msg, sender", None),
    "baseline_cpu_ms": ("bare loop CPU ms/msg, sender", None),
    "pipeline_sink_cpu_ms": ("drain CPU ms/msg, sink", None),
    "pipeline_server_cpu_ms": ("drain CPU ms/msg, db server", None),
    "baseline_sink_cpu_ms": ("bare loop CPU ms/msg, sink", None),
    "drain_peak_rss_mb": ("peak RSS MB during the drain", "< 300"),
    "peak_rss_mb": ("peak RSS MB, whole run", None),
    "rate_msg_per_s": ("rate-limited msg/s", None),
    "rate_vs_limit": ("achieved / configured rate", "0.95 - 1.05"),
    "rate_4xx": ("451s from the limiting sink", "0"),
}
METRICS = tuple(LABELS)  # in print order
CHECKS = {
    "launch_rows_per_s": lambda v: v >= 50_000,
    "launch_s": lambda v: v <= 2,
    "ratio": lambda v: v >= 0.75,
    "last_vs_first_span": lambda v: v >= 0.8,
    "drain_peak_rss_mb": lambda v: v < 300,
    "rate_vs_limit": lambda v: 0.95 <= v <= 1.05,
    "rate_4xx": lambda v: v == 0,
}


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def reset_peak_rss() -> None:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """The peak resident set since the last reset (VmHWM), in MB; NaN where unknown."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _per_message(seconds: float, count: int) -> float:
    return 1000 * seconds / count if count else 0.0


def server_cpu_seconds(backend: str) -> float:
    """CPU time used so far by this host's PostgreSQL processes (Linux /proc); 0 for SQLite.

    The server shares the machine's cores with the sender and the sink, so its work per
    message is part of what the drain costs. A backend that exits in between (the drain's
    own connection for its writes closes with the drain) is counted too: the postmaster's
    children's times (cutime, cstime) hold what its reaped backends used.
    """
    if backend != "postgres":
        return 0.0
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        if head.split("(", 1)[-1] == "postgres":
            fields = tail.split()
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def _load() -> float:
    """The 1-minute load average: other work on the machine skews every figure here."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return -1.0


# The shipped program takes participants' requests: its emails carry links signed with this.
LINK_SECRET = "a benchmark's link secret, not a real one: 32+ characters"


def bench_settings(url: str, port: int, connections: int, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "link_secret": LINK_SECRET,
        "database_url": url,
        "program_file": PROGRAM_FILE,
        "templates_dir": TEMPLATES_DIR,
        "smtp_host": SINK_HOST,
        "smtp_port": port,
        "message_id_domain": MESSAGE_ID_DOMAIN,
        "smtp_connections": connections,
        "_env_file": None,  # no .env: only these values (and PSHNOTIFY_* variables) count
        **extra,
    }
    return Settings(**values)


@dataclass(frozen=True)
class RunSpec:
    backend: str
    run: int
    roster: Path
    rate_roster: Path
    workdir: Path
    pg_url: str
    connections: int
    rate: int


def measure(spec: RunSpec) -> Sample:
    """One whole run, in a process of its own (see main)."""
    os.chdir(ROOT)
    load_before = _load()
    log(f"  load average {load_before} on {os.cpu_count()} CPUs")
    with (
        fresh_database(spec.backend, spec.workdir, spec.run, spec.pg_url) as url,
        Sink() as sink,
    ):
        rt = Runtime(bench_settings(url, sink.port, spec.connections), FixedClock(NOW))
        try:
            migrate.upgrade(rt.engine)
            stored = rt.program(None)
            imported, import_s = timed_import(rt, stored, spec.roster)
            queued, launch_s = timed_launch(rt, stored)
            before_drain_mb = peak_rss_mb()  # import and launch
            # The bare loops send half their messages just before the drain and half just
            # after it: this machine's speed drifts by a third over a minute, and a baseline
            # taken on one side of the drain only carried that drift into the ratio.
            message = sample_message(rt, stored)
            sender = str(stored.program.program.sender.address)
            before_half = queued // 2
            cpu, sink_cpu = time.process_time(), sink.cpu_seconds()
            baseline_s = baseline(sink, sender, message, before_half, spec.connections)
            baseline_cpu_s = time.process_time() - cpu
            baseline_sink_cpu_s = sink.cpu_seconds() - sink_cpu
            reset_peak_rss()
            cpu, sink_cpu = time.process_time(), sink.cpu_seconds()
            server_cpu = server_cpu_seconds(spec.backend)
            sent, pipeline_s, progress = drain(rt, sink, queued)
            drain_peak_mb = peak_rss_mb()
            pipeline_cpu = _per_message(time.process_time() - cpu, sent)
            pipeline_sink_cpu = _per_message(sink.cpu_seconds() - sink_cpu, sent)
            pipeline_server_cpu = _per_message(server_cpu_seconds(spec.backend) - server_cpu, sent)
            first, last = progress.first_and_last(SPAN)
            # Not ru_maxrss: on Linux the reset above resets it too.
            peak_mb = max(before_drain_mb, drain_peak_mb)
            log(
                f"  drain: first {SPAN:,} at {first:,.0f} msg/s, last {SPAN:,} at {last:,.0f} "
                f"msg/s; peak RSS {drain_peak_mb:,.0f} MB during the drain, {peak_mb:,.0f} MB "
                "over the whole run"
            )
            cpu, sink_cpu = time.process_time(), sink.cpu_seconds()
            baseline_s += baseline(sink, sender, message, queued - before_half, spec.connections)
            baseline_cpu = _per_message(baseline_cpu_s + time.process_time() - cpu, queued)
            baseline_sink_cpu = _per_message(
                baseline_sink_cpu_s + sink.cpu_seconds() - sink_cpu, queued
            )
            log(
                f"  bare loops: {queued:,} sent in {baseline_s:.2f} s "
                f"({_rate(queued, baseline_s):,.0f} msg/s), half before the drain, half after"
            )
            log(
                f"  CPU ms/msg: drain {pipeline_cpu:.3f} here + {pipeline_sink_cpu:.3f} in the "
                f"sink + {pipeline_server_cpu:.3f} in the database server; bare loop "
                f"{baseline_cpu:.3f} + {baseline_sink_cpu:.3f}"
            )
        finally:
            rt.close()
    with (
        fresh_database(spec.backend, spec.workdir, spec.run + 1000, spec.pg_url) as url,
        Sink(per_second=spec.rate) as sink,
    ):
        settings = bench_settings(url, sink.port, spec.connections, rate_per_second=spec.rate)
        rt = Runtime(settings, FixedClock(NOW))
        try:
            migrate.upgrade(rt.engine)
            stored = rt.program(None)
            timed_import(rt, stored, spec.rate_roster)
            rate_queued, _ = timed_launch(rt, stored)
            with SinkWatch(sink, rate_queued) as watch:
                rate_sent, _, _ = drain(rt, sink, rate_queued, label="rate")
            rate_s = watch.steady_seconds()
            log(
                f"  rate: {_rate(0.8 * rate_sent, rate_s):,.1f} msg/s (steady state, 10% to 90% of "
                f"the messages) against a limit of {spec.rate}/s; the sink answered 451 "
                f"{sink.refused:,} times"
            )
            refused = sink.refused
        finally:
            rt.close()
    return Sample(
        imported=imported,
        queued=queued,
        sent=sent,
        message_bytes=len(message),
        import_s=import_s,
        launch_s=launch_s,
        pipeline_s=pipeline_s,
        baseline_s=baseline_s,
        baseline_sent=queued,
        first_span_msg_per_s=first,
        last_span_msg_per_s=last,
        pipeline_cpu_ms=pipeline_cpu,
        pipeline_sink_cpu_ms=pipeline_sink_cpu,
        pipeline_server_cpu_ms=pipeline_server_cpu,
        baseline_cpu_ms=baseline_cpu,
        baseline_sink_cpu_ms=baseline_sink_cpu,
        peak_rss_mb=peak_mb,
        drain_peak_rss_mb=drain_peak_mb,
        rate_limit=spec.rate,
        rate_sent=rate_sent,
        rate_s=rate_s,
        rate_refused=refused,
        load_before=load_before,
        load_after=_load(),
    )


class SinkWatch:
    """Notes when the sink's count passes 10% and 90% of `total`, polling every 10 ms.

    The achieved rate is measured between the two: a rolling one-second limit lets the
    first second go out at once, which over a short run reads as a rate above the limit.
    """

    def __init__(self, sink: Sink, total: int) -> None:
        self.sink, self.total = sink, total
        self.marks: dict[float, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        start = self.sink.count
        while not self._stop.is_set():
            done = (self.sink.count - start) / self.total if self.total else 1.0
            for mark in (0.1, 0.9):
                if done >= mark and mark not in self.marks:
                    self.marks[mark] = time.perf_counter()
            self._stop.wait(0.01)

    def steady_seconds(self) -> float:
        if 0.1 in self.marks and 0.9 in self.marks:
            return self.marks[0.9] - self.marks[0.1]
        return 0.0

    def __enter__(self) -> SinkWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed_import(rt: Runtime, stored: StoredProgram, roster: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    report = import_roster(rt.engine, stored, roster, rt.clock, actor=ACTOR)
    elapsed = time.perf_counter() - t0
    log(f"  import: {report.rows:,} rows in {elapsed:.2f} s ({_rate(report.rows, elapsed):,.0f}/s)")
    return report.rows, elapsed


def timed_launch(rt: Runtime, stored: StoredProgram) -> tuple[int, float]:
    t0 = time.perf_counter()
    done = launch_wave(
        rt.engine,
        stored,
        WAVE,
        rt.clock,
        actor=ACTOR,
        message_id_domain=rt.settings.message_id_domain,
    )
    elapsed = time.perf_counter() - t0
    rate = _rate(done.queued, elapsed)
    log(f"  launch: {done.queued:,} queued in {elapsed:.2f} s ({rate:,.0f}/s)")
    return done.queued, elapsed


def drain(
    rt: Runtime, sink: Sink, expected: int, label: str = "drain"
) -> tuple[int, float, _Progress]:
    """Run the real dispatcher until nothing is due; returns (messages sent, seconds)."""
    dispatcher = rt.dispatcher()
    before = sink.count
    progress = _Progress(label, expected)
    log(f"  {label}: {expected:,} messages over {len(dispatcher.connections)} connections ...")
    t0 = time.perf_counter()
    report = asyncio.run(dispatcher.run_once(on_progress=progress))
    elapsed = time.perf_counter() - t0
    received = sink.count - before
    sent = report.outcomes.get("sent", 0)
    log(
        f"  {label}: {sent:,} sent in {elapsed:.2f} s ({_rate(sent, elapsed):,.0f} msg/s); "
        f"outcomes {dict(report.outcomes)}; sink received {received:,}"
    )
    if sent != expected or received != sent:
        log(f"  WARNING: expected {expected:,}, dispatcher sent {sent:,}, sink got {received:,}")
    return sent, elapsed, progress


class _Progress:
    """A dispatcher progress callback that logs a line at most every `every` seconds."""

    def __init__(self, label: str, total: int, every: float = 10.0) -> None:
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
    """One real launch email, built as the dispatcher builds it (`mail.build`: the templates,
    the MIME composition and the deadline's calendar attachment), so the bare loops send the
    same bytes as the drain. Until 2026-12-02 it was composed without the attachment, 511
    bytes and 9 lines shorter than what the drain sent since the calendar work."""
    person = Recipient("E000001", "Zoë Brontë", BASELINE_RECIPIENT, "Human Resources")
    return build(
        rt.templates(),
        stored.program,
        BuildSpec(
            kind=Kind.LAUNCH.value,
            wave_key=WAVE,
            person=person,
            to_name=person.name,
            to_address=person.email,
            message_id=f"<{uuid.uuid4().hex}@bench.invalid>",
            date=rt.clock.now(),
        ),
    )


def baseline(sink: Sink, sender: str, message: bytes, count: int, connections: int) -> float:
    """Seconds for bare aiosmtplib loops (one per connection) to send `count` copies."""
    before = sink.count
    log(f"  bare loop: {count:,} x {len(message):,} bytes over {connections} connections ...")
    elapsed = asyncio.run(_bare_loops(sink.port, sender, message, count, connections))
    received = sink.count - before
    log(f"  bare loop: {count:,} sent in {elapsed:.2f} s ({_rate(count, elapsed):,.0f} msg/s)")
    if received != count:
        log(f"  WARNING: the bare loop sent {count:,}, the sink counted {received:,}")
    return elapsed


async def _bare_loops(port: int, sender: str, message: bytes, count: int, n: int) -> float:
    t0 = time.perf_counter()
    shares = [count // n + (1 if i < count % n else 0) for i in range(n)]
    await asyncio.gather(*(_bare_loop(port, sender, message, k) for k in shares))
    return time.perf_counter() - t0


async def _bare_loop(port: int, sender: str, message: bytes, count: int) -> None:
    smtp = aiosmtplib.SMTP(hostname=SINK_HOST, port=port, timeout=60)
    await smtp.connect()
    try:
        for _ in range(count):
            await smtp.sendmail(sender, [BASELINE_RECIPIENT], message)
    finally:
        await smtp.quit()


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


def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> BackendResult:
    result = BackendResult(backend)
    if backend == "postgres":
        problem = postgres_problem(args.pg_url)
        if problem:
            result.skipped = f"PostgreSQL not answering at {args.pg_url}: {problem}"
            log(f"note: skipping postgres: {result.skipped}")
            return result
    for run in range(1, args.repeat + 1):
        log(f"[{backend}] run {run}/{args.repeat}")
        spec = RunSpec(
            backend,
            run,
            workdir / "roster.csv",
            workdir / "rate-roster.csv",
            workdir,
            args.pg_url,
            args.connections,
            args.rate,
        )
        # A fresh process per run: its peak RSS is that run's, and no run warms the next.
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            result.samples.append(pool.submit(measure, spec).result())
    return result


def _fmt(value: float, metric: str) -> str:
    if metric in ("ratio", "last_vs_first_span", "rate_vs_limit") or metric.endswith("_ms"):
        return f"{value:.3f}"
    if metric == "launch_s":
        return f"{value:.2f}"
    return f"{value:,.0f}"


def print_table(result: BackendResult, args: argparse.Namespace) -> None:
    if result.skipped:
        print(f"\n{result.backend}: skipped ({result.skipped})")
        return
    samples = result.samples
    first = samples[0]
    loads = [x for s in samples for x in (s.load_before, s.load_after) if x >= 0]
    load = f", load average {min(loads)}-{max(loads)}" if loads else ""
    print(
        f"\n{result.backend}: {first.imported:,} people, {first.queued:,} launch emails over "
        f"{args.connections} connections ({first.message_bytes:,} bytes each); rate phase "
        f"{args.rate}/s; median of {len(samples)} run(s){load}"
    )
    width = max(len(v[0]) for v in LABELS.values())
    runs = [s.rates() for s in samples]
    print(f"  {'':<{width}}  {'median':>10}  {'target':<12} {'met':<4} runs")
    for metric, value in result.medians().items():
        label, target = LABELS[metric]
        check = CHECKS.get(metric)
        met = "" if check is None else ("yes" if check(value) else "NO")
        each = " / ".join(_fmt(r[metric], metric) for r in runs)
        print(f"  {label:<{width}}  {_fmt(value, metric):>10}  {target or '':<12} {met:<4} {each}")


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
        default=8,
        help="SMTP connections for the drain and for the bare loops (default 8)",
    )
    p.add_argument("--rate", type=int, default=500, help="rate phase limit, msg/s (default 500)")
    p.add_argument(
        "--rate-seconds", type=int, default=20, help="rate phase length at the limit (default 20)"
    )
    args = p.parse_args(argv)
    backends = cli_checks.backends(p, args.backends, BACKENDS)
    if min(args.people, args.repeat, args.connections, args.rate, args.rate_seconds) < 1:
        p.error("--people, --repeat, --connections, --rate and --rate-seconds must be at least 1")
    args.backends = backends
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)  # the settings' relative paths (program file, templates) are the repo's
    started = time.perf_counter()
    results: list[BackendResult] = []
    with tempfile.TemporaryDirectory(prefix="pshnotify-bench-") as tmp:
        workdir = Path(tmp)
        write_roster(workdir / "roster.csv", args.people)
        write_roster(workdir / "rate-roster.csv", args.rate * args.rate_seconds)
        for backend in args.backends:
            results.append(run_backend(backend, args, workdir))
    total = time.perf_counter() - started
    log(f"done in {total:.0f} s")
    if args.json:
        print(
            json.dumps(
                {
                    "people": args.people,
                    "repeat": args.repeat,
                    "connections": args.connections,
                    "rate": args.rate,
                    "now": NOW.isoformat(),
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "total_s": round(total, 1),
                    "backends": {r.backend: r.as_dict() for r in results},
                },
                indent=2,
            )
        )
    else:
        for r in results:
            print_table(r, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
