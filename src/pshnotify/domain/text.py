"""The rules for a text value from outside (a roster cell, a webhook field, an xAPI actor, an
operator's argument), in one place, and how such a value is shown on a terminal.

Every way in calls `text_problem`, so a value one way refuses is refused by all of them: a
control character (NUL would make PostgreSQL raise; ESC would drive the operator's terminal;
CR/LF would split a header or a CSV line), a bidirectional override (it reorders what an
operator reads), or more characters than the field holds.
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, the bidi overrides and
# isolates (U+202A-U+202E, U+2066-U+2069).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Shown, not obeyed: the same set, except a line break and a tab the code itself prints.
_SHOWN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

CONTROL_PROBLEM = "contains a line break or control character"


def text_problem(value: str, max_length: int) -> str | None:
    """Why `value` cannot be stored in a field of `max_length` characters, or None."""
    if CONTROL.search(value):
        return CONTROL_PROBLEM
    if len(value) > max_length:
        return f"is longer than {max_length} characters ({len(value)})"
    return None


def visible(text: str) -> str:
    """`text` with every control character written as an escape (`\\x1b`, `\\u202e`)."""
    return _SHOWN.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def short(text: str, limit: int = 200) -> str:
    """A value quoted in an error message, cut to `limit` characters so a 100 KB cell does
    not become a 100 KB error line."""
    shown = visible(text)
    return repr(shown) if len(shown) <= limit else repr(shown[:limit]) + f"... ({len(text)} chars)"
