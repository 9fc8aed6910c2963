"""The wheel works outside the checkout (issue 26): built from the sdist, installed into a
new virtual environment in a temporary folder, it makes a campaign folder with `pshnotify new`
and runs a campaign there (init, roster import, launch, sending into aiosmtpd), then serves
the console from `run` and from `web`. And every file under src/pshnotify, which is what the
code reads at run time, is in the sdist and in the wheel."""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.smtp_server import SmtpServer

NOW = "2023-09-11T10:00:00-04:00"  # the seed's pilot window is open


@dataclass
class Built:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """`python -m build`: the sdist from the checkout, then the wheel from the sdist.

    Once per run: the build writes into the checkout (src/pshnotify.egg-info), so two test
    workers building at once would trip over each other; the second takes the first's."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's
    out = shared / "dist"
    with open(shared / "dist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not list(out.glob("pshnotify-*.whl")):
            run = subprocess.run(
                [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (wheel,) = out.glob("pshnotify-*.whl")
    (sdist,) = out.glob("pshnotify-*.tar.gz")
    return Built(wheel, sdist)


def _package_files() -> set[str]:
    """Every file of the package as the checkout has it (links followed), e.g.
    `pshnotify/web/console/static/console.css`."""
    src = ROOT / "src"
    found = set()
    for dirpath, dirnames, filenames in os.walk(src / "pshnotify", followlinks=True):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in filenames:
            found.add(Path(dirpath, name).relative_to(src).as_posix())
    return found


def test_the_wheel_and_the_sdist_hold_every_file_the_package_reads(built: Built) -> None:
    wanted = _package_files()
    # what the run time opens besides code: the console, the migrations, the skeleton
    for must in (
        "pshnotify/web/console/static/console.css",
        "pshnotify/web/console/templates/login.html",
        "pshnotify/store/migrations/script.py.mako",
        "pshnotify/skeleton/config/program.toml",
        "pshnotify/skeleton/config/pshnotify.service",
        "pshnotify/skeleton/config/roster-example.csv",
        "pshnotify/skeleton/email/launch/body.txt",
    ):
        assert must in wanted
    with zipfile.ZipFile(built.wheel) as whl:
        in_wheel = set(whl.namelist())
    assert sorted(wanted - in_wheel) == []
    with tarfile.open(built.sdist) as sdist:
        prefix = sdist.getnames()[0].split("/")[0] + "/src/"
        in_sdist = {n.removeprefix(prefix) for n in sdist.getnames() if n.startswith(prefix)}
    assert sorted(wanted - in_sdist) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment outside the checkout with the wheel installed (its
    dependencies from the package index, as a user would get them)."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    run = subprocess.run(
        [str(where / "bin" / "pip"), "install", "--quiet", str(built.wheel)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return where


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _serve_and_fetch(command: list[str], cwd: Path, env: dict[str, str], port: int) -> None:
    """Start a serving command, get /healthz and the console's sign-in page, stop it."""
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        health: tuple[int, str] | None = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert health is not None, f"{command[1]} never answered: {proc.communicate()}"
        assert health[0] == 200
        status, page = _get(f"http://127.0.0.1:{port}/login")
        assert status == 200
        assert "<h1>Sign in</h1>" in page
        assert 'name="password"' in page
        css = _get(f"http://127.0.0.1:{port}/static/console.css")
        assert css[0] == 200  # the static files were shipped
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_the_installed_wheel_runs_a_campaign_in_a_new_folder(
    venv: Path, smtp: SmtpServer, tmp_path: Path
) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PSHNOTIFY_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp_path / "work"
    work.mkdir()

    def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pshnotify", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import pshnotify; print(pshnotify.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(venv)  # not the checkout

    # an empty folder: the command says which file it looked for and what to run
    lost = cli("status", cwd=work)
    assert lost.returncode == 2
    assert f"no program file at {work / 'program.toml'}" in lost.stderr
    assert "pshnotify new DIR" in lost.stderr
    assert "Traceback" not in lost.stderr
    assert not (work / "var").exists()  # nothing left behind

    made = cli("new", "campaign", cwd=work)
    assert made.returncode == 0, made.stderr
    camp = work / "campaign"
    for name in ("program.toml", ".env", "roster-example.csv", "pshnotify.service"):
        assert (camp / name).is_file(), name
    assert (camp / "templates" / "email" / "launch" / "body.txt").is_file()
    again = cli("new", "campaign", cwd=work)
    assert again.returncode == 2
    assert "not empty" in again.stderr

    # settings from the folder's .env, as a user would set them
    with (camp / ".env").open("a") as f:
        f.write(f"PSHNOTIFY_SMTP_PORT={smtp.port}\n")

    steps = [
        ("init",),
        ("roster", "import", "roster-example.csv"),
        ("launch", "pilot", "--yes", "--now", NOW),
        ("run", "--once", "--now", NOW),
    ]
    for step in steps:
        done = cli(*step, cwd=camp)
        assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
    emails = smtp.messages()
    assert emails, "no email reached the relay"
    for msg in emails:
        assert msg["X-Pshnotify-Kind"] == "launch"
        calendars = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
        assert len(calendars) == 1
        assert (calendars[0].get_filename() or "").endswith(".ics")
        assert "BEGIN:VEVENT" in calendars[0].get_content()
    assert (camp / "var" / "pshnotify.db").is_file()  # the default database, in the folder

    for command in ("run", "web"):
        port = _free_port()
        serve_env = {**env, "PSHNOTIFY_HTTP_PORT": str(port)}
        args = [str(venv / "bin" / "pshnotify"), command, "--now", NOW]
        _serve_and_fetch(args, camp, serve_env, port)
