"""One SMTP connection, reused for many messages, with replies sorted by how to react.

The line that matters is the message's final dot. A fault before it means the relay cannot
have the message (transient: send again). A fault after it, with no reply, means it may have
(outcome unknown). We send DATA and the message ourselves (`_data`), so we know which side
of the line a fault fell on.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiosmtplib
from aiosmtplib import (
    SMTPAuthenticationError,
    SMTPDataError,
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
)

from pshnotify.domain.delivery import Outcome, classify
from pshnotify.domain.errors import (
    OutcomeUnknownError,
    PermanentDeliveryError,
    RelayLoginError,
    TransientDeliveryError,
)
from pshnotify.mail.address import NEEDS_SMTPUTF8, wire_address

_LINE_END = re.compile(rb"\r\n|\r|\n")
_CLOSE_GRACE = 0.05  # seconds
_CLOSE_WAIT_STEPS = 100  # of _CLOSE_GRACE / 5: at most a second for a closing connection


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    tls: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line or traceback
    timeout: float = 60.0
    ca_file: Path | None = None
    # Leave room for a slow relay's reply after the data: a timeout there is an unknown.
    data_timeout: float = 300.0
    messages_per_connection: int = 0  # reopen after this many (0: never)


@dataclass(frozen=True)
class Reply:
    code: int
    text: str


class SmtpConnection:
    def __init__(self, config: SmtpConfig, fallbacks: Sequence[SmtpConfig] = ()) -> None:
        self.config = config  # the relay in use now
        self._relays = [config, *fallbacks]  # tried in order when a connection cannot be made
        self._smtp: aiosmtplib.SMTP | None = None
        self._body_written = False
        self.sent_on_connection = 0

    def _client(self, cfg: SmtpConfig) -> aiosmtplib.SMTP:
        context = None
        if cfg.tls != "none":
            context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
        return aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            timeout=cfg.timeout,
            use_tls=cfg.tls == "tls",
            start_tls=cfg.tls == "starttls",
            tls_context=context,
            validate_certs=True,
            username=cfg.username,
            password=cfg.password,
        )

    async def connect(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            return
        problems = []
        refused_login = False
        for cfg in self._relays:  # the primary first, then each fallback
            smtp = self._client(cfg)
            try:
                await smtp.connect()
            except (TimeoutError, SMTPException, OSError) as exc:
                refused_login = refused_login or isinstance(exc, SMTPAuthenticationError)
                problems.append(f"cannot connect to {cfg.host}:{cfg.port}: {exc}")
                # aiosmtplib has closed it; after STARTTLS that is a TLS shutdown, which needs
                # the loop for a moment (else a `run --once` can end with the socket still open).
                await asyncio.sleep(_CLOSE_GRACE)
                continue
            self._smtp, self.config = smtp, cfg
            self.sent_on_connection = 0
            return
        if refused_login:
            raise RelayLoginError(None, "; ".join(problems))
        raise TransientDeliveryError(None, "; ".join(problems))

    async def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is None or not smtp.is_connected:
            return
        protocol = smtp.protocol
        try:
            await smtp.quit()
        except (TimeoutError, SMTPException, OSError):
            smtp.close()
        # quit() only starts closing; over TLS the shutdown needs the loop a little longer, and
        # a caller that ends its loop at once (`run --once`) would leave the socket open.
        for _ in range(_CLOSE_WAIT_STEPS):
            if protocol is None or protocol.transport is None:  # connection_lost has run
                return
            await asyncio.sleep(_CLOSE_GRACE / 5)

    async def send(self, sender: str, recipient: str, data: bytes) -> Reply:
        """Send one message; raise Transient/Permanent/OutcomeUnknown errors on failure."""
        limit = self.config.messages_per_connection
        if limit and self.sent_on_connection >= limit:
            await self.close()  # relays cap messages per connection; reopen before they refuse
        await self.connect()
        smtp = self._smtp
        assert smtp is not None
        self._body_written = False
        to, sender_wire = wire_address(recipient), wire_address(sender)
        smtputf8 = to.smtputf8 or sender_wire.smtputf8
        sender, recipient = sender_wire.address, to.address
        if smtputf8:
            await self._check_smtputf8(smtp)
        try:
            # One deadline for the transaction, moved on for the reply to the data, instead of
            # aiosmtplib's wait_for() per command (a timer and two futures each, four times).
            async with asyncio.timeout(self.config.timeout) as deadline:
                if smtputf8:
                    await smtp.mail(sender, options=["SMTPUTF8"], encoding="utf-8", timeout=None)
                    await smtp.rcpt(recipient, encoding="utf-8", timeout=None)
                elif smtp.is_ehlo_or_helo_needed or not (_plain(sender) and _plain(recipient)):
                    # the library's path: EHLO first, quoting
                    await smtp.mail(sender, timeout=None)
                    await smtp.rcpt(recipient, timeout=None)
                else:
                    await _mail_rcpt(smtp, sender, recipient)
                response = await self._data(smtp, data, deadline)
        except (SMTPSenderRefused, SMTPRecipientRefused, SMTPDataError) as exc:
            await self._after_refusal(exc.code)
            raise _refusal(exc.code, exc.message) from exc
        except SMTPResponseException as exc:
            await self._drop()
            raise _refusal(exc.code, exc.message) from exc
        except (TimeoutError, SMTPException, OSError) as exc:
            body_written = self._body_written
            await self._drop()
            if body_written:
                raise OutcomeUnknownError(f"no reply after the data: {exc}") from exc
            raise TransientDeliveryError(None, f"connection lost before the data: {exc}") from exc
        self.sent_on_connection += 1
        return Reply(response.code, response.message)

    async def _check_smtputf8(self, smtp: aiosmtplib.SMTP) -> None:
        """A non-ASCII local part can only go through a relay that offers SMTPUTF8."""
        try:
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
        except (TimeoutError, SMTPException, OSError) as exc:
            await self._drop()
            raise TransientDeliveryError(None, f"connection lost before the data: {exc}") from exc
        if not smtp.supports_extension("smtputf8"):
            raise PermanentDeliveryError(None, NEEDS_SMTPUTF8)

    async def _data(
        self, smtp: aiosmtplib.SMTP, data: bytes, deadline: asyncio.Timeout
    ) -> aiosmtplib.SMTPResponse:
        """DATA, then the message and its final dot; notes when the message has been written.

        Not aiosmtplib's `data()`: it runs two regular expressions over every message (line
        ends, leading dots), 75 us for a 4 KB launch email, which `_as_data` does in 4 us for
        the CRLF-only messages `compose` makes.
        """
        reply = await smtp.execute_command(b"DATA", timeout=None)
        if reply.code != SMTPStatus.start_input:
            raise SMTPDataError(reply.code, reply.message)
        protocol = smtp.protocol
        if protocol is None:
            raise SMTPServerDisconnected("Connection lost")
        # No await between the write and read_response(): the reply cannot come in between
        # (aiosmtplib drops data that arrives while no reply is awaited).
        protocol.write(_as_data(data))
        self._body_written = True
        # A relay may take long to accept the data (it filters, it queues): a timeout here is
        # an unknown outcome, so it gets its own, longer limit.
        deadline.reschedule(asyncio.get_running_loop().time() + self.config.data_timeout)
        response = await protocol.read_response(timeout=None)
        if response.code != SMTPStatus.completed:
            raise SMTPDataError(response.code, response.message)
        return response

    async def _after_refusal(self, code: int) -> None:
        """After a refusal the transaction must be reset; 421 means the relay is closing."""
        smtp = self._smtp
        if code == 421 or smtp is None:
            await self._drop()
            return
        try:
            await smtp.rset()
        except (TimeoutError, SMTPException, OSError):
            await self._drop()

    async def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()


_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _plain(address: str) -> bool:
    return _PLAIN_ADDRESS.fullmatch(address) is not None


async def _mail_rcpt(smtp: aiosmtplib.SMTP, sender: str, recipient: str) -> None:
    """MAIL and RCPT for plain ASCII addresses, as `mail()` and `rcpt()` send them but without
    their address parsing (`email.utils.parseaddr`, about 20 us a call: a tenth of a message's
    CPU). The roster checked every address on the way in; anything else takes the library's
    path."""
    reply = await smtp.execute_command(
        b"MAIL", b"FROM:<" + sender.encode("ascii") + b">", timeout=None
    )
    if reply.code != SMTPStatus.completed:
        raise SMTPSenderRefused(reply.code, reply.message, sender)
    reply = await smtp.execute_command(
        b"RCPT", b"TO:<" + recipient.encode("ascii") + b">", timeout=None
    )
    if reply.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise SMTPRecipientRefused(reply.code, reply.message, recipient)


def _as_data(message: bytes) -> bytes:
    """The message as DATA carries it (RFC 5321 4.5.2): CRLF line ends, a dot at the start of
    a line doubled, and the final dot."""
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        message = _LINE_END.sub(b"\r\n", message)  # not ours: normalise it
    message = message.replace(b"\r\n.", b"\r\n..")
    if message.startswith(b"."):
        message = b"." + message
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return message + b".\r\n"


def _refusal(code: int, text: str) -> Exception:
    if classify(code) == Outcome.PERMANENT:
        return PermanentDeliveryError(code, text)
    return TransientDeliveryError(code, text)
