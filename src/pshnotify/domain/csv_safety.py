"""CSV that spreadsheet programs open as data, never as formulas (OWASP "CSV Injection").

Excel, LibreOffice and Google Sheets evaluate a cell that starts with `=`, `+`, `-` or `@`
(and, after their own trimming, one that starts with a tab or carriage return), so a roster
name such as `=HYPERLINK(...)` or `=cmd|' /C calc'!A0` would run when an officer opens the
report. Every such cell gets a leading `'`, which makes the spreadsheet read it as text.
Pure functions: no I/O, no database.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

# Characters that make a spreadsheet treat a cell as a formula, including the full-width forms
# some East Asian locales convert on input. Tab, CR and LF are here because spreadsheets may
# strip them before deciding.
_TRIGGERS = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")
_FORMULA = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")
# Line breaks and control characters (tab aside) are flattened to a space: a report row is one
# line, and a line break would let a careless reader start a "new line" with a formula.
_FLATTEN = re.compile(r"\r\n|[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
BOM = "\ufeff"


def safe_cell(value: object) -> str:
    """The text of one cell, prefixed with `'` when a spreadsheet would evaluate it.

    `None` is an empty cell. A value whose first character is a trigger, or whose first
    non-blank character starts a formula (` =1` is evaluated by programs that trim), is
    prefixed; this turns a negative number such as `-5` into text too, which is the
    documented price of the defence (the reports carry no numbers).
    """
    if value is None:
        return ""
    text = str(value)
    if _needs_prefix(text):
        text = "'" + text
    return _FLATTEN.sub(" ", text)


def _needs_prefix(text: str) -> bool:
    if not text:
        return False
    if text[0] in _TRIGGERS:
        return True
    stripped = text.lstrip(" \t\r\n\x0b\x0c\u00a0")
    return bool(stripped) and stripped[0] in _FORMULA


def to_csv(header: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """A whole CSV file: UTF-8 with a BOM (so Excel reads accents), CRLF line ends.

    Every cell, header included, goes through `safe_cell` and is quoted, as OWASP advises;
    embedded double quotes are doubled by the csv module.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
    writer.writerow([safe_cell(h) for h in header])
    for row in rows:
        writer.writerow([safe_cell(v) for v in row])
    return (BOM + buffer.getvalue()).encode("utf-8")
