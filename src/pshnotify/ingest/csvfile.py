"""What every CSV the operators hand us shares: UTF-8 (BOM or not), a header line, records
that may span lines, and errors as `FILE:LINE: field: problem` with LINE where a record starts.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pshnotify.domain.errors import InputError

MAX_ERRORS = 200
ProgressFn = Callable[[int], None]


def open_text(path: Path) -> IO[str]:
    """The file as UTF-8 text (BOM or not), read as it is parsed: a 500,000-line roster is
    never held whole in memory. A byte that is not UTF-8 is reported where it is met."""
    try:
        return path.open("r", encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError([f"{path}: cannot read: {exc.strerror}"]) from None


def _delimiter(text: str) -> str:
    """Commas, or what spreadsheet programs write in many countries: semicolons or tabs. The
    header line decides: a header without a comma that has semicolons (or tabs) uses them."""
    header = text.split("\n", 1)[0]
    if "," in header:
        return ","
    return max((";", "\t"), key=header.count) if (";" in header or "\t" in header) else ","


class CsvRecords:
    """Reads the header, then yields (line, {column: value}) for each non-blank record.

    Problems are collected in `errors`; the caller adds its own and raises once at the end.
    """

    def __init__(self, name: str, source: str | IO[str]) -> None:
        self.name = name
        self.errors: list[str] = []
        stream = io.StringIO(source, newline="") if isinstance(source, str) else source
        try:
            first = stream.readline(64 * 1024)
            stream.seek(0)
        except UnicodeDecodeError:
            first = ""
            stream = io.StringIO("", newline="")
            self.error(1, "(file)", "not UTF-8 text; save the file as UTF-8")
        self.delimiter = _delimiter(first)
        self._reader: Any = csv.reader(stream, strict=True, delimiter=self.delimiter)
        self.header = self._read_header() if not self.errors else []

    def error(self, line: int, fld: str, problem: str) -> None:
        self.errors.append(f"{self.name}:{line}: {fld}: {problem}")

    def _read_header(self) -> list[str]:
        try:
            header = [h.strip() for h in next(self._reader)]
        except StopIteration:
            self.error(1, "(header)", "the file is empty; the first line must name the columns")
            return []
        except csv.Error as exc:
            self.error(1, "(header)", f"not valid CSV: {exc}")
            return []
        except UnicodeDecodeError:
            self.error(1, "(file)", "not UTF-8 text; save the file as UTF-8")
            return []
        for col in sorted({c for c in header if header.count(c) > 1}):
            self.error(1, col, "column appears twice")
        return header

    def __iter__(self) -> Iterator[tuple[int, dict[str, str]]]:
        return self.records()

    def records(self, progress: ProgressFn | None = None) -> Iterator[tuple[int, dict[str, str]]]:
        header = self.header
        for line, values in self.rows(progress):
            yield line, dict(zip(header, values, strict=True))

    def rows(self, progress: ProgressFn | None = None) -> Iterator[tuple[int, list[str]]]:
        """`records` as (line, values in the header's order), without a dict per record."""
        start = 2
        width = len(self.header)
        while len(self.errors) < MAX_ERRORS:
            try:
                values = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self.error(start, "(row)", f"not valid CSV: {exc}")
                return
            except UnicodeDecodeError:
                self.error(start, "(file)", "not UTF-8 text; save the file as UTF-8")
                return
            line, start = start, self._reader.line_num + 1
            if progress:
                progress(start - line)
            if not "".join(values).strip():
                continue  # a blank line
            if len(values) != width:
                self.error(line, "(row)", f"has {len(values)} fields, the header has {width}")
                continue
            yield line, values

    def raise_if_errors(
        self, hint: str = "fix these rows and import again; nothing was changed"
    ) -> None:
        if self.errors:
            raise InputError(self.errors, hint=hint)
