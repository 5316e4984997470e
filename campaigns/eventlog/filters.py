"""The event log's queries: the filter form, keyset pages, counts per kind, a campaign's timeline
and the CSV export.

The log holds millions of rows, so every query keeps to an index. Pages are keyset pages on
`id` (below or above a bound, never OFFSET, never a COUNT of the table). Every composite
index on Event ends in `id`, so a time range is also applied as the range of ids it holds,
which those indexes can seek to. What must read every row it covers — the counts per kind
and a text search — is kept to a time window (`time_window()`): a chosen campaign's events,
else at most the last week of the filter's range, or the last 24 hours without a start.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from django import forms
from django.db.models import Count, F, Max, Min, QuerySet, Sum
from django.db.models.functions import Lower, Substr
from django.utils import timezone

from campaigns.eventlog.writer import AUTO_PAUSE, TASK_ERROR
from campaigns.models import Campaign, Delivery, Event
from project import csv_files
from project.charts import NOTE_CHARS, Timeline
from project.forms import TimeRangeForm
from smtp_settings.events import Kind, connection_label
from smtp_settings.models import SmtpServer

PAGE_SIZE = 50
EXPORT_CHUNK = 2000
DEFAULT_WINDOW = timedelta(hours=24)
MAX_WINDOW = timedelta(days=7)
KINDS = [value for name, value in vars(Kind).items() if name.isupper()] + [AUTO_PAUSE, TASK_ERROR]
EXPORT_COLUMNS = [
    "at",
    "last_at",
    "count",
    "kind",
    "kind_name",
    "server",
    "campaign",
    "outbox_message_id",
    "connection",  # as the log shows it ("104b9dbd·10"), to match rows by
    "messages_on_connection",
    "stage",
    "code",
    "enhanced_code",
    "text",
    "duration_ms",
    "recipient",
    "message_id",
]


class ScopeForm(TimeRangeForm):
    """A server, a campaign and a time range, from the query string."""

    server = forms.ModelChoiceField(
        queryset=SmtpServer.objects.only("name").order_by("name"), required=False, empty_label="All servers"
    )
    campaign = forms.ModelChoiceField(
        queryset=Campaign.objects.only("name").order_by("-created_at"), required=False, empty_label="All campaigns"
    )


class LogFilterForm(ScopeForm):
    """The log's filters, from the query string. `before` and `after` are the keyset bounds."""

    kind = forms.ChoiceField(
        choices=[("", "All kinds"), *((kind, Event.name_of(kind)) for kind in KINDS)], required=False
    )
    code = forms.IntegerField(label="Reply code", min_value=100, max_value=599, required=False)
    q = forms.CharField(
        label="Server said",
        max_length=200,
        required=False,
        help_text="Searches the last 24 hours, a week at most from “From”, or a chosen campaign's events.",
    )
    before = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)
    after = forms.IntegerField(min_value=0, required=False, widget=forms.HiddenInput)

    FILTERS = ("server", "campaign", "kind", "code", "since", "until", "q")
    field_order = FILTERS

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("before") is not None and cleaned.get("after") is not None:
            self.add_error("after", "Ask for older or newer events, not both.")
        return cleaned


def time_window(
    cleaned: dict, now: datetime | None = None, default: timedelta = DEFAULT_WINDOW
) -> tuple[datetime | None, datetime | None]:
    """The time range of what reads every row in it (the counts per kind, a text search, the
    connection timeline): a chosen campaign's events as filtered (a campaign bounds them
    itself); else the filter's range, at most its last MAX_WINDOW; without a start, the
    `default` window up to `until` (or now)."""
    since, until = cleaned.get("since"), cleaned.get("until")
    if cleaned.get("campaign"):
        return since, until
    end = until or now or timezone.now()
    return max(since or end - default, end - MAX_WINDOW), until


def filtered_events(cleaned: dict, *, windowed: bool = False, now: datetime | None = None) -> QuerySet:
    """The events the filter selects. With `windowed` (and always with a text search), only
    those within `time_window()`."""
    events = Event.objects.all()
    if cleaned.get("server"):
        events = events.filter(server=cleaned["server"])
    if cleaned.get("campaign"):
        events = events.filter(campaign=cleaned["campaign"])
    if cleaned.get("kind"):
        events = events.filter(kind=cleaned["kind"])
    if cleaned.get("code") is not None:
        events = events.filter(code=cleaned["code"])
    if cleaned.get("q"):
        events = events.filter(text__icontains=cleaned["q"])
        windowed = True
    if windowed:
        return within(events, *time_window(cleaned, now), id_range=True)
    # A page newest first finds its rows at once after a start; only an end needs the ids.
    return within(events, cleaned.get("since"), cleaned.get("until"), id_range=cleaned.get("until") is not None)


def within(events: QuerySet, since: datetime | None, until: datetime | None, *, id_range: bool) -> QuerySet:
    """`events` from `since` (inclusive) to `until` (exclusive). With `id_range` and a start,
    also as the range of ids those rows hold: what that costs (reading the `at` index over the
    range) pays when every row in range is read, or when the range ends in the past."""
    if until is not None:
        events = events.filter(at__lt=until)
    if since is None:
        return events
    events = events.filter(at__gte=since)
    if not id_range:
        return events
    span = Event.objects.filter(at__gte=since)
    if until is not None:
        span = span.filter(at__lt=until)
    # The ids of the rows in range, read from the `at` index alone (+0: otherwise SQLite finds
    # MIN(id) by walking the table from its first row). Exact, so no row is lost; and it lets
    # the (kind, id), (server, id)... indexes skip everything outside the range.
    ids = span.aggregate(first=Min(F("id") + 0), last=Max(F("id") + 0))
    if ids["first"] is not None:
        events = events.filter(id__gte=ids["first"])
        if until is not None:  # without an end, rows still to come belong too
            events = events.filter(id__lte=ids["last"])
    return events


@dataclass
class Page:
    """Up to PAGE_SIZE events, newest first, and the bounds of the pages either side."""

    events: list[Event]
    older: int | None = None  # ?before= this for the next older page
    newer: int | None = None  # ?after= this for the next newer page; None on the newest

    @property
    def newest_id(self) -> int | None:
        return self.events[0].pk if self.events else None


def page(events: QuerySet, before: int | None = None, after: int | None = None) -> Page:
    """A keyset page: the newest events below `before`, or the oldest above `after` (the
    next newer page, or what the live tail has not shown yet), newest first either way."""
    if after is not None:
        rows = newer_than(events, after, PAGE_SIZE + 1)
        more = len(rows) > PAGE_SIZE
        rows = rows[-PAGE_SIZE:]
        oldest = rows[-1].pk if rows else after + 1
        older = oldest if events.filter(id__lt=oldest).exists() else None
        return Page(rows, older=older, newer=rows[0].pk if more else None)
    if before is not None:
        events = events.filter(id__lt=before)
    rows = list(_for_table(events).order_by("-id")[: PAGE_SIZE + 1])
    older = rows[PAGE_SIZE - 1].pk if len(rows) > PAGE_SIZE else None
    rows = rows[:PAGE_SIZE]
    newer = rows[0].pk if before is not None and rows else None
    return Page(rows, older=older, newer=newer)


def newer_than(events: QuerySet, after: int, limit: int = PAGE_SIZE) -> list[Event]:
    """The oldest `limit` events above `after`, newest first: what the live tail adds on top."""
    return list(_for_table(events).filter(id__gt=after).order_by("id")[:limit])[::-1]


def _for_table(events: QuerySet) -> QuerySet:
    return events.select_related("campaign").defer("campaign__html_body", "campaign__text_body")


class KindCount(NamedTuple):
    kind: str
    total: int  # how many times it happened

    @property
    def name(self) -> str:
        return Event.name_of(self.kind)


def summary(events: QuerySet) -> list[KindCount]:
    """How many times each kind happened, most frequent first. A storm row counts `count` times."""
    # Grouped by an expression so that SQLite does not group by walking the (kind, id) index,
    # which reads the table's rows in random order (four times slower over a week of events)
    # where reading the id range in order is all it takes. Kinds are lower case already.
    totals = events.order_by().annotate(group=Lower("kind")).values_list("group").annotate(total=Sum("count"))
    return ranked(totals)


def ranked(totals: Iterable[tuple[str, int]]) -> list[KindCount]:
    """(kind, total) pairs as counts per kind, most frequent first."""
    return [KindCount(*row) for row in sorted(totals, key=lambda row: (-row[1], row[0]))]


# CSV


def export_name(cleaned: dict) -> str:
    """What the export holds, as a file name: relaydeck-events-campaign-7-421-2026-11-26.csv."""
    parts = ["relaydeck-events"]
    if cleaned.get("campaign"):
        parts.append(f"campaign-{cleaned['campaign'].pk}")
    if cleaned.get("server"):
        parts.append(f"server-{cleaned['server'].pk}")
    if cleaned.get("kind"):
        parts.append(cleaned["kind"])
    if cleaned.get("code") is not None:
        parts.append(f"code-{cleaned['code']}")
    for name, moment in (("from", cleaned.get("since")), ("until", cleaned.get("until"))):
        if moment is not None:
            parts.append(f"{name}-{timezone.localtime(moment):%Y%m%d-%H%M}")
    if cleaned.get("q"):
        parts += ["matching", cleaned["q"]]
    return csv_files.export_name(*parts)


def csv_chunks(events: QuerySet) -> Iterator[str]:
    """The events as CSV, newest first, EXPORT_CHUNK rows a piece read by keyset: never the
    whole table in memory."""
    columns = [name for name in EXPORT_COLUMNS if name not in ("kind_name", "server", "campaign", "connection")]
    rows = events.values(*columns, "server_name", "campaign__name", "connection_id", "id")

    def cells(row: dict) -> list:
        row["kind_name"] = Event.name_of(row["kind"])
        row["server"], row["campaign"] = row["server_name"], row["campaign__name"]
        row["connection"] = connection_label(row["connection_id"])
        return [row[name] for name in EXPORT_COLUMNS]

    return csv_files.csv_chunks(rows, EXPORT_COLUMNS, cells, EXPORT_CHUNK)


# A campaign's timeline


def campaign_timeline(campaign: Campaign) -> Timeline | None:
    """The campaign's last day of sending, with its 421s, reconnects and rotations ("sent",
    "closed_421", "reconnects" and "rotations" per bucket, each mark with one of the server's
    replies), from its launch once launched (what came before, its test messages, left out);
    None before it sent or heard anything."""
    sent = Delivery.objects.filter(campaign=campaign, sent_at__isnull=False)
    events = Event.objects.filter(campaign=campaign)
    if campaign.started_at is not None:
        sent, events = sent.filter(sent_at__gte=campaign.started_at), events.filter(at__gte=campaign.started_at)
    ends = [
        sent.order_by("-sent_at").values_list("sent_at", flat=True).first(),
        events.order_by("-id").values_list("last_at", flat=True).first(),
    ]
    if not any(ends):
        return None
    start = campaign.started_at or min(
        moment
        for moment in (
            sent.order_by("sent_at").values_list("sent_at", flat=True).first(),
            events.order_by("id").values_list("at", flat=True).first(),
        )
        if moment
    )
    timeline = Timeline.covering(start, max(moment for moment in ends if moment))
    per_moment = sent.filter(sent_at__gte=timeline.start).annotate(moment=timeline.moment_of("sent_at"))
    timeline.add("sent", per_moment.order_by().values_list("moment").annotate(n=Count("id")))
    names = {Kind.SESSION_CLOSED_421: "closed_421", Kind.RECONNECT: "reconnects", Kind.ROTATION: "rotations"}
    marked = within(events.filter(kind__in=names), timeline.start, None, id_range=True)
    marked = marked.annotate(moment=timeline.moment_of("at")).order_by().values_list("moment", "kind")
    # One reply per bucket and kind for the mark's tooltip: the alphabetically last, which a
    # grouped query gives at once (the first in time would take a second query).
    rows = marked.annotate(n=Sum("count"), said=Max(Substr("text", 1, NOTE_CHARS + 1)))
    for moment, kind, n, said in rows:
        timeline.add_noted(names[kind], [(moment, n, said or "")])
    return timeline
