"""Read one bounce message: who failed, how (RFC 3463 class), and which message of ours it was.

RFC 3464 delivery status notifications are read field by field here; the many non-standard
formats (Exchange, Gmail's old notices, Exim, Sendmail, qmail, Postfix, ...) through Mailman's
`flufl.bounce` detectors, which find the failed addresses, while the status code and the
diagnostic come from the text next to each address. Auto-replies (RFC 3834 `Auto-Submitted`,
out-of-office notices) are recognised and are not bounces. Anything else is `unrecognised`:
kept for a person to read, never guessed at.

`parse` never raises: anyone can mail the bounce address, so a message that cannot be read
(a broken encoding, an unknown charset, nesting deeper than `MAX_DEPTH`, more than
`MAX_BYTES`) is `unrecognised` with the reason, and the scan goes on to the next one. Every
text taken from the message is cleaned of control characters and undecodable bytes, so it can
be stored and shown as it is.
"""

from __future__ import annotations

import email
import email.header
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Literal

from flufl.bounce import all_failures

from pshnotify.domain.bounces import BounceClass, best_code, classify
from pshnotify.domain.text import CONTROL

log = logging.getLogger(__name__)
Kind = Literal["bounce", "autoreply", "unrecognised"]

# Where the relay that delivered the bounce says whom it was for: the VERP token is there.
_DELIVERY_HEADERS = ("delivered-to", "x-original-to", "envelope-to", "x-envelope-to", "to")
_MESSAGE_ID = re.compile(r"^\s*Message-I[Dd]:\s*(<[^<>\s]{3,250}>)", re.IGNORECASE | re.MULTILINE)
_AUTO_SUBJECT = re.compile(
    r"^\s*(automatic reply|auto(matic)?[- ]?(reply|response)|out of (the )?office|"
    r"abwesenheitsnotiz|réponse automatique|absence|vacation|auto:)",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"mailer-daemon|postmaster|mail delivery", re.IGNORECASE)
_DIAGNOSTIC_LINES = 8  # lines after a failed address searched for its reply
_MAX_DIAGNOSTIC = 500
MAX_BYTES = 10 * 1024 * 1024  # a delivery report with the original attached is far smaller
MAX_DEPTH = 30  # MIME parts within parts; a real report nests three or four


@dataclass(frozen=True)
class Failure:
    recipient: str  # lower-cased
    cls: BounceClass
    status: str | None  # the enhanced status code, when one was found
    diagnostic: str


@dataclass(frozen=True)
class Parsed:
    kind: Kind
    failures: tuple[Failure, ...] = ()
    original_message_ids: tuple[str, ...] = ()
    delivered_to: tuple[str, ...] = ()
    subject: str = ""
    sender: str = ""
    message_id: str | None = None  # the bounce's own
    date: str = ""  # the bounce's Date header, as written
    reason: str = ""  # why it is unrecognised
    fmt: str = ""  # dsn | heuristic | autoreply
    extra: dict[str, str] = field(default_factory=dict)


def parse(data: bytes) -> Parsed:
    """What one mail says; never raises (see the module docstring)."""
    if len(data) > MAX_BYTES:
        return _unreadable(data, f"larger than {MAX_BYTES:,} bytes: not read")
    try:
        return _parse(email.message_from_bytes(data))
    except RecursionError:  # the standard library's parser recurses once per level
        return _unreadable(data, f"MIME parts nested deeper than {MAX_DEPTH}")
    except Exception as exc:  # a codec's own error, a parser's: unreadable, never a crash
        log.info("a bounce mailbox message could not be read: %s", type(exc).__name__)
        return _unreadable(data, f"cannot be read ({type(exc).__name__})")


def _parse(msg: Message) -> Parsed:
    if _depth(msg) > MAX_DEPTH:
        return Parsed(
            "unrecognised",
            subject=_header(msg, "subject"),
            sender=_header(msg, "from"),
            reason=f"MIME parts nested deeper than {MAX_DEPTH}",
        )
    common = {
        "subject": _header(msg, "subject"),
        "sender": _header(msg, "from"),
        "message_id": _header(msg, "message-id") or None,
        "date": _header(msg, "date"),
        "delivered_to": _delivered_to(msg),
        "original_message_ids": _original_ids(msg),
    }
    failures = _dsn_failures(msg)
    if failures:
        return Parsed("bounce", failures, fmt="dsn", **common)  # type: ignore[arg-type]
    if _is_autoreply(msg):
        return Parsed("autoreply", fmt="autoreply", **common)  # type: ignore[arg-type]
    failures = _heuristic_failures(msg)
    if failures:
        return Parsed("bounce", failures, fmt="heuristic", **common)  # type: ignore[arg-type]
    return Parsed(
        "unrecognised",
        reason="neither a delivery report nor an auto-reply that pshnotify can read",
        **common,  # type: ignore[arg-type]
    )


def _unreadable(data: bytes, reason: str) -> Parsed:
    """An unreadable mail, with what of its subject and sender can be read safely."""
    head = data[:16384].split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    fields = {"subject": "", "from": ""}
    for line in head.splitlines():
        name, colon, value = line.partition(b":")
        key = name.strip().lower().decode("ascii", "replace")
        if colon and key in fields and not fields[key]:
            fields[key] = _clean(value.decode("utf-8", "replace"), 300)
    return Parsed("unrecognised", subject=fields["subject"], sender=fields["from"], reason=reason)


def _depth(msg: Message) -> int:
    """How deep the MIME parts nest, counted without recursion (walk() recurses)."""
    deepest, stack = 0, [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        if part.is_multipart():  # (a leaf's get_payload() may decode, and fail)
            stack += [(p, depth + 1) for p in part.get_payload() if isinstance(p, Message)]
    return deepest


def _clean(text: str, limit: int) -> str:
    """Text fit to store and show: bytes the parser kept undecoded become U+FFFD, control
    characters a space, runs of white space one."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return " ".join(CONTROL.sub(" ", text).split())[:limit]


def _decode(data: bytes, charset: str | None) -> str:
    """Bytes in a declared charset; a wrong or unknown one never fails (latin-1 reads all)."""
    try:
        return data.decode(charset or "latin-1", errors="replace")
    except (LookupError, UnicodeError):  # unknown; or a codec such as idna that cannot replace
        return data.decode("latin-1")


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    words = email.header.decode_header(str(value))
    text = "".join(w if isinstance(w, str) else _decode(w, cs) for w, cs in words)
    return _clean(text, 300)


def _delivered_to(msg: Message) -> tuple[str, ...]:
    found: list[str] = []
    for name in _DELIVERY_HEADERS:
        for _, raw in getaddresses([str(v) for v in msg.get_all(name, [])]):
            addr = _clean(raw, 320)
            if addr and addr not in found:
                found.append(addr)
    return tuple(found)


def _texts(msg: Message) -> Iterator[str]:
    """Every text part, decoded (a bounce's charset is often wrong: never fail on it)."""
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        yield _decode(payload, part.get_content_charset())


def _original_ids(msg: Message) -> tuple[str, ...]:
    own = _header(msg, "message-id")
    found: list[str] = []
    for part in msg.walk():
        if part is msg:
            continue
        if part.get_content_type() == "message/rfc822":
            for inner in part.get_payload() or []:
                if isinstance(inner, Message) and inner.get("message-id"):
                    found.append(_clean(str(inner["message-id"]), 255))
    for text in _texts(msg):
        found += _MESSAGE_ID.findall(text)
    out: list[str] = []
    for mid in found:
        mid = _clean(mid, 255)
        if mid and mid != own and mid not in out:
            out.append(mid)
    return tuple(out)


# -- RFC 3464 -------------------------------------------------------------------------------------
def _dsn_failures(msg: Message) -> tuple[Failure, ...]:
    out: dict[str, Failure] = {}
    for part in msg.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            failure = _recipient_failure(block)
            if failure is not None:
                out.setdefault(failure.recipient, failure)
    return tuple(out.values())


def _status_blocks(part: Message) -> list[Message]:
    payload = part.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message)]
    text = payload if isinstance(payload, str) else ""
    return [email.message_from_string(b) for b in re.split(r"\r?\n\s*\r?\n", text) if b.strip()]


def _recipient_failure(block: Message) -> Failure | None:
    # The address we gave in RCPT TO (Original-Recipient) before any rewriting on the way.
    recipient = _dsn_address(block.get("original-recipient")) or _dsn_address(
        block.get("final-recipient")
    )
    action = str(block.get("action", "")).strip().lower()
    if not recipient or action not in ("failed", "delayed"):
        return None  # the per-message block, or a delivered / relayed / expanded recipient
    status = str(block.get("status", "")).strip() or None
    diagnostic = _squash(str(block.get("diagnostic-code", "")).partition(";")[2])
    cls = classify(status, diagnostic, permanent=action == "failed", action=action)
    return Failure(recipient, cls, best_code(status, diagnostic), diagnostic)


def _dsn_address(value: object) -> str:
    """An rfc822 address type's address; "" for X.400 and other types we never send to."""
    if value is None:
        return ""
    kind, _, addr = str(value).partition(";")
    if kind.strip().lower() != "rfc822":
        return ""
    found = _clean(parseaddr(addr.strip())[1], 320).lower()
    return found if "@" in found else ""


def _squash(text: str) -> str:
    return _clean(text, _MAX_DIAGNOSTIC)


# -- RFC 3834 auto-replies -------------------------------------------------------------------------
def _is_autoreply(msg: Message) -> bool:
    sender = str(msg.get("from", ""))
    if _DAEMON.search(sender) or not parseaddr(sender)[1]:
        return False  # a delivery report that says Auto-Submitted (Exim's do) is still one
    auto = str(msg.get("auto-submitted", "")).strip().lower()
    if auto.startswith("auto-replied"):
        return True
    if any(msg.get(h) for h in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        return True
    if str(msg.get("precedence", "")).strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(_header(msg, "subject")))


# -- everything else: flufl.bounce's detectors ----------------------------------------------------
def _heuristic_failures(msg: Message) -> tuple[Failure, ...]:
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on a malformed message: unrecognised, not a crash
        return ()
    texts = list(_texts(msg))
    out: list[Failure] = []
    for raw, is_permanent in [(a, True) for a in permanent] + [(a, False) for a in temporary]:
        address = _clean(raw.decode("utf-8", "replace"), 320).lower()
        if not address:
            continue
        if any(f.recipient == address for f in out):
            continue
        diagnostic = _diagnostic_near(address, texts)
        cls = classify(None, diagnostic, permanent=is_permanent)
        out.append(Failure(address, cls, best_code(None, diagnostic), diagnostic))
    return tuple(out)


def _diagnostic_near(address: str, texts: list[str]) -> str:
    """The lines after the failed address, where non-standard reports put the server's reply;
    else the report's first lines that carry a status code."""
    for text in texts:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if address in line.lower():
                near = " ".join(lines[i : i + _DIAGNOSTIC_LINES])
                if re.search(r"\b[245]\d\d\b|[245]\.\d", near):
                    return _squash(near)
    for text in texts:
        coded = [ln for ln in text.splitlines() if re.search(r"\b[45]\d\d[ -]|[45]\.\d\.\d", ln)]
        if coded:
            return _squash(" ".join(coded[:4]))
    return ""
