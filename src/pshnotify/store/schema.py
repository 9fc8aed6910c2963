"""The database schema (SQLAlchemy Core). Alembic migrations in `migrations/` build exactly this.

Core tables rather than ORM classes: the hot paths (roster import, launch, claim) are bulk
statements, and the measured ORM `add_all` path is ~9x slower than Core `executemany`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def naive_utc(value: dt.datetime) -> dt.datetime:
    """An aware datetime as the naive UTC the database stores; a naive one is a bug."""
    if value.tzinfo is None:
        raise ValueError("naive datetime passed to the database")
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def db_time(value: dt.datetime) -> str:
    """An aware datetime as the text `UTCDateTime` stores on SQLite (SQLAlchemy's own format,
    "2023-09-11 14:00:00.000000"), which PostgreSQL reads as a timestamp too: for rows bound
    past SQLAlchemy's type processing (`store.completion_batch`, `store.outcomes`)."""
    naive = value.replace(tzinfo=None) if value.tzinfo is dt.UTC else naive_utc(value)
    return naive.isoformat(" ", "microseconds")


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no time zone type; storing naive UTC and re-attaching UTC on the way out keeps
    comparisons in SQL correct and Python code free of naive datetimes.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else naive_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        stored: dt.datetime = value
        if stored.tzinfo is None:
            return stored.replace(tzinfo=dt.UTC)
        return stored.astimezone(dt.UTC)

    # On SQLite the value is text: SQLAlchemy formats and parses it in Python, field by field,
    # about 6 us a value (a sent message writes nine). These do the same in one C call each,
    # in SQLAlchemy's own format ("2023-09-11 14:00:00.000000"), which SQL compares as text.
    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: Any) -> str | None:
            return None if value is None else db_time(value)

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)
        fallback = super().result_processor(dialect, coltype)

        def process(value: Any) -> dt.datetime | None:
            if isinstance(value, str):
                return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
            return fallback(value) if fallback else value

        return process


def _machine_key(length: int) -> Any:
    """A key compared only for equality and uniqueness: on PostgreSQL, byte order ("C").

    Under the database's default collation every comparison in the key's unique index went
    through the locale's strcoll; with "C" it is a memcmp. Measured on a 100,000-person launch
    (two such indexes), the insert took about a fifth less time. SQLite compares bytes already.
    """
    return String(length).with_variant(String(length, collation="C"), "postgresql")


def _created() -> Column[Any]:
    return Column("created_at", UTCDateTime, nullable=False)


programs = Table(
    "programs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("cycle", Text, nullable=False),
    Column("source_path", Text, nullable=False),
    Column("source_text", Text, nullable=False),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("loaded_at", UTCDateTime, nullable=False),
)

waves = Table(
    "waves",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("program_id", ForeignKey("programs.id", ondelete="CASCADE"), nullable=False),
    Column("key", String(64), nullable=False),
    Column("launched_at", UTCDateTime),
    Column("launched_by", Text),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    # A launch scheduled with `launch WAVE --at`: the scheduler's first pass at or after it
    # launches the wave (as `launch_at_by`); cleared by `launch WAVE --cancel`.
    Column("launch_at", UTCDateTime),
    Column("launch_at_by", Text),
    UniqueConstraint("program_id", "key"),
)

people = Table(
    "people",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("external_id", String(128), nullable=False, unique=True),
    Column("email", Text, nullable=False),
    # Lower-cased address: people are matched by email without regard to case.
    Column("email_key", String(320), nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("department", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("paid", Boolean, nullable=False),
    Column("start_date", Date),
    Column("program_year", Integer),
    Column("affiliation", Text),
    Column("admin_officer", Text),
    Column("timezone", Text),  # IANA name; NULL: the program's zone (0009)
    Column("admin_officer_name", Text),  # for the report's greeting (0014)
    Column("manager_email", Text),  # where escalations go (0014)
    Column("extra", JSON, nullable=False),
    _created(),
    Column("updated_at", UTCDateTime, nullable=False),
    # The console's department pages and a viewer's scope (migration 0013).
    Index(None, "department"),
)
# An officer's people, by address without case: the nightly reports (migration 0019).
Index("ix_people_admin_officer_lower", func.lower(people.c.admin_officer))

enrollments = Table(
    "enrollments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("program_id", ForeignKey("programs.id", ondelete="CASCADE"), nullable=False),
    Column("person_id", ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
    Column("wave_key", String(64), nullable=False),
    Column("wave_override", String(64)),
    Column("status", String(16), nullable=False),  # required | encouraged | exempt
    Column("reason", String(64), nullable=False),
    Column("extended_until", Date),
    Column("exempted_reason", Text),  # an operator's exemption, overriding the rules
    Column("completed_at", UTCDateTime),
    Column("completion_option", String(32)),
    Column("removed_at", UTCDateTime),
    # When this person's launch email was accepted by the relay: their cadence counts from it.
    Column("launch_sent_at", UTCDateTime),
    # When the scheduler must next look at this person (NULL: nothing can become due).
    # The daemon's pass reads only rows whose instant has come, so it never scans the roster.
    Column("next_action_at", UTCDateTime),
    _created(),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("program_id", "person_id"),
    Index(None, "program_id", "wave_key", "status"),
    # Everything the counts of `status` and the console read, so they never touch the table
    # (migration 0011; bench/console.py measured 266 -> 35 ms for 100,000 people on SQLite).
    Index(
        "ix_enrollments_standing",
        "program_id",
        "wave_key",
        "status",
        "reason",
        "removed_at",
        "exempted_reason",
        "completed_at",
    ),
    Index(None, "next_action_at"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    # Ids without foreign-key constraints: a trigger and a row lock per queued message were a
    # third of a launch's time; why that is safe is in migration 0006.
    Column("program_id", Integer, nullable=False),
    Column("person_id", Integer),
    Column("kind", String(16), nullable=False),
    Column("wave_key", String(64)),
    Column("step", String(32), nullable=False, server_default=""),
    # program:wave:person:kind:step, from stable ids only: a second copy is a UNIQUE violation.
    Column("idempotency_key", _machine_key(400), nullable=False, unique=True),
    Column("message_id", _machine_key(255), nullable=False, unique=True),
    Column("recipient_email", Text, nullable=False),
    Column("recipient_name", Text, nullable=False),
    Column("context", JSON, nullable=False),
    Column("state", String(16), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("lease_owner", Text),
    Column("lease_token", String(36)),
    Column("lease_until", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Column("first_attempt_at", UTCDateTime),  # retries give up after an age (0004)
    Column("last_code", Integer),
    Column("last_reply", Text),
    Column("reason", Text),
    _created(),
    Column("updated_at", UTCDateTime, nullable=False),
    # (state, id) rather than (state, due_at, id): measured 5x faster claims on SQLite.
    Index(None, "state", "id"),
    # PostgreSQL's way to the oldest queued messages for the claim (migration 0008 says why).
    # SQLite's planner reads (state, id) for it (EXPLAIN QUERY PLAN), and its drain is flat.
    Index("ix_messages_queued", "id", postgresql_where=text("state = 'queued'")).ddl_if(
        dialect="postgresql"
    ),
    # With the wave last, `status` counts messages per wave, kind and state from it alone (0020).
    Index(None, "program_id", "kind", "state", "wave_key"),
    Index(None, "person_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Integer, primary_key=True),
    # The message's id without a foreign-key constraint: its trigger was 7% of the database's
    # time for a drain's write; why that is safe is in migration 0015.
    Column("message_id", Integer, nullable=False),
    Column("number", Integer, nullable=False),
    Column("worker", Text, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("code", Integer),
    Column("reply", Text),
    Index(None, "message_id"),
)

completions = Table(
    "completions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("program_id", ForeignKey("programs.id", ondelete="CASCADE"), nullable=False),
    Column("person_id", ForeignKey("people.id", ondelete="SET NULL")),
    Column("person_ref", Text, nullable=False),  # the id or email as it arrived
    Column("option", String(32), nullable=False),
    Column("completed_at", UTCDateTime, nullable=False),
    Column("source", String(32), nullable=False),  # import | webhook | xapi | operator
    # What makes a second arrival of the same completion a no-op.
    Column("dedupe_key", String(400), nullable=False),
    Column("note", Text),
    Column("recorded_at", UTCDateTime, nullable=False),
    # False when it arrived with --no-confirmations: matched later, it still emails nobody.
    Column("confirm", Boolean, nullable=False, server_default=text("true")),
    UniqueConstraint("program_id", "dedupe_key"),
    Index(None, "person_id"),
)

webhook_receipts = Table(
    "webhook_receipts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("source", String(32), nullable=False),  # webhook | xapi
    Column("receipt_id", String(255), nullable=False),  # webhook-id / statement id
    Column("received_at", UTCDateTime, nullable=False),
    # A replayed id is a UNIQUE violation: the same delivery is never processed twice.
    UniqueConstraint("source", "receipt_id"),
)

locks = Table(
    "locks",
    metadata,
    # A named lease: who holds it and until when. Used to keep SQLite to one dispatching
    # process, and for once-per-deployment work on PostgreSQL.
    Column("name", String(300), primary_key=True),
    Column("owner", Text, nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", String(64), nullable=False),
    Column("program_id", ForeignKey("programs.id", ondelete="CASCADE")),
    Column("subject", Text),
    Column("details", JSON, nullable=False),
    # When the row was really written (0018): `at` is the action's own
    # instant, another day in a rehearsal (--now).
    Column("recorded_at", UTCDateTime),
)

bounces = Table(
    "bounces",
    metadata,
    # One failed recipient of one bounce (or one webhook event), matched to our message when
    # its VERP token or its Message-ID and recipient say which; the rest are kept unmatched.
    Column("id", Integer, primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("source", String(16), nullable=False),  # maildir | imap | file | webhook
    # The bounce's identity (its Message-ID or content digest, and the recipient): a second
    # scan of the same mail, or the same webhook event twice, is a UNIQUE violation.
    Column("dedupe_key", _machine_key(400), nullable=False, unique=True),
    Column("message_row_id", Integer),  # messages.id (no foreign key, as messages' own, 0006)
    Column("program_id", Integer),
    Column("person_id", Integer),
    Column("recipient", Text, nullable=False),
    Column("class", String(16), nullable=False),  # hard | soft | blocked | complaint | delayed
    Column("status", String(16)),  # the RFC 3463 code, when the report gives one
    Column("diagnostic", Text, nullable=False),
    Index(None, "person_id"),
)

undeliverable = Table(
    "undeliverable",
    metadata,
    # A person's address that bounced (hard once, or soft on several days): nothing more is sent
    # to it until a roster import brings a new address or an operator says it is fine.
    Column("person_id", ForeignKey("people.id", ondelete="CASCADE"), primary_key=True),
    Column("email_key", String(320), nullable=False),  # the address that failed
    Column("since", UTCDateTime, nullable=False),
    Column("reason", Text, nullable=False),
    Column("bounce_id", Integer),
    # Cleared (a new address, or `pshnotify address ok`): the row stays, so soft bounces are
    # counted afresh from here and the console can say when and by whom.
    Column("cleared_at", UTCDateTime),
    Column("cleared_by", Text),
)

unrecognised_bounces = Table(
    "unrecognised_bounces",
    metadata,
    # Mail at the bounce address that pshnotify could not read: kept (moved to a folder of its
    # own, never deleted) and listed for a person by `pshnotify bounces unrecognised`.
    Column("id", Integer, primary_key=True),
    Column("received_at", UTCDateTime, nullable=False),
    Column("source", String(16), nullable=False),
    Column("location", Text, nullable=False),  # where the mail now is
    Column("dedupe_key", _machine_key(400), nullable=False, unique=True),
    Column("sender", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("reason", Text, nullable=False),
)

users = Table(
    "users",
    metadata,
    # The console's users (`pshnotify user add`): operators act, viewers (department officers)
    # read their departments only. Passwords are argon2 hashes; nothing else is kept.
    Column("id", Integer, primary_key=True),
    Column("login", String(64), nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", String(16), nullable=False),  # operator | viewer
    Column("departments", JSON, nullable=False),  # a viewer's departments; [] for operators
    # Drawn anew when the user signs out: every session of the login ends (services.users).
    Column("session_nonce", String(32), nullable=False),
    _created(),
    Column("updated_at", UTCDateTime, nullable=False),
)

requests = Table(
    "requests",
    metadata,
    # What a participant asked from their email's personal link (services/campaign/requests.py):
    # pending until an operator, or the program's auto-approval rule, decides it (0017).
    Column("id", Integer, primary_key=True),
    Column("program_id", ForeignKey("programs.id", ondelete="CASCADE"), nullable=False),
    Column("person_id", ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # more_time | completed | not_required | ...
    Column("state", String(16), nullable=False),  # pending | approved | declined
    Column("payload", JSON, nullable=False),  # until, reason, option, completed_on, note
    _created(),
    Column("decided_at", UTCDateTime),
    Column("decided_by", Text),
    Column("decision_note", Text),
    Column("auto", Boolean, nullable=False, server_default=text("false")),
    Index(None, "program_id", "state"),
    Index(None, "person_id"),
    # One pending request per kind and person, even for two submissions at once.
    Index(
        "uq_requests_open",
        "program_id",
        "person_id",
        "kind",
        unique=True,
        sqlite_where=text("state = 'pending'"),
        postgresql_where=text("state = 'pending'"),
    ),
)
