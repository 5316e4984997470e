"""A campaign's sending over time as an SVG picture: the geometry is worked out here, the
template (`logs/_chart.html`) only draws the rectangles, lines and labels it is given."""

from dataclasses import dataclass, field
from datetime import datetime

from django.utils import timezone
from django.utils.formats import number_format

from campaigns.eventlog.filters import Timeline, campaign_timeline
from campaigns.models import Campaign

WIDTH = 720
HEIGHT = 196
LEFT = 52  # room for the y labels
RIGHT = WIDTH - 8
LANE_421_Y = 28  # the 421s' lane, above the bars
LANE_RECONNECT_Y = 42
TOP = 60
BOTTOM = 168
X_TICKS = 6
X_LABEL_HALF_WIDTH = 16


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Mark:
    x: float
    title: str


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass
class Chart:
    title: str
    description: str
    bars: list[Bar] = field(default_factory=list)
    marks_421: list[Mark] = field(default_factory=list)
    marks_reconnect: list[Mark] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    top: int = TOP
    bottom: int = BOTTOM
    lane_421_y: int = LANE_421_Y
    lane_reconnect_y: int = LANE_RECONNECT_Y


def _round_up(value: int) -> int:
    """The next 1, 2 or 5 times a power of ten, for the y axis."""
    scale = 1
    while True:
        for step in (1, 2, 5):
            if value <= step * scale:
                return step * scale
        scale *= 10


def _clock(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M")


def _count(n: int) -> str:
    return number_format(n, force_grouping=True)


def sending_chart(timeline: Timeline) -> Chart:
    per = "minute" if timeline.minutes == 1 else f"{timeline.minutes} minutes"
    start, end = timezone.localtime(timeline.start), timezone.localtime(timeline.end)
    chart = Chart(
        title=f"Messages sent per {per}, with 421s and reconnects",
        description=(
            f"From {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} ({start:%Z}): {_count(timeline.sent)} sent, "
            f"{_count(timeline.closed_421)} sessions closed with a 421, {_count(timeline.reconnects)} reconnects."
        ),
    )
    step = (RIGHT - LEFT) / len(timeline.buckets)
    top = _round_up(max((bucket.sent for bucket in timeline.buckets), default=0) or 1)
    scale = (BOTTOM - TOP) / top
    for n, bucket in enumerate(timeline.buckets):
        x = LEFT + n * step
        middle = round(x + step / 2, 1)
        when = _clock(bucket.start)
        if bucket.sent:
            height = max(bucket.sent * scale, 1)
            chart.bars.append(
                Bar(
                    round(x + step * 0.1, 1),
                    round(BOTTOM - height, 1),
                    round(max(step * 0.8, 1), 1),
                    round(height, 1),
                    f"{when}: {_count(bucket.sent)} sent",
                )
            )
        if bucket.closed_421:
            chart.marks_421.append(Mark(middle, f"{when}: {_count(bucket.closed_421)} × 421"))
        if bucket.reconnects:
            chart.marks_reconnect.append(Mark(middle, f"{when}: {_count(bucket.reconnects)} reconnects"))
    every = max(1, round(len(timeline.buckets) / X_TICKS))
    chart.x_ticks = [
        Tick(round(LEFT + n * step, 1), _clock(timeline.buckets[n].start))
        for n in range(0, len(timeline.buckets), every)
        if LEFT + n * step <= RIGHT - X_LABEL_HALF_WIDTH  # not cut off at the right edge
    ]
    chart.y_ticks = [Tick(round(BOTTOM - value * scale, 1), _count(value)) for value in sorted({0, top // 2, top})]
    return chart


def campaign_chart(campaign: Campaign) -> Chart | None:
    """The chart of the campaign's last day of sending; None before it sent or heard anything."""
    timeline = campaign_timeline(campaign)
    return sending_chart(timeline) if timeline else None
