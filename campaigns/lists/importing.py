"""Import subscribers into a list from a CSV file, streaming, in bounded memory.

The file is read as `project.csv_files` reads every import: line by line, a badly encoded
line reported and skipped while the rest imports, errors naming the physical line a row
starts on. Rows are saved in chunks of `CHUNK_ROWS`, each chunk in its own transaction:
memory holds one chunk and the first `MAX_ERRORS` errors, whatever the size of the file.

The header row needs an `email` column; `name` is optional and every other column becomes an
attribute. Importing is a merge keyed on the normalised address, so importing a file twice
leaves the database as once: a new non-blank name replaces the stored one, attributes are
merged (the file's values win, blank cells change nothing), and an existing subscriber's
status is never touched (an unsubscribed person stays unsubscribed).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from campaigns.models import MailingList, Subscriber, SubscriberImport
from project import csv_files
from project.csv_files import CsvRows, ImportFailed
from smtp_settings.validators import address_problem, unsafe_header_character

logger = logging.getLogger(__name__)

CHUNK_ROWS = 1000
MAX_ERRORS = 1000
EMAIL_MAX_LENGTH = Subscriber._meta.get_field("email").max_length
NAME_MAX_LENGTH = Subscriber._meta.get_field("name").max_length


def size_error(size: int) -> str | None:
    """Why a file of `size` bytes is too large to import (IMPORT_MAX_BYTES), if it is."""
    limit = settings.IMPORT_MAX_BYTES
    if size <= limit:
        return None
    return f"it has {size:,} bytes, and an import may have at most {limit:,} (IMPORT_MAX_BYTES)"


@dataclass
class ImportResult:
    bytes_read: int = 0
    rows_read: int = 0
    created: int = 0
    merged: int = 0
    invalid: int = 0
    errors: list[dict] = field(default_factory=list)

    def reject(self, line: int, reason: str) -> None:
        self.invalid += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"line": line, "reason": reason})


@dataclass
class _Row:
    line: int
    email: str
    name: str
    attributes: dict[str, str]


@dataclass
class _Columns:
    email: int
    name: int | None
    attributes: list[tuple[int, str]]


def _columns(names: list[str]) -> _Columns:
    lowered = [name.lower() for name in names]
    return _Columns(
        email=lowered.index("email"),
        name=lowered.index("name") if "name" in lowered else None,
        # A column without a name (a trailing comma, say) holds nothing worth keeping.
        attributes=[(i, name) for i, name in enumerate(names) if name and lowered[i] not in ("email", "name")],
    )


def check_header(binary_file: BinaryIO) -> None:
    """Raise ImportFailed if the file's header row cannot start an import; rewind the file."""
    csv_files.check_header(binary_file, "email")


def _parse_row(cells: list[str], columns: _Columns, line: int) -> _Row | str:
    """A valid row, or why it is not."""
    raw_email = cells[columns.email].strip()
    name = cells[columns.name].strip() if columns.name is not None else ""
    # Both end up in mail headers: the address in To, the name wherever a subject uses it.
    if problem := address_problem(raw_email, EMAIL_MAX_LENGTH):
        return problem
    if character := unsafe_header_character(name):
        return f"the name contains a line break or control character ({character})"
    if len(name) > NAME_MAX_LENGTH:
        return f"the name is longer than {NAME_MAX_LENGTH} characters"
    attributes = {key: cells[i].strip() for i, key in columns.attributes if cells[i].strip()}
    return _Row(line=line, email=Subscriber.normalise_email(raw_email), name=name, attributes=attributes)


def _merge_into(subscriber: Subscriber, row: _Row) -> bool:
    """Apply a row to a stored subscriber (never its status); True if anything changed."""
    changed = False
    if row.name and row.name != subscriber.name:
        subscriber.name = row.name
        changed = True
    attributes = subscriber.attributes if isinstance(subscriber.attributes, dict) else {}
    merged = attributes | row.attributes
    if merged != subscriber.attributes:
        subscriber.attributes = merged
        changed = True
    return changed


def _save_chunk(rows: list[_Row], mailing_list: MailingList, result: ImportResult) -> None:
    # Later rows for the same address merge into the first, as they would across chunks.
    by_email: dict[str, _Row] = {}
    duplicates = 0
    for row in rows:
        first = by_email.get(row.email)
        if first is None:
            by_email[row.email] = row
        else:
            duplicates += 1
            first.name = row.name or first.name
            first.attributes |= row.attributes

    for attempt in range(3):
        try:
            created, merged = _write_chunk(by_email, mailing_list)
        except IntegrityError:
            # Someone else created one of these addresses between our read and our insert:
            # the next attempt finds it and merges instead.
            if attempt == 2:
                raise
            continue
        result.created += created
        result.merged += merged + duplicates
        return


def _write_chunk(by_email: dict[str, _Row], mailing_list: MailingList) -> tuple[int, int]:
    with transaction.atomic():
        existing = {s.email: s for s in Subscriber.objects.filter(email__in=list(by_email))}
        new = [
            Subscriber(email=email, name=row.name, attributes=row.attributes)
            for email, row in by_email.items()
            if email not in existing
        ]
        changed = [s for email, s in existing.items() if _merge_into(s, by_email[email])]
        if changed:
            Subscriber.objects.bulk_update(changed, ["name", "attributes"])
        Subscriber.objects.bulk_create(new)
        ids = [s.pk for s in existing.values()]
        if all(s.pk for s in new):
            ids += [s.pk for s in new]
        else:  # a database that does not return ids from a bulk insert
            ids += Subscriber.objects.filter(email__in=[s.email for s in new]).values_list("pk", flat=True)
        Membership = Subscriber.lists.through
        Membership.objects.bulk_create(
            [Membership(subscriber_id=pk, mailinglist_id=mailing_list.pk) for pk in ids], ignore_conflicts=True
        )
    return len(new), len(existing)


def import_csv_file(
    binary_file: BinaryIO,
    mailing_list: MailingList,
    progress: Callable[[ImportResult], None] | None = None,
) -> ImportResult:
    """Import the subscribers in a CSV file (opened in binary mode) into `mailing_list`.

    Raises ImportFailed, having saved nothing, if the header row is unusable. Otherwise every
    valid row is saved and every invalid one counted, the first MAX_ERRORS with their line
    numbers; `progress(result)` is called after each saved chunk.
    """
    result = ImportResult()

    def on_error(line: int, reason: str) -> None:
        result.rows_read += 1
        result.reject(line, reason)

    rows = CsvRows(binary_file, on_error)
    columns = _columns(rows.header("email"))
    chunk: list[_Row] = []
    rows_at_flush = 0

    def flush() -> None:
        nonlocal rows_at_flush
        if chunk:
            _save_chunk(chunk, mailing_list, result)
            chunk.clear()
        rows_at_flush = result.rows_read
        result.bytes_read = rows.lines.bytes_read
        if progress:
            progress(result)

    for line, cells in rows:
        result.rows_read += 1
        row = rows.problem(cells) or _parse_row(cells, columns, line)
        if isinstance(row, str):
            result.reject(line, row)
        else:
            chunk.append(row)
        # Report progress through a long stretch of invalid rows too.
        if len(chunk) >= CHUNK_ROWS or result.rows_read - rows_at_flush >= 10 * CHUNK_ROWS:
            flush()
    flush()
    return result


def run_import(import_id: int) -> None:
    """Run a queued SubscriberImport, keeping its progress up to date for the page that polls it.

    A task the queue hands out again (its worker died) starts over; importing is idempotent.
    The uploaded file is deleted at the end, whatever the outcome.
    """
    claimed = SubscriberImport.objects.filter(
        pk=import_id, status__in=(SubscriberImport.Status.QUEUED, SubscriberImport.Status.RUNNING)
    ).update(status=SubscriberImport.Status.RUNNING)
    if not claimed:
        return
    job = SubscriberImport.objects.select_related("mailing_list").get(pk=import_id)
    updates = SubscriberImport.objects.filter(pk=import_id)
    errors_saved = 0

    def save_progress(result: ImportResult) -> None:
        nonlocal errors_saved
        counts = {
            "bytes_read": result.bytes_read,
            "rows_read": result.rows_read,
            "created": result.created,
            "merged": result.merged,
            "invalid": result.invalid,
        }
        if len(result.errors) != errors_saved:  # the list only grows, up to MAX_ERRORS
            counts["errors"] = result.errors
            errors_saved = len(result.errors)
        updates.update(**counts)

    outcome = {"status": SubscriberImport.Status.DONE, "failure": ""}
    try:
        with job.file.storage.open(job.file.name, "rb") as binary_file:
            import_csv_file(binary_file, job.mailing_list, progress=save_progress)
    except FileNotFoundError:
        outcome = {"status": SubscriberImport.Status.FAILED, "failure": "The uploaded file is gone."}
    except ImportFailed as exc:
        outcome = {"status": SubscriberImport.Status.FAILED, "failure": f"Nothing was imported: {exc}."}
    except Exception as exc:
        logger.exception("Import %s stopped", import_id)
        outcome = {
            "status": SubscriberImport.Status.FAILED,
            "failure": f"The import stopped ({type(exc).__name__}: {exc}); rows before it were saved.",
        }
    finally:
        if job.file.name:
            job.file.storage.delete(job.file.name)
    updates.update(**outcome, file="", finished_at=timezone.now())
