"""The SMTP connection's own DATA: what the relay stores is exactly the message, dots and all."""

from __future__ import annotations

import asyncio

import pytest

from pshnotify.domain.errors import OutcomeUnknownError
from pshnotify.mail.transport import SmtpConfig, SmtpConnection
from tests.smtp_server import SmtpServer

pytestmark = pytest.mark.timeout(30)

SENDER = "training@example.test"
RECIPIENT = "alice@example.test"
HEAD = b"From: training@example.test\r\nTo: alice@example.test\r\nSubject: Dots\r\n\r\n"


def deliver(smtp: SmtpServer, *messages: bytes) -> list[bytes]:
    """Send each message over one connection; what the relay received, in order."""

    async def send_all() -> None:
        conn = SmtpConnection(SmtpConfig(smtp.host, smtp.port))
        try:
            for data in messages:
                await conn.send(SENDER, RECIPIENT, data)
        finally:
            await conn.close()

    asyncio.run(send_all())
    return [r.data for r in smtp.received]


def test_lines_that_start_with_a_dot_arrive_as_written(smtp: SmtpServer) -> None:
    bodies = [
        b".\r\n",  # a line that is only a dot would end the data if not doubled
        b"a\r\n.\r\n.b\r\n..c\r\n",
        b"no line end at the end",
        b"\r\n.\r\n.\r\n",
    ]
    received = deliver(smtp, *(HEAD + b for b in bodies))
    expected = [HEAD + b if b.endswith(b"\r\n") else HEAD + b + b"\r\n" for b in bodies]
    assert received == expected


def test_a_message_with_bare_line_ends_is_sent_with_crlf(smtp: SmtpServer) -> None:
    received = deliver(smtp, HEAD + b"one\ntwo\rthree\r\n.four\n")
    assert received == [HEAD + b"one\r\ntwo\r\nthree\r\n.four\r\n"]


def test_one_connection_carries_many_messages(smtp: SmtpServer) -> None:
    messages = [HEAD + f"message {i}\r\n.{i}\r\n".encode() for i in range(50)]
    assert deliver(smtp, *messages) == messages
    assert smtp.connections == 1


def send_one(smtp: SmtpServer, config: SmtpConfig) -> None:
    async def one() -> None:
        conn = SmtpConnection(config)
        try:
            await conn.send(SENDER, RECIPIENT, HEAD + b"hello\r\n")
        finally:
            await conn.close()

    asyncio.run(one())


def test_the_reply_to_the_data_has_its_own_longer_limit(smtp: SmtpServer) -> None:
    # The relay takes its time over the data, as filtering relays do: longer than the limit of
    # the exchange before it (which a loaded machine must not reach: 2 s for a few lines).
    smtp.behaviour.delay = 2.5
    send_one(smtp, SmtpConfig(smtp.host, smtp.port, timeout=2, data_timeout=30))
    assert len(smtp.received) == 1


def test_no_reply_to_the_data_in_time_is_an_unknown_outcome(smtp: SmtpServer) -> None:
    smtp.behaviour.delay = 1.0
    with pytest.raises(OutcomeUnknownError):
        send_one(smtp, SmtpConfig(smtp.host, smtp.port, timeout=5, data_timeout=0.3))
