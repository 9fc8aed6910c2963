"""One scan of the bounce mailboxes: read each mail, record what it says, then move it.

Each mail is parsed (bounces.parse), its failed recipients recorded in one transaction
(services.bounces), and only then moved: to `Processed` when understood (a bounce or an
auto-reply), to `Unrecognised` when not (kept, counted, listed by `bounces unrecognised`).
Nothing is ever deleted, and a second scan of the same mail changes nothing.

What a bounce is believed on: with VERP (PSHNOTIFY_BOUNCE_ADDRESS/_SECRET) only a valid
token in the address it was delivered to; a report without one is kept, never applied.
Without VERP, the original Message-ID (random per message, store.outbox) and the recipient.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy import Engine, select

from pshnotify.bounces.parse import Parsed, parse
from pshnotify.bounces.sources import PROCESSED, UNRECOGNISED, Mail, Source
from pshnotify.bounces.verp import ForgedTokenError, Verp
from pshnotify.clock import Clock
from pshnotify.domain.bounces import BounceClass
from pshnotify.services.bounces.marks import (
    BounceEvent,
    Recorded,
    Unrecognised,
    dedupe_key,
    keep_unrecognised,
    record_bounce,
)
from pshnotify.store.schema import messages

log = logging.getLogger(__name__)


@dataclass
class ScanReport:
    read: int = 0
    bounces: Counter[str] = field(default_factory=Counter)  # by class
    autoreplies: int = 0
    unrecognised: int = 0
    forged: int = 0
    unmatched: int = 0
    duplicates: int = 0
    marked: list[str] = field(default_factory=list)  # people whose address was just marked
    blocked: list[dict[str, str]] = field(default_factory=list)  # our mail refused: look

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "bounces": dict(sorted(self.bounces.items())),
            "autoreplies": self.autoreplies,
            "unrecognised": self.unrecognised,
            "forged": self.forged,
            "unmatched": self.unmatched,
            "duplicates": self.duplicates,
            "marked_undeliverable": self.marked,
            "blocked": self.blocked,
        }


@dataclass(frozen=True)
class ScanConfig:
    verp: Verp | None = None
    soft_days: int = 3


def scan(
    engine: Engine,
    clock: Clock,
    sources: Sequence[Source],
    config: ScanConfig,
    on_progress: Callable[[int], None] | None = None,
) -> ScanReport:
    report = ScanReport()
    for source in sources:
        for mail in source.mails():
            _one(engine, clock, source, mail, config, report)
            report.read += 1
            if on_progress:
                on_progress(1)
    return report


def _one(
    engine: Engine,
    clock: Clock,
    source: Source,
    mail: Mail,
    config: ScanConfig,
    report: ScanReport,
) -> None:
    parsed = parse(mail.data)
    identity = parsed.message_id or "sha256:" + hashlib.sha256(mail.data).hexdigest()
    if parsed.kind == "autoreply":
        report.autoreplies += 1  # RFC 3834: not a bounce, changes nothing
        source.move(mail, PROCESSED)
        return
    if parsed.kind == "unrecognised":
        _keep(engine, clock, source, mail, parsed, identity, parsed.reason, report)
        return
    try:
        row_id = _token(parsed, config.verp)
    except ForgedTokenError as exc:
        report.forged += 1
        log.warning("bounce with a forged token refused: %s", exc)
        _keep(engine, clock, source, mail, parsed, identity, f"refused: {exc}", report)
        return
    if config.verp is not None and row_id is None:
        # With VERP only a valid token is believed: a report sent to the plain bounce address
        # could name anyone's Message-ID and address (anyone can mail that address).
        report.unmatched += 1
        reason = "a delivery report without a bounce token (VERP is on: only a token counts)"
        _keep(engine, clock, source, mail, parsed, identity, reason, report, count=False)
        return
    now = clock.now()
    outcomes = []
    with engine.begin() as conn:
        failures = parsed.failures
        if row_id is not None:
            to = conn.scalar(select(messages.c.recipient_email).where(messages.c.id == row_id))
            mine = [f for f in failures if to and f.recipient == to.lower()]
            failures = tuple(mine or failures[:1])  # the token names one message
        for f in failures:
            event = BounceEvent(
                source=source.name,
                dedupe_key=dedupe_key("mail", identity, f.recipient),
                recipient=f.recipient,
                cls=f.cls,
                status=f.status,
                diagnostic=f.diagnostic,
                received_at=_received_at(parsed, now),
                message_row_id=row_id,
                original_message_ids=parsed.original_message_ids,
            )
            result = record_bounce(conn, event, now=now, soft_days=config.soft_days)
            outcomes.append(result.outcome)
            _count(report, event, result.outcome, result.marked)
    if all(o == Recorded.UNMATCHED for o in outcomes):
        report.unmatched += 1
        reason = "a delivery report about no message pshnotify sent (no token, no Message-ID)"
        _keep(engine, clock, source, mail, parsed, identity, reason, report, count=False)
        return
    source.move(mail, PROCESSED)


def _count(report: ScanReport, event: BounceEvent, outcome: Recorded, marked: str | None) -> None:
    if outcome == Recorded.DUPLICATE:
        report.duplicates += 1
        return
    if outcome == Recorded.UNMATCHED:
        return
    report.bounces[event.cls.value] += 1
    if marked:
        report.marked.append(marked)
    if event.cls in (BounceClass.BLOCKED, BounceClass.COMPLAINT):
        report.blocked.append(
            {
                "recipient": event.recipient,
                "class": event.cls.value,
                "status": event.status or "",
                "diagnostic": event.diagnostic,
            }
        )


def _token(parsed: Parsed, verp: Verp | None) -> int | None:
    """The message our VERP token names, if the bounce came to a tokenised address."""
    if verp is None:
        return None
    for address in parsed.delivered_to:
        row_id = verp.message_of(address)
        if row_id is not None:
            return row_id
    return None


def _received_at(parsed: Parsed, now: dt.datetime) -> dt.datetime:
    """When the bounce was written (its Date), so soft bounces read together in one scan still
    count on the days they happened; never later than now."""
    try:
        at = parsedate_to_datetime(parsed.date) if parsed.date else None
    except (TypeError, ValueError):
        at = None
    if at is None or at.tzinfo is None or at > now:
        return now
    return at


def _keep(
    engine: Engine,
    clock: Clock,
    source: Source,
    mail: Mail,
    parsed: Parsed,
    identity: str,
    reason: str,
    report: ScanReport,
    *,
    count: bool = True,
) -> None:
    if count:
        report.unrecognised += 1
    now = clock.now()
    location = mail.ref if source.name == "file" else f"{source.name}: {UNRECOGNISED}, {mail.ref}"
    item = Unrecognised(now, source.name, location, parsed.sender, parsed.subject, reason)
    with engine.begin() as conn:
        keep_unrecognised(conn, item, identity)
    source.move(mail, UNRECOGNISED)  # after the record: a crash between leaves it to re-read
