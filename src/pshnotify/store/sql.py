"""Small portable SQL helpers shared by the repositories."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    DateTime,
    String,
    Table,
    any_,
    bindparam,
    column,
    func,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeEngine

from pshnotify.store.db import is_postgresql
from pshnotify.store.schema import UTCDateTime, naive_utc


def insert_ignoring_duplicates(conn: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the connection's backend."""
    dialect = postgresql if is_postgresql(conn) else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def json_rows(
    name: str, columns: Sequence[tuple[str, TypeEngine[Any]]], rows: Sequence[Sequence[Any]]
) -> Any:
    """PostgreSQL only: `rows` as a FROM item, sent as one JSON parameter and read back with
    jsonb_to_recordset(), its columns named and typed as given.

    A batch then costs one statement and one parameter, where an executemany sends and runs
    a statement per row. One JSON document, not an array per column: psycopg dumps arrays
    element by element in Python, two regular expressions per text element, which measured
    57 us a message over a drain's outcome writes; `json.dumps` does the whole batch in C.
    Times are sent as naive UTC, as `UTCDateTime` stores them.
    """
    names = [col for col, _ in columns]
    times = [i for i, (_, type_) in enumerate(columns) if _is_time(type_)]
    data = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        for i in times:
            if row[i] is not None:
                item[names[i]] = naive_utc(row[i]).isoformat()
        data.append(item)
    return (
        func.jsonb_to_recordset(bindparam(f"{name}_rows", value=data, type_=postgresql.JSONB))
        .table_valued(*(column(col, type_) for col, type_ in columns))
        .render_derived(name=name, with_types=True)
    )


def _is_time(type_: TypeEngine[Any]) -> bool:
    return isinstance(type_, DateTime) or isinstance(getattr(type_, "impl", None), DateTime)


def among(col: Any, name: str, type_: TypeEngine[Any], *, on_postgresql: bool) -> Any:
    """`col IN :name`, the values passed as parameter `name` at execution; on PostgreSQL
    `col = ANY(:name)`, one array parameter instead of one per value. Takes no values, so a
    statement built with it can be built once and reused."""
    if on_postgresql:
        return col == any_(bindparam(name, type_=postgresql.ARRAY(type_)))
    return col.in_(bindparam(name, expanding=True))


def string_set(col: Any, *, on_postgresql: bool) -> Any:
    """An aggregate: the group's values of `col` as one string, joined by `SET_SEPARATOR` in no
    particular order (split it, and read it as a set)."""
    if on_postgresql:
        return func.string_agg(col, SET_SEPARATOR, type_=String)
    return func.group_concat(col, SET_SEPARATOR, type_=String)


SET_SEPARATOR = "\x1f"  # the unit separator: in no step, key or name


def minute_of(col: Any, *, on_postgresql: bool) -> tuple[Any, Any]:
    """(the instant `col` truncated to its minute, as a `UTCDateTime`; whether `col` is that
    minute exactly), for a `UTCDateTime` column. On SQLite the stored text is cut after the
    minute ("2023-09-11 13:05:42.123456" -> "2023-09-11 13:05:00.000000")."""
    if on_postgresql:
        truncated = func.date_trunc("minute", col, type_=UTCDateTime)
        return truncated, col == truncated
    text = func.substr(col, 1, 16, type_=String)
    minute = type_coerce(text.concat(":00.000000"), UTCDateTime)
    return minute, func.substr(col, 17, type_=String).in_([":00.000000", ":00"])


_JSON_CHUNK = 5000  # rows per statement: one JSON parameter of a few MB at most


def insert_many(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> int:
    """Insert rows (all with the same keys), skipping those that break a UNIQUE constraint;
    returns how many were inserted.

    PostgreSQL: INSERT ... SELECT from the rows as one JSON parameter per chunk (`json_rows`);
    an executemany or a multi-row VALUES costs psycopg a parse of the statement's text per
    chunk, which measured 0.3 ms a row for 20,000 completions. SQLite: an executemany. (A
    batch of a size that matters is better staged once and written by set-based statements,
    as `store.completion_batch` does.)"""
    if not rows:
        return 0
    names = list(rows[0])
    stmt: Any = insert_ignoring_duplicates(conn, table)
    count = 0
    if is_postgresql(conn):
        columns = [(n, _plain_type(table.c[n].type)) for n in names]
        for part in chunks(list(rows), _JSON_CHUNK):
            source = json_rows("v", columns, [[r[n] for n in names] for r in part])
            query = stmt.from_select(names, select(*(source.c[n] for n in names)))
            result = conn.execute(query.execution_options(preserve_rowcount=True))
            count += max(result.rowcount, 0)
        return count
    for part in chunks(list(rows), _JSON_CHUNK):
        count += max(conn.execute(stmt, part).rowcount, 0)
    return count


def _plain_type(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    """A column's type for a record definition, without its collation (the table applies it)."""
    if getattr(type_, "collation", None):
        return type(type_)(length=getattr(type_, "length", None))  # type: ignore[call-arg]
    return type_
