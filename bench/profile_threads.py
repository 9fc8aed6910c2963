"""Run `pshnotify ARGS` under cProfile in every thread, the stats merged into OUT.

    .venv/bin/python bench/profile_threads.py OUT ARGS...

`python -m cProfile` sees only the main thread, which waits on the event loop while the
dispatcher builds the officers' reports in worker threads (bench/nightly.py --profile).
"""

from __future__ import annotations

import atexit
import contextlib
import cProfile
import pstats
import runpy
import sys
import threading
from typing import Any

_profiles: list[cProfile.Profile] = []
_thread_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile()
    _profiles.append(profile)
    profile.enable()
    try:
        _thread_run(self)
    finally:
        profile.disable()


def _dump(out: str, main: cProfile.Profile) -> None:
    main.disable()
    stats = pstats.Stats(main)
    for profile in _profiles:
        with contextlib.suppress(TypeError):  # a thread that recorded nothing
            stats.add(profile)
    stats.dump_stats(out)


def main(argv: list[str]) -> Any:
    out, args = argv[0], argv[1:]
    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    profile = cProfile.Profile()
    atexit.register(_dump, out, profile)
    sys.argv = ["pshnotify", *args]
    profile.enable()
    return runpy.run_module("pshnotify", run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
