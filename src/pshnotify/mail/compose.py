"""Build the MIME message: multipart/alternative (text, then HTML), traceable headers.

Written against the RFCs with the standard library's encoders (RFC 2047 words from
`email.header`, quoted-printable from `binascii`), not with `EmailMessage`: the full API costs
about 1.5 ms a message, which caps a sender near 650 messages a second on one core; this path
costs a small fraction of that. The tests parse every message back with the `email` package.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime
from functools import lru_cache

from pshnotify.domain.program import Program
from pshnotify.mail.address import wire_address
from pshnotify.mail.kinds import Attachment
from pshnotify.mail.render import Rendered

_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_ATOM_SAFE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ .]*$")
CRLF = "\r\n"
_MAX_LINE = 998  # RFC 5322
_CONTROL_IN_BODY = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BOUNDARY_MARK = "=_psh_"
_PLAIN_NAME_MAX = 60  # a longer name is folded (as encoded words) rather than sent on one line
_WORD_BYTES = 45  # 60 base64 characters: an encoded word of 72, under RFC 2047's 75


class HeaderInjectionError(ValueError):
    """A value bound for a header holds a line break or control character."""


@dataclass(frozen=True)
class Envelope:
    from_name: str
    from_address: str
    reply_to: str | None
    to_name: str
    to_address: str
    message_id: str
    date: dt.datetime
    program: str
    wave: str | None
    kind: str


def _safe(value: str, what: str) -> str:
    # Second line of defence: rosters and templates are checked on the way in.
    if _UNSAFE.search(value):
        raise HeaderInjectionError(f"{what} contains a line break or control character")
    return value


@lru_cache(maxsize=1024)
def _words(value: str, name: str) -> str:
    """A header value: ASCII folded as is, anything else as RFC 2047 UTF-8 encoded words.
    Cached: a wave's subjects repeat, and `Header` costs about 20 us a call."""
    charset = "us-ascii" if value.isascii() else "utf-8"
    return Header(value, charset, header_name=name).encode(linesep=CRLF)


def _encoded_words(value: str) -> str:
    """RFC 2047 base64 words of at most 75 characters, split between characters, folded.

    For display names, which differ for every message: the C base64 codec, not `Header`.
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        n = len(char.encode("utf-8"))
        if size + n > _WORD_BYTES:
            words.append("".join(chunk))
            chunk, size = [], 0
        chunk.append(char)
        size += n
    words.append("".join(chunk))
    return f"{CRLF} ".join(
        f"=?utf-8?b?{base64.b64encode(w.encode('utf-8')).decode('ascii')}?=" for w in words
    )


@lru_cache(maxsize=64)
def _sender(name: str, address: str, what: str) -> str:
    """The program's own addresses: the same for every message."""
    return _address(name, wire_address(address).address, what)


def _address(name: str, address: str, what: str) -> str:
    """`Name <address>`; the address as it travels (`wire_address`). A name too long for one
    header line goes as encoded words, folded between them (RFC 5322 2.2.3)."""
    _safe(address, what)
    if "@" not in address or any(c in address for c in ' <>,;"'):
        raise HeaderInjectionError(f"{what} is not a plain address")
    _safe(name, what)
    if not name:
        return address
    if name.isascii() and (len(name) <= _PLAIN_NAME_MAX or _foldable(name)):
        phrase = name if _ATOM_SAFE.match(name) and "." not in name else _quoted(name)
        if len(phrase) > _PLAIN_NAME_MAX:
            phrase = _folded(phrase)
    else:
        phrase = _encoded_words(name)
    return f"{phrase} <{address}>"


def _foldable(name: str) -> bool:
    return "  " not in name and all(len(w) <= _PLAIN_NAME_MAX for w in name.split(" "))


def _folded(phrase: str) -> str:
    """Fold at spaces into lines of at most about 76 characters: a space becomes CRLF and the
    space, which unfolding (RFC 5322 2.2.3) turns back into the space alone."""
    lines: list[str] = []
    line = ""
    for word in phrase.split(" "):
        if line and len(line) + 1 + len(word) > _PLAIN_NAME_MAX + 16:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return f"{CRLF} ".join(lines)


def _date(when: dt.datetime) -> str:
    # Keyed by the offset too: aware datetimes compare by instant, and two programs in two
    # zones sending in the same second must not share one string.
    return _formatted_date(when, when.utcoffset())


@lru_cache(maxsize=16)
def _formatted_date(when: dt.datetime, _offset: dt.timedelta | None) -> str:
    # Cached by the second: a drain builds hundreds of messages a second.
    return format_datetime(when)


def _quoted(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _qp(text: str) -> str:
    body = text.replace("\r\n", "\n").encode("utf-8")
    encoded = binascii.b2a_qp(body, quotetabs=False, istext=True, header=False)
    return encoded.decode("ascii").replace("\n", CRLF)


def _plain_7bit(text: str) -> bool:
    """Can this text go as is? ASCII, no control character but tab and line ends, lines of at
    most 998 characters, and never our boundary marker (with quoted-printable, "=_" cannot
    occur in a part, so no line of it can be taken for a boundary)."""
    if not text.isascii() or _CONTROL_IN_BODY.search(text) or _BOUNDARY_MARK in text:
        return False
    return len(text) <= _MAX_LINE or max(map(len, text.split("\n"))) <= _MAX_LINE


def _part(subtype: str, text: str) -> str:
    """A text part: as is (7bit) when it is ASCII in short lines, else quoted-printable (which
    costs about 10 us a part)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _plain_7bit(text):
        encoding, body = "7bit", text.replace("\n", CRLF)
    else:
        encoding, body = "quoted-printable", _qp(text)
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"{CRLF}'
        f"Content-Transfer-Encoding: {encoding}{CRLF}{CRLF}"
        f"{body}{CRLF}"
    )


def _attachment(a: Attachment) -> str:
    name = _safe(a.filename, "attachment name").replace('"', "")
    data = base64.encodebytes(a.data).decode("ascii").replace("\n", CRLF)
    charset = '; charset="utf-8"' if a.maintype == "text" else ""
    params = f"; {_safe(a.params, 'attachment parameters')}" if a.params else ""
    return (
        f'Content-Type: {a.maintype}/{a.subtype}{charset}{params}; name="{name}"{CRLF}'
        f"Content-Transfer-Encoding: base64{CRLF}"
        f'Content-Disposition: attachment; filename="{name}"{CRLF}{CRLF}{data}'
    )


def _boundary(message_id: str, salt: str) -> str:
    # Derived, not random: the same message rebuilt for a retry is byte-for-byte the same body.
    return _BOUNDARY_MARK + hashlib.sha256(f"{message_id}{salt}".encode()).hexdigest()[:24]


def _multipart(subtype: str, boundary: str, parts: Sequence[str]) -> str:
    inner = "".join(f"--{boundary}{CRLF}{p}" for p in parts)
    return f"{inner}--{boundary}--{CRLF}"


def compose(env: Envelope, content: Rendered, attachments: Sequence[Attachment] = ()) -> bytes:
    to = wire_address(env.to_address)
    headers = [
        ("From", _sender(env.from_name, env.from_address, "From")),
        ("To", _address(env.to_name, to.address, "To")),
    ]
    if env.reply_to:
        headers.append(("Reply-To", _sender("", env.reply_to, "Reply-To")))
    headers += [
        ("Subject", _words(_safe(content.subject, "Subject"), "Subject")),
        ("Date", _date(env.date)),
        ("Message-ID", _safe(env.message_id, "Message-ID")),
        ("X-Pshnotify-Program", _safe(env.program, "program key")),
    ]
    if env.wave:
        headers.append(("X-Pshnotify-Wave", _safe(env.wave, "wave key")))
    headers += [
        ("X-Pshnotify-Kind", _safe(env.kind, "kind")),
        # RFC 3834: auto-responders should not answer; Exchange's own header says the same.
        ("Auto-Submitted", "auto-generated"),
        ("X-Auto-Response-Suppress", "All"),
        ("MIME-Version", "1.0"),
    ]
    alt = _boundary(env.message_id, "alt")
    alternative = _multipart(
        "alternative", alt, [_part("plain", content.text), _part("html", content.html)]
    )
    if attachments:
        mixed = _boundary(env.message_id, "mixed")
        body = _multipart(
            "mixed",
            mixed,
            [
                f'Content-Type: multipart/alternative; boundary="{alt}"{CRLF}{CRLF}{alternative}',
                *(_attachment(a) for a in attachments),
            ],
        )
        headers.append(("Content-Type", f'multipart/mixed; boundary="{mixed}"'))
    else:
        body = alternative
        headers.append(("Content-Type", f'multipart/alternative; boundary="{alt}"'))
    head = "".join(f"{name}: {value}{CRLF}" for name, value in headers)
    # A non-ASCII local part travels with SMTPUTF8, its header in UTF-8 (RFC 6532).
    return f"{head}{CRLF}{body}".encode("utf-8" if to.smtputf8 else "ascii")


def envelope_for(
    program: Program,
    *,
    to_name: str,
    to_address: str,
    message_id: str,
    date: dt.datetime,
    wave: str | None,
    kind: str,
) -> Envelope:
    """The envelope of one message of this program: sender identity from the program file."""
    sender = program.program.sender
    return Envelope(
        from_name=sender.name,
        from_address=str(sender.address),
        reply_to=str(sender.reply_to) if sender.reply_to else None,
        to_name=to_name,
        to_address=to_address,
        message_id=message_id,
        date=date.astimezone(program.tz).replace(microsecond=0),
        program=program.key,
        wave=wave,
        kind=kind,
    )
