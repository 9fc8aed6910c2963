"""The template sandbox holds (issue 14, items 7-9): confined to its folder, bounded in work and
output, an edited template checked before use, a build fault that may pass retried."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from pshnotify.mail.kinds import Recipient, launch_context, sample_contexts
from pshnotify.mail.render import Templates
from pshnotify.runtime.wiring import Runtime
from pshnotify.store.schema import messages
from tests.smtp_server import SmtpServer
from tests.test_launch_and_send import launch, send, setup_pilot
from tests.test_program import SEED
from tests.test_roster_import import HEADER, write
from tests.test_templates import copy_templates

NOW = "2023-09-11T10:00:00-04:00"
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
SECRET = "hunter2-do-not-print"


@pytest.fixture
def operator(env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An initialised database with one person, and a copy of the templates to spoil."""
    directory = copy_templates(tmp_path)
    env = {**env, "PSHNOTIFY_TEMPLATES_DIR": str(directory), "PSHNOTIFY_SMTP_PASSWORD": SECRET}
    assert preview_cli(env, "init").returncode == 0
    roster = write(tmp_path, [HEADER, "H1,ada@example.edu,Ada,Human Resources,staff,,,,,,"])
    assert preview_cli(env, "roster", "import", str(roster), "--now", NOW).returncode == 0
    return env, directory


def preview_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    args = args or ("preview", "launch", "--person", "H1", "--now", NOW)
    return subprocess.run(
        [sys.executable, "-m", "pshnotify", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,  # a hang is a failure, not a stuck suite
        check=False,
    )


# -- 7: confined to the folder ---------------------------------------------------------------------
@SQLITE_ONLY
def test_a_link_out_of_the_folder_is_refused_and_no_secret_is_shown(
    operator: tuple[dict[str, str], Path],
) -> None:
    env, directory = operator
    (directory / "_layout" / "env.txt").symlink_to("/proc/self/environ")
    body = directory / "launch" / "body.txt"
    body.write_text(body.read_text() + '\n{% include "_layout/env.txt" %}\n')
    shown = preview_cli(env)
    assert shown.returncode == 2
    assert SECRET not in shown.stdout + shown.stderr
    assert "Traceback" not in shown.stderr
    assert "_layout/env.txt: resolves outside the templates folder" in shown.stderr


@SQLITE_ONLY
def test_links_that_loop_do_not_hang_the_start(operator: tuple[dict[str, str], Path]) -> None:
    env, directory = operator
    (directory / "_layout" / "a").symlink_to(".")
    (directory / "_layout" / "b").symlink_to(".")
    shown = preview_cli(env)
    assert shown.returncode == 0, shown.stderr
    assert "Dear Ada," in shown.stdout


# -- 8: bounded work and output --------------------------------------------------------------------
HOSTILE = {
    "{{ range(10**9) | length }}": "range() of 1000000000 items",
    "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}": (
        "a render may use 100000 in all"
    ),
    "{{ 'x' * 10**8 }}": "a repetition longer than",
    "{{ '%0100000000d' % 1 }}": "a % format wider than",
    "{{ 'x' | center(10**9) }}": "center(1000000000): wider than",
    "{% for a in 'x' * 999999 %}{% for b in 'y' * 999999 %}{% endfor %}{% endfor %}": (
        "took more than 2 s to render"
    ),
}


@SQLITE_ONLY
@pytest.mark.parametrize("source", list(HOSTILE))
def test_an_unbounded_template_is_a_template_error_at_start(
    operator: tuple[dict[str, str], Path], source: str
) -> None:
    env, directory = operator
    body = directory / "launch" / "body.txt"
    body.write_text(body.read_text() + "\n" + source + "\n")
    shown = preview_cli(env)
    assert shown.returncode == 2, shown.stdout[:300]
    assert "Traceback" not in shown.stderr
    assert f"{body}" in shown.stderr
    assert HOSTILE[source] in shown.stderr


# -- 9: an edited template is checked like at start ------------------------------------------------
@pytest.mark.fast
def test_a_broken_edit_keeps_the_last_good_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    directory = copy_templates(tmp_path)
    subject = directory / "launch" / "subject.txt"
    context = launch_context(SEED, "pilot", Recipient("X", "N", "n@example.org", "D"))
    running = Templates(directory)
    running.check(sample_contexts(SEED))  # as the daemon does at start
    first = running.render("launch", context).subject
    monkeypatch.setattr("pshnotify.mail.render.RELOAD_CHECK_SECONDS", 0.0)
    subject.write_text("Broken: {{ program.nmae }}\n")
    with caplog.at_level(logging.ERROR, logger="pshnotify.mail.render"):
        assert running.render("launch", context).subject == first
    (record,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "edited templates refused; the last good ones stay in use" in record.getMessage()
    assert "nmae" in record.getMessage()
    subject.write_text("Fixed: {{ program.name }}\n")
    assert running.render("launch", context).subject.startswith("Fixed: ")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the build is in the process
def test_a_build_fault_that_may_pass_is_a_retry(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup_pilot(runtime, tmp_path)
    assert launch(runtime) == 3
    calls = {"n": 0}
    real = Templates.render

    def out_of_descriptors(self: Templates, kind: str, context: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:  # what a full descriptor table does to opening a template
            raise OSError(errno.EMFILE, "Too many open files")
        return real(self, kind, context)  # type: ignore[arg-type]

    monkeypatch.setattr(Templates, "render", out_of_descriptors)
    outcomes = send(runtime)
    assert outcomes.get("failed") is None, outcomes
    assert outcomes == {"sent": 2, "retry": 1}
    with runtime.engine.connect() as conn:
        states = sorted(conn.scalars(select(messages.c.state)))
    assert states == ["retry", "sent", "sent"]
