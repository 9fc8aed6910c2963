"""How long the command line takes as a whole process: `pshnotify --help`, and `pshnotify
status` on the demo's database (`make demo` makes it), each run N times, beside a baseline of
`python -c pass` measured in the same run. Prints min / median / max in seconds, or --json.
`status` runs in the demo's campaign folder, var/demo/, as a user would.

    .venv/bin/python bench/startup.py [-n 20] [--folder var/demo] [--json]

The targets (issue 26): --help under 0.3 s, status under 0.5 s. On a loaded machine compare
the minimum, which is the least disturbed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO_NOW = "2023-09-11T10:00:00-04:00"


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _time(
    argv: list[str], env: dict[str, str], runs: int, cwd: Path
) -> tuple[list[float], list[float]]:
    """Wall-clock seconds of each run, and its CPU seconds (user + system): on a machine
    busy with other work the wall clock waits for a core; the CPU time does not."""
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), _cpu()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
        wall.append(time.perf_counter() - start)
        cpu.append(_cpu() - start_cpu)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=20, help="runs of each (default 20)")
    parser.add_argument("--folder", type=Path, default=ROOT / "var/demo", help="a campaign")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    exe = Path(sys.executable).with_name("pshnotify")
    if not exe.exists():
        sys.exit(f"{exe}: not found; run this with the environment's python (.venv/bin/python)")
    # As installed: with the bytecode cache (pip writes it for a wheel; here the first,
    # uncounted, run of each command writes it for the checkout).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PSHNOTIFY_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    cases = {"python -c pass": [sys.executable, "-c", "pass"], "--help": [str(exe), "--help"]}
    if (args.folder / "var" / "pshnotify.db").is_file():
        cases["status"] = [str(exe), "status", "--now", DEMO_NOW]
    else:
        print(f"{args.folder}: no demo campaign (make demo); status not measured", file=sys.stderr)
    results = {}
    for name, argv in cases.items():
        cwd = args.folder if name == "status" else ROOT
        _time(argv, env, 1, cwd)  # warm-up: bytecode written, files in the page cache
        wall, cpu = _time(argv, env, args.runs, cwd)
        results[name] = {
            "min": min(wall),
            "median": statistics.median(wall),
            "max": max(wall),
            "cpu_median": statistics.median(cpu),
        }
    if args.json:
        print(json.dumps({"runs": args.runs, "seconds": results}, indent=2))
        return
    print(f"{args.runs} runs each, seconds; cpu: user + system, median")
    print(f"{'command':<16} {'min':>7} {'median':>7} {'max':>7} {'cpu':>7}")
    for name, r in results.items():
        print(
            f"{name:<16} {r['min']:>7.3f} {r['median']:>7.3f} {r['max']:>7.3f} "
            f"{r['cpu_median']:>7.3f}"
        )


if __name__ == "__main__":
    main()
