"""Named leases in the database: one holder at a time, taken over only once expired."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, func, or_, select, update

from pshnotify.store.schema import locks
from pshnotify.store.sql import insert_ignoring_duplicates


def acquire(
    conn: Connection, name: str, owner: str, wall: dt.datetime, lease: dt.timedelta
) -> bool:
    """Take or renew the lease; False while another owner's lease is still running."""
    conn.execute(
        insert_ignoring_duplicates(conn, locks).values(
            name=name, owner=owner, lease_until=wall + lease
        )
    )
    taken = conn.execute(
        update(locks)
        .where(locks.c.name == name, or_(locks.c.owner == owner, locks.c.lease_until < wall))
        .values(owner=owner, lease_until=wall + lease)
    )
    return taken.rowcount == 1


def holder(conn: Connection, name: str) -> tuple[str, dt.datetime] | None:
    row = conn.execute(
        select(locks.c.owner, locks.c.lease_until).where(locks.c.name == name)
    ).first()
    return (row.owner, row.lease_until) if row else None


def release(conn: Connection, name: str, owner: str) -> None:
    conn.execute(
        update(locks)
        .where(locks.c.name == name, locks.c.owner == owner)
        .values(lease_until=dt.datetime(1970, 1, 1, tzinfo=dt.UTC))
    )


def live(conn: Connection, prefix: str, wall: dt.datetime) -> int:
    """How many leases named `prefix...` are still running."""
    q = (
        select(func.count())
        .select_from(locks)
        .where(locks.c.name.startswith(prefix), locks.c.lease_until >= wall)
    )
    return int(conn.scalar(q) or 0)
