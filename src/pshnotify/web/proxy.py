"""Which client a request came from, behind a reverse proxy or not.

uvicorn believes `X-Forwarded-For` and `X-Forwarded-Proto` from 127.0.0.1 by default, so any
local process could claim to be any address (and escape the failed-authentication throttle)
or claim to be the proxy. Here uvicorn's own header handling is off (`serve`), and these
headers are believed only on connections from PSHNOTIFY_WEB_TRUSTED_PROXIES; the connection's
own peer is kept beside the client they name, for the one check that is about the proxy
itself (the single-sign-on header: `peer`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

PEER = "pshnotify.peer"  # the scope key holding the connection's (host, port)


class ForwardedMiddleware:
    def __init__(self, app: ASGIApp, trusted: Sequence[str] = ()) -> None:
        self.app = app
        hosts = [str(ipaddress.ip_network(t, strict=False)) for t in trusted]
        self.inner: Any = ProxyHeadersMiddleware(app, trusted_hosts=hosts) if hosts else app  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[PEER] = scope.get("client")
        await self.inner(scope, receive, send)


def peer(scope: Scope) -> str | None:
    """The address of the connection's other end (the proxy, behind one)."""
    found = scope.get(PEER, scope.get("client"))
    return str(found[0]) if found else None
