"""Importing addresses onto the suppression list from a CSV file, while the sender waits.

The header row needs an `email` column; a `note` column is kept with each address, as one
line without control or bidirectional characters (else the import's own note, who imported
which file), and any other column is ignored. Every address
goes on the list with the reason `import`; one already there keeps its first reason and note.
The file is read as `project.csv_files` reads every import (an invalid row is reported with
its line and the rest imports) and saved CHUNK_ROWS at a time, each chunk in a transaction of
its own. It is bounded: at most MAX_BYTES, and MAX_ROWS rows, past which reading stops and
the result says where.
"""

from dataclasses import dataclass, field
from typing import BinaryIO

from django.db import connection, transaction
from django.utils import timezone

from project.csv_files import CsvRows
from smtp_settings.leases import db_time
from smtp_settings.models import Suppression
from smtp_settings.validators import address_problem, one_line

MAX_BYTES = 20 * 2**20
MAX_ROWS = 100_000
CHUNK_ROWS = 200  # rows inserted at once: 4 bound parameters each, within SQLite's 999
MAX_ERRORS = 100  # invalid rows reported with their line and why; the rest are counted
NOTE_MAX_CHARS = 2000


@dataclass
class ImportResult:
    rows_read: int = 0
    added: int = 0
    kept: int = 0  # on the list already (or twice in the file): left as they were
    invalid: int = 0
    errors: list[dict] = field(default_factory=list)
    stopped_at: int | None = None  # the line reading stopped at, past MAX_ROWS rows

    def reject(self, line: int, reason: str) -> None:
        self.rows_read += 1
        self.invalid += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"line": line, "reason": reason})


def _parse(cells: list[str], email_at: int, note_at: int | None, default_note: str) -> tuple[str, str] | str:
    """(address, note) of a valid row, or why it is not valid."""
    address = cells[email_at].strip()
    if problem := address_problem(address):
        return problem
    note = one_line(cells[note_at], NOTE_MAX_CHARS + 1) if note_at is not None else ""
    if len(note) > NOTE_MAX_CHARS:
        return f"the note is longer than {NOTE_MAX_CHARS:,} characters"
    return Suppression.normalize(address), note or default_note


# One statement a chunk: the ORM's bulk_create and a lookup of the addresses there cost five
# times as much, with the sender waiting. RETURNING says which rows were added.
_INSERT = (
    "INSERT INTO smtp_settings_suppression (email, reason, note, created_at) VALUES {rows}"
    " ON CONFLICT (email) DO NOTHING RETURNING email"
)


def _save(chunk: dict[str, str], result: ImportResult) -> None:
    """Add the chunk's addresses that are not on the list; those that are keep their entry
    (a concurrent suppress() included)."""
    now = db_time(timezone.now())
    values = [value for email, note in chunk.items() for value in (email, Suppression.Reason.IMPORT, note, now)]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_INSERT.format(rows=", ".join(["(%s, %s, %s, %s)"] * len(chunk))), values)
        added = len(cursor.fetchall())
    result.added += added
    result.kept += len(chunk) - added
    chunk.clear()


def import_csv(binary_file: BinaryIO, default_note: str) -> ImportResult:
    """Put the addresses of a CSV file (opened in binary mode) on the list. Raises
    ImportFailed, having saved nothing, if the header row is unusable."""
    result, default_note = ImportResult(), one_line(default_note, NOTE_MAX_CHARS)
    rows = CsvRows(binary_file, result.reject)
    names = [name.lower() for name in rows.header("email")]
    email_at, note_at = names.index("email"), names.index("note") if "note" in names else None
    chunk: dict[str, str] = {}  # address: note, the first row of an address wins
    for line, cells in rows:
        if result.rows_read >= MAX_ROWS:
            result.stopped_at = line
            break
        row = rows.problem(cells) or _parse(cells, email_at, note_at, default_note)
        if isinstance(row, str):
            result.reject(line, row)
            continue
        result.rows_read += 1
        email, note = row
        if email in chunk:
            result.kept += 1
        else:
            chunk[email] = note
        if len(chunk) >= CHUNK_ROWS:
            _save(chunk, result)
    if chunk:
        _save(chunk, result)
    return result
