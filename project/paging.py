"""Keyset pages of a long table, newest first: the rows below a bound id, never OFFSET, never a
COUNT of the table, so the thousandth page costs what the first does."""

from dataclasses import dataclass

from django.db.models import QuerySet


@dataclass
class Page:
    rows: list
    older: int | None  # the `before` of the next page, if there is one


def keyset_page(rows: QuerySet, before: int | None, size: int) -> Page:
    """Up to `size` of `rows` (ordered by descending id) below the id `before`, if given."""
    if before is not None:
        rows = rows.filter(id__lt=before)
    found = list(rows[: size + 1])
    return Page(found[:size], found[size - 1].pk if len(found) > size else None)
