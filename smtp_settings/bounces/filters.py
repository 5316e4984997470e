"""The bounces page's queries: its filters and a page of bounces, newest first."""

from django import forms
from django.db.models import QuerySet

from project.forms import FilterForm
from project.paging import Page, keyset_page
from smtp_settings.models import Bounce

PAGE_SIZE = 50
# What the table shows; the raw report (up to BOUNCE_REPORT_MAX_BYTES) is never read for it.
LISTED = ("received_at", "kind", "source", "email", "reference", "code", "status", "text", "problem", "acted_on")
_LOOKUPS = {"kind": "kind", "source": "source", "email": "email__icontains"}


class BounceFilterForm(FilterForm):
    """The bounces' filters, from the query string; `before` is the keyset bound of a page."""

    kind = forms.ChoiceField(choices=[("", "All kinds"), *Bounce.Kind.choices], required=False)
    source = forms.ChoiceField(choices=[("", "All sources"), *Bounce.Source.choices], required=False)
    email = forms.CharField(label="Address", max_length=254, required=False, help_text="Part of an address.")
    before = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)

    FILTERS = tuple(_LOOKUPS)
    field_order = FILTERS


def filtered_bounces(cleaned: dict) -> QuerySet:
    """The bounces the filter selects, newest first."""
    chosen = {lookup: cleaned[name] for name, lookup in _LOOKUPS.items() if cleaned.get(name)}
    return Bounce.objects.filter(**chosen).order_by("-id")


def page(bounces: QuerySet, before: int | None = None) -> Page:
    return keyset_page(bounces.only(*LISTED), before, PAGE_SIZE)
