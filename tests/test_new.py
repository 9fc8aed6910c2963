"""`pshnotify new DIR` (issue 26): a campaign folder to edit, in which the commands work with
nothing else; without a program file every command says where it looked and what to run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pshnotify.settings import Settings
from pshnotify.skeleton.envfile import DESCRIPTIONS
from tests.conftest import ROOT

NOW = "2023-09-11T10:00:00-04:00"


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PSHNOTIFY_")}
    return subprocess.run(
        [sys.executable, "-m", "pshnotify", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_new_writes_the_seed_program_the_templates_a_roster_an_env_and_a_unit(
    tmp_path: Path,
) -> None:
    made = run(tmp_path, "new", "campaign")
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "campaign"
    assert (folder / "program.toml").read_text() == (ROOT / "config/program.toml").read_text()
    shipped = sorted(p.relative_to(ROOT / "templates") for p in ROOT.glob("templates/**/*.*"))
    written = sorted(p.relative_to(folder / "templates") for p in folder.glob("templates/**/*.*"))
    assert written == shipped
    assert (folder / "roster-example.csv").read_text().startswith("id,email,name,department")
    unit = (folder / "pshnotify.service").read_text()
    assert f"WorkingDirectory={folder}" in unit
    assert "/opt/pshnotify" not in unit
    assert (folder / ".env").stat().st_mode & 0o077 == 0  # it will hold passwords
    assert "next: cd campaign && pshnotify init" in made.stdout
    assert all(len(line) <= 80 for line in made.stdout.splitlines())


def test_the_env_file_lists_every_setting_commented_with_what_it_does(tmp_path: Path) -> None:
    assert set(DESCRIPTIONS) == set(Settings.model_fields)  # a new setting needs its line
    assert run(tmp_path, "new", "c").returncode == 0
    text = (tmp_path / "c" / ".env").read_text()
    named = re.findall(r"^(?:# )?(PSHNOTIFY_[A-Z_]+)=", text, re.M)
    assert named == [f"PSHNOTIFY_{name.upper()}" for name in Settings.model_fields]
    assert "# PSHNOTIFY_SMTP_PORT=8025" in text
    assert "relay's password" in text
    # One line is set: the key of the emails' personal links, random for each folder.
    (secret,) = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert re.fullmatch(r"PSHNOTIFY_LINK_SECRET=[0-9a-f]{48}", secret)
    assert run(tmp_path, "new", "d").returncode == 0
    assert secret not in (tmp_path / "d" / ".env").read_text()
    assert all(len(line) <= 80 for line in text.splitlines())


def test_new_refuses_a_folder_with_files_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    refused = run(tmp_path.parent, "new", tmp_path.name)
    assert refused.returncode == 2
    assert "not empty" in refused.stderr
    assert "--force" in refused.stderr
    assert not (tmp_path / "program.toml").exists()
    forced = run(tmp_path.parent, "new", tmp_path.name, "--force")
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "program.toml").is_file()
    assert (tmp_path / "mine.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "command",
    [
        ("init",),
        ("status",),
        ("roster", "import", "roster.csv"),
        ("launch", "pilot", "--dry-run", "--now", NOW),
        ("run", "--once", "--now", NOW),
        ("web",),
    ],
)
def test_without_a_program_file_each_command_says_where_it_looked(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    result = run(tmp_path, *command)
    assert result.returncode == 2
    assert f"no program file at {tmp_path / 'program.toml'}" in result.stderr
    assert "pshnotify new DIR" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no empty database left behind


def test_a_folder_without_templates_uses_the_shipped_ones(tmp_path: Path) -> None:
    assert run(tmp_path, "new", "c").returncode == 0
    folder = tmp_path / "c"
    for path in sorted(folder.glob("templates/**/*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (folder / "templates").rmdir()
    init = run(folder, "init")
    assert init.returncode == 0, init.stderr
    assert "templates: the ones shipped with pshnotify" in init.stdout
    assert run(folder, "roster", "import", "roster-example.csv").returncode == 0
    person = (folder / "roster-example.csv").read_text().splitlines()[1].split(",")[0]
    shown = run(folder, "preview", "launch", "--person", person, "--now", NOW)
    assert shown.returncode == 0, shown.stderr
    assert "Subject:" in shown.stdout
    # a folder named in PSHNOTIFY_TEMPLATES_DIR is used as named: a wrong one is an error
    (folder / ".env").write_text("PSHNOTIFY_TEMPLATES_DIR=nowhere\n")
    wrong = run(folder, "preview", "launch", "--person", person, "--now", NOW)
    assert wrong.returncode == 2
    assert "PSHNOTIFY_TEMPLATES_DIR: nowhere is not a directory" in wrong.stderr
