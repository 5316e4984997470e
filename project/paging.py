"""Keyset paging of a table shown newest first: a page is the rows below an id, so a page
stays put while new rows arrive, and costs an index range however deep it is."""

from django.db.models import QuerySet


def older_page(rows: QuerySet, before: int | None, size: int) -> tuple[list, int | None]:
    """Up to `size` of `rows` (ordered newest first by id) below `before` (None: the newest),
    and the `before` of the next older page, if there is one."""
    if before is not None:
        rows = rows.filter(id__lt=before)
    found = list(rows[: size + 1])
    return found[:size], found[size - 1].pk if len(found) > size else None
