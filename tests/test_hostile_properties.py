"""Random hostile text at every way in (issue 14): control characters, markup, very long values,
odd Unicode. The roster and completions readers either read a file or refuse it with
`FILE:LINE` errors; the webhook and xAPI endpoints answer 2xx or 4xx, never a 500; the bounce
parser reads any bytes without raising, and with VERP on no mail marks anyone without a valid
token (issue 28)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import select

from pshnotify.bounces.parse import Parsed, parse
from pshnotify.bounces.sources import Mail
from pshnotify.domain.errors import InputError
from pshnotify.domain.text import CONTROL
from pshnotify.ingest.completions_csv import read_completions
from pshnotify.ingest.roster_csv import LIMITS, MAX_TEXT, read_roster
from pshnotify.runtime.wiring import Runtime
from pshnotify.services.bounces.scan import scan
from pshnotify.services.campaign.roster import import_roster
from pshnotify.store.schema import messages, undeliverable
from pshnotify.web import create_app
from tests.test_launch_and_send import PILOT
from tests.test_program import SEED
from tests.test_roster_import import HEADER, write
from tests.test_web import ACTIVITY, COMPLETED, LRS, SECRET, program_with_activities, running
from tests.test_web import signed as sign

# Modest and repeatable: the same examples every run (CI), a few seconds a test.
FEW = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

NASTY = [
    "[/red]",
    "[bold]x[/bold]",
    "[link=file:///etc/passwd]x[/link]",
    "\x00",
    "\x1b[2J\x1b]0;t\x07",
    "\r",
    "a\nb",
    "\u202eevil",
    "\u2028",
    "١٢",
    "1_0",
    "𝟙𝟚",
    "=HYPERLINK(1)",
    '"',
    ",",
    ";",
    "N" * 3000,
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-12:00",
    "2023-09-11T09:00:00-04:00",
    "2023-09-01",
    "99999999999999999999999",
    "<script>@@@",
    "ada@example.edu",
    "H1",
    "B",
    "pilot",
]
# Anything, with the nasty values and the boundaries mixed in often.
value = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=20),
    st.builds(lambda a, b: a + b, st.sampled_from(NASTY), st.text(max_size=10)),
)
LINE_ERROR = re.compile(r"^(?P<file>.+?):(?P<line>\d+): ")


def assert_file_errors(caught: InputError, path: Path) -> None:
    assert caught.problems
    for problem in caught.problems:
        m = LINE_ERROR.match(problem)
        assert m, problem
        assert m["file"] == str(path), problem


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return out.getvalue()


# -- the readers -----------------------------------------------------------------------------------
ROSTER_COLUMNS = HEADER.split(",")
COMPLETIONS_COLUMNS = ["id", "email", "option", "completed_at", "note"]
# A line each reader accepts as it is: the hostile values replace some of its cells, so that
# both of a property's branches (refused by FILE:LINE, accepted keeping the rules) are reached.
ROSTER_ROW = PILOT[0].split(",")
COMPLETIONS_ROW = ["H1", "", "B", "2023-09-08T16:30:00Z", "approved"]


def mixed_rows(valid: list[str]) -> st.SearchStrategy[list[list[str]]]:
    """1-3 rows, each the valid one with up to two of its cells replaced by hostile values."""

    def spoil(changes: list[tuple[int, str]]) -> list[str]:
        row = list(valid)
        for index, new in changes:
            row[index] = new
        return row

    change = st.tuples(st.integers(0, len(valid) - 1), value)
    return st.lists(st.lists(change, max_size=2).map(spoil), min_size=1, max_size=3)


def both_branches(run: Any) -> Counter[str]:
    """Run a property (a @given function whose one other argument is `seen`) and count the
    branches its examples took; the caller asserts that each was reached."""
    seen: Counter[str] = Counter()
    run(seen)
    return seen


@pytest.mark.fast
def test_any_roster_is_read_or_refused_by_file_and_line(tmp_path: Path) -> None:
    @FEW
    @given(rows=mixed_rows(ROSTER_ROW))
    def check(seen: Counter[str], rows: list[list[str]]) -> None:
        path = tmp_path / "roster.csv"
        path.write_text(csv_text(ROSTER_COLUMNS, rows), encoding="utf-8", newline="")
        try:
            read = read_roster(path, SEED)
        except InputError as exc:
            assert_file_errors(exc, path)
            seen["refused"] += 1
            event("refused")
            return
        seen["accepted"] += 1
        event("accepted")
        assert [row.line for row in read] == list(range(2, len(rows) + 2))
        for row in read:  # what is accepted keeps the field rules
            for col, cell in zip(ROSTER_COLUMNS, rows[row.line - 2], strict=True):
                assert len(cell.strip()) <= LIMITS.get(col, MAX_TEXT)
                assert not CONTROL.search(cell.strip())
            assert row.program_year is None or 0 <= row.program_year <= 99

    seen = both_branches(check)
    assert min(seen["accepted"], seen["refused"]) >= 5, seen


@pytest.mark.parametrize(
    ("reader", "header"),
    [(read_roster, HEADER), (read_completions, ",".join(COMPLETIONS_COLUMNS))],
    ids=["roster", "completions"],
)
@pytest.mark.fast
def test_any_bytes_are_read_or_refused_by_file_and_line(
    tmp_path: Path, reader: Any, header: str
) -> None:
    """After the reader's own header, any bytes: the reader gets past the header to them (a
    file that is not UTF-8 is refused as a whole, at line 1)."""

    @FEW
    @given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
    def check(seen: Counter[str], data: bytes) -> None:
        path = tmp_path / "file.csv"
        path.write_bytes(header.encode() + b"\r\n" + data)
        try:
            reader(path, SEED)
            seen["read"] += 1
        except InputError as exc:
            assert_file_errors(exc, path)
            for problem in exc.problems:  # never the header, which is the reader's own
                assert not problem.startswith(f"{path}:1: ") or ": (file): " in problem, problem
            lines = {LINE_ERROR.match(p)["line"] for p in exc.problems}  # type: ignore[index]
            seen["refused at a row" if lines - {"1"} else "refused as a file"] += 1

    seen = both_branches(check)
    assert min(seen["read"], seen["refused at a row"], seen["refused as a file"]) > 0, seen


@pytest.mark.fast
def test_any_completions_file_is_read_or_refused_by_file_and_line(tmp_path: Path) -> None:
    @FEW
    @given(rows=mixed_rows(COMPLETIONS_ROW))
    def check(seen: Counter[str], rows: list[list[str]]) -> None:
        path = tmp_path / "done.csv"
        path.write_text(csv_text(COMPLETIONS_COLUMNS, rows), encoding="utf-8", newline="")
        try:
            read = read_completions(path, SEED)
        except InputError as exc:
            assert_file_errors(exc, path)
            seen["refused"] += 1
            event("refused")
            return
        seen["accepted"] += 1
        event("accepted")
        assert len(read) == len(rows)
        for row in read:  # what is accepted keeps the rules
            # Within the program's reach, as written (a day either side once in its zone).
            day, margin = row.completed_at.astimezone(SEED.tz).date(), dt.timedelta(days=1)
            assert SEED.reach.first - margin <= day <= SEED.reach.last + margin
            assert row.option in {o.key for o in SEED.options}
            assert not CONTROL.search(row.person_ref + row.option + (row.note or ""))

    seen = both_branches(check)
    assert min(seen["accepted"], seen["refused"]) >= 5, seen


# -- the endpoints ---------------------------------------------------------------------------------
@pytest.fixture
def client(runtime: Runtime, tmp_path: Path) -> Iterator[Any]:
    rt = Runtime(
        runtime.settings.model_copy(
            update={
                "program_file": program_with_activities(tmp_path),
                "webhook_secret": SecretStr(SECRET),
                "xapi_username": LRS[0],
                "xapi_password": SecretStr(LRS[1]),
                "http_auth_failures": 10_000,
            }
        ),
        runtime.clock,
    )
    roster = write(tmp_path, [HEADER, *PILOT])
    import_roster(rt.engine, rt.program(None), roster, rt.clock, actor="op")
    with running(create_app(rt.engine, rt.clock, rt.settings, rt.program)) as c:
        yield c
    rt.engine.dispose()


anything = st.one_of(
    value, st.none(), st.integers(), st.booleans(), st.lists(value, max_size=2), st.just({})
)


def answered_cleanly(status: int, body: bytes) -> None:
    assert status < 500, body
    assert status in (200, 202, 400, 409, 413), (status, body)
    json.loads(body)  # always a JSON answer, never a traceback page


EDGE = "0001-01-01T00:00:00+14:00"


@SQLITE_ONLY
@FEW
@example(payload={"person": "H1", "option": "B", "completed_at": EDGE})
@example(payload={"person": "H1", "option": "B", "completed_at": "2023-09-01", "note": "\x00"})
@given(
    payload=st.fixed_dictionaries(
        {},
        optional={
            "person": anything,
            "option": anything,
            "completed_at": anything,
            "note": anything,
            "program": anything,
        },
    )
)
def test_any_webhook_body_is_answered_2xx_or_4xx(client: Any, payload: dict[str, Any]) -> None:
    body, headers = sign(payload)
    r = client.post("/webhooks/completions", content=body, headers=headers)
    answered_cleanly(r.status_code, r.content)


@SQLITE_ONLY
@FEW
@given(
    mbox=value,
    option=st.one_of(st.sampled_from("abc"), value),
    timestamp=st.one_of(value, st.none(), st.integers()),
    statement_id=st.one_of(st.none(), value, st.uuids().map(str)),
    verb=st.one_of(st.just(COMPLETED), value),
    batch=st.booleans(),
)
@example(
    mbox="a@example.edu", option="b", timestamp=EDGE, statement_id=None, verb=COMPLETED, batch=False
)
def test_any_xapi_statement_is_answered_2xx_or_4xx(
    client: Any,
    mbox: str,
    option: str,
    timestamp: Any,
    statement_id: str | None,
    verb: str,
    batch: bool,
) -> None:
    statement: dict[str, Any] = {
        "actor": {"objectType": "Agent", "mbox": f"mailto:{mbox}"},
        "verb": {"id": verb},
        "object": {"id": ACTIVITY.format(option) if len(option) == 1 else option},
        "timestamp": timestamp,
    }
    if statement_id is not None:
        statement["id"] = statement_id
    body = [statement, {**statement, "id": str(uuid.uuid4())}] if batch else statement
    r = client.post("/xapi/statements", json=body, auth=LRS)
    answered_cleanly(r.status_code, r.content)


# -- the bounce mailbox (issue 28) -----------------------------------------------------------------
class _Mails:
    """A bounce source of mails in memory (read, never moved)."""

    name = "file"

    def __init__(self, *data: bytes) -> None:
        self.data = data

    def mails(self) -> Iterator[Mail]:
        return iter(Mail(f"mail-{i}", d) for i, d in enumerate(self.data))

    def move(self, mail: Mail, folder: str) -> str:
        return mail.ref

    def close(self) -> None:
        return None


def _texts_of(parsed: Parsed) -> list[str]:
    out = [parsed.subject, parsed.sender, parsed.date, parsed.reason, parsed.message_id or ""]
    out += [*parsed.delivered_to, *parsed.original_message_ids]
    for f in parsed.failures:
        out += [f.recipient, f.diagnostic, f.status or ""]
    return out


@FEW
@example(data=b"Subject: =?utf-8?b?/w==?=\n\nx")
@example(data=b"Subject: =?x-unknown?q?hi?=\n\nx")
@example(data=b"Content-Type: text/plain; charset=idna\n\n\xff")
@example(data=b"Content-Type: multipart/mixed; boundary=b\n\n--b\n" * 3)
@example(data=b"From: \x00\xff\n\n")
@given(data=st.binary(max_size=3000))
def test_any_bytes_are_read_by_the_bounce_parser(data: bytes) -> None:
    parsed = parse(data)  # never raises
    assert parsed.kind in ("bounce", "autoreply", "unrecognised")
    for text in _texts_of(parsed):
        assert not CONTROL.search(text), text  # fit to store (PostgreSQL refuses NUL) and show
        text.encode("utf-8")  # no lone surrogate left by undecodable bytes


BOUNCE_ADDRESS = "bounces@psh.example.edu"
BOUNCE_SECRET = "bounce-secret-for-the-property-tests"


@pytest.fixture
def bounce_box(runtime: Runtime, smtp: Any, tmp_path: Path) -> Iterator[tuple[Runtime, Any]]:
    """The pilot launched and sent with VERP on: three messages a forger would like to mark."""
    from tests.test_launch_and_send import launch, send, setup_pilot

    rt = Runtime(
        runtime.settings.model_copy(
            update={
                "bounce_address": BOUNCE_ADDRESS,
                "bounce_secret": SecretStr(BOUNCE_SECRET),
            }
        ),
        runtime.clock,
    )
    setup_pilot(rt, tmp_path)
    launch(rt)
    assert send(rt) == {"sent": 3}
    with rt.engine.connect() as conn:
        known = conn.execute(select(messages.c.message_id, messages.c.recipient_email)).all()
    yield rt, known
    rt.engine.dispose()


def _report(
    delivered_to: str,
    rcpt: str,
    original_id: str,
    action: str,
    status: str,
    charset: str,
    text: str,
) -> bytes:
    """A delivery report about `rcpt` of `original_id`, as anyone can write one."""
    return f"""\
Delivered-To: {delivered_to}
From: MAILER-DAEMON@mx.example.org
Subject: Undelivered Mail Returned to Sender
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain; charset={charset}

<{rcpt}>: {text}

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822; {rcpt}
Action: {action}
Status: {status}
Diagnostic-Code: smtp; 550 {status} {text}

--B
Content-Type: text/rfc822-headers

Message-ID: {original_id}

--B--
""".encode("utf-8", "surrogateescape")


_hex = st.text(alphabet="0123456789abcdef", min_size=1, max_size=16)
forged_token = st.builds(lambda a, b: f"bounces+{a}-{b}@psh.example.edu", _hex, _hex)


@SQLITE_ONLY
@FEW
@given(data=st.data())
def test_no_mail_marks_anyone_without_a_valid_verp_token(
    bounce_box: tuple[Runtime, Any], data: st.DataObject
) -> None:
    """Whatever reaches the bounce mailbox, with VERP on: arbitrary bytes, or reports naming
    our real Message-IDs and recipients, sent to the plain address or under a forged token.
    The scan never raises, and nothing is bounced or marked."""
    rt, known = bounce_box
    ids = [k.message_id for k in known]
    rcpts = [k.recipient_email for k in known]
    text = st.text(max_size=30)
    mail = st.one_of(
        st.binary(max_size=2000),
        st.builds(
            _report,
            st.one_of(st.just(BOUNCE_ADDRESS), forged_token, value),
            st.one_of(st.sampled_from(rcpts), value),
            st.one_of(st.sampled_from(ids), value),
            st.sampled_from(["failed", "delayed", "FAILED", "relayed"]),
            st.sampled_from(["5.1.1", "4.2.2", "5.7.1", "9.9.9", ""]),
            st.sampled_from(["utf-8", "idna", "x-unknown", "latin-1", ""]),
            text,
        ),
    )
    mails = data.draw(st.lists(mail, min_size=1, max_size=3))
    report = scan(rt.engine, rt.clock, [_Mails(*mails)], rt.scan_config())
    assert report.read == len(mails)
    assert report.marked == []
    with rt.engine.connect() as conn:
        assert conn.execute(select(undeliverable)).first() is None
        states = set(conn.scalars(select(messages.c.state)))
    assert states == {"sent"}
