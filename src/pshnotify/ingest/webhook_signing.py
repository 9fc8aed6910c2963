"""Standard Webhooks verification (https://www.standardwebhooks.com/), with an injected clock.

The `standardwebhooks` package reads `datetime.now()` itself, so a rehearsal clock or a test
could not drive it; the scheme is small enough to implement here. The tests sign with the
package, which proves the two agree.

Signed content: `{webhook-id}.{webhook-timestamp}.{raw body}`; the signature header holds one
or more space-separated `v1,<base64 HMAC-SHA256>` entries (several during a key rotation).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

PREFIX = "whsec_"
HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
TOLERANCE = dt.timedelta(minutes=5)


class SecretError(ValueError):
    """The configured secret is not `whsec_` + base64 of a non-empty key."""


class VerificationError(Exception):
    """A delivery we must refuse; `status` says how (401 unauthenticated, 400 malformed)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def parse_secret(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret (the prefix is optional, as the package
    allows); raises SecretError naming no part of the secret."""
    encoded = secret.strip().removeprefix(PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError("expected whsec_ followed by base64") from None
    if not key:
        raise SecretError("the key is empty")
    return key


@dataclass(frozen=True)
class Delivery:
    """The three headers of a delivery."""

    msg_id: str
    timestamp: str
    signatures: str


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    """The raw HMAC of one delivery (before base64), over the exact bytes received."""
    # Header values arrive decoded as Latin-1 (HTTP's rule); re-encoding gives the wire bytes.
    content = msg_id.encode("latin-1") + b"." + timestamp.encode("latin-1") + b"." + body
    return hmac.new(key, content, hashlib.sha256).digest()


def verify(key: bytes, delivery: Delivery, body: bytes, wall: dt.datetime) -> None:
    """Authenticate first (401), then judge freshness (400): nothing about timing is revealed
    to a sender who cannot sign."""
    sent = _sent_at(delivery.timestamp)
    expected = sign(key, delivery.msg_id, delivery.timestamp, body)
    if not _any_matches(expected, delivery.signatures):
        raise VerificationError(401, "webhook-signature: no valid signature")
    if sent < wall - TOLERANCE:
        raise VerificationError(400, "webhook-timestamp: too old (more than 5 minutes)")
    if sent > wall + TOLERANCE:
        raise VerificationError(400, "webhook-timestamp: too new (more than 5 minutes ahead)")


def _sent_at(timestamp: str) -> dt.datetime:
    try:
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise ValueError(timestamp)
        return dt.datetime.fromtimestamp(int(timestamp), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise VerificationError(
            400, "webhook-timestamp: expected whole seconds since 1970"
        ) from None


def _any_matches(expected: bytes, header: str) -> bool:
    """Constant-time compare against every v1 entry; other versions are skipped."""
    matched = False
    for entry in header.split():
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        matched |= hmac.compare_digest(expected, given)
    return matched
