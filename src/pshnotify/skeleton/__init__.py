"""The files a campaign folder starts from, shipped inside the package, and `pshnotify new`.

`email/` and `config/` here are the repository's `templates/email/` and `config/` (links in the
checkout, copies in the wheel), read with importlib.resources so that an installed pshnotify
needs nothing from the checkout. A campaign folder is where the commands run: its
`program.toml`, `templates/email/` and `.env` are what the settings' defaults find there.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

from pshnotify.domain.errors import InputError

PROGRAM_FILE = Path("program.toml")  # the defaults, relative to the campaign folder
TEMPLATES_DIR = Path("templates/email")
ROSTER_FILE = Path("roster-example.csv")
ENV_FILE = Path(".env")
UNIT_FILE = Path("pshnotify.service")
NEW_HINT = "run `pshnotify new DIR` to make a campaign folder, then run pshnotify in DIR"


def _shipped(name: str) -> Traversable:
    return files(__name__).joinpath(name)


def packaged_templates() -> Path:
    """The email templates shipped with pshnotify (used when a folder has none of its own)."""
    return Path(str(_shipped("email")))


def templates_dir(configured: Path, explicit: bool) -> Path:
    """The folder's templates; the shipped ones when the default folder does not exist. A
    folder named by PSHNOTIFY_TEMPLATES_DIR is used as named (a wrong one is an error)."""
    if explicit or configured.is_dir():
        return configured
    return packaged_templates()


def require_program_file(path: Path) -> Path:
    """The program file, or bad input saying where it was looked for and what to do."""
    if path.is_file():
        return path
    where = path if path.is_absolute() else Path.cwd() / path
    raise InputError(
        [f"PSHNOTIFY_PROGRAM_FILE: no program file at {where}"],
        hint=f"{NEW_HINT} (or set PSHNOTIFY_PROGRAM_FILE to yours)",
    )


def _walk(node: Traversable, rel: Path) -> Iterator[tuple[Path, Traversable]]:
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.name.startswith((".", "__")):
            continue
        if child.is_dir():
            yield from _walk(child, rel / child.name)
        else:
            yield rel / child.name, child


def _unit(folder: Path) -> str:
    """The shipped systemd unit, pointed at this folder and this installation's pshnotify."""
    text = _shipped("config").joinpath("pshnotify.service").read_text("utf-8")
    exe = shutil.which("pshnotify") or str(Path(sys.executable).with_name("pshnotify"))
    text = text.replace("/opt/pshnotify/.venv/bin/pshnotify", exe)
    text = text.replace("sudo cp config/pshnotify.service", f"sudo cp {folder / UNIT_FILE}")
    text = text.replace(
        "EnvironmentFile=/etc/pshnotify/pshnotify.env",
        "# Settings: .env in WorkingDirectory, read by pshnotify itself.",
    )
    if folder.is_relative_to("/home") or folder.is_relative_to("/root"):
        text = text.replace("ProtectHome=true", "ProtectHome=read-only")  # var/ stays writable
    return text.replace("/opt/pshnotify", str(folder))


def campaign_files(folder: Path) -> dict[Path, str]:
    """Every file of a new campaign folder, by path relative to it."""
    from pshnotify.skeleton.envfile import env_template

    config = _shipped("config")
    out = {
        PROGRAM_FILE: config.joinpath("program.toml").read_text("utf-8"),
        ROSTER_FILE: config.joinpath("roster-example.csv").read_text("utf-8"),
        ENV_FILE: env_template(),
        UNIT_FILE: _unit(folder),
    }
    for rel, node in _walk(_shipped("email"), TEMPLATES_DIR):
        out[rel] = node.read_text("utf-8")
    return out


def write_campaign_folder(folder: Path, *, force: bool = False) -> list[Path]:
    """Write a campaign folder; refuses one that has files in it unless `force` (then the
    files it writes are replaced and others are left alone). Returns the paths written."""
    folder = folder.expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise InputError([f"DIR: {folder} is a file, not a folder"])
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise InputError(
            [f"DIR: {folder} is not empty; pshnotify new writes a fresh campaign folder"],
            hint="choose a new or empty folder, or pass --force to replace pshnotify's files "
            "in it (your other files are left alone)",
        )
    written = []
    try:
        for rel, text in campaign_files(folder).items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
            if rel == ENV_FILE:
                path.chmod(0o600)  # it will hold the SMTP password
            written.append(rel)
    except OSError as exc:
        raise InputError([f"DIR: cannot write {exc.filename}: {exc.strerror}"]) from None
    return written
