"""Templates: `<kind>/subject.txt`, `<kind>/body.txt`, `<kind>/body.html` under the templates dir.

Operator-editable files, so they run in Jinja's sandbox; StrictUndefined turns a misspelt
variable into an error; HTML is autoescaped, text is not (escaping would corrupt it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pshnotify.domain.errors import InputError

PARTS = ("subject.txt", "body.txt", "body.html")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


_ENVIRONMENTS: dict[Path, ImmutableSandboxedEnvironment] = {}


def _environment(directory: Path) -> ImmutableSandboxedEnvironment:
    """One environment per folder per process: compiled templates are reused, and Jinja's
    auto-reload still notices an edited file."""
    key = directory.resolve()
    if key not in _ENVIRONMENTS:
        _ENVIRONMENTS[key] = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(directory)),
            undefined=StrictUndefined,
            autoescape=lambda name: bool(name and name.endswith(".html")),
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENVIRONMENTS[key]


class Templates:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = _environment(directory)

    def kinds(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p.name for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("_")
        )

    def render(self, kind: str, context: Mapping[str, Any]) -> Rendered:
        subject = self.env.get_template(f"{kind}/subject.txt").render(context)
        subject = " ".join(subject.split())
        if not subject or _CONTROL.search(subject):
            raise ValueError(f"{kind}/subject.txt rendered an empty or unsafe subject")
        text = self.env.get_template(f"{kind}/body.txt").render(context)
        html = self.env.get_template(f"{kind}/body.html").render(context)
        return Rendered(subject, text, html)

    def check(self, samples: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Render every kind once with a sample context; report every broken file at once."""
        problems = []
        for kind, context in samples:
            for part in PARTS:
                name = f"{kind}/{part}"
                try:
                    self.env.get_template(name).render(context)
                except TemplateError as exc:
                    lineno = getattr(exc, "lineno", None)
                    where = f":{lineno}" if lineno else ""
                    problems.append(f"{self.directory / name}{where}: {exc.message or exc}")
        if problems:
            raise InputError(problems, hint="fix the templates; nothing was sent")
