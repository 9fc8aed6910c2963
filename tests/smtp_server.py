"""A real SMTP server (aiosmtpd) on loopback that records what it receives and can be told to
refuse, defer or drop, as relays do."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import Any

from aiosmtpd.controller import Controller


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    session: int
    at: float = 0.0  # time.monotonic() on arrival
    tls: str | None = None  # the TLS version it came over ("TLSv1.3"), None if in clear
    login: str | None = None  # the AUTH user name, None if the client did not log in

    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def message_id(self) -> str | None:
        """The Message-ID, from the headers alone: 0.06 ms, where parsing the whole message
        took 2 ms (40 s of a 20,000-message test)."""
        return _HEADERS.parsebytes(self.data)["Message-ID"]


_HEADERS = BytesHeaderParser()


@dataclass
class Behaviour:
    """What to answer. Each hook gets the recipient address and returns a reply or None."""

    rcpt: Callable[[str], str | None] = lambda _addr: None
    data: Callable[[str], str | None] = lambda _addr: None
    drop_after_data: Callable[[str], bool] = lambda _addr: False
    delay: float = 0.0  # seconds before answering the data, like a slow relay
    # Close the connection right after this data reply (a relay's "421 closing"), by address.
    close_after: Callable[[str], bool] = lambda _addr: False


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_EHLO(  # noqa: N802
        self,
        server: Any,
        session: Any,
        envelope: Any,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        with self.server.lock:
            self.server.connections += 1
        return responses

    async def handle_RCPT(  # noqa: N802
        self,
        server: Any,
        session: Any,
        envelope: Any,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.server.behaviour.rcpt(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        rcpt = envelope.rcpt_tos[0]
        if self.server.behaviour.delay:
            await asyncio.sleep(self.server.behaviour.delay)
        reply = self.server.behaviour.data(rcpt)
        if reply:
            if self.server.behaviour.close_after(rcpt):
                asyncio.get_running_loop().call_soon(server.transport.close)
            return reply
        ssl_object = server.transport.get_extra_info("ssl_object")
        login = getattr(getattr(session, "auth_data", None), "login", None)
        received = Received(
            envelope.mail_from,
            list(envelope.rcpt_tos),
            envelope.original_content or envelope.content,
            id(session),
            time.monotonic(),
            tls=ssl_object.version() if ssl_object is not None else None,
            login=login.decode() if isinstance(login, bytes) else login,
        )
        with self.server.lock:
            self.server.received.append(received)
        if self.server.behaviour.drop_after_data(rcpt):
            server.transport.abort()  # the relay has it, but the client never hears so
        return "250 2.0.0 OK queued"


@dataclass
class SmtpServer:
    host: str = "127.0.0.1"
    port: int = 0
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    # More aiosmtpd Controller/SMTP options (ssl_context=, tls_context=, authenticator=, ...).
    options: dict[str, Any] = field(default_factory=dict)
    _controller: Controller | None = None

    def start(self) -> None:
        with socket.socket() as s:
            s.bind((self.host, 0))
            self.port = s.getsockname()[1]
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, **self.options
        )
        self._controller.start()

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            return [r.message() for r in self.received]
