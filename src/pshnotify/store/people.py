"""People and their enrollment in a program, written in bulk."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Integer, Text, and_, bindparam, cast, func, select, update
from sqlalchemy.dialects import postgresql

from pshnotify.store import standing
from pshnotify.store.db import is_postgresql
from pshnotify.store.schema import enrollments, people
from pshnotify.store.sql import among, chunks

PERSON_FIELDS = (
    "email",
    "email_key",
    "name",
    "department",
    "role",
    "paid",
    "start_date",
    "program_year",
    "affiliation",
    "admin_officer",
    "timezone",
    "admin_officer_name",
    "manager_email",
    "extra",
)
ENROLLMENT_FIELDS = ("wave_key", "wave_override", "status", "reason")
_CHUNK = 5000


@dataclass(frozen=True)
class ExistingPerson:
    id: int
    values: tuple[Any, ...]


def existing_people(
    conn: Connection, external_ids: list[str] | None = None
) -> dict[str, ExistingPerson]:
    """Every person by external id (or those of `external_ids`), with the fields an import
    compares."""
    cols = [people.c.id, people.c.external_id, *(people.c[f] for f in PERSON_FIELDS)]
    q, params = _among_people(conn, select(*cols), people.c.external_id, external_ids)
    return {r.external_id: ExistingPerson(r.id, tuple(r[2:])) for r in conn.execute(q, params)}


def email_owners(conn: Connection, email_keys: list[str] | None = None) -> dict[str, str]:
    """Whose each address is (all, or those of `email_keys`): email_key -> external id."""
    q = select(people.c.email_key, people.c.external_id)
    q, params = _among_people(conn, q, people.c.email_key, email_keys)
    return {r.email_key: r.external_id for r in conn.execute(q, params)}


def _among_people(
    conn: Connection, q: Any, col: Any, values: list[str] | None
) -> tuple[Any, dict[str, Any]]:
    """`q`, limited to the rows whose `col` is one of `values` (None: every row)."""
    if values is None:
        return q, {}
    return q.where(_among_json(conn, col, "p_values")), {"p_values": json.dumps(values)}


def _among_json(conn: Connection, col: Any, name: str) -> Any:
    """`col IN` the values of parameter `name`, a JSON array: one parameter, made by
    json.dumps in C. An import reads its people a chunk of 5,000 at a time; as an IN list of
    parameters (or a PostgreSQL array, dumped element by element) each look-up's values cost
    SQLAlchemy more than the query (1 s of a roster of 100,000)."""
    param = bindparam(name, type_=Text())
    if is_postgresql(conn):
        values = func.jsonb_array_elements_text(cast(param, postgresql.JSONB)).table_valued("value")
        return col.in_(select(cast(values.c.value, col.type)))
    return col.in_(select(func.json_each(param).table_valued("value").c.value))


def insert_people(conn: Connection, rows: list[dict[str, Any]], now: dt.datetime) -> None:
    for part in chunks(rows, _CHUNK):
        conn.execute(people.insert(), [{**r, "created_at": now, "updated_at": now} for r in part])


def update_people(conn: Connection, rows: list[dict[str, Any]], now: dt.datetime) -> None:
    stmt = (
        update(people)
        .where(people.c.id == bindparam("b_id"))
        .values({**{f: bindparam(f"b_{f}") for f in PERSON_FIELDS}, "updated_at": now})
    )
    for part in chunks(rows, _CHUNK):
        conn.execute(stmt, [_prefixed(r) for r in part])


def person_ids(conn: Connection, external_ids: list[str] | None = None) -> dict[str, int]:
    q, params = _among_people(
        conn, select(people.c.external_id, people.c.id), people.c.external_id, external_ids
    )
    return {r.external_id: r.id for r in conn.execute(q, params)}


@dataclass(frozen=True)
class ExistingEnrollment:
    id: int
    values: tuple[Any, ...]
    removed: bool


def existing_enrollments(
    conn: Connection, program_id: int, person_ids: list[int] | None = None
) -> dict[int, ExistingEnrollment]:
    """The program's enrollments (or those of `person_ids`) by person id."""
    cols = [
        enrollments.c.id,
        enrollments.c.person_id,
        enrollments.c.removed_at,
        *(enrollments.c[f] for f in ENROLLMENT_FIELDS),
    ]
    q = select(*cols).where(enrollments.c.program_id == program_id)
    params: dict[str, Any] = {}
    if person_ids is not None:
        q = q.where(_among_json(conn, enrollments.c.person_id, "p_ids"))
        params = {"p_ids": json.dumps(person_ids)}
    return {
        r.person_id: ExistingEnrollment(r.id, tuple(r[3:]), r.removed_at is not None)
        for r in conn.execute(q, params)
    }


def present_enrollments(conn: Connection, program_id: int) -> Iterator[tuple[int, int, str]]:
    """(person id, enrollment id, external id) of the program's people on the roster (not
    removed), one at a time."""
    q = (
        select(enrollments.c.person_id, enrollments.c.id, people.c.external_id)
        .join(people, people.c.id == enrollments.c.person_id)
        .where(enrollments.c.program_id == program_id, standing.present())
    )
    yield from ((r[0], r[1], r[2]) for r in conn.execute(q))


def insert_enrollments(conn: Connection, rows: list[dict[str, Any]], now: dt.datetime) -> None:
    for part in chunks(rows, _CHUNK):
        conn.execute(
            enrollments.insert(),
            # next_action_at: the scheduler decides on its next pass whether a newcomer to a
            # launched wave gets a launch email.
            [{**r, "created_at": now, "updated_at": now, "next_action_at": now} for r in part],
        )


def update_enrollments(conn: Connection, rows: list[dict[str, Any]], now: dt.datetime) -> None:
    """Rule-derived fields only: an operator's extension, exemption or a completion stays."""
    stmt = (
        update(enrollments)
        .where(enrollments.c.id == bindparam("b_id"))
        .values(
            {
                **{f: bindparam(f"b_{f}") for f in ENROLLMENT_FIELDS},
                "removed_at": None,
                "next_action_at": now,
                "updated_at": now,
            }
        )
    )
    for part in chunks(rows, _CHUNK):
        conn.execute(stmt, [_prefixed(r) for r in part])


def _prefixed(row: dict[str, Any]) -> dict[str, Any]:
    # An UPDATE's own column names are reserved for its SET clause; executemany binds need others.
    return {f"b_{k}": v for k, v in row.items()}


def mark_removed(conn: Connection, enrollment_ids: list[int], now: dt.datetime) -> None:
    for part in chunks(enrollment_ids, _CHUNK):
        conn.execute(
            update(enrollments)
            .where(and_(enrollments.c.id.in_(part), enrollments.c.removed_at.is_(None)))
            .values(removed_at=now, updated_at=now)
        )


def batch_people(
    conn: Connection, program_ids: list[int], person_ids: list[int]
) -> dict[tuple[int, int], Any]:
    """The people of a claimed batch with their enrollment: what decides whether each message
    still matters, and whom it greets. Keyed by (program id, person id)."""
    params = {"p_programs": sorted(program_ids), "p_people": sorted(person_ids)}
    q = _batch_people_query(on_postgresql=is_postgresql(conn))
    return {(r.program_id, r.id): r for r in conn.execute(q, params)}


@functools.cache
def _batch_people_query(*, on_postgresql: bool) -> Any:
    """Read through enrollments' (program_id, person_id) key: without the program in the WHERE,
    PostgreSQL read all 100,000 enrollments for every batch of 200 (45 ms). With it, the plan
    still needs the tables analysed (`refresh_statistics` after a roster import): never
    analysed, they scanned all of the program's enrollments (9.0 ms). Built once, like the
    claim's statements."""
    return (
        select(
            people.c.id,
            people.c.external_id,
            people.c.name,
            people.c.email,
            people.c.department,
            enrollments.c.program_id,
            *standing.COLUMNS,  # what the policy decides by, the undeliverable mark included
        )
        .select_from(standing.joined())
        .where(
            among(enrollments.c.program_id, "p_programs", Integer(), on_postgresql=on_postgresql),
            among(enrollments.c.person_id, "p_people", Integer(), on_postgresql=on_postgresql),
        )
    )
