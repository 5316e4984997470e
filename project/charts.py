"""Counts over time as an SVG bar chart, for a campaign's sending (`campaigns/eventlog/`) and
the outbox (`smtp_settings/outbox/`).

A `Timeline` cuts a span of at most WINDOW into at most MAX_BARS buckets, of a size chosen from
the span's length (a second for a 21-second run, 15 minutes for a day), and adds up named counts
("sent", "failed", …) in each, with what the server said for marks; `bar_chart` works out the
picture's geometry: stacked bars for some counts, and lanes of marks (a shape each, in the
legend too) above them for others. The template (`charts/_bars.html`) only draws the shapes
and labels it is given.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import CharField
from django.db.models.functions import Substr, TruncMinute, TruncSecond
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.text import Truncator

WINDOW = timedelta(hours=24)
MAX_BARS = 120
BUCKET_SECONDS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900)  # a day in 15 minutes is 96 bars
NOTE_CHARS = 200  # of what a server said, in a mark's tooltip


def _as_moment(value) -> datetime:
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value


def _floor(moment: datetime, seconds: int) -> datetime:
    """The start of the bucket of `seconds` that `moment` falls in (buckets start on the hour)."""
    epoch_s = int(moment.timestamp())
    return datetime.fromtimestamp(epoch_s - epoch_s % seconds, tz=UTC)


def note(text: str) -> str:
    """What a server said, bounded for a tooltip."""
    return Truncator(" ".join(text.split())).chars(NOTE_CHARS)


@dataclass
class Bucket:
    start: datetime
    counts: Counter = field(default_factory=Counter)
    notes: dict[str, str] = field(default_factory=dict)  # a count's name: what a server said


@dataclass
class Timeline:
    """Named counts per bucket of `seconds`."""

    seconds: int
    buckets: list[Bucket]

    @classmethod
    def covering(cls, start: datetime, end: datetime) -> "Timeline":
        """Empty buckets from `start` (at most WINDOW before `end`) to `end`, of the fewest
        seconds in BUCKET_SECONDS that keep them to MAX_BARS."""
        start = max(start, end - WINDOW)
        span_s = (end - start).total_seconds()
        seconds = next((size for size in BUCKET_SECONDS if span_s / size < MAX_BARS), BUCKET_SECONDS[-1])
        last = _floor(end, seconds)
        first = max(_floor(start, seconds), last - timedelta(seconds=seconds * (MAX_BARS - 1)))
        count = int((last - first).total_seconds() // seconds) + 1
        return cls(seconds, [Bucket(first + timedelta(seconds=seconds * n)) for n in range(count)])

    @property
    def start(self) -> datetime:
        return self.buckets[0].start

    @property
    def end(self) -> datetime:
        return self.buckets[-1].start + timedelta(seconds=self.seconds)

    def moment_of(self, column: str):
        """A datetime column cut to the second, or to the minute for buckets of minutes: what
        to group a query by for `add`. TruncMinute is native on PostgreSQL but a Python function
        called per row on SQLite (175 ms for 50,000 deliveries); there, the stored text (UTC,
        "YYYY-MM-DD HH:MM:SS...") cut after the second or minute gives the same groups natively."""
        by_minute = self.seconds % 60 == 0
        if connection.vendor == "sqlite":
            return Substr(column, 1, 16 if by_minute else 19, output_field=CharField())
        return (TruncMinute if by_minute else TruncSecond)(column, tzinfo=UTC)

    def _bucket(self, moment) -> Bucket:
        """The bucket `moment` falls in (before the first: the first; after: the last)."""
        index = int((_as_moment(moment) - self.start).total_seconds() // self.seconds)
        return self.buckets[min(max(index, 0), len(self.buckets) - 1)]

    def add(self, name: str, per_moment: Iterable[tuple[object, int]]) -> None:
        """Add (moment, n) pairs, as a query grouped by `moment_of(...)` gives them, to the
        count `name` of the buckets they fall in."""
        for moment, n in per_moment:
            self._bucket(moment).counts[name] += n

    def add_noted(self, name: str, per_moment: Iterable[tuple[object, int, str]]) -> None:
        """As `add`, from (moment, n, what the server said): a bucket keeps the first text it
        is given for `name` (of the pairs in the order given), for its mark's tooltip."""
        for moment, n, text in per_moment:
            bucket = self._bucket(moment)
            bucket.counts[name] += n
            if text and name not in bucket.notes:
                bucket.notes[name] = note(text)

    def total(self, name: str) -> int:
        return sum(bucket.counts[name] for bucket in self.buckets)


# -- the picture --

WIDTH = 720
LEFT = 64  # room for the y axis' caption and labels
RIGHT = WIDTH - 8
LEGEND_Y = 12
FIRST_LANE_Y = 32
LANE_STEP = 18
LANES_TO_PLOT = 20  # from the last lane to the plot's top: its label clear of the y axis' top label
PLOT_HEIGHT = 108
X_TICKS = 6
X_LABEL_HALF_WIDTH = 24

# Marks as closed paths around (x, y), about 12 px across: told apart by shape as well as colour.
SHAPES = {
    "triangle": "M{l} {t}h12l-6 11z",
    "circle": "M{l} {y}a6 6 0 1 0 12 0a6 6 0 1 0-12 0z",
    "square": "M{l} {t}h11v11h-11z",
    "diamond": "M{x} {t}l6 6-6 6-6-6z",
}


def shape_path(shape: str, x: float, y: float) -> str:
    return SHAPES[shape].format(x=round(x, 1), y=y, l=round(x - 6, 1), t=y - 6)


@dataclass(frozen=True)
class Series:
    """A count drawn on a chart: as bars (stacked in the order given) or as marks in a lane."""

    name: str  # the count in each bucket
    label: str  # in the legend
    css: str  # the class it is drawn with
    title: str  # each bar's or mark's tooltip: "{n} sent"
    lane: str = ""  # marks: the lane's label, left of it
    shape: str = "triangle"  # marks: one of SHAPES
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
    path: str
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
    path: str = ""  # a mark's shape; a bar's swatch without


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
    x_caption: str = ""
    y_caption: str = ""
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
        return self.bottom + 36

    @property
    def middle(self) -> float:
        """The plot's vertical middle, where the y axis' caption is centred."""
        return (self.top + self.bottom) / 2


def _round_up(value: int) -> int:
    """The next 1, 2 or 5 times a power of ten, for the y axis."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if value <= step * scale:
                return step * scale
        scale *= 10


def clock(moment: datetime, seconds: bool = False) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S" if seconds else "%H:%M")


def count(n: int) -> str:
    return number_format(n, force_grouping=True)


def per_bucket(timeline: Timeline) -> str:
    """What one bar covers, for a chart's title: "second", "5 seconds", "minute", "15 minutes"."""
    size, unit = (timeline.seconds // 60, "minute") if timeline.seconds % 60 == 0 else (timeline.seconds, "second")
    return unit if size == 1 else f"{size} {unit}s"


def span(timeline: Timeline) -> str:
    """A chart description's "From 2026-05-04 10:00:00 to 2026-05-04 11:30:00 (UTC)"."""
    start, end = timezone.localtime(timeline.start), timezone.localtime(timeline.end)
    return f"From {start:%Y-%m-%d %H:%M:%S} to {end:%Y-%m-%d %H:%M:%S} ({start:%Z})"


def legend(entries: Iterable[tuple[str, str, str]]) -> list[LegendItem]:
    """A legend in one row from (label, class, shape) entries; without a shape, a bar's swatch."""
    items, x = [], 0
    for label, css, shape in entries:
        items.append(LegendItem(x, label, css, shape_path(shape, x + 6, -3) if shape else ""))
        x += 34 + 6 * len(label)  # the swatch, about 6 px a character at 11 px, a gap
    return items


def bar_chart(
    timeline: Timeline, title: str, description: str, bars: list[Series], marks: list[Series] = (), unit: str = ""
) -> Chart:
    """The picture of `timeline`: a stack of `bars` per bucket (counting `unit`, the y axis'
    caption), and a lane of `marks` each, whose tooltips carry what the server said."""
    top = FIRST_LANE_Y + LANE_STEP * (len(marks) - 1) + LANES_TO_PLOT if marks else FIRST_LANE_Y - 6
    with_seconds = timeline.seconds < 60
    chart = Chart(
        title,
        description,
        top=top,
        bottom=top + PLOT_HEIGHT,
        x_caption=f"{timezone.localtime(timeline.start):%Z} time; one bar per {per_bucket(timeline)}",
        y_caption=unit,
        legend=legend((one.label, one.css, one.shape if one.lane else "") for one in [*bars, *marks]),
    )
    chart.lanes = [Lane(FIRST_LANE_Y + LANE_STEP * n, one.lane, one.css, one.guide) for n, one in enumerate(marks)]
    step = (RIGHT - LEFT) / len(timeline.buckets)
    highest = max((sum(bucket.counts[one.name] for one in bars) for bucket in timeline.buckets), default=0)
    ceiling = _round_up(highest or 1)
    scale = PLOT_HEIGHT / ceiling
    width = round(max(step * 0.8, 1), 1)
    for n, bucket in enumerate(timeline.buckets):
        x = LEFT + n * step
        left, when, base = round(x + step * 0.1, 1), clock(bucket.start, with_seconds), chart.bottom
        for one in bars:
            if value := bucket.counts[one.name]:
                height = max(value * scale, 1)
                base -= height
                title = f"{when}: {one.title.format(n=count(value))}"
                chart.bars.append(Bar(left, round(base, 1), width, round(height, 1), title, one.css))
        for lane, one in zip(chart.lanes, marks, strict=True):
            if value := bucket.counts[one.name]:
                said = bucket.notes.get(one.name)
                title = f"{when}: {one.title.format(n=count(value))}" + (f": {said}" if said else "")
                lane.marks.append(Mark(round(x + step / 2, 1), shape_path(one.shape, x + step / 2, lane.y), title))
    every = max(1, round(len(timeline.buckets) / X_TICKS))
    chart.x_ticks = [
        Tick(round(LEFT + n * step, 1), clock(timeline.buckets[n].start, with_seconds))
        for n in range(0, len(timeline.buckets), every)
        if LEFT + n * step <= RIGHT - X_LABEL_HALF_WIDTH  # not cut off at the right edge
    ]
    values = sorted({0, ceiling // 2, ceiling})
    chart.y_ticks = [Tick(round(chart.bottom - value * scale, 1), count(value)) for value in values]
    return chart
