"""Templates: `<kind>/subject.txt`, `<kind>/body.txt`, `<kind>/body.html` under the templates dir.

Operator-editable files, so they run in Jinja's sandbox; StrictUndefined turns a misspelt
variable into an error; HTML is autoescaped, text is not (escaping would corrupt it).

The sandbox is held to its folder and to bounded work:
- a template path that resolves outside the templates folder (a link to /proc/self/environ,
  say) is refused, links are never walked, and only regular files of modest size are read;
- a render may produce at most MAX_OUTPUT characters per part and iterate at most
  MAX_ITERATIONS `range` items in all; `*`, `**`, `%` and the padding filters that could build
  a huge value are checked before they run; at start (and when an edited template is reloaded)
  every sample render must also finish within CHECK_SECONDS.
An edited template is checked like at start before it is used; a broken edit is logged as an
error and the last good templates stay in use.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import logging
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from jinja2 import BaseLoader, Environment, StrictUndefined, Template, TemplateError
from jinja2 import filters as jinja_filters
from jinja2.exceptions import TemplateNotFound, TemplateRuntimeError
from jinja2.loaders import split_template_path
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pshnotify.domain.errors import InputError

PARTS = ("subject.txt", "body.txt", "body.html")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
log = logging.getLogger(__name__)

MAX_TEMPLATE_BYTES = 256 * 1024  # one template file
MAX_OUTPUT = 1024 * 1024  # characters one part of one message may render to
MAX_ITERATIONS = 100_000  # `range` items one render may use, all ranges together
CHECK_SECONDS = 2.0  # a sample render at start or reload
# A `%` format with a width or precision of five digits or more builds a huge string.
_WIDE_FORMAT = re.compile(r"%[^a-zA-Z%]*\d{5}")


class TemplateLimitError(TemplateRuntimeError):
    """A render tried to do more than a message needs (see the module docstring)."""


# The `range` items left to the render under way (None: not inside a render).
_BUDGET: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "pshnotify_render_budget", default=None
)


def _bounded_range(*args: int) -> range:
    found = range(*args)
    try:
        size = len(found)
    except OverflowError:
        size = MAX_ITERATIONS + 1
    budget = _BUDGET.get()
    left = budget[0] if budget is not None else MAX_ITERATIONS
    if size > left:
        raise TemplateLimitError(
            f"range() of {size} items; a render may use {MAX_ITERATIONS} in all"
        )
    if budget is not None:
        budget[0] -= size
    return found


def _checked_width(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A padding filter whose int arguments are held under MAX_OUTPUT before it runs."""

    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and value > MAX_OUTPUT:
                raise TemplateLimitError(f"{name}({value}): wider than {MAX_OUTPUT} characters")
        result = fn(*args, **kwargs)
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
            raise TemplateLimitError(f"{name}: longer than {MAX_OUTPUT} characters")
        return result

    return bounded


def _bounded_replace(*args: Any, **kwargs: Any) -> Any:
    result = jinja_filters.do_replace(*args, **kwargs)
    if isinstance(result, str) and len(result) > MAX_OUTPUT:
        raise TemplateLimitError(f"replace: longer than {MAX_OUTPUT} characters")
    return result


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
    # The contexts the templates were last checked with: an edit is checked with them too.
    samples: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)


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

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        """`'x' * 10**8`, `10 ** 10**9` and `'%0100000000d' % 1` refused before they run."""
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(n, int)
                if sized and len(seq) * n > MAX_OUTPUT:
                    raise TemplateLimitError(f"a repetition longer than {MAX_OUTPUT}")
        elif operator == "**":
            if isinstance(right, int) and abs(right) > 1024:
                raise TemplateLimitError(f"an exponent of {right}; at most 1024")
        elif operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
            raise TemplateLimitError("a % format wider than 9999 characters")
        return super().call_binop(context, operator, left, right)

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        """A template's globals as one plain dict, not Jinja's ChainMap over the environment's:
        every render and include builds its context from them (iterating a ChainMap there
        cost a tenth of a render). Equivalent here: this environment's globals never change
        after it is made (an edited template gets a new environment)."""
        return {**self.globals, **(d or {})}


class _ConfinedLoader(BaseLoader):
    """Templates from one folder, and only from it: a path (through links or not) that
    resolves outside the folder is refused, as is anything but a regular file of at most
    MAX_TEMPLATE_BYTES."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = directory.resolve()

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = self.directory.joinpath(*split_template_path(template))
        real = path.resolve()
        if not real.is_relative_to(self.root):
            raise TemplateError(
                f"{template}: resolves outside the templates folder {self.root} "
                f"(to {real}); a template may only use files inside it"
            )
        try:
            st = os.stat(real)
        except FileNotFoundError:
            raise TemplateNotFound(template) from None
        if not stat.S_ISREG(st.st_mode):
            raise TemplateError(f"{template}: not a regular file")
        with open(real, "rb") as f:
            data = f.read(MAX_TEMPLATE_BYTES + 1)
        if len(data) > MAX_TEMPLATE_BYTES:
            raise TemplateError(f"{template}: larger than {MAX_TEMPLATE_BYTES // 1024} KB")
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError:
            raise TemplateError(f"{template}: not UTF-8 text") from None
        return source, str(path), lambda: False  # edits are found by Templates' own check

    def list_templates(self) -> list[str]:
        return sorted(
            os.path.relpath(os.path.join(root, name), self.directory).replace(os.sep, "/")
            for root, _dirs, files in os.walk(self.directory, followlinks=False)
            for name in files
        )


def _environment(directory: Path) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        loader=_ConfinedLoader(directory),
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
    env.globals["range"] = _bounded_range
    for name in ("center", "indent", "wordwrap", "truncate", "format"):
        env.filters[name] = _checked_width(name, env.filters[name])
    env.filters["replace"] = _bounded_replace
    return env


def _loaded(directory: Path) -> _Loaded:
    """One environment per folder per process: compiled templates are reused across senders
    and commands run in one process."""
    key = directory.resolve()
    if key not in _ENVIRONMENTS:
        _ENVIRONMENTS[key] = _Loaded(_environment(directory))
    return _ENVIRONMENTS[key]


def _stamp(directory: Path) -> tuple[tuple[str, int, int], ...]:
    found = []
    for root, _dirs, files in os.walk(directory, followlinks=False):  # two links to . loop
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
            env = _environment(self.directory)
            loaded.stamp = stamp  # a broken edit is reported once, not every second
            if loaded.samples:
                try:
                    _check(env, self.directory, loaded.samples)
                except InputError as exc:
                    log.error(
                        "edited templates refused; the last good ones stay in use: %s",
                        "; ".join(exc.problems),
                    )
                    return
                log.info("edited templates checked and in use")
            loaded.env = env

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
        token = _BUDGET.set([MAX_ITERATIONS])
        try:
            subject = _bounded_render(env.get_template(f"{kind}/subject.txt"), context)
            subject = " ".join(subject.split())
            if not subject or _CONTROL.search(subject):
                raise ValueError(f"{kind}/subject.txt rendered an empty or unsafe subject")
            text = _bounded_render(env.get_template(f"{kind}/body.txt"), context)
            html = _bounded_render(env.get_template(f"{kind}/body.html"), context)
        finally:
            _BUDGET.reset(token)
        return Rendered(subject, text, html)

    def check(self, samples: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Render every kind once with a sample context; report every broken file at once.
        The samples are kept: an edited template is checked with them before it is used."""
        samples = list(samples)
        _check(self.env, self.directory, samples)
        known = {kind for kind, _ in self._loaded.samples}
        self._loaded.samples += [(k, c) for k, c in samples if k not in known]


def _bounded_render(template: Template, context: Mapping[str, Any]) -> str:
    """`template.render`, stopped past MAX_OUTPUT characters. As `render` does it (errors
    rewritten to name the template's line), without `generate`'s extra generator a chunk."""
    parts: list[str] = []
    size = 0
    try:
        chunks = template.root_render_func(template.new_context(dict(context)))
        # Counted 64 chunks at a time: a Python step per chunk cost a fifth of a render.
        while batch := list(itertools.islice(chunks, 64)):
            size += sum(map(len, batch))
            if size > MAX_OUTPUT:
                raise TemplateLimitError(f"rendered more than {MAX_OUTPUT} characters")
            parts += batch
    except Exception:
        template.environment.handle_exception()
    return "".join(parts)


def _check(
    env: ImmutableSandboxedEnvironment,
    directory: Path,
    samples: Iterable[tuple[str, Mapping[str, Any]]],
) -> None:
    """Every part of every sample rendered within the limits, or InputError naming each file."""
    problems = []
    for kind, context in samples:
        for part in PARTS:
            name = f"{kind}/{part}"
            token = _BUDGET.set([MAX_ITERATIONS])
            try:
                with _deadline(CHECK_SECONDS, directory):
                    _bounded_render(env.get_template(name), context)
            except TemplateError as exc:
                lineno = getattr(exc, "lineno", None)
                where = f":{lineno}" if lineno else ""
                problems.append(f"{directory / name}{where}: {exc.message or exc}")
            except (ArithmeticError, RecursionError, MemoryError, OSError, ValueError) as exc:
                problems.append(f"{directory / name}: {type(exc).__name__}: {exc}")
            finally:
                _BUDGET.reset(token)
    if problems:
        raise InputError(problems, hint="fix the templates; nothing was sent")


@contextlib.contextmanager
def _deadline(seconds: float, directory: Path) -> Any:
    """Stop a template's own code after `seconds` of this thread's CPU time (a template's
    compiled code is Python, so a loop that never ends is stopped at its next line). Only the
    templates' frames are traced and only they are stopped: other code (a GC callback, the
    interpreter's) runs untouched, and a loaded machine does not make a template slow. For
    checks only: tracing makes a render a few times slower."""
    ends = time.thread_time() + seconds
    previous = sys.gettrace()
    prefixes = (str(directory), str(directory.resolve()))

    def in_template(frame: FrameType, event: str, arg: Any) -> Any:
        if time.thread_time() > ends:
            raise TemplateLimitError(f"took more than {seconds:g} s to render")
        return in_template

    def on_call(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code.co_filename.startswith(prefixes):
            return in_template(frame, event, arg)
        return None  # not a template's code: not traced line by line

    sys.settrace(on_call)
    try:
        yield
    finally:
        sys.settrace(previous)
