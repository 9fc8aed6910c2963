"""The console's session: a signed cookie holding the login, a CSRF token and a flash message.

Signed with itsdangerous (HMAC-SHA1 over the payload and a timestamp; expired after the
configured hours) under PSHNOTIFY_WEB_SECRET (32 characters at least, settings), HttpOnly,
SameSite=Lax, Secure when the request came over HTTPS or PSHNOTIFY_PUBLIC_URL is https (a TLS
proxy). Nothing but the login is trusted from it: the user's role and departments are read
from the database on every request, and the cookie's stamp must match the user's
(services.users): signing out, a new password or role, or removing the user ends every
session of that login at once, old cookies included.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "pshnotify_session"
CSRF_FIELD = "csrf_token"


@dataclass
class Session:
    login: str | None = None
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    flash: str | None = None
    changed: bool = False
    stamp: str = ""  # the user's session stamp when they signed in

    def stamp_ok(self, current: str) -> bool:
        return bool(self.stamp) and hmac.compare_digest(self.stamp.encode(), current.encode())

    def csrf_ok(self, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.csrf.encode())

    def sign_in(self, login: str, stamp: str) -> None:
        """A new CSRF token with every sign-in: a token seen before it is worth nothing."""
        self.login, self.csrf, self.changed = login, secrets.token_urlsafe(32), True
        self.stamp = stamp

    def sign_out(self) -> None:
        self.login, self.csrf, self.changed = None, secrets.token_urlsafe(32), True
        self.stamp = ""

    def say(self, message: str) -> None:
        self.flash, self.changed = message, True

    def pop_flash(self) -> str | None:
        message, self.flash = self.flash, None
        if message is not None:
            self.changed = True
        return message


@dataclass(frozen=True)
class SessionCodec:
    secret: bytes
    max_age: int  # seconds
    always_secure: bool = False  # PSHNOTIFY_PUBLIC_URL is https: a TLS proxy in front

    def _serializer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.secret, salt="pshnotify-console-session")

    def load(self, request: Request) -> Session:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return Session(changed=True)
        try:
            data: Any = self._serializer().loads(raw, max_age=self.max_age)
        except BadSignature:  # expired ones included (SignatureExpired is a BadSignature)
            return Session(changed=True)
        if not isinstance(data, dict) or not isinstance(data.get("c"), str):
            return Session(changed=True)
        login = data.get("u")
        flash = data.get("f")
        stamp = data.get("s")
        return Session(
            login if isinstance(login, str) else None,
            data["c"],
            flash if isinstance(flash, str) else None,
            stamp=stamp if isinstance(stamp, str) else "",
        )

    def save(self, request: Request, response: Response, session: Session) -> None:
        if not session.changed:
            return
        payload: dict[str, Any] = {"u": session.login, "c": session.csrf}
        if session.stamp:
            payload["s"] = session.stamp
        if session.flash:
            payload["f"] = session.flash
        response.set_cookie(
            COOKIE,
            self._serializer().dumps(payload),
            max_age=self.max_age,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self.always_secure or request.url.scheme == "https",
        )
