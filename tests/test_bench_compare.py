"""bench/compare.py: the figures it reports for two commits, and its refusal of bad input.

The rounds themselves (bench/run.py of each commit) are the benchmark's business, not a test's:
here the statistics it prints are checked on known runs, a revision git does not know is
refused with status 2 before anything is checked out, and a run that fails is said with
status 1."""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _compare_module() -> ModuleType:
    # As when run as a script: its own folder first on the path, for the modules beside it.
    if str(ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("bench_compare", ROOT / "bench" / "compare.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_compare"] = module
    spec.loader.exec_module(module)
    return module


compare_module = _compare_module()


def _runs(ratios: dict[str, list[float]]) -> list[Any]:
    out = []
    for name, values in ratios.items():
        for n, ratio in enumerate(values, 1):
            figures = dict.fromkeys(compare_module.FIELDS, 1.0)
            figures["ratio"] = ratio
            out.append(compare_module.Run(name, "postgres", n, figures, 4000))
    return out


def test_the_change_is_of_the_medians_and_its_interval_holds_it() -> None:
    base = [0.80, 0.76, 0.91, 0.78, 0.74, 0.79, 0.83, 0.77]
    new = [0.70, 0.75, 0.72, 0.69, 0.88, 0.73, 0.71, 0.74]
    c = compare_module.compare(_runs({"old": base, "new": new}), "old", "new", "postgres")
    expected = statistics.median(new) / statistics.median(base) - 1
    assert c.change == pytest.approx(expected)
    low, high = c.interval
    assert low < expected < high
    assert high - low < 0.3
    paired = statistics.median(b / a for a, b in zip(base, new, strict=True)) - 1
    assert c.paired == pytest.approx(paired)
    assert c.rounds == 8
    text = compare_module.format_comparison(c)
    assert f"{expected:+.1%}" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_equal_commits_give_no_change_and_an_interval_around_zero() -> None:
    same = [0.80, 0.76, 0.91, 0.78, 0.74, 0.79]
    c = compare_module.compare(_runs({"a": same, "b": same}), "a", "b", "postgres")
    assert c.change == 0.0
    assert c.paired == 0.0
    assert c.interval[0] < 0 < c.interval[1]


def test_unknown_revision_is_status_2_and_a_failing_run_status_1_trees_removed() -> None:
    before = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    done = subprocess.run(
        [sys.executable, "bench/compare.py", "no-such-revision-here", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "no-such-revision-here: not a commit of this repository" in done.stderr
    assert "Traceback" not in done.stderr
    after = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert after == before  # nothing was checked out

    # A run that fails (here: a setting bench/run.py refuses) is said in a few lines, status 1,
    # and the trees checked out for it are removed. In this test, not one of its own: both read
    # `git worktree list`, and pytest-xdist may run two tests of a module at once.
    done = subprocess.run(
        [sys.executable, "bench/compare.py", "HEAD", "HEAD~1", "--rounds", "1"],
        cwd=ROOT,
        env={**os.environ, "PSHNOTIFY_BATCH_SIZE": "not-a-number"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    assert "bench/compare.py: bench/run.py failed in" in done.stderr
    assert "batch_size" in done.stderr  # the run's own last lines say why
    assert 'compare.py", line' not in done.stderr  # no traceback of compare.py's own
    after = subprocess.run(
        ["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert after == before  # removed again
