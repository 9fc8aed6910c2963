"""How fast /healthz answers while slow clients hold the HTTP side (issue 14's flood): the
figure tests/test_http_bounds.py used to assert as "under 3 s" on the machine's own timers.
The test keeps what does not depend on the machine (it answers, the mail still goes, the
descriptors stay bounded); the time is measured here.

`pshnotify web --now` on a fresh SQLite database, in a process of its own with `ulimit -n`
DESCRIPTORS and a 2-second read timeout; `--clients` connections that start a request and
never finish it; then `--requests` timed GET /healthz, one after another.

    .venv/bin/python bench/http_flood.py [--descriptors 128] [--clients 384] [--requests 20]
                                         [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
NOW = "2023-09-11T09:30:00-04:00"
TARGET_S = 3.0  # what the test asserted before


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def slow_clients(port: int, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /xapi/statements HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n{")
        socks.append(s)
    return socks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--descriptors", type=int, default=128)
    parser.add_argument("--clients", type=int, default=384)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if min(args.descriptors, args.clients, args.requests) < 1:
        parser.error("--descriptors, --clients and --requests must be 1 or more")

    with tempfile.TemporaryDirectory(prefix="pshnotify-flood-") as tmp:
        port = free_port()
        env = {
            **os.environ,
            "PSHNOTIFY_DATABASE_URL": f"sqlite:///{Path(tmp) / 'flood.db'}",
            "PSHNOTIFY_PROGRAM_FILE": str(ROOT / "config" / "program.toml"),
            "PSHNOTIFY_TEMPLATES_DIR": str(ROOT / "templates" / "email"),
            "PSHNOTIFY_HTTP_HOST": "127.0.0.1",
            "PSHNOTIFY_HTTP_PORT": str(port),
            "PSHNOTIFY_HTTP_READ_TIMEOUT": "2",
            "PSHNOTIFY_HTTP_KEEP_ALIVE": "1",
        }
        cmd = [sys.executable, "-m", "pshnotify"]
        subprocess.run([*cmd, "init"], env=env, check=True, capture_output=True, timeout=120)

        def low_ulimit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (args.descriptors, args.descriptors))

        server = subprocess.Popen(
            [*cmd, "web", "--now", NOW],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=low_ulimit,
        )
        url = f"http://127.0.0.1:{port}/healthz"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    print("pshnotify web did not start", file=sys.stderr)
                    return 1
                time.sleep(0.2)
            flood = slow_clients(port, args.clients)
            times = []
            try:
                for _ in range(args.requests):
                    started = time.perf_counter()
                    status = httpx.get(url, timeout=60).status_code
                    times.append(time.perf_counter() - started)
                    if status != 200:
                        print(f"/healthz answered {status}", file=sys.stderr)
                        return 1
            finally:
                for s in flood:
                    s.close()
        finally:
            server.terminate()
            server.wait(30)

    result = {
        "clients": args.clients,
        "descriptors": args.descriptors,
        "healthz_median_s": statistics.median(times),
        "healthz_max_s": max(times),
        "target_s": TARGET_S,
        "load_1min": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"/healthz under {args.clients} slow clients (ulimit -n {args.descriptors}): "
            f"median {result['healthz_median_s']:.3f} s, slowest {result['healthz_max_s']:.3f} s "
            f"(target under {TARGET_S:.0f} s; load {result['load_1min']:.1f})"
        )
    return 0 if result["healthz_max_s"] < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
