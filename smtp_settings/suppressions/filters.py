"""The suppression list's queries: its filters, a page of entries, the counts per reason and
the CSV export. The list may hold hundreds of thousands of addresses: pages are keyset pages
on `id`, newest first, and the export reads them the same way."""

from collections.abc import Iterator

from django import forms
from django.db.models import Count, QuerySet

from project import csv_files
from project.csv_files import csv_chunks
from project.forms import FilterForm
from project.paging import Page, keyset_page
from smtp_settings.models import Suppression

PAGE_SIZE = 50
EXPORT_CHUNK = 2000
EXPORT_COLUMNS = ["email", "reason", "since", "note"]


class SuppressionFilterForm(FilterForm):
    """The list's filters, from the query string; `before` is the keyset bound of a page."""

    q = forms.CharField(label="Address", max_length=254, required=False, help_text="Part of an address.")
    reason = forms.ChoiceField(choices=[("", "All reasons"), *Suppression.Reason.choices], required=False)
    before = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)

    FILTERS = ("q", "reason")
    field_order = FILTERS


def filtered(cleaned: dict) -> QuerySet:
    """The entries the filter selects, newest first."""
    entries = Suppression.objects.order_by("-id")
    if cleaned.get("reason"):
        entries = entries.filter(reason=cleaned["reason"])
    if cleaned.get("q"):  # addresses are stored lower-cased: no LOWER() on every row
        entries = entries.filter(email__contains=Suppression.normalize(cleaned["q"]))
    return entries


def page(entries: QuerySet, before: int | None = None) -> Page:
    return keyset_page(entries, before, PAGE_SIZE)


def reason_counts() -> list[tuple[str, str, int]]:
    """(reason, its name, how many addresses) for every reason, in the order of the choices."""
    counts = dict(Suppression.objects.order_by().values_list("reason").annotate(Count("id")))
    return [(reason, label, counts.get(reason, 0)) for reason, label in Suppression.Reason.choices]


def export_name(cleaned: dict) -> str:
    """What the export holds, as a file name: suppressions-hard_bounce-matching-example-com-2026-11-26.csv."""
    searched = ["matching", cleaned["q"]] if cleaned.get("q") else []
    return csv_files.export_name("suppressions", cleaned.get("reason") or "all", *searched)


def export(entries: QuerySet) -> Iterator[str]:
    """The entries as CSV, EXPORT_COLUMNS, newest first; a note cannot become a formula, and
    an address is written as it is, for an import to read back ("-x@example.test")."""
    rows = entries.values("id", "email", "reason", "created_at", "note")
    return csv_chunks(
        rows,
        EXPORT_COLUMNS,
        lambda row: [row["email"], row["reason"], row["created_at"], row["note"]],
        EXPORT_CHUNK,
        verbatim={0},
    )
