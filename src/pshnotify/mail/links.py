"""The personal link in the emails (`PUBLIC_URL/r/TOKEN`) and its page's form token.

The token is signed with PSHNOTIFY_LINK_SECRET (itsdangerous), a salt of its own purpose, and
names the program and the person (by roster id). It carries no expiry of its own: a link works
until `link_valid_days` after the person's deadline *as it is when the link is opened* (an
extension lengthens it), which the page reads from the database with the injected clock.
Former secrets (PSHNOTIFY_LINK_SECRET_OLD) still verify, so a rotation breaks no email
already sent.

The page's form carries a second token, signed under another salt, derived from the link's
own: a form built for one link cannot be posted to another, nor can a link's token be posted
as its form's token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from itsdangerous import BadSignature, Signer, URLSafeSerializer

if TYPE_CHECKING:
    from pshnotify.domain.program import Program

_LINK_SALT = "pshnotify.request-link.v1"
_FORM_SALT = "pshnotify.request-form.v1"


class BadLinkError(ValueError):
    """An altered, truncated or foreign token."""


@dataclass(frozen=True)
class Named:
    program: str  # the program's key
    person: str  # the person's roster id


class RequestLinks:
    def __init__(self, secret: str, public_url: str, old_secrets: Sequence[str] = ()) -> None:
        keys = [secret, *old_secrets]
        self.public_url = public_url.rstrip("/")
        # itsdangerous signs with the last key of the list and verifies with any.
        ordered = list(reversed(keys))
        self._links = URLSafeSerializer(ordered, salt=_LINK_SALT)
        self._forms = Signer(ordered, salt=_FORM_SALT)

    def token(self, program: str, person: str) -> str:
        return str(self._links.dumps([program, person]))

    def url(self, program: str, person: str) -> str:
        return f"{self.public_url}/r/{self.token(program, person)}"

    def read(self, token: str) -> Named:
        if len(token) > 512:
            raise BadLinkError("too long")
        try:
            data = self._links.loads(token)
        except (BadSignature, UnicodeError, ValueError):
            raise BadLinkError("not a link we made") from None
        if (
            not isinstance(data, list)
            or len(data) != 2
            or not all(isinstance(x, str) and x for x in data)
        ):
            raise BadLinkError("not a link we made")
        return Named(data[0], data[1])

    def form_token(self, token: str) -> str:
        return self._forms.sign(_digest(token)).decode("ascii")

    def form_ok(self, token: str, value: object) -> bool:
        if not isinstance(value, str) or not value or len(value) > 200:
            return False
        try:
            signed = self._forms.unsign(value)
        except BadSignature:
            return False
        return bool(signed == _digest(token).encode("ascii"))


# The kinds that carry the personal link: those that ask for the training again.
LINKED_KINDS = frozenset({"launch", "reminder", "overdue"})


def with_link(
    links: RequestLinks | None,
    program: Program,
    kind: str,
    person: str,
    context: Mapping[str, Any],
) -> Mapping[str, Any]:
    """A message's data with the person's link to the requests page, for the kinds that carry
    it when the program takes requests (the sender and `preview` both ask here)."""
    if links is None or not program.requests.enabled or kind not in LINKED_KINDS or not person:
        return context
    return {**context, "request_url": links.url(program.key, person)}


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:32]
