"""Form pieces more than one page's filters use."""

from django import forms
from django.http import QueryDict

DATETIME_LOCAL = "%Y-%m-%dT%H:%M"
# The years a filter's date may name: ranges are widened by days around them, which must not
# fall off Python's calendar (year 1 to 9999).
YEARS = (1970, 9998)


def _datetime_field(label: str, help_text: str) -> forms.DateTimeField:
    return forms.DateTimeField(
        label=label,
        required=False,
        help_text=help_text,
        input_formats=[DATETIME_LOCAL, "%Y-%m-%dT%H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=DATETIME_LOCAL),
    )


class FilterForm(forms.Form):
    """A page's filters, from the query string: the fields FILTERS names are the ones
    `forms/_filters.html` shows, in that order; the others are bounds of a page."""

    FILTERS: tuple[str, ...] = ()

    @property
    def filter_fields(self) -> list[forms.BoundField]:
        return [self[name] for name in self.FILTERS]


class TimeRangeForm(FilterForm):
    """A filter's time range from the query string: from `since` (inclusive) to `until`
    (exclusive), as the browser's date-and-time inputs send them, in the current time zone."""

    since = _datetime_field("From", "Inclusive.")
    until = _datetime_field("Until", "Exclusive.")

    def _in_years(self, name: str):
        moment = self.cleaned_data.get(name)
        if moment is not None and not YEARS[0] <= moment.year <= YEARS[1]:
            raise forms.ValidationError(f"Give a year from {YEARS[0]} to {YEARS[1]}.")
        return moment

    def clean_since(self):
        return self._in_years("since")

    def clean_until(self):
        return self._in_years("until")

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
