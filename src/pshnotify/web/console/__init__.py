"""The web console: operators run and watch the campaign, department officers read theirs.

Server-rendered pages (Starlette, Jinja2 autoescaped), inline SVG charts drawn on the server,
a vendored htmx (static/, 0BSD) only to refresh progress bars; reading works without script.
"""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import Engine
from starlette.applications import Starlette

from pshnotify.clock import Clock
from pshnotify.settings import Settings
from pshnotify.web.console.app import Console, ProgramLoader
from pshnotify.web.console.throttle import SignInThrottle

log = logging.getLogger(__name__)


def create_console(
    engine: Engine,
    clock: Clock,
    settings: Settings,
    load_program: ProgramLoader,
    throttle: SignInThrottle | None = None,
) -> Starlette:
    if settings.web_secret is not None:
        secret = settings.web_secret.get_secret_value().encode("utf-8")
    else:
        secret = secrets.token_bytes(32)
        log.info(
            "console sessions signed with a key of this process (PSHNOTIFY_WEB_SECRET unset): "
            "a restart signs everyone out"
        )
    return Console(engine, clock, settings, load_program, secret, throttle).app()


__all__ = ["create_console"]
