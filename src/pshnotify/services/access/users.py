"""The console's users: operators (act on the campaign) and viewers (read their departments).

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended
parameter set); the plain password never leaves this module. Adding and removing a user is
audited like any other action.

A console session holds its login and the user's `stamp`, a digest of a random per-user
nonce, the password hash, the role and the departments, checked on every request: signing out
draws a new nonce (`end_sessions`), and a new password or role changes the stamp, so every
session of that login ends at once; a login removed and added again has a new nonce and hash,
so its old cookies never come back.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, delete, select, update

from pshnotify.clock import Clock
from pshnotify.domain.errors import ConflictError, InputError, NotFoundError
from pshnotify.store import audit
from pshnotify.store.schema import users

ROLES = ("operator", "viewer")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # hashing cost grows with length; nobody types more
_LOGIN = re.compile(r"[a-z0-9][a-z0-9._@+-]{0,63}")
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the login is unknown, so a wrong login costs the time a wrong password
    does. Made on first use: an argon2 hash at import would slow every command's start."""
    return _hasher.hash("not a password of anyone")


@dataclass(frozen=True)
class User:
    login: str
    role: str
    departments: tuple[str, ...]
    stamp: str = field(default="", compare=False, repr=False)  # see the module docstring

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"

    def as_dict(self) -> dict[str, Any]:
        return {"login": self.login, "role": self.role, "departments": list(self.departments)}


def _clean_departments(departments: list[str]) -> tuple[str, ...]:
    seen: dict[str, str] = {}
    for d in departments:
        name = " ".join(d.split())
        if name:
            seen.setdefault(name.casefold(), name)
    return tuple(seen.values())


def user_problems(login: str, role: str, departments: list[str], password: str) -> list[str]:
    problems = []
    if not _LOGIN.fullmatch(login):
        problems.append(
            f"LOGIN: {login!r} is not a login (lower-case letters, digits and . _ @ + -, "
            "at most 64, starting with a letter or digit)"
        )
    if role not in ROLES:
        problems.append(f"--role: expected operator or viewer, got {role!r}")
    cleaned = _clean_departments(departments)
    if role == "viewer" and not cleaned:
        problems.append("--department: a viewer sees only their departments; name at least one")
    if role == "operator" and cleaned:
        problems.append("--department: an operator sees every department; give none")
    if len(password) < MIN_PASSWORD:
        problems.append(f"password: at least {MIN_PASSWORD} characters")
    elif len(password) > MAX_PASSWORD:
        problems.append(f"password: at most {MAX_PASSWORD} characters")
    return problems


def departments_nobody_is_in(engine: Engine, departments: list[str]) -> dict[str, list[str]]:
    """Each of these departments that matches nobody on the roster (compared as a viewer's
    scope is), with the roster's closest names: a misspelt department would show its viewer
    nobody at all."""
    from pshnotify.store.scope import roster_departments, roster_spellings

    known = roster_departments(engine)
    by_fold = {d.casefold(): d for d in known}
    unknown: dict[str, list[str]] = {}
    for name in _clean_departments(departments):
        if not roster_spellings(known, [name]):
            close = difflib.get_close_matches(name.casefold(), list(by_fold), n=3)
            unknown[name] = [by_fold[c] for c in close]
    return unknown


def add_user(
    engine: Engine,
    login: str,
    *,
    role: str,
    departments: list[str],
    password: str,
    clock: Clock,
    actor: str,
) -> User:
    login = login.strip().lower()
    problems = user_problems(login, role, departments, password)
    if problems:
        raise InputError(problems)
    user = User(login, role, _clean_departments(departments))
    password_hash = _hasher.hash(password)
    now = clock.now()
    with engine.begin() as conn:
        if conn.execute(select(users.c.id).where(users.c.login == login)).first() is not None:
            raise ConflictError(
                f"user {login!r} exists already",
                hint=f"`pshnotify user remove {login}` first to change it",
            )
        conn.execute(
            users.insert().values(
                login=login,
                session_nonce=secrets.token_hex(16),
                password_hash=password_hash,
                role=role,
                departments=list(user.departments),
                created_at=now,
                updated_at=now,
            )
        )
        audit.record(
            conn,
            at=now,
            actor=actor,
            action="user.add",
            program_id=None,
            subject=login,
            details={"role": role, "departments": list(user.departments)},
        )
    return user


def list_users(engine: Engine) -> list[User]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(users.c.login, users.c.role, users.c.departments).order_by(users.c.login)
        ).all()
    return [User(r.login, r.role, tuple(r.departments)) for r in rows]


def get_user(engine: Engine, login: str) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.login == login.strip().lower())).first()
    return None if row is None else _user(row)


def _user(row: Any) -> User:
    departments = tuple(row.departments)
    facts = [row.session_nonce, row.password_hash, row.role, json.dumps(list(departments))]
    stamp = hashlib.sha256("\0".join(facts).encode()).hexdigest()[:32]
    return User(row.login, row.role, departments, stamp)


def end_sessions(engine: Engine, login: str) -> None:
    """Every console session of this login ends (a new nonce: their stamps no longer match)."""
    with engine.begin() as conn:
        conn.execute(
            update(users)
            .where(users.c.login == login.strip().lower())
            .values(session_nonce=secrets.token_hex(16))
        )


def remove_user(engine: Engine, login: str, *, clock: Clock, actor: str) -> None:
    login = login.strip().lower()
    now = clock.now()
    with engine.begin() as conn:
        gone = conn.execute(delete(users).where(users.c.login == login)).rowcount
        if not gone:
            raise NotFoundError([f"LOGIN: no user {login!r}"], hint="`pshnotify user list`")
        audit.record(
            conn, at=now, actor=actor, action="user.remove", program_id=None, subject=login
        )


def authenticate(engine: Engine, login: str, password: str) -> User | None:
    """The user if the password is theirs, else None (an unknown login takes as long)."""
    login = login.strip().lower()
    with engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.login == login)).first()
    stored = row.password_hash if row is not None else _dummy_hash()
    try:
        _hasher.verify(stored, password[:MAX_PASSWORD])
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(stored):  # parameters raised since: upgrade on sign-in
        with engine.begin() as conn:
            conn.execute(
                update(users)
                .where(users.c.login == login)
                .values(password_hash=_hasher.hash(password))
            )
        return get_user(engine, login)  # the stamp of the new hash
    return _user(row)


def note_sign_in(engine: Engine, login: str, address: str, clock: Clock) -> None:
    """A console sign-in, in the audit log beside what the user then does."""
    with engine.begin() as conn:
        audit.record(
            conn,
            at=clock.now(),
            actor=login,
            action="user.sign-in",
            program_id=None,
            subject=login,
            details={"address": address},
        )
