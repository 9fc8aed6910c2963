"""A console viewer's scope, their departments, as an SQL condition on people.

Used by every read and action a viewer can reach (the people search, a department's list,
the requests page), so that someone outside the scope does not exist for the viewer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine, select

from pshnotify.store.schema import people


def in_departments(engine: Engine, departments: Sequence[str] | None) -> Any:
    """The SQL condition of a viewer's scope (None: everyone, an operator's).

    Departments are compared without regard to case; the roster's own spellings are looked
    up first (the distinct values, read from the department index), so the condition is an
    exact IN that the index answers rather than lower() over every person."""
    if departments is None:
        return None
    return people.c.department.in_(roster_spellings(roster_departments(engine), departments))


def roster_departments(engine: Engine) -> list[str]:
    """Every department someone on the roster belongs to, as the roster spells it."""
    with engine.connect() as conn:
        return list(conn.scalars(select(people.c.department).distinct()))


def roster_spellings(known: Iterable[str], departments: Iterable[str]) -> list[str]:
    """The roster's spellings (of `known`) of these departments: compared without regard
    to case, as a viewer's scope is."""
    wanted = {d.casefold() for d in departments}
    return [d for d in known if d.casefold() in wanted]
