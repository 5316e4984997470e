"""Form pieces more than one page's filters use."""

from django import forms
from django.http import QueryDict

DATETIME_LOCAL = "%Y-%m-%dT%H:%M"


def _datetime_field(label: str, help_text: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        help_text=help_text,
        input_formats=[DATETIME_LOCAL, "%Y-%m-%dT%H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_LOCAL),
    )


class FilterForm(forms.Form):
    """A page's filters, from the query string: FILTERS names the fields the filter form shows
    (forms/_filters.html) and the page's links keep (filters_in_use)."""

    FILTERS: tuple[str, ...] = ()

    @property
    def filter_fields(self):
        return [self[name] for name in self.FILTERS]


class TimeRangeForm(FilterForm):
    """A filter's time range from the query string: from `since` (inclusive) to `until`
    (exclusive), as the browser's date-and-time inputs send them, in the current time zone."""

    since = _datetime_field("From", "Inclusive.")
    until = _datetime_field("Until", "Exclusive.")

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since >= until:
            self.add_error("until", "Must be after “From”.")
        return cleaned


def filters_in_use(query: QueryDict, names: tuple[str, ...]) -> QueryDict:
    """The filters of `query` among `names` that are set (not the page bounds, say): the base
    of every link a filtered page makes."""
    filters = QueryDict(mutable=True)
    for name in names:
        if value := query.get(name, "").strip():
            filters[name] = value
    return filters
