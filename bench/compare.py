"""Two commits' benchmark figures side by side: alternating rounds of `bench/run.py`, one window.

On a small shared machine one run's drain ratio moves by a quarter from run to run, and the
machine's speed drifts over minutes. A difference of a few per cent between two commits is
only seen over many runs taken in the same window, the two commits interleaved. This does
that: each commit is checked out in a worktree of its own (in a temporary folder, removed at
the end), and each round runs `bench/run.py --repeat 1` once per commit and backend, in a
fresh process, with that tree's own code (`PYTHONPATH=<tree>/src:<tree>/bench`) and this
virtual environment's packages. The order within a round alternates (A B, then B A), so a
drift over the window weighs on both alike.

Printed per backend: each commit's median ratio (drain / bare loops) and msg/s, the change of
the medians with a 90% bootstrap interval (resampling each commit's runs), the median of each
round's quotient, and each commit's CPU per message (sender, sink, database server). Progress
goes to stderr; `--json` prints every run too.

    .venv/bin/python bench/compare.py BASE NEW [--rounds 8] [--people 5000]
                                      [--backends postgres,sqlite] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import cli_checks

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("postgres", "sqlite")
# Figures read from each run of bench/run.py (its JSON): the name here, the name there.
FIELDS = {
    "ratio": "ratio",
    "drain_msg_per_s": "pipeline_msg_per_s",
    "baseline_msg_per_s": "baseline_msg_per_s",
    "sender_cpu_ms": "pipeline_cpu_ms",
    "sink_cpu_ms": "pipeline_sink_cpu_ms",
    "server_cpu_ms": "pipeline_server_cpu_ms",
}
BOOTSTRAP_DRAWS = 4000


class UsageError(Exception):
    """Bad input: said on stderr, exit status 2."""


@dataclass(frozen=True)
class Run:
    commit: str  # the short name given on the command line
    backend: str
    round: int
    figures: dict[str, float]
    message_bytes: int


@dataclass(frozen=True)
class Comparison:
    backend: str
    base: str
    new: str
    rounds: int
    base_median: dict[str, float]
    new_median: dict[str, float]
    change: float  # new's median ratio / base's, less one
    interval: tuple[float, float]  # 90% bootstrap interval of `change`
    paired: float  # median over rounds of new's ratio / base's, less one


def compare(runs: Sequence[Run], base: str, new: str, backend: str, seed: int = 12) -> Comparison:
    """Medians of each commit's runs on one backend, and how far apart their ratios are."""
    mine = [r for r in runs if r.backend == backend]
    a = [r for r in mine if r.commit == base]
    b = [r for r in mine if r.commit == new]
    if not a or not b:
        raise ValueError(f"{backend}: no runs of {base if not a else new}")

    def medians(side: list[Run]) -> dict[str, float]:
        return {k: statistics.median(r.figures[k] for r in side) for k in FIELDS}

    ra = [r.figures["ratio"] for r in a]
    rb = [r.figures["ratio"] for r in b]
    change = statistics.median(rb) / statistics.median(ra) - 1
    rng = random.Random(seed)
    draws = sorted(
        statistics.median(rng.choices(rb, k=len(rb)))
        / statistics.median(rng.choices(ra, k=len(ra)))
        - 1
        for _ in range(BOOTSTRAP_DRAWS)
    )
    low, high = draws[int(0.05 * len(draws))], draws[int(0.95 * len(draws)) - 1]
    by_round: dict[int, dict[str, float]] = {}
    for r in mine:
        by_round.setdefault(r.round, {})[r.commit] = r.figures["ratio"]
    quotients = [d[new] / d[base] for d in by_round.values() if base in d and new in d and d[base]]
    return Comparison(
        backend,
        base,
        new,
        len(quotients),
        medians(a),
        medians(b),
        change,
        (low, high),
        statistics.median(quotients) - 1 if quotients else float("nan"),
    )


def format_comparison(c: Comparison) -> str:
    """An 80-column block for one backend."""
    width = max(len(c.base), len(c.new), 8)
    lines = [
        f"{c.backend}: {c.rounds} rounds, medians",
        f"  {'':<{width}}  {'ratio':>6}  {'msg/s':>7}  {'bare/s':>7}  "
        f"{'CPU ms/msg: sender':>18}  {'sink':>5}  {'db':>5}",
    ]
    for name, m in ((c.base, c.base_median), (c.new, c.new_median)):
        lines.append(
            f"  {name:<{width}}  {m['ratio']:6.3f}  {m['drain_msg_per_s']:7,.0f}  "
            f"{m['baseline_msg_per_s']:7,.0f}  {m['sender_cpu_ms']:18.3f}  "
            f"{m['sink_cpu_ms']:5.3f}  {m['server_cpu_ms']:5.3f}"
        )
    low, high = c.interval
    lines += [
        f"  ratio of {c.new} against {c.base}: {c.change:+.1%} (medians)",
        f"    90% bootstrap interval {low:+.1%} to {high:+.1%}; paired by round {c.paired:+.1%}",
    ]
    return "\n".join(lines)


# -- running the commits ------------------------------------------------------------------------
def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise UsageError(done.stderr.strip() or f"git {' '.join(args)} failed")
    return done.stdout.strip()


def resolve(commit: str) -> str:
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except UsageError:
        raise UsageError(f"{commit}: not a commit of this repository (git rev-parse)") from None


@contextmanager
def worktrees(commits: dict[str, str]) -> Iterator[dict[str, Path]]:
    """Each commit checked out in a folder of its own, removed afterwards."""
    made: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="pshnotify-compare-") as tmp:
        try:
            trees: dict[str, Path] = {}
            for i, (name, sha) in enumerate(commits.items()):
                tree = Path(tmp) / f"tree{i}"
                _git("worktree", "add", "--detach", "--quiet", str(tree), sha)
                made.append(tree)
                if not (tree / "bench" / "run.py").is_file():
                    raise UsageError(f"{name}: has no bench/run.py to run")
                trees[name] = tree
            yield trees
        finally:
            for tree in made:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(tree)],
                    cwd=ROOT,
                    capture_output=True,
                    check=False,
                )


def run_once(
    tree: Path, backend: str, people: int, connections: int
) -> tuple[dict[str, float], int]:
    """One `bench/run.py --repeat 1` of one tree; its figures and the launch email's size."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree / 'bench'}"}
    cmd = [
        sys.executable,
        "bench/run.py",
        "--people",
        str(people),
        "--repeat",
        "1",
        "--rate-seconds",
        "2",
        "--connections",
        str(connections),
        "--backends",
        backend,
        "--json",
    ]
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:])
        raise RuntimeError(f"bench/run.py failed in {tree} (exit {done.returncode}):\n{tail}")
    result = json.loads(done.stdout)["backends"][backend]
    if "skipped" in result:
        raise UsageError(f"{backend}: {result['skipped']}")
    run = result["runs"][0]
    return {k: float(run[v]) for k, v in FIELDS.items()}, int(run["message_bytes"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("base", help="the commit to compare against (a revision git knows)")
    p.add_argument("new", help="the commit measured against it")
    p.add_argument("--rounds", type=int, default=8, help="rounds per backend (default 8)")
    p.add_argument("--people", type=int, default=5000, help="roster size a run (default 5000)")
    p.add_argument("--connections", type=int, default=8, help="SMTP connections (default 8)")
    p.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated (default postgres,sqlite)"
    )
    p.add_argument("--json", action="store_true", help="print the comparison and runs as JSON")
    args = p.parse_args(argv)
    backends = cli_checks.backends(p, args.backends, BACKENDS)
    if min(args.rounds, args.people, args.connections) < 1:
        p.error("--rounds, --people and --connections must be at least 1")
    if args.base == args.new:
        p.error("BASE and NEW are the same name: give two commits")
    args.backends = backends
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        commits = {args.base: resolve(args.base), args.new: resolve(args.new)}
        runs: list[Run] = []
        started = time.perf_counter()
        with worktrees(commits) as trees:
            for backend in args.backends:
                for n in range(1, args.rounds + 1):
                    order = [args.base, args.new] if n % 2 else [args.new, args.base]
                    for name in order:
                        figures, size = run_once(
                            trees[name], backend, args.people, args.connections
                        )
                        runs.append(Run(name, backend, n, figures, size))
                        print(
                            f"[{backend}] round {n}/{args.rounds} {name}: ratio "
                            f"{figures['ratio']:.3f} ({figures['drain_msg_per_s']:,.0f} msg/s, "
                            f"bare loops {figures['baseline_msg_per_s']:,.0f})",
                            file=sys.stderr,
                            flush=True,
                        )
        print(f"done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    except UsageError as exc:
        print(f"bench/compare.py: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # a run failed: what it printed last, no traceback of ours
        print(f"bench/compare.py: {exc}", file=sys.stderr)
        return 1
    results = [compare(runs, args.base, args.new, b) for b in args.backends]
    if args.json:
        print(
            json.dumps(
                {
                    "base": {"name": args.base, "commit": commits[args.base]},
                    "new": {"name": args.new, "commit": commits[args.new]},
                    "people": args.people,
                    "comparisons": [asdict(c) for c in results],
                    "runs": [asdict(r) for r in runs],
                },
                indent=2,
            )
        )
    else:
        sizes = {r.commit: r.message_bytes for r in runs}
        print(
            f"{args.new} ({commits[args.new][:9]}) against {args.base} "
            f"({commits[args.base][:9]}), {args.people:,} people a run"
        )
        print(
            f"launch email: {sizes.get(args.base, 0):,} bytes ({args.base}), "
            f"{sizes.get(args.new, 0):,} ({args.new})"
        )
        for c in results:
            print()
            print(format_comparison(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
