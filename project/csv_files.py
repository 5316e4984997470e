"""CSV files in and out, for every import and export of the dashboard.

In: an uploaded file is read as bytes one physical line at a time (`Lines`); each line is
decoded as UTF-8 on its own, so one badly encoded line is reported and skipped while the rest
is read. Decoded lines go through `csv.reader` (`CsvRows`), so quoted fields spanning lines
still work, and a row's errors name the physical line it starts on. Memory holds one line,
whatever the size of the file.

Out: `csv_chunks` streams a query's rows by keyset, never the whole table in memory, and
defuses cells a spreadsheet would run as formulas, but in the columns its caller names: email
addresses, validated when they came in, which an import must read back as they were written
("-news@example.test" is an address; with a quote before it, another one).
"""

import csv
import io
import re
from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from pathlib import PurePath
from typing import BinaryIO

from django.db.models import QuerySet
from django.utils import timezone

MAX_LINE_BYTES = 1024 * 1024  # a longer physical line is reported, not read into memory
CSV_SUFFIXES = (".csv", ".txt")
# A spreadsheet runs a cell starting with one of these as a formula (OWASP: CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ImportFailed(Exception):
    """The file as a whole cannot be imported (no header, no email column...): nothing was saved."""


def not_csv(upload) -> str | None:
    """Why an uploaded file cannot be a CSV file, if it cannot: its name says otherwise, or it
    holds NUL bytes, as spreadsheets (xlsx is a zip) and other binaries do and text never does.
    The file is left rewound."""
    if PurePath(upload.name).suffix.lower() not in CSV_SUFFIXES:
        return f"“{upload.name}” is not a .csv file. Save the sheet as CSV (UTF-8) first."
    start = upload.read(4096)
    upload.seek(0)
    if b"\x00" in start:
        return f"“{upload.name}” is not text (a spreadsheet?). Save the sheet as CSV (UTF-8) first."
    return None


class Lines:
    """The decoded lines of a binary file, for csv.reader, counting physical lines and bytes.

    A line that is not UTF-8 (or is too long) is skipped and handed to `on_error`.
    `row_start` is the number of the first line yielded since the last `mark()`.
    """

    def __init__(self, binary_file: BinaryIO, on_error: Callable[[int, str], None]):
        self.file = binary_file
        self.on_error = on_error
        self.line_number = 0
        self.bytes_read = 0
        self.row_start = 0

    def mark(self) -> None:
        self.row_start = 0

    def _physical_lines(self) -> Iterator[bytes | None]:
        """Each line as bytes, or None for a line longer than MAX_LINE_BYTES (read past, not kept)."""
        while True:
            raw = self.file.readline(MAX_LINE_BYTES)
            if not raw:
                return
            self.bytes_read += len(raw)
            if len(raw) < MAX_LINE_BYTES or raw.endswith(b"\n"):
                yield raw
                continue
            while raw and not raw.endswith(b"\n"):
                raw = self.file.readline(MAX_LINE_BYTES)
                self.bytes_read += len(raw)
            yield None

    def __iter__(self) -> Iterator[str]:
        for raw in self._physical_lines():
            self.line_number += 1
            if raw is None:
                self.on_error(self.line_number, f"line is longer than {MAX_LINE_BYTES:,} bytes")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.on_error(self.line_number, "not UTF-8 text")
                continue
            if self.line_number == 1:
                text = text.removeprefix("\ufeff")
            if not self.row_start:
                self.row_start = self.line_number
            yield text


class CsvRows:
    """The rows of a CSV file opened in binary mode: `header()` first, then each row that is
    not blank with the line it starts on (`problem()` says if it does not fit the header).
    Before the header is read, anything unreadable raises ImportFailed; after it, a line or
    row that cannot be read goes to `on_error(line, reason)` and reading carries on."""

    def __init__(self, binary_file: BinaryIO, on_error: Callable[[int, str], None]):
        self.on_error = on_error
        self.header_read, self.columns = False, 0
        self.lines = Lines(binary_file, self._line_error)
        self.reader = csv.reader(self.lines)

    def _line_error(self, line: int, reason: str) -> None:
        if not self.header_read:
            raise ImportFailed(f"line {line}: {reason}, in the header row")
        self.on_error(line, reason)

    def header(self, required: str) -> list[str]:
        """The column names of the first row that is not blank (trimmed, as written), which
        must name the column `required` (in any case) and no column twice."""
        try:
            names = next((row for row in self.reader if row), None)
        except csv.Error as exc:
            raise ImportFailed(f"line {self.lines.row_start}: the header row is not valid CSV ({exc})") from None
        if names is None:
            raise ImportFailed(f"the file is empty: it needs a header row with an '{required}' column")
        if any("\x00" in name for name in names):
            raise ImportFailed("the header row contains a NUL character")
        names = [name.strip() for name in names]
        lowered = [name.lower() for name in names]
        for name in set(lowered):
            if name and lowered.count(name) > 1:
                raise ImportFailed(f"the header row names the column '{name}' more than once")
        if required not in lowered:
            found = ", ".join(repr(name[:40]) for name in names[:10] if name) or "no column names"
            raise ImportFailed(f"the header row has no '{required}' column (found: {found})")
        self.header_read, self.columns = True, len(names)
        return names

    def problem(self, cells: list[str]) -> str | None:
        """Why a row cannot be read under the header, if it cannot."""
        if len(cells) != self.columns:
            return f"has {len(cells)} columns, the header has {self.columns}"
        if any("\x00" in cell for cell in cells):
            return "contains a NUL character"
        return None

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        while True:
            self.lines.mark()
            try:
                cells = next(self.reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self.on_error(self.lines.row_start or self.lines.line_number, f"not valid CSV ({exc})")
                continue
            if any(cell.strip() for cell in cells):  # not a blank line, nor a spreadsheet's row of empty cells
                yield self.lines.row_start, cells


def check_header(binary_file: BinaryIO, required: str) -> None:
    """Raise ImportFailed if the file's header row cannot start an import; rewind the file."""
    try:
        CsvRows(binary_file, on_error=lambda line, reason: None).header(required)
    finally:
        binary_file.seek(0)


def spreadsheet_safe(value) -> object:
    """A cell as written: blank for None, ISO 8601 for a time, a quote before a formula."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def csv_chunks(
    rows: QuerySet, header: list[str], cells: Callable[[dict], list], chunk_rows: int, verbatim: Collection[int] = ()
) -> Iterator[str]:
    """`rows` (a values() query with "id") as CSV under `header`, newest first, `chunk_rows`
    rows a piece read by keyset; `cells(row)` is a row's cells, made spreadsheet-safe here but
    for those at the indexes `verbatim` (addresses)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    before = None
    while True:
        chunk = rows.order_by("-id") if before is None else rows.filter(id__lt=before).order_by("-id")
        piece = list(chunk[:chunk_rows])
        for row in piece:
            writer.writerow([cell if at in verbatim else spreadsheet_safe(cell) for at, cell in enumerate(cells(row))])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(piece) < chunk_rows:
            return
        before = piece[-1]["id"]


def export_name(*parts: str) -> str:
    """An export's file name that says what it holds, and today's date: each part (a filter's
    value, a search) in lower case, other characters than letters, digits and "_" as "-", 40
    characters at most; empty parts left out. "events-campaign-7-421-2026-11-26.csv"."""
    safe = (re.sub(r"[^a-z0-9_]+", "-", part.lower())[:40].strip("-") for part in parts)
    return "-".join([*(part for part in safe if part), timezone.localdate().isoformat()]) + ".csv"
