"""xAPI statements -> completions: who (actor mbox), which option (activity IRI), when.

Pure mapping, no I/O: every problem names the statement's index and the field, so the
learning record store's operator can find the statement the LRS forwarded.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pshnotify.domain.program import Program
from pshnotify.domain.text import short
from pshnotify.domain.values import BadValueError, Instant
from pshnotify.ingest.completions_csv import address_problem

COMPLETED = "http://adlnet.gov/expapi/verbs/completed"
VERSION = "1.0.3"  # the X-Experience-API-Version we answer with


@dataclass(frozen=True)
class MappedStatement:
    index: int  # its position in the batch, for messages
    statement_id: str  # the statement's own id, or one we assigned (as an LRS does)
    receipt: bool  # True when the sender chose the id: it is remembered against replays
    person_ref: str
    option: str
    completed_at: dt.datetime


def statements_of(payload: Any) -> list[Any]:
    """A single statement or a list of them, as POST /statements accepts."""
    if isinstance(payload, dict):
        return [payload]
    if isinstance(payload, list) and payload:
        return payload
    raise ValueError("expected a statement object or a non-empty list of statements")


def map_statements(
    statements: list[Any], program: Program, now: dt.datetime
) -> tuple[list[MappedStatement], list[str]]:
    """Every statement mapped, or every problem found (a batch is taken whole or not at all)."""
    by_iri = {iri: o.key for o in program.options for iri in o.activity_ids}
    mapped: list[MappedStatement] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, statement in enumerate(statements):
        found = _map_one(i, statement, by_iri, program, now)
        if isinstance(found, list):
            problems.extend(found)
            continue
        if found.receipt and found.statement_id in seen:
            problems.append(f"statement[{i}].id: same id as statement[{seen[found.statement_id]}]")
        seen.setdefault(found.statement_id, i)
        mapped.append(found)
    return mapped, problems


def _map_one(
    i: int, st: Any, by_iri: dict[str, str], program: Program, now: dt.datetime
) -> MappedStatement | list[str]:
    where = f"statement[{i}]"
    if not isinstance(st, dict):
        return [f"{where}: expected a JSON object"]
    problems: list[str] = []
    statement_id, receipt = _statement_id(st.get("id"), where, problems)
    verb = _get(st, "verb", "id")
    if verb != COMPLETED:
        shown = short(verb) if isinstance(verb, str) else type(verb).__name__
        problems.append(f"{where}.verb.id: expected {COMPLETED}, got {shown}")
    person = _person(st, where, problems)
    option = _option(st, where, by_iri, problems)
    when = _when(st, where, program, now, problems)
    if problems or person is None or option is None or when is None:
        return problems
    return MappedStatement(i, statement_id, receipt, person, option, when)


def _get(st: dict[str, Any], *path: str) -> Any:
    value: Any = st
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _statement_id(value: Any, where: str, problems: list[str]) -> tuple[str, bool]:
    if value is None:
        return str(uuid.uuid4()), False
    try:
        return str(uuid.UUID(str(value))), True
    except ValueError:
        problems.append(f"{where}.id: expected a UUID, got {short(str(value))}")
        return "", False


def _person(st: dict[str, Any], where: str, problems: list[str]) -> str | None:
    """The actor's `mbox` (mailto:) is the person's email; other identifiers are not ours."""
    if _get(st, "actor", "objectType") not in (None, "Agent"):
        problems.append(f"{where}.actor.objectType: expected an Agent (one person)")
        return None
    mbox = _get(st, "actor", "mbox")
    if not isinstance(mbox, str) or not mbox.lower().startswith("mailto:"):
        shown = short(mbox) if isinstance(mbox, str) else type(mbox).__name__
        problems.append(f"{where}.actor.mbox: expected 'mailto:address', got {shown}")
        return None
    address = mbox[len("mailto:") :]
    problem = address_problem(address)
    if problem:
        problems.append(f"{where}.actor.mbox: {problem}")
        return None
    return address


def _option(
    st: dict[str, Any], where: str, by_iri: dict[str, str], problems: list[str]
) -> str | None:
    iri = _get(st, "object", "id")
    if not isinstance(iri, str) or not iri:
        problems.append(f"{where}.object.id: expected the activity IRI")
        return None
    option = by_iri.get(iri)
    if option is None:
        known = ", ".join(sorted(by_iri)) or "none: add activity_ids to the program's options"
        problems.append(
            f"{where}.object.id: activity {short(iri)} is not one of the program's options "
            f"(known: {known})"
        )
    return option


def _when(
    st: dict[str, Any], where: str, program: Program, now: dt.datetime, problems: list[str]
) -> dt.datetime | None:
    """`timestamp` (when it happened), else `stored` (when the LRS got it), else now."""
    for fld in ("timestamp", "stored"):
        value = st.get(fld)
        if value is None:
            continue
        if not isinstance(value, str):
            problems.append(f"{where}.{fld}: expected an ISO-8601 string")
            return None
        try:
            return Instant.parse(value, program.reach, local_when_bare=False).utc
        except BadValueError as exc:
            problems.append(f"{where}.{fld}: {exc}")
            return None
    return now
