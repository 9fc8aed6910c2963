"""Variable envelope return paths: one bounce address per message, authenticated.

`bounces@psh.example.edu` becomes `bounces+1f3-9c0d...@psh.example.edu` for the message whose
row id is 0x1f3. The token carries an HMAC of the id keyed by PSHNOTIFY_BOUNCE_SECRET, so a
forged bounce (anyone can send mail to the bounce address) cannot name a message and mark
someone undeliverable. Lower-case hex only: some relays fold the case of local parts.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

_MAC_HEX = 16  # 64 bits: an online forger gets one guess per bounce it sends
_TOKEN = re.compile(r"^([0-9a-f]{1,16})-([0-9a-f]{16})$")


class ForgedTokenError(ValueError):
    """A bounce address carries a token whose HMAC does not verify."""


@dataclass(frozen=True)
class Verp:
    """The bounce address and the key that signs its tokens."""

    address: str  # bounces@psh.example.edu
    secret: bytes

    def __post_init__(self) -> None:
        local, at, domain = self.address.rpartition("@")
        if not at or not local or not domain or "+" in local:
            raise ValueError("must be a plain address such as bounces@psh.example.edu")
        if len(self.secret) < 16:
            raise ValueError("the bounce secret must be at least 16 characters")

    def _mac(self, message_row_id: int) -> str:
        digest = hmac.new(self.secret, f"verp:{message_row_id}".encode(), hashlib.sha256)
        return digest.hexdigest()[:_MAC_HEX]

    def sender_for(self, message_row_id: int) -> str:
        """The envelope sender for this message."""
        local, _, domain = self.address.rpartition("@")
        return f"{local}+{message_row_id:x}-{self._mac(message_row_id)}@{domain}"

    def message_of(self, address: str) -> int | None:
        """The message row id an address names; None when it is not one of our bounce
        addresses (or has no token); ForgedTokenError when its token does not verify."""
        token = self.token_in(address)
        if token is None:
            return None
        m = _TOKEN.match(token.lower())
        if m is None:
            raise ForgedTokenError(f"malformed bounce token {token!r}")
        row_id = int(m.group(1), 16)
        if not hmac.compare_digest(m.group(2), self._mac(row_id)):
            raise ForgedTokenError(f"bounce token {token!r} does not verify")
        return row_id

    def token_in(self, address: str) -> str | None:
        local, _, domain = self.address.rpartition("@")
        a_local, at, a_domain = address.strip().strip("<>").rpartition("@")
        if not at or a_domain.lower() != domain.lower():
            return None
        base, plus, token = a_local.partition("+")
        if not plus or base.lower() != local.lower():
            return None
        return token
