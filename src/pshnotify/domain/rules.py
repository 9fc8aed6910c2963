"""Ordered rules that match roster fields: the language of membership and eligibility.

A condition on one field is written in the program file as
  - a scalar (exact value):            role = "faculty"
  - a list (any of these values):      department = ["Human Resources", "IS&T"]
  - a table of operators:              department = { glob = "School of *" }
                                       program_year = { ge = 3 }
                                       start_date = { ge = 2023-07-01 }
                                       affiliation = { empty = true }
A `when` table holds if every one of its field conditions holds; a rule's `any` list holds if
one of its `when`-shaped alternatives holds. A rule with neither matches everyone.

A missing value (empty cell) matches only `empty = true`, `ne` and `not_in`: an unknown start
date is never "on or after" anything, so it cannot exempt anyone by accident.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import operator
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

Scalar = str | int | bool | dt.date
FIELD_TYPES: dict[str, type] = {
    "id": str,
    "email": str,
    "name": str,
    "department": str,
    "role": str,
    "paid": bool,
    "start_date": dt.date,
    "program_year": int,
    "affiliation": str,
    "admin_officer": str,
    "wave": str,
}
EXTRA_TYPES: dict[str, type] = {"text": str, "date": dt.date, "integer": int, "boolean": bool}


class FieldCondition(BaseModel):
    """One field's test. Exactly the operators given are applied, all of them must hold."""

    # Strict: "3" is not 3, so a quoted number in the program file is an error, not a guess.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: tuple[Scalar, ...] | None = None
    not_in: tuple[Scalar, ...] | None = None
    glob: str | None = None
    lt: int | dt.date | None = None
    le: int | dt.date | None = None
    gt: int | dt.date | None = None
    ge: int | dt.date | None = None
    empty: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return {"in_": tuple(value)}
        if isinstance(value, Mapping):
            if not value:
                raise ValueError("a condition table needs at least one operator")
            out = dict(value)
            if "in" in out:
                out["in_"] = out.pop("in")
            return out
        return {"eq": value}

    def operands(self) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in self.__dict__.items() if v is not None]

    def matches(self, value: object) -> bool:
        return all(_apply(op, operand, value) for op, operand in self.operands())


def _apply(op: str, operand: Any, value: object) -> bool:
    if op == "empty":
        return (value is None or value == "") is operand
    if value is None or value == "":
        return op in ("ne", "not_in")
    if op == "eq":
        return _same(value, operand)
    if op == "ne":
        return not _same(value, operand)
    if op == "in_":
        return any(_same(value, o) for o in operand)
    if op == "not_in":
        return not any(_same(value, o) for o in operand)
    if op == "glob":
        return isinstance(value, str) and fnmatch.fnmatchcase(value, operand)
    compare = _COMPARISONS.get(op)
    if compare is not None:
        return bool(compare(value, operand))
    raise ValueError(f"unknown operator {op}")  # pragma: no cover - guarded by the model


_COMPARISONS: dict[str, Any] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}


def _same(value: object, operand: object) -> bool:
    # bool is an int in Python; keep `paid = 1` from matching True by accident.
    return type(value) is type(operand) and value == operand


class Rule(BaseModel):
    """The matching part shared by membership and eligibility rules."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    when: dict[str, FieldCondition] = {}
    any_of: tuple[dict[str, FieldCondition], ...] = Field(default=(), alias="any")

    def matches(self, record: Mapping[str, object]) -> bool:
        if not _all_hold(self.when, record):
            return False
        return not self.any_of or any(_all_hold(alt, record) for alt in self.any_of)

    def conditions(self) -> list[tuple[str, FieldCondition]]:
        pairs = list(self.when.items())
        for alt in self.any_of:
            pairs.extend(alt.items())
        return pairs


def _all_hold(conds: Mapping[str, FieldCondition], record: Mapping[str, object]) -> bool:
    return all(cond.matches(record.get(field)) for field, cond in conds.items())


R = TypeVar("R", bound="Rule")


def first_match(rules: Sequence[R], record: Mapping[str, object]) -> R | None:
    for rule in rules:
        if rule.matches(record):
            return rule
    return None


def check_types(cond: FieldCondition, expected: type) -> str | None:
    """Return what is wrong when a condition's operands cannot apply to the field's type."""
    for op, operand in cond.operands():
        if op == "empty":
            continue
        if op == "glob":
            if expected is not str:
                return f"glob applies to text fields, not {expected.__name__}"
            continue
        values = operand if op in ("in_", "not_in") else (operand,)
        for v in values:
            if type(v) is not expected:
                return (
                    f"'{op.rstrip('_')}' expects {_type_name(expected)}, "
                    f"got {v!r} ({_type_name(type(v))})"
                )
    return None


def _type_name(t: type) -> str:
    return {str: "text", int: "an integer", bool: "true/false", dt.date: "a date"}.get(
        t, t.__name__
    )
