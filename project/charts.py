"""Counts over time as an SVG bar chart, for a campaign's sending (`campaigns/eventlog/`) and
the outbox (`smtp_settings/outbox/`).

A `Timeline` cuts a span of at most WINDOW into at most MAX_BARS buckets and adds up named
counts ("sent", "failed", …) in each; `bar_chart` works out the picture's geometry: stacked
bars for some counts, and lanes of marks above them for others. The template
(`charts/_bars.html`) only draws the rectangles, lines and labels it is given.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import CharField
from django.db.models.functions import Substr, TruncMinute
from django.utils import timezone
from django.utils.formats import number_format

WINDOW = timedelta(hours=24)
MAX_BARS = 240
BUCKET_MINUTES = (1, 2, 3, 5, 6, 10, 15, 20, 30, 60)


def minute_of(column: str):
    """The minute of a datetime column, to group by. TruncMinute is native on PostgreSQL but a
    Python function called per row on SQLite (175 ms for 50,000 deliveries); there, the stored
    text (UTC, "YYYY-MM-DD HH:MM:SS...") cut after the minute gives the same groups natively."""
    if connection.vendor == "sqlite":
        return Substr(column, 1, 16, output_field=CharField())
    return TruncMinute(column, tzinfo=UTC)


def _as_minute(value) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def _floor(moment: datetime, minutes: int) -> datetime:
    """The start of the bucket of `minutes` that `moment` falls in (buckets start on the hour)."""
    epoch_minute = int(moment.timestamp() // 60)
    return datetime.fromtimestamp((epoch_minute - epoch_minute % minutes) * 60, tz=UTC)


@dataclass
class Bucket:
    start: datetime
    counts: Counter = field(default_factory=Counter)


@dataclass
class Timeline:
    """Named counts per bucket of `minutes`."""

    minutes: int
    buckets: list[Bucket]

    @classmethod
    def covering(cls, start: datetime, end: datetime) -> "Timeline":
        """Empty buckets from `start` (at most WINDOW before `end`) to `end`, of the fewest
        minutes in BUCKET_MINUTES that keep them to MAX_BARS."""
        start = max(start, end - WINDOW)
        span_minutes = (end - start).total_seconds() / 60
        minutes = next((size for size in BUCKET_MINUTES if span_minutes / size <= MAX_BARS), BUCKET_MINUTES[-1])
        last = _floor(end, minutes)
        first = max(_floor(start, minutes), last - timedelta(minutes=minutes * (MAX_BARS - 1)))
        count = int((last - first).total_seconds() // (minutes * 60)) + 1
        return cls(minutes, [Bucket(first + timedelta(minutes=minutes * n)) for n in range(count)])

    @property
    def start(self) -> datetime:
        return self.buckets[0].start

    @property
    def end(self) -> datetime:
        return self.buckets[-1].start + timedelta(minutes=self.minutes)

    def add(self, name: str, per_minute: Iterable[tuple[object, int]]) -> None:
        """Add (minute, n) pairs, as a query grouped by `minute_of(...)` gives them, to the
        count `name` of the buckets they fall in (before the first: the first; after: the last)."""
        for minute, n in per_minute:
            index = int((_as_minute(minute) - self.start).total_seconds() // (self.minutes * 60))
            self.buckets[min(max(index, 0), len(self.buckets) - 1)].counts[name] += n

    def total(self, name: str) -> int:
        return sum(bucket.counts[name] for bucket in self.buckets)


# -- the picture --

WIDTH = 720
LEFT = 52  # room for the y labels
RIGHT = WIDTH - 8
LEGEND_Y = 12
FIRST_LANE_Y = 28
LANE_STEP = 14
PLOT_HEIGHT = 108
X_TICKS = 6
X_LABEL_HALF_WIDTH = 16


@dataclass(frozen=True)
class Series:
    """A count drawn on a chart: as bars (stacked in the order given) or as marks in a lane."""

    name: str  # the count in each bucket
    label: str  # in the legend
    css: str  # the class it is drawn with
    title: str  # each bar's or mark's tooltip: "{n} sent"
    lane: str = ""  # marks: the lane's label, left of it
    guide: bool = False  # marks: a dashed line through the bars below too


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str
    css: str


@dataclass(frozen=True)
class Mark:
    x: float
    title: str


@dataclass
class Lane:
    y: int
    label: str
    css: str
    guide: bool
    marks: list[Mark] = field(default_factory=list)


@dataclass(frozen=True)
class LegendItem:
    x: int
    label: str
    css: str
    is_bar: bool


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass
class Chart:
    title: str
    description: str
    top: int
    bottom: int
    bars: list[Bar] = field(default_factory=list)
    lanes: list[Lane] = field(default_factory=list)
    legend: list[LegendItem] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    width: int = WIDTH
    left: int = LEFT
    right: int = RIGHT
    legend_y: int = LEGEND_Y

    @property
    def height(self) -> int:
        return self.bottom + 28


def _round_up(value: int) -> int:
    """The next 1, 2 or 5 times a power of ten, for the y axis."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if value <= step * scale:
                return step * scale
        scale *= 10


def clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def count(n: int) -> str:
    return number_format(n, force_grouping=True)


def per_bucket(timeline: Timeline) -> str:
    """What one bar covers, for a chart's title: "minute", or "5 minutes"."""
    return "minute" if timeline.minutes == 1 else f"{timeline.minutes} minutes"


def span(timeline: Timeline) -> str:
    """A chart description's "From 2026-05-04 10:00 to 2026-05-04 11:30 (UTC)"."""
    start, end = timezone.localtime(timeline.start), timezone.localtime(timeline.end)
    return f"From {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} ({start:%Z})"


def _legend(series: list[Series]) -> list[LegendItem]:
    items, x = [], 0
    for one in series:
        items.append(LegendItem(x, one.label, one.css, is_bar=not one.lane))
        x += 30 + 6 * len(one.label)  # the swatch, about 6 px a character at 11 px, a gap
    return items


def bar_chart(timeline: Timeline, title: str, description: str, bars: list[Series], marks: list[Series] = ()) -> Chart:
    """The picture of `timeline`: a stack of `bars` per bucket, and a lane of `marks` each."""
    top = FIRST_LANE_Y + LANE_STEP * len(marks) + 4
    chart = Chart(title, description, top=top, bottom=top + PLOT_HEIGHT, legend=_legend([*bars, *marks]))
    chart.lanes = [Lane(FIRST_LANE_Y + LANE_STEP * n, one.lane, one.css, one.guide) for n, one in enumerate(marks)]
    step = (RIGHT - LEFT) / len(timeline.buckets)
    highest = max((sum(bucket.counts[one.name] for one in bars) for bucket in timeline.buckets), default=0)
    ceiling = _round_up(highest or 1)
    scale = PLOT_HEIGHT / ceiling
    width = round(max(step * 0.8, 1), 1)
    for n, bucket in enumerate(timeline.buckets):
        x = LEFT + n * step
        left, when, base = round(x + step * 0.1, 1), clock(bucket.start), chart.bottom
        for one in bars:
            if value := bucket.counts[one.name]:
                height = max(value * scale, 1)
                base -= height
                title = f"{when}: {one.title.format(n=count(value))}"
                chart.bars.append(Bar(left, round(base, 1), width, round(height, 1), title, one.css))
        for lane, one in zip(chart.lanes, marks, strict=True):
            if value := bucket.counts[one.name]:
                lane.marks.append(Mark(round(x + step / 2, 1), f"{when}: {one.title.format(n=count(value))}"))
    every = max(1, round(len(timeline.buckets) / X_TICKS))
    chart.x_ticks = [
        Tick(round(LEFT + n * step, 1), clock(timeline.buckets[n].start))
        for n in range(0, len(timeline.buckets), every)
        if LEFT + n * step <= RIGHT - X_LABEL_HALF_WIDTH  # not cut off at the right edge
    ]
    values = sorted({0, ceiling // 2, ceiling})
    chart.y_ticks = [Tick(round(chart.bottom - value * scale, 1), count(value)) for value in values]
    return chart
