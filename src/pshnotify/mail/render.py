"""Templates: `<kind>/subject.txt`, `<kind>/body.txt`, `<kind>/body.html` under the templates dir.

Operator-editable files, so they run in Jinja's sandbox; StrictUndefined turns a misspelt
variable into an error; HTML is autoescaped, text is not (escaping would corrupt it).
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterable, Mapping, MutableMapping
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


# How often a long-running sender looks for edited template files.
RELOAD_CHECK_SECONDS = 1.0


@dataclass
class _Loaded:
    env: ImmutableSandboxedEnvironment
    stamp: tuple[tuple[str, int, int], ...] = ()
    checked_at: float = float("-inf")


_ENVIRONMENTS: dict[Path, _Loaded] = {}

_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with `a.b` on a plain dict (every context we pass is plain
    dicts) looked up as the key it means without first failing as an attribute.

    Jinja tries `getattr(obj, "b")` before `obj["b"]`: on a dict that raises and catches an
    AttributeError for every `{{ person.name }}`, a third of a launch email's render time.
    The result is the same: a name that is one of dict's own attributes (`items`, `keys`...)
    still goes the usual way, and item access is what the sandbox allows on a dict anyway.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one plain dict, not Jinja's ChainMap over the environment's:
        every render and include builds its context from them (iterating a ChainMap there
        cost a tenth of a render). Equivalent here: this environment's globals never change
        after it is made (an edited template gets a new environment)."""
        return {**self.globals, **(d or {})}


def _environment(directory: Path) -> ImmutableSandboxedEnvironment:
    return _Sandbox(
        loader=FileSystemLoader(str(directory), followlinks=True),
        undefined=StrictUndefined,
        autoescape=lambda name: bool(name and name.endswith(".html")),
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        # Jinja's own reload check stats every file a render touches, layout and includes too
        # (7 stats a launch email); `Templates._reload_if_edited` looks once a second instead.
        auto_reload=False,
        # An unbounded plain dict, not the 400-entry LRU whose every hit takes a lock and moves
        # the name in a deque (6 hits a launch email): the templates are a few dozen files, and
        # an edit replaces the whole environment.
        cache_size=-1,
    )


def _loaded(directory: Path) -> _Loaded:
    """One environment per folder per process: compiled templates are reused across senders
    and commands run in one process."""
    key = directory.resolve()
    if key not in _ENVIRONMENTS:
        _ENVIRONMENTS[key] = _Loaded(_environment(directory))
    return _ENVIRONMENTS[key]


def _stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    found = []
    for root, _dirs, files in os.walk(directory, followlinks=True):
        for name in files:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                st = os.stat(path)
                found.append((path, st.st_mtime_ns, st.st_size))
    return tuple(sorted(found))


class Templates:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._loaded = _loaded(directory)
        self._reload_if_edited(force=True)

    def _reload_if_edited(self, force: bool = False) -> None:
        """Edited files are seen within a second (and by every new command at once)."""
        loaded = self._loaded
        now = time.monotonic()
        if not force and now - loaded.checked_at < RELOAD_CHECK_SECONDS:
            return
        loaded.checked_at = now
        stamp = _stamp(self.directory)
        if stamp != loaded.stamp:
            # A fresh environment, not a cleared cache: a render under way in another thread
            # could put an old template back into a cache it shares.
            loaded.env = _environment(self.directory)
            loaded.stamp = stamp

    @property
    def env(self) -> ImmutableSandboxedEnvironment:
        return self._loaded.env

    def kinds(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p.name for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("_")
        )

    def render(self, kind: str, context: Mapping[str, Any]) -> Rendered:
        self._reload_if_edited()
        env = self.env  # one environment for the three parts, even if a reload comes between
        subject = env.get_template(f"{kind}/subject.txt").render(context)
        subject = " ".join(subject.split())
        if not subject or _CONTROL.search(subject):
            raise ValueError(f"{kind}/subject.txt rendered an empty or unsafe subject")
        text = env.get_template(f"{kind}/body.txt").render(context)
        html = env.get_template(f"{kind}/body.html").render(context)
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
