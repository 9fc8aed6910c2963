"""A season's heavy moments, each timed as a whole `pshnotify` command, per database backend.

    .venv/bin/python bench/season.py [--people N] [--officers 200] [--connections 8]
                                     [--backends sqlite,postgres] [--pg-url URL] [--json]
                                     [--keep DIR]

For each backend, in a fresh database (an SQLite file, or a new PostgreSQL schema) and one
SMTP sink that only counts (smtp_sink.py, a process of its own), it runs as an operator and
the daemon would, each command a process of its own (`python -m pshnotify ...`), at rehearsal
instants (`--now`) taken from the program file's pilot wave and cadence:

  roster import        `roster import` of `--people` rows, all required in the pilot wave,
                       dealt to `--officers` administrative officers;
  launch               `launch pilot` on the wave's opening day, at the start of working hours;
  launch drain         `run --once` then: the launch emails;
  pass after launch    `run --once` 5 minutes later, as the daemon's next pass: it looks at
                       everyone just sent a launch email and notes when their first
                       reminder is due;
  first reports        `run --once` at the report time of the first reminder's day: its
                       nightly reports (the daemon sends them then: they are not the
                       reminder morning's work);
  reminder morning     `run --once` at the start of working hours that day: the first
                       reminder (cadence.after_launch_days) falls due for everyone, who
                       is decided on, queued and sent;
  completions import   `completions import` of an export naming half of them, 3 hours later;
  confirmations        `run --once` then: their confirmation emails;
  plan --json, status --json;
  nightly reports      `run --once` at the next day's report time: one report per officer,
                       half of their people complete;
  idle pass            `run --once` a minute later: nothing is due.

Beside them, in the same run and into the same sink: a bare aiosmtplib loop per connection
sending as many copies of one launch email as the launch drain sent, half just before the
drain and half just after (bench/run.py's baseline). Each moment is printed with its time,
its rate, a ratio and its peak memory (ru_maxrss of the process, from os.wait4). The ratio
is of the drain's rate to the bare loop's for the launch drain, of the seconds per message
to the launch drain's for the reminders and the confirmations, and of the time to the
launch drain's for the rest. Progress goes to stderr; `--json` prints an object instead.
PSHNOTIFY_* variables other than the ones set here apply to the commands.

`--keep DIR` keeps each backend's working folder as DIR/BACKEND (which must not exist yet),
with its database (an SQLite file there, or the PostgreSQL schema, not dropped: drop it when
done) and `season.env`: the commands' PSHNOTIFY_* variables and the season's instants
(SEASON_AT_LAUNCH, ..., SEASON_AT_IDLE), to rerun one command on the season's state:

    set -a; . DIR/sqlite/season.env; set +a
    .venv/bin/python -m pshnotify plan --json --now "$SEASON_AT_COMPLETIONS"
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cli_checks
from completions import write_completions
from pshnotify.clock import FixedClock
from pshnotify.domain.program import Program, load_program
from pshnotify.runtime.wiring import Runtime
from run import (
    BACKENDS,
    LINK_SECRET,
    MESSAGE_ID_DOMAIN,
    PG_ADMIN_URL,
    PROGRAM_FILE,
    ROOT,
    TEMPLATES_DIR,
    WAVE,
    _load,
    _rate,
    baseline,
    bench_settings,
    fresh_database,
    log,
    postgres_problem,
    sample_message,
    write_roster,
)
from smtp_sink import HOST as SINK_HOST
from smtp_sink import Sink

OFFICERS = 200
# What each moment's ratio is taken against (the words printed in the table's "to" column).
BARE_RATE, DRAIN_PER_MSG, DRAIN_TIME = "bare loop rate", "drain per msg", "drain time"


class CommandFailedError(Exception):
    """A command exited with an error: said with its last lines, exit status 1."""


# -- the season's instants ------------------------------------------------------------------------
@dataclass(frozen=True)
class Instants:
    """The rehearsal instants of the run, from the program's pilot wave and cadence."""

    launch: dt.datetime  # the wave's opening day, at the start of working hours
    after_launch: dt.datetime  # 5 minutes later
    first_reports: dt.datetime  # the first reminder's day, at the report time
    reminders: dt.datetime  # the first reminder's day, at the start of working hours
    completions: dt.datetime  # three hours later
    nightly: dt.datetime  # the next day's report time
    idle: dt.datetime  # a minute later

    @classmethod
    def of(cls, program: Program, wave: str) -> Instants:
        sending, tz = program.sending, program.tz
        opens = program.wave(wave).opens
        day = opens + dt.timedelta(days=program.cadence.after_launch_days[0])

        def at(d: dt.date, t: dt.time) -> dt.datetime:
            return dt.datetime.combine(d, t, tz)

        nightly = at(day + dt.timedelta(days=1), sending.report_time)
        return cls(
            launch=at(opens, sending.working_hours.start),
            after_launch=at(opens, sending.working_hours.start) + dt.timedelta(minutes=5),
            first_reports=at(day, sending.report_time),
            reminders=at(day, sending.working_hours.start),
            completions=at(day, sending.working_hours.start) + dt.timedelta(hours=3),
            nightly=nightly,
            idle=nightly + dt.timedelta(minutes=1),
        )


# -- one command, timed ---------------------------------------------------------------------------
@dataclass
class Moment:
    name: str
    command: str  # as an operator would type it (without --now and --json)
    now: str
    seconds: float
    peak_rss_mb: float | None  # None for the bare loop, which runs in this process
    items: int  # rows read, or messages the sink received
    unit: str  # "rows", "msg" or "" (a report of the database)
    ratio: float | None = None
    ratio_to: str = ""
    load_1min: float = -1.0
    output: dict[str, Any] = field(default_factory=dict)  # the command's own --json summary

    @property
    def per_s(self) -> float | None:
        return _rate(self.items, self.seconds) if self.unit and self.items else None


def run_command(args: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Run `python -m pshnotify ARGS` to its end: (seconds, peak RSS in MB, stdout).

    The peak is the process's own ru_maxrss, read with os.wait4 as the child is reaped."""
    cmd = [sys.executable, "-m", "pshnotify", *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errs:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=errs, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        errs.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = errs.read().decode("utf-8", "replace")
    if code != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-6:])
        raise CommandFailedError(f"`pshnotify {' '.join(args)}` exited with {code}:\n{tail}")
    return elapsed, usage.ru_maxrss / 1024, stdout  # ru_maxrss: kilobytes on Linux


def command_env(url: str, port: int, connections: int) -> dict[str, str]:
    """What the commands are given: bench/run.py's settings (bench_settings), as variables.

    As variables only: a PSHNOTIFY_* variable that is wrong is the first command's to refuse,
    in its own words."""
    return {
        **os.environ,
        "PSHNOTIFY_DATABASE_URL": url,
        "PSHNOTIFY_PROGRAM_FILE": str(ROOT / PROGRAM_FILE),
        "PSHNOTIFY_TEMPLATES_DIR": str(ROOT / TEMPLATES_DIR),
        "PSHNOTIFY_SMTP_HOST": SINK_HOST,
        "PSHNOTIFY_SMTP_PORT": str(port),
        "PSHNOTIFY_SMTP_TLS": "none",
        "PSHNOTIFY_SMTP_CONNECTIONS": str(connections),
        "PSHNOTIFY_MESSAGE_ID_DOMAIN": MESSAGE_ID_DOMAIN,
        "PSHNOTIFY_LINK_SECRET": LINK_SECRET,
    }


class Season:
    """One backend's run: the commands in order, each one a Moment."""

    def __init__(self, env: dict[str, str], workdir: Path, sink: Sink) -> None:
        self.env, self.workdir, self.sink = env, workdir, sink
        self.moments: list[Moment] = []

    def step(
        self,
        name: str,
        args: Sequence[str],
        now: dt.datetime,
        unit: str = "",
        expect: int = -1,
        count: str = "rows",
    ) -> Moment:
        """Run one command at `now` with --json. Its items: for `msg`, the messages the sink
        received meanwhile; for `rows`, the figure its JSON gives under `count`."""
        load = _load()
        received = self.sink.count
        seconds, peak, stdout = run_command(
            [*args, "--now", now.isoformat(), "--json"], self.env, self.workdir
        )
        output = json.loads(stdout) if stdout.strip() else {}
        if unit == "msg":
            items = self.sink.count - received
            sent = output.get("outcomes", {}).get("sent", 0)
            if sent != items:
                log(f"  WARNING: {name}: the pass sent {sent:,}, the sink counted {items:,}")
        else:
            items = int(output.get(count, 0)) if unit == "rows" else 0
        if expect >= 0 and items != expect:
            log(f"  WARNING: {name}: expected {expect:,} {unit}, got {items:,}")
        moment = Moment(
            name,
            f"pshnotify {' '.join(args)}",
            now.isoformat(),
            seconds,
            peak,
            items,
            unit,
            load_1min=load,
            output=_summary(output),
        )
        rate = f" ({moment.per_s:,.0f} {unit}/s)" if moment.per_s else ""
        log(f"  {name}: {items:,} {unit} in {seconds:.2f} s{rate}, peak {peak:,.0f} MB")
        self.moments.append(moment)
        return moment


def _summary(output: Any) -> dict[str, Any]:
    """What a command's --json says about its work, without its data (plan's days, say)."""
    if not isinstance(output, dict):
        return {}
    keep = ("rows", "counts", "confirmations", "queued", "scheduled", "claimed", "outcomes")
    return {k: output[k] for k in keep if k in output}


def write_env(path: Path, env: dict[str, str], at: Instants) -> None:
    """`--keep`'s season.env: the commands' PSHNOTIFY_* variables and the season's instants,
    for a shell to source."""
    lines = [f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()) if k.startswith("PSHNOTIFY_")]
    lines += [f"SEASON_AT_{k.upper()}={shlex.quote(v.isoformat())}" for k, v in asdict(at).items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def measure(
    backend: str,
    people: int,
    officers: int,
    connections: int,
    pg_url: str,
    workdir: Path,
    keep: bool = False,
) -> list[Moment]:
    """The whole season on one backend; the bare loop first in the list. `keep`: the database
    stays, and `workdir/season.env` says how to reach it."""
    roster, export = workdir / "roster.csv", workdir / "completions.csv"
    program, _ = load_program(ROOT / PROGRAM_FILE)
    at = Instants.of(program, WAVE)
    write_roster(roster, people, officers)
    write_completions(export, people // 2, before=at.completions)
    with fresh_database(backend, workdir, 1, pg_url, keep) as url, Sink() as sink:
        season = Season(command_env(url, sink.port, connections), workdir, sink)
        if keep:
            write_env(workdir / "season.env", season.env, at)
        run_command(["init", "--now", at.launch.isoformat()], season.env, workdir)
        s = season.step
        s("roster import", ["roster", "import", str(roster)], at.launch, "rows", people)
        s("launch", ["launch", WAVE, "--yes"], at.launch, "rows", people, count="queued")
        # The bare loops send the launch emails' bytes, half just before the drain and half
        # just after (the machine's speed drifts), as bench/run.py does.
        rt = Runtime(bench_settings(url, sink.port, connections), FixedClock(at.launch))
        try:
            stored = rt.program(None)
            message = sample_message(rt, stored)
            sender = str(stored.program.program.sender.address)
        finally:
            rt.close()
        half = people // 2
        load = _load()
        bare_s = baseline(sink, sender, message, half, connections)
        drain = s("launch drain", ["run", "--once"], at.launch, "msg", people)
        bare_s += baseline(sink, sender, message, drain.items - half, connections)
        bare = Moment("bare aiosmtplib loop", "", "", bare_s, None, drain.items, "msg")
        bare.load_1min = load
        s("pass after launch", ["run", "--once"], at.after_launch, "msg", 0)
        s("first reports", ["run", "--once"], at.first_reports, "msg", officers)
        s("reminder morning", ["run", "--once"], at.reminders, "msg", people)
        done = people // 2
        s("completions import", ["completions", "import", str(export)], at.completions, "rows")
        s("confirmations", ["run", "--once"], at.completions, "msg", done)
        s("plan --json", ["plan"], at.completions)
        s("status --json", ["status"], at.completions)
        s("nightly reports", ["run", "--once"], at.nightly, "msg", officers)
        s("idle pass", ["run", "--once"], at.idle, "msg", 0)
    moments = [bare, *season.moments]
    add_ratios(moments)
    return moments


def add_ratios(moments: list[Moment]) -> None:
    """Each moment against the launch drain (and the drain against the bare loop)."""
    by_name = {m.name: m for m in moments}
    drain, bare = by_name["launch drain"], by_name["bare aiosmtplib loop"]
    for m in moments:
        if m is bare:
            continue
        if m is drain:
            m.ratio, m.ratio_to = _ratio(_rate(m.items, m.seconds), bare.per_s), BARE_RATE
        elif m.name in ("reminder morning", "confirmations"):
            mine = m.seconds / m.items if m.items else None
            m.ratio = _ratio(mine, drain.seconds / drain.items if drain.items else None)
            m.ratio_to = DRAIN_PER_MSG
        else:
            m.ratio, m.ratio_to = _ratio(m.seconds, drain.seconds), DRAIN_TIME


def _ratio(value: float | None, against: float | None) -> float | None:
    return value / against if value is not None and against else None


# -- output ---------------------------------------------------------------------------------------
HEAD = (
    f"  {'moment':<20} {'items':>12} {'seconds':>7} {'per s':>7} {'ratio':>5}  {'to':<14} {'MB':>5}"
)
LEGEND = (
    "ratio: the launch drain's rate to the bare loop's; for the reminders and the\n"
    "confirmations, seconds per message to the drain's; else time to the drain's.\n"
    "MB: the command's peak resident memory (ru_maxrss)."
)


def format_backend(backend: str, moments: list[Moment], people: int, officers: int) -> str:
    """An 80-column block for one backend."""
    loads = [m.load_1min for m in moments if m.load_1min >= 0]
    load = f"; load average {min(loads):.1f}-{max(loads):.1f}" if loads else ""
    lines = [f"{backend}: {people:,} people, {officers} officers{load}", HEAD]
    for m in moments:
        items = f"{m.items:,} {m.unit}" if m.unit else ""
        per_s = f"{m.per_s:,.0f}" if m.per_s is not None else ""
        ratio = f"{m.ratio:.2f}" if m.ratio is not None else ""
        peak = f"{m.peak_rss_mb:,.0f}" if m.peak_rss_mb is not None else "-"
        lines.append(
            f"  {m.name:<20} {items:>12} {m.seconds:7.2f} {per_s:>7} {ratio:>5}  "
            f"{m.ratio_to:<14} {peak:>5}"
        )
    return "\n".join(lines)


def commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--people", type=int, default=100_000, help="roster size (default 100000)")
    p.add_argument(
        "--officers",
        type=int,
        default=None,
        help=f"administrative officers the people are dealt to (default {OFFICERS}, or "
        "--people if fewer)",
    )
    p.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help="comma-separated: sqlite,postgres (default both)",
    )
    p.add_argument(
        "--pg-url", default=PG_ADMIN_URL, help=f"PostgreSQL admin URL (default {PG_ADMIN_URL})"
    )
    p.add_argument(
        "--connections",
        type=int,
        default=8,
        help="SMTP connections for the drains and for the bare loops (default 8)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep each backend's folder and database in DIR/BACKEND, with season.env",
    )
    args = p.parse_args(argv)
    backends = cli_checks.backends(p, args.backends, BACKENDS)
    if args.people < 2:
        p.error(f"--people: at least 2 (half of them complete the training), got {args.people}")
    if args.officers is None:
        args.officers = min(OFFICERS, args.people)
    if not 1 <= args.officers <= args.people:
        p.error(f"--officers: from 1 to --people ({args.people:,}), got {args.officers}")
    if not 1 <= args.connections <= 64:
        p.error(f"--connections: from 1 to 64, got {args.connections}")
    args.backends = backends
    if args.keep is not None:
        taken = [b for b in backends if (args.keep / b).exists()]
        if taken:
            p.error(f"--keep: {args.keep / taken[0]} exists already")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(ROOT)  # the settings' relative paths (program file, templates) are the repo's
    started = time.perf_counter()
    results: dict[str, list[Moment] | str] = {}
    try:
        for backend in args.backends:
            if backend == "postgres" and (problem := postgres_problem(args.pg_url)):
                results[backend] = f"PostgreSQL not answering at {args.pg_url}: {problem}"
                log(f"note: skipping postgres: {results[backend]}")
                continue
            log(f"[{backend}] {args.people:,} people, {args.officers} officers")
            if args.keep is not None:
                kept = (args.keep / backend).resolve()
                kept.mkdir(parents=True)
                results[backend] = measure(
                    backend,
                    args.people,
                    args.officers,
                    args.connections,
                    args.pg_url,
                    kept,
                    keep=True,
                )
                log(f"  kept in {kept} (season.env)")
                continue
            with tempfile.TemporaryDirectory(prefix="pshnotify-season-") as tmp:
                results[backend] = measure(
                    backend, args.people, args.officers, args.connections, args.pg_url, Path(tmp)
                )
    except CommandFailedError as exc:
        print(f"bench/season.py: {exc}", file=sys.stderr)
        return 1
    total = time.perf_counter() - started
    log(f"done in {total:.0f} s")
    if args.json:
        print(
            json.dumps(
                {
                    "people": args.people,
                    "officers": args.officers,
                    "connections": args.connections,
                    "commit": commit(),
                    "python": sys.version.split()[0],
                    "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "total_s": round(total, 1),
                    "backends": {
                        b: {"skipped": r}
                        if isinstance(r, str)
                        else {"moments": [{**asdict(m), "per_s": m.per_s} for m in r]}
                        for b, r in results.items()
                    },
                },
                indent=2,
            )
        )
        return 0
    print(
        f"commit {commit()}, {os.cpu_count()} CPUs, {args.connections} SMTP connections, "
        f"{total:.0f} s in all"
    )
    for backend, r in results.items():
        print()
        if isinstance(r, str):
            print(f"{backend}: skipped ({r})")
        else:
            print(format_backend(backend, r, args.people, args.officers))
    print()
    print(LEGEND)
    return 0


if __name__ == "__main__":
    sys.exit(main())
