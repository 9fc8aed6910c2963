"""Bounces: real samples parsed into classes, VERP tokens, Maildir and a real IMAP server, the
end-to-end path through aiosmtpd, the webhook, and clearing a mark by hand."""

from __future__ import annotations

import base64
import datetime as dt
import json
import mailbox
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import httpx
import pytest
from imapclient import IMAPClient
from pydantic import SecretStr
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from pshnotify.bounces.parse import parse
from pshnotify.bounces.sources import ImapSource, MaildirSource, parse_imap_url
from pshnotify.bounces.verp import ForgedTokenError, Verp
from pshnotify.cli import app
from pshnotify.clock import FixedClock
from pshnotify.domain.bounces import BounceClass
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.bounces.marks import address_ok
from pshnotify.services.bounces.scan import ScanConfig, scan
from pshnotify.settings import Settings
from pshnotify.store.schema import audit_log, bounces, messages, undeliverable
from pshnotify.web import create_app
from tests.bounce_samples import sample
from tests.conftest import NY
from tests.imap_server import PASSWORD, Dovecot, start_dovecot
from tests.smtp_server import Received, SmtpServer
from tests.test_launch_and_send import launch, send, setup_pilot
from tests.test_web import running, signed

runner = CliRunner()
SECRET = "bounce-secret-for-the-tests-0123456789"
BOUNCE_ADDRESS = "bounces@psh.example.edu"
VERP = Verp(BOUNCE_ADDRESS, SECRET.encode())


# -- the formats: real bounces from flufl.bounce's collection -------------------------------------
@pytest.mark.parametrize(
    ("name", "fmt", "recipient", "cls", "status"),
    [
        # RFC 3464 delivery status notifications
        ("dsn_13.txt", "dsn", "userx@example.com", BounceClass.HARD, "5.1.1"),
        ("dsn_01.txt", "dsn", "userx@example.com", BounceClass.SOFT, "5.0.0"),  # disk quota
        ("dsn_05.txt", "dsn", "userx@example.cz", BounceClass.DELAYED, "4.4.1"),
        # Gmail: an old notice without a code, and a spam refusal (5.7.1: our fault)
        ("simple_17.txt", "heuristic", "userx@example.com", BounceClass.HARD, None),
        ("simple_42.txt", "dsn", "david...@gmail.com", BounceClass.BLOCKED, "5.7.1"),
        # Exchange / Office
        ("microsoft_01.txt", "heuristic", "userx@example.com", BounceClass.HARD, None),
        ("groupwise_02.txt", "heuristic", "userx@example.com", BounceClass.HARD, None),
        # Exim, Sendmail, qmail, Postfix
        ("exim_01.txt", "heuristic", "userx@its.example.nl", BounceClass.HARD, "5.1.1"),
        ("sendmail_01.txt", "heuristic", "zzzzz@shaft.coal.nl", BounceClass.HARD, None),
        ("qmail_03.txt", "heuristic", "userx@example.jp", BounceClass.HARD, "5.1.1"),
        ("qmail_07.txt", "heuristic", "user@example.net", BounceClass.HARD, None),
        ("postfix_01.txt", "heuristic", "xxxxx@local.ie", BounceClass.HARD, "5.1.1"),
        # Mailbox full, not in the standard format
        ("simple_45.txt", "heuristic", "subscriber@earthlink.net", BounceClass.SOFT, None),
        ("yahoo_01.txt", "heuristic", "userx@example.com", BounceClass.SOFT, "4.4.1"),
    ],
)
def test_real_bounces_are_read_into_their_class(
    name: str, fmt: str, recipient: str, cls: BounceClass, status: str | None
) -> None:
    parsed = parse(sample(name))
    assert parsed.kind == "bounce"
    assert parsed.fmt == fmt
    found = {f.recipient: f for f in parsed.failures}
    assert recipient in found, found
    assert found[recipient].cls == cls
    assert found[recipient].status == status


def test_an_auto_reply_is_not_a_bounce_and_junk_is_unrecognised() -> None:
    assert parse(sample("qmail_08.txt")).kind == "autoreply"  # "Precedence: auto_reply"
    assert parse(out_of_office("grace@example.edu")).kind == "autoreply"
    assert parse(sample("dumbass_01.txt")).kind == "unrecognised"
    # Exim's bounces say Auto-Submitted: auto-replied too; they are still bounces.
    exim = sample("exim_01.txt")
    assert parse(b"Auto-Submitted: auto-replied\n" + exim).kind == "bounce"


def test_no_sample_in_the_collection_crashes_the_reader() -> None:
    from tests.bounce_samples import samples_dir

    kinds = {p.name: parse(p.read_bytes()).kind for p in samples_dir().glob("*.txt")}
    assert len(kinds) >= 110
    assert sum(k == "bounce" for k in kinds.values()) >= 100


# -- VERP -----------------------------------------------------------------------------------------
@pytest.mark.fast
def test_a_verp_address_names_its_message_and_a_forged_token_is_refused() -> None:
    address = VERP.sender_for(4711)
    assert address.startswith("bounces+")
    assert address.endswith("@psh.example.edu")
    assert VERP.message_of(address) == 4711
    assert VERP.message_of(address.upper()) == 4711  # relays that fold case
    assert VERP.message_of("someone@psh.example.edu") is None
    forged = address.replace(f"{4711:x}-", f"{4712:x}-")
    with pytest.raises(ForgedTokenError):
        VERP.message_of(forged)
    other_key = Verp(BOUNCE_ADDRESS, b"another-secret-of-16+ chars")
    with pytest.raises(ForgedTokenError):
        VERP.message_of(other_key.sender_for(4711))


# -- helpers: bounces for the messages the relay received -----------------------------------------
def dsn(
    received: Received,
    status: str,
    diagnostic: str,
    *,
    action: str = "failed",
    to: str | None = None,
    date: dt.datetime | None = None,
) -> bytes:
    """An RFC 3464 report as a receiving MTA (Postfix's layout) sends it to the envelope
    sender, with the original message's headers."""
    rcpt = received.rcpt_tos[0]
    to = to or received.mail_from
    headers = received.data.split(b"\r\n\r\n", 1)[0].decode().replace("\r\n", "\n")
    when = format_datetime(date or dt.datetime(2023, 9, 11, 11, 0, tzinfo=NY))
    text = f"""\
Return-Path: <>
Delivered-To: {to}
From: MAILER-DAEMON@mx.example.edu (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
Date: {when}
Message-ID: {make_msgid(domain="mx.example.edu")}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="BOUNDARY"

--BOUNDARY
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{rcpt}>: host mx.example.edu said: {diagnostic}

--BOUNDARY
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.edu

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822;{rcpt}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; {diagnostic}

--BOUNDARY
Content-Type: text/rfc822-headers

{headers}

--BOUNDARY--
"""
    return text.encode()


def out_of_office(sender: str, to: str = "training@psh.example.edu") -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Grace Hopper <{sender}>"
    msg["To"] = to
    msg["Subject"] = "Automatic reply: Preventing Sexual Harassment Training"
    msg["Auto-Submitted"] = "auto-replied"
    msg["Message-ID"] = make_msgid(domain="example.edu")
    msg.set_content("I am out of the office until Monday with limited access to email.")
    return msg.as_bytes()


def deliver(maildir: Path, data: bytes) -> None:
    mailbox.Maildir(maildir, create=True).add(data)


def states(engine: Engine) -> dict[str, list[tuple[str, str]]]:
    """recipient -> [(kind, state)] in id order."""
    out: dict[str, list[tuple[str, str]]] = {}
    with engine.connect() as conn:
        for r in conn.execute(
            select(messages.c.recipient_email, messages.c.kind, messages.c.state).order_by(
                messages.c.id
            )
        ):
            out.setdefault(r.recipient_email, []).append((r.kind, r.state))
    return out


@pytest.fixture
def verp_runtime(settings: Settings, clock: FixedClock) -> Iterator[Runtime]:
    s = settings.model_copy(update={"bounce_address": BOUNCE_ADDRESS, "bounce_secret": SECRET})
    from pydantic import SecretStr

    s.bounce_secret = SecretStr(SECRET)
    rt = Runtime(s, clock)
    yield rt
    rt.engine.dispose()


def launched(rt: Runtime, smtp: SmtpServer, tmp_path: Path) -> dict[str, Received]:
    setup_pilot(rt, tmp_path)
    launch(rt)
    assert send(rt) == {"sent": 3}
    return {r.rcpt_tos[0]: r for r in smtp.received}


def test_every_message_carries_a_verp_sender_and_auto_reply_suppression(
    verp_runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    got = launched(verp_runtime, smtp, tmp_path)
    with verp_runtime.engine.connect() as conn:
        ids = dict(conn.execute(select(messages.c.recipient_email, messages.c.id)).all())
    for rcpt, r in got.items():
        assert VERP.message_of(r.mail_from) == ids[rcpt]
        msg = r.message()
        assert msg["Auto-Submitted"] == "auto-generated"
        assert msg["X-Auto-Response-Suppress"] == "All"


def test_a_maildir_scan_marks_bounced_moves_everything_and_a_second_scan_changes_nothing(
    verp_runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    rt = verp_runtime
    got = launched(rt, smtp, tmp_path)
    box = tmp_path / "bounces"
    deliver(box, dsn(got["ada@example.edu"], "5.1.1", "550 5.1.1 <ada@example.edu>: user unknown"))
    deliver(box, dsn(got["jose@example.edu"], "4.2.2", "452 4.2.2 mailbox full"))
    deliver(box, out_of_office("grace@example.edu", got["grace@example.edu"].mail_from))
    real = got["grace@example.edu"].mail_from  # a token for grace's message, one digit changed
    local, _, domain = real.partition("@")
    forged = f"{local[:-1]}{'0' if local[-1] != '0' else '1'}@{domain}"
    deliver(box, dsn(got["grace@example.edu"], "5.1.1", "550 user unknown", to=forged))
    deliver(box, b"From: someone@example.org\nSubject: hello?\n\nIs this the training office?\n")
    report = scan(rt.engine, rt.clock, [MaildirSource(box)], rt.scan_config())
    assert report.read == 5
    assert dict(report.bounces) == {"hard": 1, "soft": 1}
    assert (report.autoreplies, report.forged, report.unrecognised) == (1, 1, 2)
    assert report.marked == ["H1"]
    assert states(rt.engine) == {
        "ada@example.edu": [("launch", "bounced")],
        "jose@example.edu": [("launch", "bounced")],
        "grace@example.edu": [("launch", "sent")],  # the forged bounce changed nothing
    }
    md = mailbox.Maildir(box, create=False)
    assert len(md) == 0  # nothing left in new/ or cur/ ...
    assert len(md.get_folder("Processed")) == 3  # ... and nothing deleted
    assert len(md.get_folder("Unrecognised")) == 2
    # The same mail again (say the move failed after the database had it): nothing changes.
    for key in md.get_folder("Processed").iterkeys():
        deliver(box, md.get_folder("Processed").get_bytes(key))
    again = scan(rt.engine, rt.clock, [MaildirSource(box)], rt.scan_config())
    assert (again.duplicates, dict(again.bounces), again.marked) == (2, {}, [])
    with rt.engine.connect() as conn:
        assert len(conn.execute(select(bounces)).all()) == 2
        marks = conn.execute(select(undeliverable)).all()
    assert [(m.email_key, m.cleared_at) for m in marks] == [("ada@example.edu", None)]
    assert "hard bounce 5.1.1" in marks[0].reason
    # What could not be read is listed for a person, with where it is now.
    listed = runner.invoke(app, ["bounces", "unrecognised", "--json"], env=_env(rt))
    assert listed.exit_code == 0, listed.output
    kept = json.loads(listed.output)
    assert sorted(k["subject"] for k in kept) == ["Undelivered Mail Returned to Sender", "hello?"]
    assert any(k["reason"].startswith("refused: bounce token") for k in kept)
    assert all(k["location"].startswith("maildir: Unrecognised") for k in kept)


def test_without_verp_a_bounce_is_matched_by_message_id_and_recipient(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    got = launched(runtime, smtp, tmp_path)
    ada = got["ada@example.edu"]
    assert "+" not in ada.mail_from  # no BOUNCE_ADDRESS: the program's sender
    files = tmp_path / "ada.eml"
    files.write_bytes(dsn(ada, "5.1.1", "550 5.1.1 user unknown"))
    from pshnotify.bounces.sources import FileSource

    report = scan(runtime.engine, runtime.clock, [FileSource([files])], ScanConfig())
    assert report.marked == ["H1"]
    assert files.exists()  # an operator's file is read, never moved
    # A report naming our Message-ID for another recipient is not ours to apply.
    other = tmp_path / "other.eml"
    other.write_bytes(dsn(ada, "5.1.1", "550 no").replace(b"ada@example.edu", b"eve@example.org"))
    report = scan(runtime.engine, runtime.clock, [FileSource([other])], ScanConfig())
    assert (report.unmatched, dict(report.bounces)) == (1, {})


def test_soft_bounces_mark_the_address_only_on_the_third_distinct_day(
    verp_runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    rt = verp_runtime
    jose = launched(rt, smtp, tmp_path)["jose@example.edu"]
    box = tmp_path / "bounces"
    days = [(11, 11), (11, 15), (12, 11), (13, 11)]  # two on the 11th, then the 12th, the 13th
    marked = []
    for day, hour in days:
        when = dt.datetime(2023, 9, day, hour, 0, tzinfo=NY)
        rt.clock.set(when + dt.timedelta(minutes=5))  # type: ignore[attr-defined]
        deliver(box, dsn(jose, "4.2.2", "452 4.2.2 mailbox full", date=when))
        marked.append(scan(rt.engine, rt.clock, [MaildirSource(box)], rt.scan_config()).marked)
    assert marked == [[], [], [], ["H2"]]


# -- a real IMAP server ---------------------------------------------------------------------------
@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    try:
        yield server
    finally:
        server.stop()


def test_bounces_in_an_imap_folder_are_read_moved_and_a_second_scan_changes_nothing(
    verp_runtime: Runtime, smtp: SmtpServer, tmp_path: Path, dovecot: Dovecot
) -> None:
    rt = verp_runtime
    got = launched(rt, smtp, tmp_path)
    address = parse_imap_url(dovecot.url)
    mta = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
    mta.login(address.username, PASSWORD)
    mta.append("INBOX", dsn(got["ada@example.edu"], "5.1.1", "550 5.1.1 user unknown"))
    mta.append("INBOX", dsn(got["jose@example.edu"], "4.2.2", "452 4.2.2 mailbox full"))
    mta.append("INBOX", b"From: x@example.org\r\nSubject: ?\r\n\r\nnot a bounce\r\n")

    def once() -> dict[str, object]:
        source = ImapSource(address, PASSWORD)
        try:
            return scan(rt.engine, rt.clock, [source], rt.scan_config()).as_dict()
        finally:
            source.close()

    first = once()
    assert (first["read"], first["bounces"]) == (3, {"hard": 1, "soft": 1})
    assert (first["marked_undeliverable"], first["unrecognised"]) == (["H1"], 1)
    for folder, count in (("INBOX", 0), ("Processed", 2), ("Unrecognised", 1)):
        mta.select_folder(folder)
        assert len(mta.search(["ALL"])) == count, folder
    second = once()
    assert (second["read"], second["bounces"]) == (0, {})
    mta.logout()
    assert states(rt.engine)["ada@example.edu"] == [("launch", "bounced")]


def test_imaps_verifies_the_servers_certificate(tmp_path: Path) -> None:
    """imaps:// with the institution's CA (PSHNOTIFY_BOUNCE_IMAP_CA_FILE) logs in and reads;
    without it the certificate is refused, never accepted blindly."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server = start_dovecot(cert.cert_chain_pems[0].bytes(), cert.private_key_pem.bytes())
    try:
        ca_file = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        address = parse_imap_url(f"imaps://bounces@127.0.0.1:{server.tls_port}/INBOX")
        assert address.tls
        source = ImapSource(address, PASSWORD, ca_file)
        try:
            assert list(source.mails()) == []
        finally:
            source.close()
        with pytest.raises(ssl.SSLCertVerificationError):
            ImapSource(address, PASSWORD)  # the system store does not know this CA
    finally:
        server.stop()


def test_a_mailbox_that_will_not_log_in_is_a_clear_error(dovecot: Dovecot) -> None:
    from imapclient.exceptions import LoginError

    with pytest.raises(LoginError):
        ImapSource(parse_imap_url(dovecot.url), "wrong password")


# -- the webhook ----------------------------------------------------------------------------------
WHSEC = "whsec_" + base64.b64encode(b"bounce-webhook-key-0123456789ab").decode()


def test_the_bounce_webhook_records_signed_events_once(
    runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    got = launched(runtime, smtp, tmp_path)
    runtime.settings.bounce_webhook_secret = SecretStr(WHSEC)
    app = create_app(runtime.engine, runtime.clock, runtime.settings, runtime.program)
    ada = got["ada@example.edu"].message()["Message-ID"]
    jose = got["jose@example.edu"].message()["Message-ID"]
    event = {"message_id": ada, "recipient": "Ada@example.edu", "type": "hard",
             "status": "5.1.1", "diagnostic": "550 5.1.1 user unknown"}  # fmt: skip
    with running(app) as client:

        def post(payload: dict[str, Any], msg_id: str, secret: str = WHSEC) -> httpx.Response:
            body, headers = signed(payload, msg_id=msg_id, secret=secret)
            return client.post("/webhooks/bounces", content=body, headers=headers)

        first = post(event, "evt_1")
        assert first.status_code == 200, first.text
        assert first.json() == {"outcome": "bounced", "class": "hard", "marked_undeliverable": True}
        assert post(event, "evt_1").status_code == 409  # a replayed delivery
        other = "whsec_" + base64.b64encode(b"not-the-key-at-all-0123456789ab").decode()
        assert post(event, "evt_2", secret=other).status_code == 401
        assert post({**event, "message_id": "<nobody@nowhere>"}, "evt_3").status_code == 202
        wrong = post({**event, "type": "bouncy", "status": "five"}, "evt_4")
        assert (wrong.status_code, len(wrong.json()["problems"])) == (400, 2)
        spam = {"message_id": jose, "recipient": "jose@example.edu", "type": "complaint"}
        assert post(spam, "evt_5").json()["marked_undeliverable"] is False
    assert states(runtime.engine)["jose@example.edu"] == [("launch", "bounced")]
    with runtime.engine.connect() as conn:
        assert conn.execute(select(undeliverable.c.email_key)).scalars().all() == [
            "ada@example.edu"
        ]


def test_address_ok_clears_the_mark_audited_and_resends_a_bounced_launch(
    verp_runtime: Runtime, smtp: SmtpServer, tmp_path: Path
) -> None:
    rt = verp_runtime
    got = launched(rt, smtp, tmp_path)
    eml = tmp_path / "ada.eml"
    eml.write_bytes(dsn(got["ada@example.edu"], "5.2.1", "550 5.2.1 mailbox disabled"))
    result = runner.invoke(app, ["bounces", "scan", str(eml)], catch_exceptions=False, env=_env(rt))
    assert result.exit_code == 0, result.output
    assert "marked undeliverable: H1" in result.output
    stored = rt.program(None)
    cleared = address_ok(
        rt.engine, stored, "H1", rt.clock, actor="op", message_id_domain="t.invalid"
    )
    assert (cleared.was_marked, cleared.launch_requeued) == (True, True)
    assert "5.2.1" in cleared.reason
    again = address_ok(rt.engine, stored, "H1", rt.clock, actor="op", message_id_domain="t")
    assert not again.was_marked
    assert send(rt) == {"sent": 1}
    assert smtp.received[-1].rcpt_tos == ["ada@example.edu"]
    with rt.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit_log.c.action))]
    assert "address.undeliverable" in actions
    assert "address.ok" in actions


def _env(rt: Runtime) -> dict[str, str]:
    s = rt.settings
    return {
        "PSHNOTIFY_DATABASE_URL": s.database_url,
        "PSHNOTIFY_PROGRAM_FILE": str(s.program_file),
        "PSHNOTIFY_TEMPLATES_DIR": str(s.templates_dir),
        "PSHNOTIFY_BOUNCE_ADDRESS": BOUNCE_ADDRESS,
        "PSHNOTIFY_BOUNCE_SECRET": SECRET,
    }


# -- end to end: the daemon's passes, a Maildir, the officer's report, a corrected address ---------
E2E_HEADER = "id,email,name,department,role,admin_officer,admin_officer_name"
E2E_ROSTER = [
    "H1,ada@example.edu,Ada Lovelace,Human Resources,staff,ao-hr@example.edu,Olive Officer",
    "H2,jose@example.edu,Jose Nunez,Human Resources,staff,ao-hr@example.edu,Olive Officer",
    "H3,grace@example.edu,Grace Hopper,Human Resources,staff,ao-hr@example.edu,Olive Officer",
    "H6,alan@example.edu,Alan Turing,Human Resources,staff,ao-hr@example.edu,Olive Officer",
]


def test_end_to_end_hard_bounces_stop_reminders_soft_do_not_and_a_new_address_gets_the_launch(
    env: dict[str, str], smtp: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_roster_import import write
    from tests.test_season import at, cli

    box = tmp_path / "bounce-box"
    mailbox.Maildir(box, create=True)
    for k, v in {
        "PSHNOTIFY_BOUNCE_ADDRESS": BOUNCE_ADDRESS,
        "PSHNOTIFY_BOUNCE_SECRET": SECRET,
        "PSHNOTIFY_BOUNCE_MAILDIR": str(box),
    }.items():
        monkeypatch.setenv(k, v)
    day = dt.date(2023, 9, 11)
    cli("init", "--now", at(day, 8))
    cli("roster", "import", str(write(tmp_path, [E2E_HEADER, *E2E_ROSTER])), "--now", at(day, 8))
    cli("launch", "pilot", "--yes", "--now", at(day, 9))
    cli("run", "--once", "--now", at(day, 9))
    got = {r.rcpt_tos[0]: r for r in smtp.received}
    assert sorted(got) == sorted(line.split(",")[1] for line in E2E_ROSTER)
    for r in got.values():  # every outgoing message asks auto-responders to stay quiet
        assert r.message()["Auto-Submitted"] == "auto-generated"
        assert VERP.message_of(r.mail_from) is not None
    # The afternoon: the institution's MTA delivers three reports to the bounce Maildir.
    deliver(box, dsn(got["ada@example.edu"], "5.1.1", "550 5.1.1 user unknown"))
    deliver(box, dsn(got["jose@example.edu"], "4.2.2", "452 4.2.2 mailbox full"))
    deliver(box, out_of_office("grace@example.edu", got["grace@example.edu"].mail_from))
    cli("run", "--once", "--now", at(day, 15))  # the pass reads them first
    assert len(mailbox.Maildir(box, create=False)) == 0
    # The next morning's officer report puts the dead address first.
    cli("run", "--once", "--now", at(dt.date(2023, 9, 12), 6, 30))
    reports = [r for r in smtp.received if r.message()["X-Pshnotify-Kind"] == "report"]
    assert len(reports) == 1
    text = reports[0].message().get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hello Olive Officer," in text
    attention = text.split("NEEDS ATTENTION", 1)[1].split("SINCE YOUR LAST REPORT", 1)[0]
    assert "Ada Lovelace (H1, ada@example.edu): hard bounce 5.1.1" in attention
    assert "Jose" not in attention  # one soft bounce marks nothing
    # The first reminder step (a week after the launch): not to the dead address.
    before = len(smtp.received)
    cli("run", "--once", "--now", at(dt.date(2023, 9, 18), 9))
    reminded = sorted(
        r.rcpt_tos[0]
        for r in smtp.received[before:]
        if r.message()["X-Pshnotify-Kind"] == "reminder"
    )
    assert reminded == ["alan@example.edu", "grace@example.edu", "jose@example.edu"]
    listed = json.loads(cli("messages", "--kind", "reminder", "--json"))
    skipped = [m for m in listed if m["recipient_email"] == "ada@example.edu"]
    assert [(m["state"], m["reason"]) for m in skipped] == [("skipped", "address undeliverable")]
    status = json.loads(cli("status", "--json"))
    assert status["waves"]["pilot"]["people"]["undeliverable"] == 1
    assert status["bounces"] == {
        "hard": 1,
        "soft": 1,
        "blocked": 0,
        "complaint": 0,
        "delayed": 0,
        "undeliverable": 1,
        "unrecognised": 0,
    }
    assert "bounces: 1 addresses undeliverable" in cli("status")
    # HR corrects Ada's address: the mark clears and the launch email goes to the new one.
    fixed = [E2E_ROSTER[0].replace("ada@example.edu", "ada.lovelace@example.edu"), *E2E_ROSTER[1:]]
    roster = write(tmp_path, [E2E_HEADER, *fixed], name="fixed.csv")
    cli("roster", "import", str(roster), "--now", at(dt.date(2023, 9, 18), 10))
    before = len(smtp.received)
    cli("run", "--once", "--now", at(dt.date(2023, 9, 18), 10, 5))
    again = [(r.rcpt_tos[0], r.message()["X-Pshnotify-Kind"]) for r in smtp.received[before:]]
    assert again == [("ada.lovelace@example.edu", "launch")]
    status = json.loads(cli("status", "--json"))
    assert status["waves"]["pilot"]["people"]["undeliverable"] == 0
